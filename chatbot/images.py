"""Load one image from a path or an http(s) URL into a small RGB picture BLIP-2 can use.

Every bad input becomes an `ImageError` with a one-line message and a hint; no raw
Pillow or OS exception escapes. No torch here: front ends import this module cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import re
import stat
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.request import Request

from PIL import Image, ImageFile, ImageOps

from chatbot import __version__
from chatbot.errors import ImageError

MIN_SIDE = 8  # pixels; smaller images carry nothing to describe
# What counts as an image file where only a name is known: a folder's files for `describe`, the file
# picker's list, a path pasted into the chat. (A file named outright is tried whatever its suffix.)
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".ico",
})
MAX_PIXELS = 200_000_000  # refuse above this as a likely decompression bomb
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 15  # per socket operation (connect, each read)

_SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF…"
# Files that start like a known image format but fail to open are damaged, not "not an image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_PIL_LOCK = threading.Lock()  # serialises our temporary changes to Pillow's module settings


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for the model, with where it came from and a hash of its bytes."""

    image: Image.Image  # RGB, already downscaled if it was very large
    sha256: str  # hex sha256 of the source bytes (the file or the downloaded body)
    source: str  # absolute path as a string, or the URL as given
    original_size: tuple[int, int]  # (width, height) before any downscaling/orientation


def is_url(text: str) -> bool:
    """True for http:// and https:// links (the only schemes we fetch)."""
    return text.strip().lower().startswith(("http://", "https://"))


def load_image(source: str | os.PathLike[str], *, max_side: int = 1024) -> LoadedImage:
    """Read, check and decode an image; downscale so its longest side is at most `max_side`."""
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}, got {max_side}")
    if not os.fspath(source).strip():
        raise ImageError("No image path or URL was given.", "Pass an image file's path or an http(s) link.")
    if isinstance(source, str) and _SCHEME.match(source.strip()):
        url = source.strip()
        if not is_url(url):
            scheme = url.split(":", 1)[0]
            raise ImageError(
                f"{_one_line(url)} uses the unsupported scheme '{_one_line(scheme)}'.",
                "Use an http:// or https:// link, or pass the path of a local file.",
            )
        name, data, remote = url, _download(url), True
    else:
        name = os.path.abspath(os.path.expanduser(os.fspath(source)))
        data, remote = _read_file(name), False
    image, original_size = _decode(data, _one_line(name), remote, max_side)
    return LoadedImage(image, hashlib.sha256(data).hexdigest(), name, original_size)


