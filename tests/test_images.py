"""Tests for chatbot.images: every bad input becomes a one-line ImageError; good ones become RGB.

All images are built in code under tmp_path; downloads come from a local ThreadingHTTPServer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from chatbot import image_download, images
from chatbot.errors import ImageError
from chatbot.images import MIN_SIDE, LoadedImage, is_url, load_image

REPO = Path(__file__).resolve().parents[1]


def _png_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _write(path: Path, img: Image.Image, fmt: str | None = None, **kwargs: object) -> Path:
    img.save(path, fmt, **kwargs)
    return path


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports this checkout's chatbot package."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _error(source: str | os.PathLike[str], named: str | None = None) -> ImageError:
    """Load `source`, expect an ImageError naming it, with a one-line message and hint."""
    with pytest.raises(ImageError) as info:
        load_image(source)
    err = info.value
    assert (named or os.fspath(source)) in err.message
    assert "\n" not in str(err) and err.hint and err.message.endswith(".")
    return err


# --- local files: bad inputs ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.jpg")
    assert err.message == f"No file at {tmp_path / 'nope.jpg'}."
    assert "path" in err.hint


def test_empty_source() -> None:
    with pytest.raises(ImageError, match="No image path or URL"):
        load_image("  ")


def test_directory(tmp_path: Path) -> None:
    err = _error(tmp_path)
    assert "is a folder" in err.message and "describe" in err.hint


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert "is empty" in _error(tmp_path / "empty.png").message


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello, not a picture\n")
    err = _error(tmp_path / "notes.jpg")
    assert "is not an image Pillow can read (supported: JPEG, PNG" in err.message
    assert err.hint == "It holds text, not a picture: open a picture file instead."


@pytest.mark.parametrize("brand, kind", [(b"heic", "a HEIC"), (b"mif1", "a HEIC"), (b"avif", "an AVIF")])
def test_an_iphone_photo_is_named_for_what_it_is(tmp_path: Path, brand: bytes, kind: str) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic" + bytes(64))
    err = _error(path)
    assert err.message == (f"{path} is {kind} photo, which blip2-chat cannot read (supported: JPEG, PNG, WebP, GIF, "
                           "BMP, TIFF…).")
    assert err.hint.startswith("Convert it to JPEG or PNG")


def test_odd_file_name_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.jpg"
    path.write_text("not an image")
    assert "two\\nlines.jpg" in _error(path, named=str(tmp_path)).message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert _error(tmp_path / "pipe.jpg").message == f"{tmp_path / 'pipe.jpg'} is a named pipe, not a regular file."
    if os.path.exists("/dev/null"):  # named outright, as a folder scan names it (file_kinds)
        assert _error(Path("/dev/null")).message == "/dev/null is a device, not a regular file."


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_damaged(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "is damaged or incomplete" in _error(path).message


def test_truncated_refused_even_if_other_code_allows_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noise = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "damaged" in _error(path).message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # their setting is restored


@pytest.mark.parametrize("size", [(1, 1), (7, 100)])
def test_too_small(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _write(tmp_path / "dot.png", Image.new("RGB", size))
    err = _error(path)
    assert f"is only {size[0]}x{size[1]} pixels; BLIP-2 needs at least 8x8" in err.message


def test_long_thin_strip_is_not_called_small(tmp_path: Path) -> None:
    path = _write(tmp_path / "strip.png", Image.new("L", (3, 5000)))
    err = _error(path)
    assert "only" not in err.message
    assert err.message.endswith("is 3x5000 pixels: too thin to describe (each side must be at least 8 pixels).")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "secret.png", Image.new("RGB", (16, 16)))

    def deny(name: str, flags: int, *args: object) -> int:  # (root may read any file: refused here instead)
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(images.os, "open", deny)
    assert "Permission denied" in _error(path).message


def test_over_max_pixels_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_loads: list[object]
) -> None:
    path = _write(tmp_path / "bomb.png", Image.new("RGB", (200, 100)))
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    err = _error(path)
    assert "200x100 pixels" in err.message and "decompression bomb" in err.message
    assert pillow_loads == []  # refused from the header alone
    monkeypatch.setattr(images, "MAX_PIXELS", 4_000)  # more than 2x over: Pillow itself refuses at open
    assert "decompression bomb" in _error(path).message


# --- URLs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://x.org/a.jpg", True),
        ("HTTPS://x.org/a", True),
        ("  https://x/a ", True),
        ("ftp://x/a.jpg", False),
        ("file:///tmp/a.jpg", False),
        ("/tmp/http://a", False),
        ("photo.jpg", False),
    ],
)
def test_is_url(text: str, expected: bool) -> None:
    assert is_url(text) is expected


@pytest.mark.parametrize("url", ["ftp://example.com/cat.jpg", "file:///etc/passwd"])
def test_unsupported_url_scheme(url: str) -> None:
    err = _error(url)
    assert "unsupported scheme" in err.message and "http" in err.hint


GOOD_PNG = _png_bytes(Image.new("RGB", (40, 30), (200, 10, 10)))
BIG = 21 * 1024 * 1024
DRIP_BYTES = 100  # at two bytes a second: 50 s, far beyond any deadline the tests set


class _Handler(BaseHTTPRequestHandler):
    stop = threading.Event()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        try:
            if self.path == "/good.png":
                self._send(200, GOOD_PNG, {"Content-Type": "image/png", "Content-Length": str(len(GOOD_PNG))})
            elif self.path == "/redirect-good":
                self._send(302, headers={"Location": "/good.png", "Content-Length": "0"})
            elif self.path == "/redirect-ftp":
                self._send(302, headers={"Location": "ftp://127.0.0.1/x.png", "Content-Length": "0"})
            elif self.path == "/big-with-length":
                self._send(200, headers={"Content-Length": str(BIG)})
            elif self.path == "/big-streamed":  # no Content-Length: the client must count
                self._send(200, headers={"Content-Type": "image/jpeg"})
                for _ in range(BIG // (1024 * 1024)):
                    self.wfile.write(b"\0" * 1024 * 1024)
            elif self.path == "/page.html":
                self._send(200, b"<html><body><img src=cat.jpg></body></html>")
            elif self.path == "/empty":
                self._send(200)
            elif self.path == "/slow":
                self.stop.wait(10)
            elif self.path == "/drip":  # answers at once, then one byte every half second for 50 s
                self._send(200, headers={"Content-Type": "image/png", "Content-Length": str(DRIP_BYTES)})
                for _ in range(DRIP_BYTES):
                    if self.stop.wait(0.5):
                        return
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            elif self.path == "/loop":
                self._send(302, headers={"Location": "/loop", "Content-Length": "0"})
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("route", ["/good.png", "/redirect-good"])
def test_download_good(server: str, route: str) -> None:
    loaded = load_image(server + route)
    assert loaded.source == server + route
    assert loaded.sha256 == hashlib.sha256(GOOD_PNG).hexdigest()
    assert loaded.image.mode == "RGB" and loaded.image.size == loaded.original_size == (40, 30)


def test_download_404(server: str) -> None:
    assert "the server answered 404" in _error(server + "/missing.jpg").message


@pytest.mark.parametrize("route", ["/big-with-length", "/big-streamed"])
def test_download_too_large(server: str, route: str) -> None:
    assert "is larger than 20 MB" in _error(server + route).message


def test_download_web_page(server: str) -> None:
    err = _error(server + "/page.html")
    assert "is not an image Pillow can read" in err.message and "web page" in err.hint


def test_download_empty(server: str) -> None:
    assert "empty" in _error(server + "/empty").message


def test_redirect_to_ftp_refused(server: str) -> None:
    assert "not an http(s) link" in _error(server + "/redirect-ftp").message


def test_download_timeout(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_download, "DOWNLOAD_TIMEOUT_S", 0.3)
    assert "no answer within 0.3 s" in _error(server + "/slow").message


def test_download_has_a_total_deadline_not_only_one_per_read(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_download, "DOWNLOAD_TIMEOUT_S", 1)
    start = time.monotonic()
    err = _error(server + "/drip")
    assert time.monotonic() - start < 15  # the drip never pauses 1 s, so a per-read timeout waits 50 s
    assert err.message == f"Downloading {server}/drip took longer than 1 s, so it was stopped."
    assert "try again later" in err.hint


def test_download_can_be_cancelled(server: str) -> None:
    start = time.monotonic()
    asked: list[float] = []

    def cancel() -> bool:
        asked.append(time.monotonic())
        return asked[-1] - start > 0.3

    with pytest.raises(ImageError) as info:
        load_image(server + "/drip", cancel=cancel)
    assert info.value.message == f"Stopped opening {server}/drip."
    assert time.monotonic() - start < 10  # well before the 15 s deadline and the 50 s drip
    assert len(asked) > 1  # asked while the download was under way, not only before it


def test_download_not_cancelled_completes(server: str) -> None:
    loaded = load_image(server + "/good.png", cancel=lambda: False)
    assert loaded.sha256 == hashlib.sha256(GOOD_PNG).hexdigest()


def test_download_cancelled_before_it_starts_fetches_nothing(server: str) -> None:
    with pytest.raises(ImageError, match="^Stopped opening"):
        load_image(server + "/good.png", cancel=lambda: True)


def test_redirect_loop_is_one_clean_line(server: str) -> None:
    err = _error(server + "/loop")
    assert err.message == f"Could not download {server}/loop: it redirects in a loop or too many times."
    assert "\\n" not in str(err) and "infinite loop" not in str(err)


def test_server_reason_is_one_visible_line() -> None:
    assert image_download.one_line("Not\r\n  Found\x1b[2J") == "Not Found\\x1b[2J"


def test_download_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "Could not download" in _error(f"http://127.0.0.1:{port}/a.jpg").message


# --- decoding good images ---------------------------------------------------------------------------------


def _px(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _load(path: Path, **kwargs: int) -> LoadedImage:
    loaded = load_image(path, **kwargs)
    assert loaded.image.mode == "RGB"
    return loaded


def test_sha256_source_and_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "a.png", Image.new("RGB", (20, 10), (1, 2, 3)))
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = _load(Path("~/a.png"))
    assert loaded.source == str(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_image("~/a.png").sha256 == loaded.sha256


def test_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    loaded = _load(_write(tmp_path / "o.jpg", img, exif=exif, quality=95))
    assert loaded.original_size == (40, 20) and loaded.image.size == (20, 40)
    red, _, blue = _px(loaded.image, (10, 5))  # the left half is now on top
    assert red > 200 and blue < 50


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_over_white(tmp_path: Path, fmt: str) -> None:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.paste(1, (8, 0, 16, 16))
    image = _load(_write(tmp_path / f"p.{fmt.lower()}", img, fmt, transparency=0)).image
    assert _px(image, (0, 0)) == (255, 255, 255)
    assert _px(image, (12, 5)) == (10, 200, 30)


def test_rgba_over_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    img.paste((255, 0, 0, 255), (8, 0, 16, 8))
    img.paste((0, 0, 0, 128), (8, 8, 16, 16))
    image = _load(_write(tmp_path / "a.png", img)).image
    assert _px(image, (0, 0)) == (255, 255, 255)
    assert _px(image, (12, 4)) == (255, 0, 0)
    assert all(abs(c - 127) <= 2 for c in _px(image, (12, 12)))


def test_gray_alpha_over_white(tmp_path: Path) -> None:
    image = _load(_write(tmp_path / "la.png", Image.new("LA", (10, 10), (0, 0)))).image
    assert _px(image, (5, 5)) == (255, 255, 255)


def test_cmyk(tmp_path: Path) -> None:
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    img.paste((0, 255, 255, 0), (0, 0, 8, 16))  # red on the left
    image = _load(_write(tmp_path / "c.jpg", img, quality=95)).image
    r, g, b = _px(image, (2, 8))
    assert r > 200 and g < 60 and b < 60
    assert min(_px(image, (13, 8))) > 230


def test_16bit_gray_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.zeros((10, 30), dtype=np.uint16)
    values[:, 10:20], values[:, 20:] = 32768, 65535
    path = _write(tmp_path / "g16.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    image = _load(path).image
    assert _px(image, (5, 5)) == (0, 0, 0)
    assert all(abs(c - 128) <= 1 for c in _px(image, (15, 5)))
    assert _px(image, (25, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("I", 65535, 255),
        ("I;16B", 257 * 100, 100),
        ("F", 1.0, 255),
        ("F", 0.5, 128),
        ("L", 77, 77),
        ("1", 1, 255),
        ("YCbCr", (128, 128, 128), 128),
        ("LAB", (255, 128, 128), 255),
        ("HSV", (0, 0, 255), 255),
        ("PA", (0, 0), 255),
        ("La", (0, 0), 255),
        ("RGBa", (0, 0, 0, 0), 255),
    ],
)
def test_every_mode_becomes_rgb(mode: str, value: float | tuple[int, ...], expected: int) -> None:
    img = Image.new(mode, (10, 10), value)
    if mode in ("I", "F"):
        img.putpixel((0, 0), 0)  # a real range, not a constant
    out = images._to_rgb(img)
    assert out.mode == "RGB"
    assert all(abs(c - expected) <= 2 for c in _px(out, (5, 5)))


FORMATS = ["GIF", "PNG"] + (["WEBP"] if features.check("webp") else [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_animated_uses_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    assert _px(_load(path).image, (8, 8)) == (255, 0, 0)


def test_downscale_keeps_aspect_ratio(tmp_path: Path) -> None:
    loaded = _load(_write(tmp_path / "wide.png", Image.new("RGB", (3000, 1500), (9, 9, 9))), max_side=512)
    assert loaded.image.size == (512, 256) and loaded.original_size == (3000, 1500)
    strip = _load(_write(tmp_path / "strip.png", Image.new("L", (4000, 8))), max_side=512)
    assert strip.image.size == (512, MIN_SIDE)
    small = _load(_write(tmp_path / "small.png", Image.new("RGB", (300, 200))))
    assert small.image.size == (300, 200)


def test_huge_jpeg_loads_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    big = Image.new("RGB", (12000, 8400), (90, 140, 200))
    big.paste((250, 250, 0), (0, 0, 6000, 4200))
    big.save(path, quality=10)
    del big
    script = (
        "import json, resource, sys, warnings\n"
        "from chatbot.images import load_image\n"
        "warnings.simplefilter('error')\n"  # no DecompressionBombWarning for a 100 MP photo
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "loaded = load_image(sys.argv[1], max_side=1024)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'size': loaded.image.size, 'orig': loaded.original_size,\n"
        "                  'mb': (after - before) / 1024, 'px': loaded.image.getpixel((10, 10))}))\n"
    )
    done = _run_python(script, str(path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["orig"] == [12000, 8400] and result["size"] == [1024, 717]
    assert result["mb"] < 150, result  # a full decode needs ~300 MB
    assert result["px"][0] > 200 and result["px"][2] < 80


def test_pillow_settings_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # stricter than ours: must not get in the way
    paths = [_write(tmp_path / f"{i}.png", Image.new("RGB", (64, 64), (i, i, i))) for i in range(8)]
    results: list[LoadedImage] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads = [threading.Thread(target=lambda p=p: results.append(load_image(p))) for p in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 8
    assert Image.MAX_IMAGE_PIXELS == 100 and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_import_does_not_pull_torch() -> None:
    code = "import sys, chatbot.images; assert 'torch' not in sys.modules, 'torch imported'"
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
