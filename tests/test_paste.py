"""Pasting an image (/paste, and Ctrl+V in the app): fake clipboard tools first on PATH, never a real clipboard.

Each fake is a small shell script in a folder that is the whole of PATH, so no real wl-paste, xclip,
pngpaste, osascript or PowerShell is ever found; the fakes print what the real tools print.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
from pathlib import Path

import pytest
from textual import events

from chatbot.core import clipboard
from chatbot.core.clipboard import paste_image
from chatbot.core.commands import run_command
from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import ImageError
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from chatbot.locations import HOME_ENV, pasted_dir
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.chat_input import ChatInput
from tests.tui_support import (
    SIZE,
    errors,
    input_value,
    notices,
    pilot_test,
    preview_source,
    ready,
    scripted_app,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake clipboard tools are shell scripts")

CAT, SLEEP, HEAD = shutil.which("cat"), shutil.which("sleep"), shutil.which("head")
NO_IMAGE = "Copy an image first, or type /image PATH."
INSTALL = ("Pasting an image needs a clipboard tool: install wl-clipboard (Wayland) or xclip (X11). "
           "Or save the image to a file and type /image PATH.")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data folder under tmp; PATH is one empty folder, so only the fakes a test writes exist."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def fake_tool(tmp_path: Path, name: str, script: str) -> None:
    """An executable `name` first (and alone) on PATH, running `script` with /bin/sh."""
    path = tmp_path / "bin" / name
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(0o755)


def fake_wl_paste(tmp_path: Path, types: list[str], image: Path | None = None) -> None:
    """wl-paste offering `types`; asked for image/png it prints `image`'s bytes."""
    listing = "".join(f"{kind}\\n" for kind in types)
    fake_tool(tmp_path, "wl-paste", f"""case "$*" in
  *--list-types*) printf '{listing}' ;;
  *"--type image/png"*) exec {CAT} '{image}' ;;
  *) echo "No suitable type of content copied" >&2; exit 1 ;;
esac""")


def file_with(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def conversation(tmp_path: Path, red: Path, engine: ScriptedEngine | None = None) -> Conversation:
    return Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=20)), None,
                        SessionStore(tmp_path / "sessions"), load_image(red), engine=engine or ScriptedEngine())


def refusal(tmp_path: Path, red: Path) -> str:
    """What /paste says when it is refused (one notice)."""
    outcome = run_command(conversation(tmp_path, red), "/paste")
    assert not outcome.ok and outcome.open_image is None and len(outcome.notices) == 1
    assert outcome.notices[0].kind == "error"
    return outcome.notices[0].text


def kept(data: bytes, suffix: str) -> Path:
    return pasted_dir() / f"{hashlib.sha256(data).hexdigest()}{suffix}"


# -- the app ---------------------------------------------------------------------------------------


