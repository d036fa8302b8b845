"""Memory bounds of `load_image` for huge pictures that need converting, and PNGs with too much metadata.

A picture much larger than the size it is shrunk to, in a mode converted pixel by pixel (high-bit grey,
palettes and colour keys, alpha), is converted and box-averaged a strip of rows at a time, so the peak is
the decoded picture plus one strip, not several full-size copies. The values are checked against a numpy
reference (scale to 8 bits or composite over white, box-average, then the same final Lanczos step), the
structure by watching the strips being reduced, and the peak in a subprocess. A PNG whose text or colour
profile decompresses past Pillow's limit is named for what it is, not "damaged".
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from chatbot import images
from chatbot.errors import ImageError
from chatbot.images import load_image

REPO = Path(__file__).resolve().parents[1]
# 601x452 shrunk to at most 64 pixels a side: factor 601 // (3 * 64) = 3, with a partial box on the right
# (601 = 3 * 200 + 1) and, with 30-row strips, a last strip of 2 rows (452 = 15 * 30 + 2).
WIDTH, HEIGHT, MAX_SIDE, FACTOR, ROWS = 601, 452, 64, 3, 30


# --- independent references --------------------------------------------------------------------------------


def _box_average(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each factor x factor box; the boxes at the right and bottom edges over the pixels there are."""
    starts_y, starts_x = range(0, values.shape[0], factor), range(0, values.shape[1], factor)
    sums = np.add.reduceat(np.add.reduceat(values.astype(np.float64), starts_y, axis=0), starts_x, axis=1)
    ones = np.ones(values.shape[:2])
    counts = np.add.reduceat(np.add.reduceat(ones, starts_y, axis=0), starts_x, axis=1)
    return sums / (counts if values.ndim == 2 else counts[..., None])


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return rgb.astype(np.float64) * a + 255.0 * (1.0 - a)


