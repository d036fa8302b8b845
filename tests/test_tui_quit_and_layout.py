"""The chat app when it closes with questions waiting for an image, and its layout at several window sizes.

Quitting: the picture is served from 127.0.0.1 by a server that answers at once and sends the picture only when
the test opens its gate (as in tests/test_tui_opening.py), so the app is quit while it is still opening; what
was saved is read from the session file, then the chat is gone on with as `--continue` does.

Layout: the sidebar grows with a wide window (the picture in it too, never cut off), a long image name in the
narrow window's one line keeps its end, and notices (toasts) never cover the input box.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Static
from textual.widgets._toast import Toast

from chatbot.core.resume import session_to_resume
from chatbot.core.store import SessionStore
from chatbot.core.text_width import clip_middle
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from chatbot.locations import sessions_dir
from chatbot.tui.app import ChatApp
from chatbot.tui.widgets.bubbles import Notice
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.image_preview import CaptionLine
from tests.conftest import make_image
from tests.tui_support import (
    NOT_ASKED_ONE,
    SIZE,
    ask,
    idle,
    input_value,
    notices,
    pairs,
    pilot_test,
    ready,
    scripted_app,
    send,
    status,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("home")


def saved_session(session_id: str) -> dict[str, object]:
    return json.loads((sessions_dir() / f"{session_id}.json").read_text())  # type: ignore[no-any-return]


def saved_turns(saved: dict[str, object]) -> list[tuple[str, str, bool, str]]:
    """(question, answer, stopped, image source) of each saved turn."""
    return [(turn["question"], turn["answer"], turn["stopped"], turn["image"]["source"])
            for turn in saved["turns"]]  # type: ignore[attr-defined]


# -- quitting while an image opens ------------------------------------------------------------------------


@pilot_test
async def test_questions_waiting_for_an_image_are_not_saved_as_turns_about_the_old_one(pictures, gated) -> None:
    """Ctrl+Q while /image still downloads: the two questions sent meanwhile are no turns (they were about the
    picture that never opened); the first is the draft, back in the input with --continue, the other one Up
    away; the chat goes on about the picture that was open."""
    red = str(pictures["red"])
    app = scripted_app(ScriptedEngine("a red square"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await send(pilot, f"/image {gated.url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {gated.url}…"), what="the opening")
        await send(pilot, "//etc is a folder?")  # a question that starts with a slash: given back as typed
        await send(pilot, "And the colour?")
        assert [waiting.question for waiting in app.pending] == ["/etc is a folder?", "And the colour?"]
        await pilot.press("ctrl+q")
    session_id = app.conversation.session.id
    saved = saved_session(session_id)
    assert saved_turns(saved) == [("What is it?", "a red square", False, red)]
    assert saved["draft"] == "//etc is a folder?"
    assert saved["image"] == {"source": red, "sha256": load_image(pictures["red"]).sha256}

    engine = ScriptedEngine("still red")
    app = scripted_app(engine, session=session_to_resume(SessionStore(), True, None))  # what --continue opens
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert pairs(app) == [("What is it?", "a red square")]
        assert input_value(app) == "//etc is a folder?"
        await send(pilot, input_value(app))
        await wait_until(pilot, lambda: len(pairs(app)) == 2 and idle(app), what="the answer")
        assert pairs(app)[1] == ("/etc is a folder?", "still red")
    assert saved_turns(saved_session(session_id))[1] == ("/etc is a folder?", "still red", False, red)


@pilot_test
async def test_questions_waiting_for_the_model_are_kept_and_a_typed_line_stays_the_draft(pictures, gated) -> None:
    """With the model still loading: the question that waits for it is kept as an unanswered turn (as before),
    the one that waits for the image is not; the line typed but not sent is the draft, not that question."""
    loaded = threading.Event()
    app = scripted_app(ScriptedEngine(), pictures["red"], loaded=loaded)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await send(pilot, "First?")
            await send(pilot, f"/image {gated.url}")
            await send(pilot, "Second?")
            assert [(waiting.question, waiting.for_image) for waiting in app.pending] == [
                ("First?", False), ("Second?", True)]
            app.query_one(ChatInput).put("half typed")
            await pilot.press("ctrl+q")
    finally:
        loaded.set()
    saved = saved_session(app.conversation.session.id)
    assert saved_turns(saved) == [("First?", "", True, str(pictures["red"]))]
    assert saved["draft"] == "half typed"


# -- the question given back: information after a stop, a warning after a failure ---------------------------


def notice_kind(app: ChatApp, text: str) -> str:
    return next(notice.kind for notice in app.query(Notice) if notice.text == text)


@pilot_test
async def test_a_question_given_back_after_the_stop_key_is_information(pictures, gated) -> None:
    app = scripted_app(ScriptedEngine(), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, f"/image {gated.url}")
        await send(pilot, "Green?")
        await pilot.press("escape")
        await wait_until(pilot, lambda: NOT_ASKED_ONE in notices(app), what="the question given back")
        assert notice_kind(app, NOT_ASKED_ONE) == "info"
        assert input_value(app) == "Green?"


@pilot_test
async def test_a_question_given_back_after_a_failed_opening_is_a_warning(pictures, gated) -> None:
    app = scripted_app(ScriptedEngine(), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, f"/image {gated.url}")
        await send(pilot, "Green?")
        gated.fail()
        await wait_until(pilot, lambda: NOT_ASKED_ONE in notices(app), what="the question given back")
        assert notice_kind(app, NOT_ASKED_ONE) == "warning"


# -- the sidebar and its picture at several window sizes ----------------------------------------------------


def width_of(app: ChatApp, selector: str) -> int:
    return app.query_one(selector).region.width


def picture(app: ChatApp) -> Region:
    return app.query_one("#preview-image").region


def in_proportion(region: Region, pixels: tuple[int, int]) -> bool:
    """The picture drawn in `region` keeps the proportions of one `pixels` in size (within a cell's rounding), the
    cells measured as textual-image measures them."""
    from textual_image._terminal import get_cell_size

    cell = get_cell_size()
    drawn_width, drawn_height = region.width * cell.width, region.height * cell.height
    return abs(drawn_width * pixels[1] - drawn_height * pixels[0]) <= max(cell.width, cell.height) * max(pixels)


@pilot_test
async def test_the_sidebar_and_its_picture_grow_with_a_wide_window(pictures) -> None:
    """36 columns up to 120 (as before), more in a wider window; the picture follows when the window is resized,
    its proportions kept."""
    app = scripted_app(ScriptedEngine(), pictures["red"])  # 64×48
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert width_of(app, "#sidebar") == 36 and picture(app).width == 33  # 36 less its padding and border
        assert in_proportion(picture(app), (64, 48))
        sizes = {}
        for size in [(100, 30), (200, 60), (80, 24)]:
            await pilot.resize_terminal(*size)
            await wait_until(pilot, lambda: width_of(app, "#preview-caption") == width_of(app, "#sidebar") - 3,
                             what="the new layout")
            await pilot.pause()
            sizes[size] = (width_of(app, "#sidebar"), picture(app))
            assert in_proportion(picture(app), (64, 48)), size
    assert sizes[(100, 30)][0] == sizes[(80, 24)][0] == 36
    assert sizes[(200, 60)][0] > 36
    assert sizes[(200, 60)][1].width == sizes[(200, 60)][0] - 3 > sizes[(100, 30)][1].width == 33
    assert sizes[(200, 60)][1].height > sizes[(100, 30)][1].height


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (200, 60)])
@pilot_test
async def test_a_tall_picture_is_never_cut_off(tmp_path: Path, size: tuple[int, int]) -> None:
    """A picture twice as tall as it is wide, drawn as wide as the sidebar, would be taller than the window: it is
    drawn smaller instead, all of it above its caption, in proportion."""
    tall = make_image(tmp_path / "tall.png", (200, 30, 30), size=(48, 96))
    app = scripted_app(ScriptedEngine(), tall)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.pause()
        caption = app.query_one("#preview-caption").region
        assert picture(app).bottom < caption.y and caption.bottom <= app.query_one("#sidebar").region.bottom
        assert in_proportion(picture(app), (48, 96))


# -- the image's line in a narrow window ---------------------------------------------------------------------


def shown_line(widget: Widget) -> str:
    """The text `widget` shows on its first row."""
    return widget.render_lines(Region(0, 0, widget.region.width, 1))[0].text


@pilot_test
async def test_a_long_image_name_keeps_its_end_and_the_size_in_a_narrow_window(tmp_path: Path) -> None:
    name = "a_very_long_image_file_name_from_a_camera_export_2026-12-31_0042.png"
    app = scripted_app(ScriptedEngine(), make_image(tmp_path / name, (200, 30, 30)))
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        await pilot.pause()
        line = app.query_one("#image-line", Static)
        text = shown_line(line).strip()  # inside its padding
        assert text == "a_very_long_image_file_n…xport_2026-12-31_0042.png · 64×48"
        assert cell_len(text) == line.content_region.width
        head, tail = text.removesuffix(" · 64×48").split("…")  # what is left of the name: its two ends
        assert name.startswith(head) and name.endswith(tail)
        await pilot.resize_terminal(71, 20)  # still narrow: room for the whole name, not for its size too
        await pilot.pause()
        assert shown_line(line).strip() == f"{name}…"


@pilot_test
async def test_a_hostile_image_name_in_the_narrow_line_is_shown_not_obeyed(tmp_path: Path) -> None:
    name = "evil\x1b[2J[bold red]_a_long_name_that_does_not_fit_in_the_line_at_all.png"
    app = scripted_app(ScriptedEngine(), make_image(tmp_path / name, (200, 30, 30)))
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        await pilot.pause()
        text = shown_line(app.query_one("#image-line")).strip()
        assert text == "evil\\x1b[2J[bold red]_a_…it_in_the_line_at_all.png · 64×48"  # no markup, no escape


@pytest.mark.parametrize(("width", "expected"), [
    (40, "IMG_20260131_104200_HDR.jpg · 4032×3024"),
    (36, "IMG_20260131_104200_HDR.jpg · 4032×…"),  # the name whole first: the size gives way
    (28, "IMG_20260131_104200_HDR.jpg…"),
    (27, "IMG_202…HDR.jpg · 4032×3024"),  # a name cut anyway: both its ends, and the size
    (24, "IMG_2…DR.jpg · 4032×3024"),
    (14, "IMG_20…32×3024"),  # no room for a name beside the size: the line's two ends
])
def test_the_caption_line_keeps_the_name_whole_or_both_its_ends(width: int, expected: str) -> None:
    line = CaptionLine("IMG_20260131_104200_HDR.jpg", " · 4032×3024")
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(line.visualize())
    assert line == "IMG_20260131_104200_HDR.jpg · 4032×3024"  # a str as before, for whoever reads it
    assert console.file.getvalue().rstrip("\n") == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("short.png", 20, "short.png"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghij", 9, "abcd…ghij"),
    ("abcdefghij", 6, "ab…hij"),
    ("abcdefghij", 2, "…j"),
    ("abcdefghij", 1, "…"),
    ("abcdefghij", 0, ""),
    ("写真写真写真.jpg", 9, "写真….jpg"),  # wide characters: two cells each
])
def test_clip_middle_keeps_the_start_and_the_end(text: str, width: int, expected: str) -> None:
    assert clip_middle(text, width) == expected


# -- notices never cover the input box --------------------------------------------------------------------


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (110, 36)])
@pilot_test
async def test_a_notice_does_not_cover_the_input_box(pictures, size: tuple[int, int]) -> None:
    app = scripted_app(ScriptedEngine(), pictures["red"])
    async with app.run_test(size=size, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+y")  # nothing to copy yet: a notice says so
        await wait_until(pilot, lambda: any(toast.region.area for toast in app.screen.query(Toast)), what="a toast")
        field = app.query_one(ChatInput).region
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(field), (toast.region, field)
            assert not toast.region.overlaps(app.query_one("#image-line").region)  # the narrow window's top line
        assert app.query_one(ChatInput).has_focus


@pilot_test
async def test_the_memory_line_timer_firing_as_the_screen_goes_changes_nothing(pictures) -> None:
    """The memory line is refreshed every 2 seconds; a tick that comes while the app is closing (its screen already
    gone) must not fail: an exception there would end the app with a traceback instead of its farewell."""
    app = scripted_app(ScriptedEngine("red"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
    app._refresh_memory()  # the screen is gone now, as in the last moment of a quit
