"""`blip2-chat demo`'s saved picture: drawn again when the saved one is empty, damaged or another picture, written
whole or not at all, and a folder that cannot hold it is one sentence (exit 2), never a traceback."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest
from PIL import Image

from chatbot.demo import start
from chatbot.demo.start import demo_picture
from chatbot.demo.world import IMAGE_SIZE, make_scene, render
from chatbot.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _drawn(seed: int) -> Image.Image:
    return render(make_scene(seed), IMAGE_SIZE).resize((4 * IMAGE_SIZE,) * 2, Image.Resampling.NEAREST)


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _shows(path: Path, seed: int) -> bool:
    with Image.open(path) as saved:
        return saved.convert("RGB").tobytes() == _drawn(seed).tobytes()


def test_a_new_picture_is_saved_and_nothing_else(tmp_path: Path) -> None:
    path = demo_picture(tmp_path / "demo", 8)
    assert path == tmp_path / "demo" / "shapes-8.png" and _shows(path, 8)
    assert os.listdir(tmp_path / "demo") == ["shapes-8.png"]


@pytest.mark.parametrize("saved", [
    b"",  # `: > shapes-8.png`, or a save cut short before its first byte
    _png(_drawn(8))[:400],  # a save cut short
    b"not a picture at all",
    _png(_drawn(9)),  # another picture under this one's name
], ids=["empty", "cut-short", "not-a-picture", "another-picture"])
def test_a_saved_picture_that_is_not_this_one_is_drawn_again(tmp_path: Path, saved: bytes) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "shapes-8.png").write_bytes(saved)
    path = demo_picture(folder, 8)
    assert _shows(path, 8)
    assert os.listdir(folder) == ["shapes-8.png"]


def test_a_saved_picture_that_shows_this_one_is_kept_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    saved = _png(_drawn(8), compress_level=1)  # the same pixels, other bytes (as another Pillow might write)
    (folder / "shapes-8.png").write_bytes(saved)
    assert demo_picture(folder, 8).read_bytes() == saved  # a resumed chat finds the file it hashed


def _interrupted_png(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    fp.write(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")  # the start of a picture, then Ctrl+C
    raise KeyboardInterrupt


def test_ctrl_c_while_saving_leaves_no_damaged_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "demo"
    monkeypatch.setitem(Image.SAVE, "PNG", _interrupted_png)
    with pytest.raises(KeyboardInterrupt):
        demo_picture(folder, 8)
    monkeypatch.undo()
    assert os.listdir(folder) == []
    assert _shows(demo_picture(folder, 8), 8)


def test_ctrl_c_before_the_rename_leaves_the_old_file_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "shapes-8.png").write_bytes(b"old")

    def interrupted(source: object, target: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(start.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo_picture(folder, 8)
    assert os.listdir(folder) == ["shapes-8.png"] and (folder / "shapes-8.png").read_bytes() == b"old"


def test_a_full_disk_is_one_sentence_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "demo"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(start.os, "fsync", full)
    with pytest.raises(UserError) as info:
        demo_picture(folder, 8)
    assert str(info.value) == (f"The demo could not save its picture in {folder}: No space left on device. Free some "
                               "space or fix the folder's permissions, or set BLIP2_CHAT_HOME to another folder.")
    assert os.listdir(folder) == []


def test_a_folder_in_the_pictures_place_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "demo" / "shapes-8.png").mkdir(parents=True)
    with pytest.raises(UserError) as info:
        demo_picture(tmp_path / "demo", 8)
    assert str(info.value) == (f"{tmp_path}/demo/shapes-8.png is a folder, so the demo cannot save its picture "
                               "there. Move or delete that folder, or ask for another picture with --picture.")


def test_a_file_where_the_demo_folder_goes_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "demo").write_bytes(b"")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "chatbot", "demo", "--picture", "8", "--plain"], input="",
                         capture_output=True, text=True, encoding="utf-8", env=env, cwd=REPO, timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr == (f"blip2-chat: {tmp_path}/demo is a file, not a folder, so the demo cannot save its picture "
                          "there. Move or delete that file, or set BLIP2_CHAT_HOME to another folder.\n")


def test_a_file_where_a_folder_above_the_demo_folder_goes_is_named(tmp_path: Path) -> None:
    """The data folder itself a file (`~/.local/share/blip2-chat`): that file is named, not "not a directory" with
    advice to free space."""
    (tmp_path / "data").write_bytes(b"")
    with pytest.raises(UserError) as info:
        demo_picture(tmp_path / "data" / "demo", 8)
    assert str(info.value) == (f"{tmp_path}/data is a file, not a folder, so the demo cannot save its picture in "
                               f"{tmp_path}/data/demo. Move or delete that file, or set BLIP2_CHAT_HOME to another "
                               "folder.")