def _reference(eight_bit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-average the 8-bit (float) picture by FACTOR, round, then Pillow's Lanczos to `size`, as RGB."""
    reduced = np.clip(np.rint(_box_average(eight_bit, FACTOR)), 0, 255).astype(np.uint8)
    shrunk = Image.fromarray(reduced).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(shrunk.convert("RGB")).astype(np.int16)


# --- the pictures: (what to save, how, its 8-bit picture over white) ---------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _gradient() -> np.ndarray:
    """Rows whose range changes down the picture: scaling each strip by its own range would show."""
    return np.arange(HEIGHT)[:, None] * np.ones((1, WIDTH))


def _i16() -> tuple[Image.Image, str, np.ndarray]:
    values = _rng().integers(0, 20000, (HEIGHT, WIDTH)) + (_gradient() * 100).astype(np.int64)
    values = values.astype(np.uint16)
    return Image.fromarray(values), "png", np.rint(values / 257.0)


def _i32() -> tuple[Image.Image, str, np.ndarray]:
    values = _rng().integers(-3000, 3000, (HEIGHT, WIDTH)) + (_gradient() * 200).astype(np.int64)
    values = values.astype(np.int32)
    low, high = values.min(), values.max()  # outside 0..65535: stretched to 0..255
    return Image.fromarray(values, "I"), "tif", np.rint((values - low) * (255.0 / (high - low)))


def _float() -> tuple[Image.Image, str, np.ndarray]:
    values = (_rng().random((HEIGHT, WIDTH)) * 0.5 + _gradient() / HEIGHT * 0.5).astype(np.float32)
    values[::37, ::41] = np.nan  # no number: 0
    return Image.fromarray(values, "F"), "tif", np.rint(np.nan_to_num(values, nan=0.0) * 255.0)


def _rgba() -> tuple[Image.Image, str, np.ndarray]:
    pixels = _rng().integers(0, 256, (HEIGHT, WIDTH, 4)).astype(np.uint8)
    pixels[:100, :, 3] = 0  # a transparent band, whatever colour it hides
    return Image.fromarray(pixels, "RGBA"), "png", _over_white(pixels[..., :3], pixels[..., 3])


def _palette(alphas: bytes | None) -> tuple[Image.Image, str, np.ndarray]:
    palette = _rng().integers(0, 256, (16, 3)).astype(np.uint8)
    indices = (_rng().integers(0, 16, (HEIGHT, WIDTH))).astype(np.uint8)
    img = Image.fromarray(indices, "P")
    img.putpalette(palette.ravel().tolist())
    table = np.frombuffer(alphas, np.uint8) if alphas else np.full(16, 255, np.uint8)
    if alphas is None:
        img.info["transparency"] = 5  # one colour key
        table[5] = 0
    else:
        img.info["transparency"] = alphas  # PNG tRNS: an alpha per palette entry
    return img, "png", _over_white(palette[indices], table[indices])


def _colour_key() -> tuple[Image.Image, str, np.ndarray]:
    pixels = _rng().integers(0, 4, (HEIGHT, WIDTH, 3)).astype(np.uint8) * 60
    img = Image.fromarray(pixels, "RGB")
    img.info["transparency"] = (60, 120, 0)
    hidden = np.all(pixels == (60, 120, 0), axis=2)
    return img, "png", _over_white(pixels, np.where(hidden, 0, 255))


PICTURES: dict[str, Callable[[], tuple[Image.Image, str, np.ndarray]]] = {
    "I;16": _i16,
    "I": _i32,
    "F": _float,
    "RGBA": _rgba,
    "P-key": lambda: _palette(None),
    "P-tRNS": lambda: _palette(bytes(range(0, 256, 16))),
    "RGB-key": _colour_key,
}


def _save(img: Image.Image, fmt: str, path: Path) -> Path:
    kwargs: dict[str, Any] = {}
    if "transparency" in img.info:
        kwargs["transparency"] = img.info["transparency"]
    img.save(path, compression="tiff_adobe_deflate") if fmt == "tif" else img.save(path, **kwargs)
    return path


@pytest.fixture
def reduced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, int], int]]:
    """Every Image.reduce call, as (mode, size, factor), with the strips ROWS rows high; reduce still runs."""
    calls: list[tuple[str, tuple[int, int], int]] = []
    original = Image.Image.reduce

    def watched(self: Image.Image, factor: Any, box: Any = None) -> Image.Image:
        calls.append((self.mode, self.size, factor))
        return original(self, factor, box)

    monkeypatch.setattr(Image.Image, "reduce", watched)
    monkeypatch.setattr(images, "_STRIP_PIXELS", WIDTH * FACTOR * (ROWS // FACTOR))
    return calls


# --- values and structure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PICTURES))
def test_a_large_picture_is_converted_and_reduced_in_strips(
    tmp_path: Path, reduced: list[tuple[str, tuple[int, int], int]], kind: str
) -> None:
    img, fmt, eight_bit = PICTURES[kind]()
    path = _save(img, fmt, tmp_path / f"large.{fmt}")
    loaded = load_image(path, max_side=MAX_SIDE)
    assert loaded.original_size == (WIDTH, HEIGHT)
    assert loaded.image.mode == "RGB" and loaded.image.size == (64, 48)  # 201x151 -> 64x48

    # Structure: the whole width, ROWS rows at a time (the last 2), each already 8-bit, reduced by FACTOR.
    strips = [(WIDTH, ROWS)] * (HEIGHT // ROWS) + [(WIDTH, HEIGHT % ROWS)]
    assert [size for _, size, _ in reduced] == strips
    assert {(mode, factor) for mode, _, factor in reduced} == {("L" if kind[0] in "IF" else "RGB", FACTOR)}

    # Values: within one level of the reference (Pillow's reduce and alpha_composite round on the way).
    expected = _reference(eight_bit.astype(np.float64), loaded.image.size)
    difference = np.abs(np.asarray(loaded.image).astype(np.int16) - expected)
    assert difference.max() <= 1, f"{kind}: off by up to {difference.max()}"


def test_the_factor_leaves_the_short_side_its_minimum(
    tmp_path: Path, reduced: list[tuple[str, tuple[int, int], int]]
) -> None:
    # 2000x40 to 64 a side: 2000 // 192 = 10, but 40 // 10 = 4 pixels is under MIN_SIDE, so the factor is 5.
    path = tmp_path / "thin.png"
    Image.new("RGBA", (2000, 40), (200, 0, 0, 128)).save(path)
    loaded = load_image(path, max_side=MAX_SIDE)
    assert loaded.image.size == (64, images.MIN_SIDE)
    strips = [(size, factor) for _, size, factor in reduced if size[0] == 2000]  # then Lanczos's own (2, 1)
    assert strips == [((2000, 5), 5)] * 8
    colours = set(map(tuple, np.asarray(loaded.image).reshape(-1, 3).tolist()))
    assert colours == {(227, 127, 127)}  # half-transparent red over white: 200 * 128/255 + 255 * 127/255 = 227.4


def test_a_picture_not_much_larger_than_needed_takes_the_old_path(
    tmp_path: Path, reduced: list[tuple[str, tuple[int, int], int]]
) -> None:
    # 300x200 to 64 a side: 300 // 192 = 1, no strips. RGBA is resized, then put over white, bit for bit.
    img, _, _ = _rgba()
    img = img.crop((0, 0, 300, 200))
    path = _save(img, "png", tmp_path / "small.png")
    loaded = load_image(path, max_side=MAX_SIDE)
    shrunk = img.resize((64, 43), Image.Resampling.LANCZOS, reducing_gap=3.0)
    white = Image.new("RGBA", shrunk.size, (255, 255, 255, 255))
    white.alpha_composite(shrunk)
    assert reduced == []
    assert np.array_equal(np.asarray(loaded.image), np.asarray(white.convert("RGB")))


# --- memory ------------------------------------------------------------------------------------------------


def test_a_50_megapixel_32_bit_tiff_is_read_without_full_size_copies(tmp_path: Path) -> None:
    """Measured on Linux: 1.42 GB peak before strips (float64 copies of the whole picture), 0.33 GB after;
    the decoded picture alone is 0.2 GB. The bound, three times that, leaves room for the interpreter."""
    resource = pytest.importorskip("resource")
    del resource
    path = tmp_path / "depth.tif"
    Image.new("I", (7100, 7100), 123456).save(path, compression="tiff_adobe_deflate")
    code = (
        "import resource, sys\n"
        "from chatbot.images import load_image\n"
        f"loaded = load_image({str(path)!r})\n"
        "assert loaded.image.size == (1024, 1024), loaded.image.size\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "peak = peak // 1024 if sys.platform == 'darwin' else peak\n"  # bytes on macOS, KiB elsewhere
        # Linux's ru_maxrss keeps, across the exec, the size of the process that started this one (a test run
        # with models loaded: 1.4 GB); VmHWM is this program's own peak
        "for line in open('/proc/self/status') if sys.platform.startswith('linux') else ():\n"
        "    if line.startswith('VmHWM:'):\n"
        "        peak = int(line.split()[1])\n"
        "print(peak)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stdout.split()[-1])
    decoded_kib = 7100 * 7100 * 4 // 1024
    assert peak_kib < 3 * decoded_kib, f"peak {peak_kib / 1024:.0f} MiB"


# --- PNG metadata past Pillow's limit ------------------------------------------------------------------------


def _png(**kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _text(*pairs: tuple[str, str], itxt: bool = False) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in pairs:
        info.add_itxt(key, value, zip=True) if itxt else info.add_text(key, value, zip=True)
    return info


def _text_after_pixels() -> bytes:
    plain = _png()
    end = plain.rindex(b"IEND") - 4
    return plain[:end] + _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * 2_000_000)) + plain[end:]


BIG = "x" * 2_000_000  # compresses to a few KB, decompresses past MAX_TEXT_CHUNK (1 MiB)
METADATA = {
    "zTXt": lambda: _png(pnginfo=_text(("Comment", BIG))),
    "iTXt": lambda: _png(pnginfo=_text(("XML:com.adobe.xmp", BIG), itxt=True)),
    "iCCP": lambda: _png(icc_profile=b"\0" * 2_000_000),
    "zTXt after the pixels": _text_after_pixels,
    "text chunks past MAX_TEXT_MEMORY": lambda: _png(pnginfo=_text(*((f"C{n}", "y" * 1_000_000) for n in range(70)))),
}


@pytest.mark.parametrize("kind", list(METADATA))
def test_a_png_with_too_much_metadata_says_so(tmp_path: Path, kind: str) -> None:
    data = METADATA[kind]()
    with pytest.raises(ValueError, match="Decompressed data too large|Too much memory used in text chunks"):
        Image.open(io.BytesIO(data)).load()  # what Pillow itself raises for these files
    path = tmp_path / "meta.png"
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.message == f"{path} holds more metadata (text or a colour profile) than is safe to read."
    assert "without metadata" in info.value.hint


def test_a_png_with_modest_metadata_loads(tmp_path: Path) -> None:
    path = tmp_path / "meta.png"
    path.write_bytes(_png(pnginfo=_text(("Comment", "x" * 500_000)), icc_profile=b"\0" * 500_000))
    assert load_image(path).image.size == (16, 16)
