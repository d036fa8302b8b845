"""Hostile image files: crafted headers, damaged streams and random bytes.

Whatever a file holds, `load_image` returns an RGB image or raises an `ImageError` whose message is
one true line, and nothing a library prints (Pillow's warnings, libtiff's C-level complaints)
reaches the terminal. Files are built in code; nothing depends on where the temporary files live.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from chatbot import images
from chatbot.errors import ImageError
from chatbot.images import LoadedImage, load_image
from chatbot.untrusted import visible

REPO = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width`x`height` RGB pixels but holds almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(buf, "PNG")
    return buf.getvalue()


def _ico(embedded_png: bytes) -> bytes:
    """A Windows icon whose one directory entry says 256x256, whatever the embedded PNG declares."""
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(embedded_png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + embedded_png


def _icns(embedded_png: bytes) -> bytes:
    """A macOS icon with one 'ic08' (256x256) element, whatever the embedded PNG declares."""
    element = b"ic08" + struct.pack(">I", 8 + len(embedded_png)) + embedded_png
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


CONTAINERS = {"ico": _ico, "icns": _icns}


def _error(path: Path) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path)
    err = info.value
    assert "\n" not in str(err) and visible(str(err)) == str(err)
    return err


# --- sizes: the message states the size that was refused ----------------------------------------------


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_embedded_picture_over_the_limit_names_its_declared_size(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"icon.{kind}"
    path.write_bytes(CONTAINERS[kind](_png_header_only(30000, 30000)))
    err = _error(path)
    assert "declares an image of 30000x30000 pixels, over the 200-megapixel limit" in err.message
    assert "256x256" not in err.message  # the icon's own header size is not what was refused


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_embedded_picture_over_the_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, pillow_loads: list[object]
) -> None:
    # The icon's 256x256 is within the limit; the 400x300 inside is between the limit and twice it,
    # where Pillow only warns: it must still be refused, and before it is decoded.
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    path = tmp_path / f"icon.{kind}"
    path.write_bytes(CONTAINERS[kind](_png(400, 300)))
    assert "declares an image of 400x300 pixels, over the 0.1-megapixel limit" in _error(path).message
    assert pillow_loads == []


def test_header_over_twice_the_limit_names_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(30000, 30000))
    assert "declares an image of 30000x30000 pixels" in _error(path).message


def test_many_pixels_on_a_thin_strip_is_called_thin(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    path.write_bytes(_png_header_only(1, 83886338))  # 84 megapixels, one pixel wide
    err = _error(path)
    assert err.message == f"{path} is 1x83886338 pixels: too thin to describe (each side must be at least 8 pixels)."


# --- flat pictures and what follows decoding ------------------------------------------------------------


def _tiff(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    return buf.getvalue()


# (mode, the one value every pixel holds, the grey it must become). A flat picture outside the 8-bit,
# 16-bit and 0..1 ranges has no range to place its value in (a blank depth map): it is drawn mid grey.
FLAT = [
    ("I", 70000, 128),
    ("I", -3, 128),
    ("F", -1.0, 128),
    ("F", 1e30, 128),
    ("I", 40000, 156),  # 16-bit range: 40000 / 257 = 155.6
    ("F", 0.5, 128),  # 0..1 floats: 0.5 * 255 = 127.5, rounded to even
    ("F", float("nan"), 0),  # no number at all: black
]


@pytest.mark.parametrize(("mode", "value", "grey"), FLAT)
def test_a_flat_high_bit_tiff_is_one_grey(tmp_path: Path, mode: str, value: float, grey: int) -> None:
    path = tmp_path / "flat.tif"
    path.write_bytes(_tiff(Image.new(mode, (64, 64), value)))
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (64, 64)
    assert np.array_equal(np.asarray(loaded.image), np.full((64, 64, 3), grey, dtype=np.uint8))


def test_a_flat_high_bit_tiff_in_a_large_picture_is_downscaled(tmp_path: Path) -> None:
    path = tmp_path / "depth.tif"
    path.write_bytes(_tiff(Image.new("F", (1500, 600), -1.0)))
    loaded = load_image(path, max_side=300)
    assert loaded.original_size == (1500, 600) and loaded.image.size == (300, 120)
    assert set(np.asarray(loaded.image).ravel().tolist()) == {128}


@pytest.mark.parametrize("failure", [ZeroDivisionError, ValueError, OSError, TypeError])
def test_a_failure_after_decoding_is_an_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    # Whatever a conversion after decoding raises on odd data becomes the one "damaged" sentence.
    def broken(img: Image.Image) -> Image.Image:
        raise failure("odd data")

    monkeypatch.setattr(images, "_high_bit_to_l", broken)
    path = tmp_path / "depth.tif"
    path.write_bytes(_tiff(Image.new("I", (64, 64), 70000)))
    err = _error(path)
    assert err.message == f"{path} is damaged or incomplete."


def test_running_out_of_memory_while_converting_is_an_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(img: Image.Image, max_side: int) -> Image.Image:
        raise MemoryError

    monkeypatch.setattr(images, "_downscale", exhausted)
    path = tmp_path / "photo.png"
    path.write_bytes(_png(40, 30))
    assert _error(path).message == f"{path} is too large to convert in the available memory."


def test_a_nul_in_a_path_is_one_sentence(tmp_path: Path) -> None:
    # A session file's image source, or `/image a\0b` typed in the plain chat.
    err = _error(tmp_path / "a\0b.png")
    assert err.message == f"{tmp_path}/a\\x00b.png is not a usable file name (it holds a NUL character)."


# --- library noise --------------------------------------------------------------------------------------


def _damaged_tiff() -> bytes:
    """A deflate-compressed TIFF whose compressed strip is garbled: libtiff complains on fd 2."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "TIFF", compression="tiff_deflate")
    data = bytearray(buf.getvalue())
    for i in range(200, len(data) - 300, 7):
        data[i] ^= 0x5A
    return bytes(data)


