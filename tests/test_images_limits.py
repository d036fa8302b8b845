"""Limits on what `load_image` reads from disk, names it cannot use, and a preview that fails unexpectedly.

A local file over MAX_IMAGE_BYTES is refused from its size on the opened file, before a byte is read
(the huge files here are sparse: nothing big is written); a name holding a NUL character, or one this
system cannot encode, is one ImageError sentence; the file picker's preview shows why it cannot preview
a file instead of ending the app.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.app import App, ComposeResult
from textual.widgets import Static

from chatbot import images
from chatbot.errors import ImageError
from chatbot.images import load_image
from chatbot.tui.widgets import image_preview
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.untrusted import visible
from tests.tui_support import pilot_test, wait_until


def _png(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _error(source: str | os.PathLike[str]) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source)
    err = info.value
    assert "\n" not in str(err) and visible(str(err)) == str(err)
    assert err.message.endswith(".") and err.hint
    return err


def _nothing_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, limit: int) -> bytes:
        raise AssertionError("the file was read although its size is over the limit")

    monkeypatch.setattr(images, "_read_at_most", refuse)


# --- size: refused from the opened file's size, before reading -------------------------------------------


def test_huge_sparse_file_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png())
    os.truncate(path, 20 * 1024**3)  # 20 GB on paper, a few bytes on disk
    _nothing_read(monkeypatch)
    err = _error(path)
    assert err.message == f"{path} is 20,480 MB, over the 256 MB limit for an image file."
    assert "smaller copy" in err.hint


def test_one_byte_over_the_limit_is_refused_and_rounded_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "just-over.png"
    path.write_bytes(_png())
    os.truncate(path, 256 * 1024 * 1024 + 1)  # sparse
    _nothing_read(monkeypatch)
    assert _error(path).message == f"{path} is 257 MB, over the 256 MB limit for an image file."


def test_a_file_at_the_limit_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png()
    path = tmp_path / "at-limit.png"
    path.write_bytes(data)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data))
    assert load_image(path).image.size == (40, 30)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data) - 1)
    _nothing_read(monkeypatch)
    assert "over the" in _error(path).message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_swapped_in_after_the_check_is_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check sees a regular file; by the time it is opened a named pipe is there. The open must not wait
    # for a writer, and the opened file's own status refuses it.
    pipe = tmp_path / "swapped.png"
    os.mkfifo(pipe)
    regular = tmp_path / "regular.png"
    regular.write_bytes(_png())
    real_stat = os.stat

    def stat_as_before(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> os.stat_result:
        return real_stat(regular if os.fspath(path) == str(pipe) else path, *args, **kwargs)

    # A writer opening the pipe meets any reader that waits for one, so code that opened it blocking would
    # read nothing and say "empty" rather than hang this test.
    writer = threading.Thread(target=lambda: os.close(os.open(pipe, os.O_WRONLY)), daemon=True)
    writer.start()
    monkeypatch.setattr(os, "stat", stat_as_before)
    try:
        assert _error(pipe).message == f"{pipe} is a named pipe, not a regular file."
    finally:
        monkeypatch.undo()
        release = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open returns once a reader is there
        writer.join()
        os.close(release)


def test_permission_denied_when_opening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(_png())
    real_open = os.open

    def deny(name: str | os.PathLike[str], flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(name) == str(path):
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    err = _error(path)
    assert err.message == f"Permission denied reading {path}."
    assert stat.S_ISREG(os.stat(path).st_mode)


# --- names the system cannot take ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a\0b.png", "\0", "photo.png\0.txt"])
def test_a_nul_in_the_name_is_one_sentence(tmp_path: Path, name: str) -> None:
    err = _error(str(tmp_path / name))
    shown = visible(str(tmp_path / name))
    assert err.message == f"{shown} is not a usable file name (it holds a NUL character)."
    assert "\\x00" in err.message


def test_a_name_the_system_cannot_encode_is_one_sentence(tmp_path: Path) -> None:
    name = str(tmp_path / "lone\ud800surrogate.png")  # as a session file's JSON can spell it
    err = _error(name)
    expected = f"{tmp_path}/lone\\ud800surrogate.png is not a usable file name (this system cannot encode it)."
    assert err.message == expected


# --- the preview: an unexpected failure is shown, never ends the app --------------------------------------


class _PreviewApp(App[None]):
    def __init__(self, renderer: str) -> None:
        super().__init__()
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        yield ImagePreview(self.renderer, empty_text="Highlight an image.", id="preview")


def _preview_text(app: App[None]) -> str:
    return str(app.query_one("#preview-empty", Static).content)


@pilot_test
async def test_preview_survives_an_unexpected_error_while_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(image_preview, "load_image", broken)
    app = _PreviewApp("none")
    async with app.run_test() as pilot:
        app.query_one(ImagePreview).load(tmp_path / "odd\x1b[2J.png")
        expected = "Cannot preview odd\\x1b[2J.png (an unexpected RuntimeError). Try another file."
        await wait_until(pilot, lambda: _preview_text(app) == expected, what="the preview's problem text")
        assert app.is_running and app.query_one(ImagePreview).source is None


@pilot_test
async def test_preview_survives_an_unexpected_error_while_drawing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(_png())

    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("the renderer refused it")

    monkeypatch.setattr(image_preview, "thumbnail", broken)
    app = _PreviewApp("halfcell")
    async with app.run_test() as pilot:
        app.query_one(ImagePreview).load(path)
        expected = "Cannot preview red.png (an unexpected ValueError). Try another file."
        await wait_until(pilot, lambda: _preview_text(app) == expected, what="the preview's problem text")
        assert app.is_running and app.query_one(ImagePreview).source is None
