"""Load one image from a path or an http(s) URL into a small RGB picture BLIP-2 can use.

Every bad input becomes an `ImageError` with a one-line message and a hint; no raw
Pillow or OS exception escapes, and nothing a library prints reaches the terminal.
No torch here: front ends import this module cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import ExifTags, Image, ImageFile, TiffImagePlugin

from chatbot.errors import ImageError
from chatbot.file_kinds import not_regular_words
from chatbot.image_download import download, is_address, is_url, one_line, public_url
from chatbot.untrusted import visible

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_SIDE = 8  # pixels; smaller images carry nothing to describe
# What counts as an image file where only a name is known: a folder's files for `describe`, the file
# picker's list, a path pasted into the chat. (A file named outright is tried whatever its suffix.)
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".ico",
})
MAX_PIXELS = 200_000_000  # refuse above this as a likely decompression bomb
# A local file larger than this is refused before a byte of it is read (downloads stop at 20 MB, see
# image_download). Real photos are far smaller: a 100-megapixel camera's JPEG is ~50 MB, and even a
# 40-megapixel 16-bit RGB TIFF, uncompressed, is ~240 MB. So 256 MB takes any real photo, while a huge
# file named .png (or named by an imported session) is not read into memory only to be refused by Pillow.
MAX_IMAGE_BYTES = 256 * 1024 * 1024

_SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF…"
# Files that start like a known image format but fail to open are damaged, not "not an image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
# Serialises our temporary changes to process-wide state while decoding: Pillow's module settings,
# the warnings filters, and file descriptor 2 while libtiff might write to it.
_PIL_LOCK = threading.Lock()
# Opening a named pipe put where a picture was (after the check) must not wait for a writer.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)
# Pillow's PNG reader refuses a zTXt/iTXt text chunk or an iCCP colour profile that decompresses past
# PngImagePlugin.MAX_TEXT_CHUNK, and text chunks past MAX_TEXT_MEMORY in all, with a ValueError saying so.
_METADATA_REFUSALS = ("Decompressed data too large", "Too much memory used in text chunks")
# About how many source pixels one strip of `_reduce_in_strips` holds: a few megabytes each way.
_STRIP_PIXELS = 2_000_000


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for the model, with where it came from and a hash of its bytes."""

    image: Image.Image  # RGB, already downscaled if it was very large
    sha256: str  # hex sha256 of the source bytes (the file or the downloaded body)
    source: str  # absolute path as a string, or the URL as given
    original_size: tuple[int, int]  # (width, height) before any downscaling/orientation


def load_image(
    source: str | os.PathLike[str], *, max_side: int = 1024, cancel: Callable[[], bool] | None = None
) -> LoadedImage:
    """Read, check and decode an image; downscale so its longest side is at most `max_side`.

    `cancel`, when given, is asked between reads of a download (and while one waits for the
    server); once it returns True the download stops with "Stopped opening <url>.", so a front end
    can let the user give up on a slow link (Esc, quit) without waiting for the timeout.
    """
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}, got {max_side}")
    if not os.fspath(source).strip():
        raise ImageError("No image path or URL was given.", "Pass an image file's path or an http(s) link.")
    if isinstance(source, str) and is_address(source):
        url = source.strip()
        if not is_url(url):
            scheme = url.split(":", 1)[0]
            raise ImageError(
                f"{visible(public_url(url))} uses the unsupported scheme '{visible(scheme)}'.",
                "Use an http:// or https:// link, or pass the path of a local file.",
            )
        name, data, remote = url, download(url, cancel), True
    else:
        name = recorded_source(os.fspath(source))
        data, remote = _read_file(name), False
    image, original_size = _decode(data, visible(name), remote, max_side)
    return LoadedImage(image, hashlib.sha256(data).hexdigest(), name, original_size)


def recorded_source(source: str) -> str:
    """How `LoadedImage.source` names `source`, for a record of an image that could not be read too: an address
    (`scheme://...`) as given, but for a login in it (masked: `user:***@`), a path made absolute."""
    if not source.strip() or is_address(source):
        return public_url(source.strip())
    return os.path.abspath(os.path.expanduser(source))