def _truncated_tiff() -> bytes:
    """Half of a deflate-compressed TIFF: Pillow warns about corrupt EXIF, libtiff about the data."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "TIFF", compression="tiff_deflate")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


NOISY = {
    "damaged.tif": _damaged_tiff,
    "truncated.tif": _truncated_tiff,
    "wrong-size.ico": lambda: _ico(_png(40, 30)),  # Pillow: UserWarning "Image was not the expected size"
}


@pytest.mark.skipif(not features.check("libtiff"), reason="needs Pillow built with libtiff")
def test_library_noise_never_reaches_stderr(tmp_path: Path) -> None:
    for name, make in NOISY.items():
        (tmp_path / name).write_bytes(make())
    script = (
        "import os, sys\n"
        "from chatbot.errors import ImageError\n"
        "from chatbot.images import load_image\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        print('image', load_image(path).image.size)\n"
        "    except ImageError as e:\n"
        "        print('error', e.message)\n"
        "os.write(2, b'fd 2 is back\\n')\n"  # silenced only while decoding, restored after errors too
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    cmd = [sys.executable, "-c", script, *(str(tmp_path / name) for name in NOISY)]
    done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "fd 2 is back\n"
    outcomes = done.stdout.splitlines()
    assert outcomes[0].startswith("error") and "damaged.tif is damaged or incomplete." in outcomes[0]
    assert outcomes[1].startswith("error") and "truncated.tif" in outcomes[1]
    assert outcomes[2] == "image (40, 30)"


@pytest.mark.skipif(not features.check("libtiff"), reason="needs Pillow built with libtiff")
def test_stderr_descriptor_restored_after_a_failed_tiff(tmp_path: Path) -> None:
    path = tmp_path / "damaged.tif"
    path.write_bytes(_damaged_tiff())
    before = os.fstat(2)
    assert "is damaged or incomplete" in _error(path).message
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


# --- any bytes at all -----------------------------------------------------------------------------------


def _seed(fmt: str, **kwargs: object) -> bytes:
    noise = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, fmt, **kwargs)
    return buf.getvalue()


# Real small files of each format, to cut short, garble and extend: random bytes alone rarely get
# past the first check of a decoder, these reach the deeper code.
SEEDS = [
    _seed("JPEG"),
    _seed("PNG"),
    _seed("GIF"),
    _seed("BMP"),
    _seed("TIFF", compression="tiff_deflate"),
    _seed("TIFF"),
    _seed("ICO"),
    _seed("PPM"),
    *([_seed("WEBP")] if features.check("webp") else []),
]


@st.composite
def _hostile_bytes(draw: st.DrawFn) -> bytes:
    """A real file, whole or cut at a random place, with a few bytes changed and random bytes after it."""
    seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed[: draw(st.one_of(st.just(len(seed)), st.integers(0, len(seed))))])
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data) + draw(st.binary(max_size=512))


def _peak_rss_mb() -> float:
    import resource  # Unix only; the test is skipped elsewhere

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(sys.platform == "win32", reason="peak memory is read with the resource module")
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=2048), _hostile_bytes()))
def test_any_bytes_give_an_image_or_an_image_error(data: bytes) -> None:
    # With the limit at 4 megapixels no declared size can make a decoder allocate much.
    with mock.patch.object(images, "MAX_PIXELS", 4_000_000), tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.bin"
        path.write_bytes(data)
        start, peak = time.monotonic(), _peak_rss_mb()
        try:
            loaded: LoadedImage | ImageError = load_image(path, max_side=256)
        except ImageError as e:
            loaded = e
        assert time.monotonic() - start < 20
        assert _peak_rss_mb() - peak < 300
    if isinstance(loaded, ImageError):
        assert loaded.message.endswith(".") and loaded.hint
        assert "\n" not in str(loaded) and visible(str(loaded)) == str(loaded)
    else:
        assert loaded.image.mode == "RGB" and max(loaded.image.size) <= 256


@pytest.mark.parametrize(("mode", "value", "grey", "suffix"), [
    ("I;16", 40000, 156, ".png"),  # 40000 / 257, rounded
    ("I;16", 40000, 156, ".tif"),
    ("I", 70000, 128, ".tif"),  # one value outside any known range: mid grey
    ("F", 0.5, 128, ".tif"),
])
def test_a_high_bit_picture_shrunk_a_lot_is_read(tmp_path: Path, mode: str, value: float, grey: int,
                                                 suffix: str) -> None:
    """An 8000x6000 16-bit PNG was "damaged": Pillow's reduce(), which a shrink of 6x or more uses, refuses
    16-bit grey. The same shrink at a small size: 600x400 to at most 64 pixels a side."""
    path = tmp_path / f"deep{suffix}"
    Image.new(mode, (600, 400), value).save(path)
    loaded = load_image(path, max_side=64)
    assert loaded.image.size == (64, 43) and loaded.image.mode == "RGB"
    assert np.array_equal(np.asarray(loaded.image), np.full((43, 64, 3), grey, dtype=np.uint8))