@pilot_test
async def test_ctrl_v_in_the_app_pastes_the_clipboard_image_and_text_paste_still_works(
    tmp_path: Path, pictures: dict[str, Path]
) -> None:
    fake_wl_paste(tmp_path, ["text/html", "image/png"], pictures["red"])
    expected = kept(pictures["red"].read_bytes(), ".png")
    app = scripted_app(ScriptedEngine("red"), pictures["green"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+v")  # the input box has the focus, and binds Ctrl+V too
        await wait_until(pilot, lambda: preview_source(app) == str(expected), what="the pasted image")
        assert f"Pasted an image from the clipboard (saved as {expected})." in notices(app)
        assert any(notice.startswith(f"Now talking about {expected}.") for notice in notices(app))
        assert app.conversation.image is not None and app.conversation.image.source == str(expected)
        assert input_value(app) == "" and not errors(app)
        assert expected.read_bytes() == pictures["red"].read_bytes()

        app.query_one(ChatInput).post_message(events.Paste("what colour?"))  # the terminal's own text paste
        await wait_until(pilot, lambda: input_value(app) == "what colour?", what="the pasted text")

        fake_wl_paste(tmp_path, ["text/plain;charset=utf-8", "UTF8_STRING"])
        await pilot.press("ctrl+v")
        await wait_until(pilot, lambda: errors(app), what="the refusal")
        assert errors(app) == [f"The clipboard holds no image (it holds text). {NO_IMAGE}"]
        assert preview_source(app) == str(expected) and input_value(app) == "what colour?"

        await pilot.press("f1")  # over the help screen Ctrl+V is not ours
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await pilot.press("ctrl+v")
        await pilot.pause()
        assert len(errors(app)) == 1


# -- the screen-reader mode ------------------------------------------------------------------------


def test_paste_in_the_plain_mode_opens_the_image_and_keeps_one_file(
    tmp_path: Path, pictures: dict[str, Path]
) -> None:
    fake_wl_paste(tmp_path, ["image/png"], pictures["red"])
    engine = ScriptedEngine("a red square", "still red")
    out, notes = io.StringIO(), io.StringIO()
    plain = PlainChat(conversation(tmp_path, pictures["green"], engine), out=out, notes=notes)
    assert plain.run(["/paste", "what is it?", "/paste", "/quit"]) == 0
    expected = kept(pictures["red"].read_bytes(), ".png")
    said = notes.getvalue().splitlines()
    assert said.count(f"Pasted an image from the clipboard (saved as {expected}).") == 2
    assert f"Now talking about {expected}." in said
    assert out.getvalue().splitlines() == ["You: /paste", "You: what is it?", "Assistant: a red square", "You: /paste",
                                           "You: /quit"]
    assert list(pasted_dir().iterdir()) == [expected]  # pasted twice, kept once
    image = plain.conversation.image
    assert image is not None and image.source == str(expected)
    assert image.sha256 == hashlib.sha256(pictures["red"].read_bytes()).hexdigest()


# -- the core: each way it goes ---------------------------------------------------------------------


def test_the_file_is_named_by_its_sha256_with_its_real_suffix_and_written_once(
    tmp_path: Path, pictures: dict[str, Path]
) -> None:
    jpeg = pictures["green"].read_bytes()
    fake_wl_paste(tmp_path, ["image/png"], pictures["green"])  # offered as PNG, but the bytes are a JPEG
    path = paste_image()
    assert path == kept(jpeg, ".jpg") and path.read_bytes() == jpeg
    written = path.stat().st_mtime_ns
    assert paste_image() == path and path.stat().st_mtime_ns == written
    assert list(pasted_dir().iterdir()) == [path]  # no temporary file left behind


def test_no_clipboard_tool_says_what_to_install(tmp_path: Path, pictures: dict[str, Path]) -> None:
    assert refusal(tmp_path, pictures["red"]) == INSTALL
    with pytest.raises(ImageError) as mac:
        paste_image(platform="darwin")
    assert str(mac.value) == ("Pasting an image needs a clipboard tool: install pngpaste (brew install pngpaste). "
                              "Or save the image to a file and type /image PATH.")
    with pytest.raises(ImageError) as windows:
        paste_image(platform="win32")
    assert str(windows.value) == ("Pasting an image needs PowerShell (powershell or pwsh on PATH). "
                                  "Or save the image to a file and type /image PATH.")
    assert not pasted_dir().exists()


@pytest.mark.parametrize(("tool", "script", "sentence"), [
    ("wl-paste", "printf 'text/plain\\nTEXT\\n'", "The clipboard holds no image (it holds text)."),
    ("wl-paste", "echo 'Nothing is copied' >&2; exit 1", "The clipboard holds no image (it is empty)."),
    ("wl-paste", "printf 'application/x-thing\\n'", "The clipboard holds no image."),
    ("xclip", "printf 'TIMESTAMP\\nTARGETS\\nUTF8_STRING\\n'", "The clipboard holds no image (it holds text)."),
    ("xclip", "echo 'Error: target TARGETS not available' >&2; exit 1", "The clipboard holds no image (it is empty)."),
])
def test_a_clipboard_without_an_image_says_so(
    tmp_path: Path, pictures: dict[str, Path], tool: str, script: str, sentence: str
) -> None:
    fake_tool(tmp_path, tool, script)
    assert refusal(tmp_path, pictures["red"]) == f"{sentence} {NO_IMAGE}"


@pytest.mark.parametrize(("data", "sentence"), [
    (b"this is not an image at all",
     "The clipboard's image/png data is not an image Pillow can read (supported: JPEG, PNG, WebP, GIF, BMP, TIFF…). "
     "It holds text, not a picture: open a picture file instead."),
    (b"\x89PNG\r\n\x1a\ncut short",
     "The clipboard's image/png data is damaged or incomplete. Re-download or re-export the image."),
])
def test_bytes_that_are_no_image_give_the_image_sentence_and_leave_nothing(
    tmp_path: Path, pictures: dict[str, Path], data: bytes, sentence: str
) -> None:
    fake_wl_paste(tmp_path, ["image/png"], file_with(tmp_path, "garbage", data))
    assert refusal(tmp_path, pictures["red"]) == sentence
    assert list(pasted_dir().iterdir()) == []


def test_a_tool_that_cannot_reach_a_clipboard_gives_way_to_the_next(tmp_path: Path, pictures: dict[str, Path]) -> None:
    fake_tool(tmp_path, "wl-paste", "echo 'Failed to connect to a Wayland server' >&2; exit 1")
    fake_tool(tmp_path, "xclip", f"""case "$*" in
  *TARGETS*) printf 'TARGETS\\nimage/png\\n' ;;
  *image/png*) exec {CAT} '{pictures['red']}' ;;
esac""")
    assert paste_image() == kept(pictures["red"].read_bytes(), ".png")

    fake_tool(tmp_path, "xclip", "echo \"Error: Can't open display: (null)\" >&2; exit 1")
    assert refusal(tmp_path, pictures["red"]) == (
        "The clipboard could not be read: wl-paste said \"Failed to connect to a Wayland server\"; "
        "xclip said \"Error: Can't open display: (null)\". Copy the image again. "
        "Or save the image to a file and type /image PATH.")


def test_a_tool_that_hangs_is_stopped(tmp_path: Path, pictures: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setattr(clipboard, "TIMEOUT_S", 0.5)
    fake_tool(tmp_path, "wl-paste", f"exec {SLEEP} 30")
    assert refusal(tmp_path, pictures["red"]) == (
        "The clipboard could not be read: wl-paste did not answer within 0.5 seconds. Copy the image again. "
        "Or save the image to a file and type /image PATH.")


def test_an_image_over_the_size_limit_is_refused(tmp_path: Path, pictures: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setattr(clipboard, "MAX_BYTES", 1024 * 1024)
    fake_tool(tmp_path, "wl-paste", f"""case "$*" in
  *--list-types*) echo image/png ;;
  *) exec {HEAD} -c 2000000 /dev/zero ;;
esac""")
    assert refusal(tmp_path, pictures["red"]) == (
        "The image on the clipboard is over 1 MB. Save it to a file, make it smaller, and type /image PATH.")
    assert not pasted_dir().exists()


def test_the_macos_and_windows_tools(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """What pngpaste, osascript and PowerShell print is read back into the same bytes."""
    png = pictures["red"].read_bytes()
    expected = kept(png, ".png")
    fake_tool(tmp_path, "pngpaste", f"exec {CAT} '{pictures['red']}'")
    assert paste_image(platform="darwin") == expected
    expected.unlink()

    (tmp_path / "bin" / "pngpaste").unlink()  # then osascript, which prints the data in hexadecimal
    hexadecimal = file_with(tmp_path, "hex", f"«data PNGf{png.hex().upper()}»\n".encode())
    fake_tool(tmp_path, "osascript", f"exec {CAT} '{hexadecimal}'")
    assert paste_image(platform="darwin") == expected and expected.read_bytes() == png
    fake_tool(tmp_path, "osascript", "echo text")
    with pytest.raises(ImageError, match=r"^The clipboard holds no image \(it holds text\)\."):
        paste_image(platform="darwin")
    expected.unlink()

    encoded = file_with(tmp_path, "b64", b"image:" + base64.b64encode(png) + b"\r\n")
    fake_tool(tmp_path, "pwsh", f"exec {CAT} '{encoded}'")
    assert paste_image(platform="win32") == expected and expected.read_bytes() == png
    fake_tool(tmp_path, "powershell", "printf nothing")  # powershell comes before pwsh
    with pytest.raises(ImageError, match=r"^The clipboard holds no image \(it is empty\)\."):
        paste_image(platform="win32")


# --- copying an answer (Ctrl+Y): the system clipboard tool, when there is one ---------------------------


def test_copy_text_uses_the_first_clipboard_tool_that_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbot.core.clipboard_copy import copy_text

    text = "a red square, 🟥 and ü"
    assert copy_text(text, platform="linux") is None  # no tool at all
    fake_tool(tmp_path, "wl-copy", "exit 1")  # outside Wayland: it cannot reach a clipboard
    fake_tool(tmp_path, "xclip", f'[ "$1 $2" = "-selection clipboard" ] && {CAT} > "{tmp_path}/copied"')
    assert copy_text(text, platform="linux") == "xclip"
    assert (tmp_path / "copied").read_bytes() == text.encode("utf-8")
    assert copy_text(text, platform="win32") is None  # Windows: the terminal's way only
    assert copy_text(text, platform="darwin") is None  # no pbcopy here
    fake_tool(tmp_path, "pbcopy", f'{CAT} > "{tmp_path}/mac"')
    assert copy_text(text, platform="darwin") == "pbcopy" and (tmp_path / "mac").read_text("utf-8") == text