def _read_file(path: str) -> bytes:
    """All bytes of a regular file, with a clear error for each way that can fail.

    Only a regular file is opened (a named pipe would wait for a writer, a device answer forever), and
    its size is checked on the opened file, before anything is read.
    """
    shown = visible(path)
    if "\0" in path:  # the OS cannot take such a name: os.stat and open raise ValueError
        raise ImageError(
            f"{shown} is not a usable file name (it holds a NUL character).",
            "Give the image's real path (if a session file named it, that file is damaged).",
        )
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(
                f"{shown} is a folder, not an image file.",
                "Pass one image file; for alt text of every image in a folder, use `blip2-chat describe FOLDER`.",
            )
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(shown, info.st_mode)
        fd = os.open(path, os.O_RDONLY | _BINARY | _NONBLOCK)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):  # swapped for something else since the check
                raise _not_regular(shown, opened.st_mode)
            if opened.st_size > MAX_IMAGE_BYTES:
                raise _too_large(shown, opened.st_size)
            data = _read_at_most(fd, MAX_IMAGE_BYTES + 1)
        finally:
            os.close(fd)
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
        detail = one_line(e.strerror or str(e))
        raise ImageError(f"Could not read {shown}: {detail}.", "Check the file and try again.") from None
    except ValueError:  # a name this system cannot encode (e.g. a lone surrogate from a session file)
        raise ImageError(
            f"{shown} is not a usable file name (this system cannot encode it).",
            "Check the path, or rename the file.",
        ) from None
    if len(data) > MAX_IMAGE_BYTES:  # it grew while it was read
        raise _too_large(shown, len(data))
    if not data:
        raise ImageError(f"{shown} is empty (0 bytes).", "Re-save or re-download the image and try again.")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    """The bytes of `fd` up to its end or `limit`, whichever comes first."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _not_regular(shown: str, mode: int) -> ImageError:
    return ImageError(f"{shown} is {not_regular_words(mode)}.", "Pass the path of an image file.")


def _too_large(shown: str, size: int) -> ImageError:
    """Refusal for a local file over MAX_IMAGE_BYTES, stating both sizes in MB."""
    mb = 1024 * 1024
    return ImageError(  # the size rounded up: 256 MB and a byte is not "256 MB, over the 256 MB limit"
        f"{shown} is {-(-size // mb):,} MB, over the {MAX_IMAGE_BYTES // mb} MB limit for an image file.",
        "Save a smaller copy (JPEG or PNG, downscaled) and pass that instead.",
    )


@contextlib.contextmanager
def quiet_decoding(tiff: bool) -> Iterator[None]:
    """Hold `_PIL_LOCK`; let Pillow decode up to our MAX_PIXELS, refuse truncated files and keep quiet.

    Pillow warns (a `UserWarning` for corrupt EXIF, an icon of the wrong size, an invalid APNG…) and
    Python would print each with its source line among our sentences; the image either decodes
    anyway or fails with an exception we word ourselves, so the warnings are dropped. libtiff writes
    its complaints ("ZIPDecode: Decoding error…") with C's fprintf straight to file descriptor 2,
    below anything Python can catch, so while a TIFF decodes that descriptor points at the null
    device. Everything is restored afterwards, errors included.
    """
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that, and it checks every size
        # a file declares, an icon's embedded picture or a GIF frame included, before allocating it:
        # half our limit makes it raise for anything over MAX_PIXELS, before any decoding.
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_PIXELS // 2, False
        try:
            with _stderr_to_devnull() if tiff else contextlib.nullcontext():
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the block, then back where it was."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to silence
        yield
        return
    try:
        with contextlib.suppress(Exception):  # anything Python had buffered goes out first
            sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _refused_size(error: BaseException) -> tuple[int, int] | None:
    """The width and height that Pillow's decompression-bomb check refused, where it can be found.

    Pillow's message gives only a pixel count, and the size it checked is not always the one the
    image reports: an ICNS icon's header says 256x256 while its embedded PNG declares 30000x30000.
    The check's own argument is the declared size that was refused, so it is read from there.
    """
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_name == "_decompression_bomb_check":
            size = frame.f_locals.get("size")
            if isinstance(size, tuple) and len(size) == 2 and all(isinstance(side, int) for side in size):
                return size[0], size[1]
    return None


def _too_many_pixels(name: str, size: tuple[int, int] | None) -> ImageError:
    """Refusal for images over MAX_PIXELS: decoding them could exhaust memory."""
    what = f"declares an image of {size[0]}x{size[1]} pixels, over" if size else "is over"
    limit = f"the {MAX_PIXELS / 1_000_000:g}-megapixel limit"
    return ImageError(
        f"{name} {what} {limit}, so it was refused as a possible decompression bomb.",
        "If the image is genuine, downscale it with an image editor and try again.",
    )


def _too_small(name: str, size: tuple[int, int], max_side: int) -> ImageError:
    """Refusal for an image with a side under MIN_SIDE: small all round, or a strip longer than
    `max_side` (the size it would be shrunk to), which has pixels enough but not the shape."""
    width, height = size
    if max(width, height) <= max_side:
        return ImageError(
            f"{name} is only {width}x{height} pixels; BLIP-2 needs at least {MIN_SIDE}x{MIN_SIDE}.",
            "Use a larger image.",
        )
    # Longer than the picture we would make of it, so not small: "only 1x83886338 pixels" is untrue.
    return ImageError(
        f"{name} is {width}x{height} pixels: too thin to describe (each side must be at least {MIN_SIDE} pixels).",
        f"Use another image, or pad this one to at least {MIN_SIDE} pixels on each side.",
    )


def _is_metadata_refusal(error: BaseException) -> bool:
    """Whether Pillow refused a PNG for the size of its text or colour profile, not for damage."""
    return isinstance(error, ValueError) and str(error).startswith(_METADATA_REFUSALS)


def _too_much_metadata(name: str) -> ImageError:
    return ImageError(
        f"{name} holds more metadata (text or a colour profile) than is safe to read.",
        "Re-save it without metadata (e.g. export a copy with metadata off) and try again.",
    )


def _not_an_image(data: bytes, name: str, remote: bool) -> ImageError:
    """Why bytes Pillow cannot open are no image, as exactly as the first bytes tell: a HEIC or AVIF photo
    (an iPhone's), text (a text file named .jpg, a web page), or something else."""
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
        kind = "an AVIF" if brand.startswith(b"avi") else "a HEIC"
        return ImageError(f"{name} is {kind} photo, which blip2-chat cannot read (supported: {_SUPPORTED}).",
                          "Convert it to JPEG or PNG (on a Mac: open it in Preview, File > Export) and try again.")
    message = f"{name} is not an image Pillow can read (supported: {_SUPPORTED})."
    if remote:
        return ImageError(message, "Make sure the link points at the image itself, not a web page showing it.")
    head = data[:512].decode("utf-8", "ignore")
    if head.strip() and all(c.isprintable() or c in "\t\r\n" for c in head):
        return ImageError(message, "It holds text, not a picture: open a picture file instead.")
    return ImageError(message, "Convert it to JPEG or PNG and try again.")


def _decode(data: bytes, name: str, remote: bool, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Check the header, decode the first frame at reduced scale, orient, downscale, make RGB."""
    damaged = ImageError(f"{name} is damaged or incomplete.", "Re-download or re-export the image.")
    with quiet_decoding(tiff=data[:4] in TiffImagePlugin.PREFIXES):
        try:
            img: Image.Image = Image.open(io.BytesIO(data))  # reads only the header
        except Image.DecompressionBombError as e:
            raise _too_many_pixels(name, _refused_size(e)) from None
        except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many types; all mean "unreadable"
            if _is_metadata_refusal(e):
                raise _too_much_metadata(name) from None
            if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
                raise damaged from None
            raise _not_an_image(data, name, remote) from None
        width, height = original_size = img.size
        if width * height > MAX_PIXELS:
            raise _too_many_pixels(name, original_size)
        if min(width, height) < MIN_SIDE:
            raise _too_small(name, original_size, max_side)
        try:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2..1/8 scale, bounding memory
            img.load()  # first frame of an animation
        except Image.DecompressionBombError as e:
            raise _too_many_pixels(name, _refused_size(e)) from None
        except MemoryError:
            message = f"{name} is too large to decode in the available memory."
            raise ImageError(message, "Downscale it with an image editor first.") from None
        except Exception as e:  # noqa: BLE001 - truncation, bad CRCs, broken streams: all mean damaged
            if _is_metadata_refusal(e):  # text chunks after the pixels are read only now
                raise _too_much_metadata(name) from None
            raise damaged from None
        # Still under the lock and quiet: EXIF parsing and mode conversions warn too.
        turn = _orientation_turn(img)  # made once the picture is shrunk: no full-size turned copy
        try:  # the picture decoded, yet its data can still defeat a conversion: damaged, not a crash
            factor = _strip_factor(img, max_side)
            if factor >= 2:
                img = _reduce_in_strips(img, factor)  # converting all of a huge picture at once needs GBs
            elif img.mode in ("P", "PA", "1") or "transparency" in img.info:
                img = _to_rgb(img)  # palettes and colour keys do not survive resampling
            elif _is_high_bit(img):
                img = _high_bit_to_l(img)  # Pillow's reduce() refuses 16-bit grey ("image has wrong mode")
            img = _to_rgb(_downscale(img, max_side))
            return (img if turn is None else _turned(img, turn)), original_size
        except MemoryError:
            message = f"{name} is too large to convert in the available memory."
            raise ImageError(message, "Downscale it with an image editor first.") from None
        except Exception:  # noqa: BLE001 - whatever Pillow or numpy raise on odd data means unusable
            raise damaged from None


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longest side is `max_side`, keeping aspect ratio (short side >= MIN_SIDE)."""
    width, height = img.size
    if max(width, height) <= max_side:
        return img
    scale = max_side / max(width, height)
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# ImageOps.exif_transpose's table: the turn or flip that shows a picture as its EXIF orientation (2-8) asks.
_ORIENTATION_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation_turn(img: Image.Image) -> Image.Transpose | None:
    """The turn or flip `img`'s orientation asks for (EXIF, else XMP, as ImageOps.exif_transpose reads it), or None.

    Read from the decoded file, since a shrunk copy keeps no TIFF tags; the turn itself is made on the shrunk
    picture (`_turned`): turning a huge PNG first made a full-size copy (800 MB for 200 megapixels). (Pillow 13
    turns a TIFF itself as it decodes it, and drops its tag: nothing is left to turn then.)
    """
    try:
        return _ORIENTATION_TURNS.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - broken EXIF only loses the rotation
        return None


def _turned(img: Image.Image, turn: Image.Transpose) -> Image.Image:
    """`img` turned by `turn`, without the orientation metadata it was turned for (nothing turns it again)."""
    turned = img.transpose(turn)
    for key in ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"):
        turned.info.pop(key, None)
    return turned


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency over white, high-bit grey scaled to 8 bits."""
    if _is_high_bit(img):
        img = _high_bit_to_l(img)
    if img.mode == "La":
        img = img.convert("LA")
    palette_alpha = img.mode == "P" and img.palette is not None and img.palette.mode.endswith("A")
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info or palette_alpha:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img.convert("RGBA"))
        return background.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _is_high_bit(img: Image.Image) -> bool:
    """16/32-bit integer or float grey: modes that resampling and RGB conversion do not take as they are."""
    return img.mode in ("I", "F") or img.mode.startswith("I;16")


def _high_bit_to_l(img: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit "L" by scaling, not clipping (65535 -> 255).

    `value_range`, when given, is the (lowest, highest) value of the whole picture `img` is a strip of,
    so that every strip is scaled as the whole picture would be.
    """
    import numpy as np  # lazy: only these rare modes need it

    values = _finite_values(img)
    if value_range is not None:
        low, high = value_range
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535):
        values = values / 257.0  # 16-bit range
    elif img.mode == "F" and low >= 0 and high <= 1:
        values = values * 255.0  # normalised floats
    elif (low < 0 or high > 255) and high == low:
        values = np.full_like(values, 128.0)  # one value and no known range to place it in: mid grey
    elif low < 0 or high > 255:
        values = (values - low) * (255.0 / (high - low))  # unknown range: stretch
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _finite_values(img: Image.Image) -> npt.NDArray[np.float64]:
    """A high-bit picture's values as float64, with NaN and infinities as 0."""
    import numpy as np

    return np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _strip_factor(img: Image.Image, max_side: int) -> int:
    """The box-average factor by which `_reduce_in_strips` should shrink `img` first; below 2: not at all.

    Only modes converted pixel by pixel before or while resampling need it (high-bit grey to 8 bits,
    palettes, colour keys and alpha over white: resizing RGBA also makes a premultiplied copy). The
    factor leaves at least 3x `max_side` for the final Lanczos step, as Pillow's own reducing_gap=3
    does, and at least MIN_SIDE pixels on the short side.
    """
    width, height = img.size
    converted = _is_high_bit(img) or "transparency" in img.info
    if not converted and img.mode not in ("P", "PA", "1", "RGBA", "LA", "La", "RGBa"):
        return 1
    return min(max(width, height) // (3 * max_side), min(width, height) // MIN_SIDE)


def _reduce_in_strips(img: Image.Image, factor: int) -> Image.Image:
    """Convert `img` to "L" (high-bit grey) or RGB and box-average it by `factor`, a strip of rows at a time.

    Why: converting a whole 200-megapixel picture first made full-size copies many times its size
    (float64 arrays for 32-bit grey, 5.5 GB; RGBA composites over white for palettes, 2.5 GB; a
    premultiplied copy to resize RGBA, 1.6 GB), and the file picker previews every file it passes.
    Strips of a multiple of `factor` rows reduce exactly as the whole picture would, so the peak is
    the decoded picture plus one strip. High-bit grey is scaled by the range of the whole picture,
    found strip by strip first.
    """
    width, height = img.size
    rows = max(1, _STRIP_PIXELS // (width * factor)) * factor
    strips = [(0, top, width, min(top + rows, height)) for top in range(0, height, rows)]
    value_range = None
    if _is_high_bit(img):
        extremes = [(float(v.min()), float(v.max())) for v in (_finite_values(img.crop(box)) for box in strips)]
        value_range = min(low for low, _ in extremes), max(high for _, high in extremes)
    out = Image.new("RGB" if value_range is None else "L", (-(-width // factor), -(-height // factor)))
    for box in strips:
        strip = img.crop(box)
        converted = _to_rgb(strip) if value_range is None else _high_bit_to_l(strip, value_range)
        out.paste(converted.reduce(factor), (0, box[1] // factor))
    return out