def _one_line(text: str) -> str:
    """Escape newlines and other control characters so a message stays on one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _read_file(path: str) -> bytes:
    """All bytes of a regular file, with a clear error for each way that can fail."""
    shown = _one_line(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(
                f"{shown} is a folder, not an image file.",
                "Pass one image file; for alt text of every image in a folder, use `blip2-chat describe FOLDER`.",
            )
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{shown} is not a regular file.", "Pass the path of an image file.")
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(
            f"No file at {shown}.",
            "Check the path, or drag the file into the terminal to paste its full path.",
        ) from None
    except PermissionError:
        raise ImageError(
            f"Permission denied reading {shown}.",
            "Check the file's permissions (e.g. `chmod +r`) or copy it somewhere you can read.",
        ) from None
    except OSError as e:
        detail = _one_line(e.strerror or str(e))
        raise ImageError(f"Could not read {shown}: {detail}.", "Check the file and try again.") from None
    if not data:
        raise ImageError(f"{shown} is empty (0 bytes).", "Re-save or re-download the image and try again.")
    return data


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), so a link cannot bounce us to ftp://."""

    def redirect_request(  # noqa: PLR0913 - the signature is urllib's
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> Request | None:
        if not is_url(newurl):
            raise ImageError(
                f"{_one_line(req.full_url)} redirects to {_one_line(newurl)}, which is not an http(s) link.",
                "Use a direct http:// or https:// link to the image.",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str) -> bytes:
    """GET `url` in chunks, refusing bodies over MAX_DOWNLOAD_BYTES as soon as they pass it."""
    shown = _one_line(url)
    too_big = ImageError(
        f"{shown} is larger than {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB.",
        "Download it yourself, shrink it if needed, and pass the local file.",
    )
    headers = {"User-Agent": f"blip2-chat/{__version__}", "Accept": "image/*,*/*;q=0.8"}
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    chunks: list[bytes] = []
    try:
        with opener.open(Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
                raise too_big
            total = 0
            while chunk := resp.read(64 * 1024):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise too_big
                chunks.append(chunk)
    except urllib.error.HTTPError as e:
        e.close()
        detail = f"the server answered {e.code} ({_one_line(str(e.reason))})"
        hint = "Check the link in a browser; it may have moved or need a login."
        if e.code >= 500:
            hint = "The server had a problem; try again later, or download the image and pass the file."
        raise ImageError(f"Could not download {shown}: {detail}.", hint) from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, resets, bad URLs
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        detail = _one_line(text or type(reason).__name__)  # "Connection refused", not "[Errno 111] ..."
        if isinstance(reason, TimeoutError):
            detail = f"no answer within {DOWNLOAD_TIMEOUT_S} s"
        raise ImageError(
            f"Could not download {shown}: {detail}.",
            "Check the address and your connection, or download the image and pass the file.",
        ) from None
    if not chunks:
        raise ImageError(f"{shown} returned an empty body.", "Check the link points at the image itself.")
    return b"".join(chunks)


@contextlib.contextmanager
def _pillow_settings() -> Iterator[None]:
    """Let Pillow decode up to our MAX_PIXELS and refuse truncated files, then restore its settings."""
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_PIXELS, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _too_many_pixels(name: str, size: tuple[int, int] | None) -> ImageError:
    """Refusal for images over MAX_PIXELS: decoding them could exhaust memory."""
    what = f"is {size[0]}x{size[1]} pixels, over" if size else "is over"
    limit = f"the {MAX_PIXELS // 1_000_000}-megapixel limit"
    return ImageError(
        f"{name} {what} {limit}, so it was refused as a possible decompression bomb.",
        "If the image is genuine, downscale it with an image editor and try again.",
    )


def _decode(data: bytes, name: str, remote: bool, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Check the header, decode the first frame at reduced scale, orient, downscale, make RGB."""
    damaged = ImageError(f"{name} is damaged or incomplete.", "Re-download or re-export the image.")
    with _pillow_settings():
        try:
            img: Image.Image = Image.open(io.BytesIO(data))  # reads only the header
        except Image.DecompressionBombError:
            raise _too_many_pixels(name, None) from None
        except Exception:  # noqa: BLE001 - Pillow's plugins raise many types; all mean "unreadable"
            if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
                raise damaged from None
            hint = (
                "Make sure the link points at the image itself, not a web page showing it."
                if remote
                else "Convert it to JPEG or PNG (e.g. iPhone HEIC photos) and try again."
            )
            message = f"{name} is not an image Pillow can read (supported: {_SUPPORTED})."
            raise ImageError(message, hint) from None
        width, height = original_size = img.size
        if width * height > MAX_PIXELS:
            raise _too_many_pixels(name, original_size)
        if min(width, height) < MIN_SIDE:
            raise ImageError(
                f"{name} is only {width}x{height} pixels; BLIP-2 needs at least {MIN_SIDE}x{MIN_SIDE}.",
                "Use a larger image.",
            )
        try:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2..1/8 scale, bounding memory
            img.load()  # first frame of an animation
        except Image.DecompressionBombError:
            raise _too_many_pixels(name, original_size) from None
        except MemoryError:
            message = f"{name} is too large to decode in the available memory."
            raise ImageError(message, "Downscale it with an image editor first.") from None
        except Exception:  # noqa: BLE001 - truncation, bad CRCs, broken streams: all mean damaged
            raise damaged from None
    with contextlib.suppress(Exception):  # broken EXIF only loses the rotation
        ImageOps.exif_transpose(img, in_place=True)
    if img.mode in ("P", "PA", "1") or "transparency" in img.info:
        img = _to_rgb(img)  # palettes and colour keys do not survive resampling
    return _to_rgb(_downscale(img, max_side)), original_size


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longest side is `max_side`, keeping aspect ratio (short side >= MIN_SIDE)."""
    width, height = img.size
    if max(width, height) <= max_side:
        return img
    scale = max_side / max(width, height)
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency over white, high-bit grey scaled to 8 bits."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_bit_to_l(img)
    if img.mode == "La":
        img = img.convert("LA")
    palette_alpha = img.mode == "P" and img.palette is not None and img.palette.mode.endswith("A")
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info or palette_alpha:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img.convert("RGBA"))
        return background.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit "L" by scaling, not clipping (65535 -> 255)."""
    import numpy as np  # lazy: only these rare modes need it

    values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535):
        values = values / 257.0  # 16-bit range
    elif img.mode == "F" and low >= 0 and high <= 1:
        values = values * 255.0  # normalised floats
    elif low < 0 or high > 255:
        values = (values - low) * (255.0 / (high - low))  # unknown range: stretch
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
