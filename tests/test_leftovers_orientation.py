"""A picture's EXIF orientation is applied after it is shrunk, not to a full-size copy first: the model sees the
same picture as when the whole picture was turned first (same size, pixels within rounding), for every
orientation 1-8, and a huge PNG is loaded without a second full-size copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from chatbot import images
from chatbot.images import load_image

REPO = Path(__file__).resolve().parents[1]
MAX_SIDE = 48
ORIENTATION = 0x0112


def _picture(mode: str) -> Image.Image:
    """Smooth colours with marks that tell every corner from the others (a turn or a flip shows)."""
    x, y = np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 203))
    rgb = np.stack([x * 255, y * 255, (1 - x) * 180], axis=-1).astype(np.uint8)
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 90, 50), fill=(250, 20, 20))  # top left
    draw.ellipse((220, 140, 300, 202), fill=(20, 20, 20))  # bottom right
    if mode == "RGBA":
        alpha = Image.fromarray((np.clip(x * 400, 60, 255)).astype(np.uint8))
        img.putalpha(alpha)
    return img


def _turned_first(path: Path) -> Image.Image:
    """What `load_image` returned before: the whole decoded picture turned (ImageOps.exif_transpose), then
    reduced, shrunk and made RGB by the same steps. (Pillow 13 turns a TIFF itself while decoding it; the
    TIFF cases then check that it is turned once, not twice.)"""
    with Image.open(path) as img:
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        factor = images._strip_factor(img, MAX_SIDE)
        if factor >= 2:
            img = images._reduce_in_strips(img, factor)
        elif img.mode in ("P", "PA", "1") or "transparency" in img.info:
            img = images._to_rgb(img)
        return images._to_rgb(images._downscale(img, MAX_SIDE))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("TIFF", "RGB"), ("JPEG", "RGB"), ("PNG", "RGBA")])
def test_each_orientation_gives_the_picture_turned_first_gave(tmp_path: Path, orientation: int, fmt: str,
                                                              mode: str) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / f"picture.{fmt.lower()}"
    _picture(mode).save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(path) as check:
        assert check.getexif()[ORIENTATION] == orientation  # the file says it, as a camera's would
    loaded = load_image(path, max_side=MAX_SIDE).image
    expected = _turned_first(path)
    assert loaded.mode == "RGB"
    assert abs(loaded.width - expected.width) <= 1 and abs(loaded.height - expected.height) <= 1
    turned = orientation >= 5  # 5-8 swap the sides
    assert (loaded.width < loaded.height) == turned
    ours = np.asarray(loaded.resize(expected.size)).astype(np.int16)
    theirs = np.asarray(expected).astype(np.int16)
    assert np.abs(ours - theirs).mean() < 1.5
    assert np.percentile(np.abs(ours - theirs), 99) <= 24  # edges resampled in the other order, at most


def test_the_loaded_picture_carries_no_orientation_to_apply_again(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "turned.png"
    _picture("RGB").save(path, exif=exif)
    loaded = load_image(path, max_side=MAX_SIDE).image
    assert loaded.getexif().get(ORIENTATION, 1) == 1
    assert ImageOps.exif_transpose(loaded).size == loaded.size


def test_a_huge_png_with_an_orientation_is_turned_without_a_full_size_copy(tmp_path: Path) -> None:
    """Measured on Linux: 10000x8000 RGB (305 MiB decoded, as Pillow keeps 4 bytes a pixel), 0.69 GB peak when
    the picture was turned first; with the turn made on the shrunk picture, the decoded picture and change."""
    pytest.importorskip("resource")
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM (this process's own peak) is Linux's")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "huge.png"
    picture = Image.new("RGB", (10000, 8000), (10, 120, 200))
    picture.paste((250, 20, 20), (0, 0, 5000, 4000))
    picture.save(path, exif=exif, compress_level=1)
    del picture
    code = (
        "from chatbot.images import load_image\n"
        f"loaded = load_image({str(path)!r})\n"
        "print(*loaded.image.size, loaded.image.getpixel((800, 10)))\n"
        "print(next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, peak = done.stdout.splitlines()
    assert first == "819 1024 (250, 20, 20)"  # turned a quarter clockwise: the red top left is now top right
    decoded_kib = 10000 * 8000 * 4 // 1024
    assert int(peak) < 1.5 * decoded_kib, f"peak {int(peak) / 1024:.0f} MiB"
