"""The chat app's pickers, palette, help and /compare as a user probe drove them: narrow windows, a comparison
drawn higher up, palette entries that need an argument, the picker's preview after Backspace, the picker opened
mid-answer, and the help closed by the key that opens it. Each test reads what the screen shows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.app import App
from textual.command import CommandPalette
from textual.widget import Widget
from textual.widgets import OptionList

from chatbot.core.photo_search import Found
from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.palette import palette_entries
from chatbot.tui.screens.file_picker import ImagePickerScreen, ImageTree
from chatbot.tui.screens.find_results import FindResultsScreen
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.comparison_view import ComparisonView
from chatbot.tui.widgets.transcript import Transcript
from tests.tui_support import (
    SIZE,
    ask,
    errors,
    idle,
    input_value,
    notices,
    pilot_test,
    preview_source,
    ready,
    scripted_app,
    send,
    shown,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("home")


def words_in(app: App[None], widget: Widget) -> str:
    """The words the screen shows inside `widget`'s border and padding, rows joined by single spaces."""
    region = widget.content_region
    strips = app.screen._compositor.render_strips()
    return " ".join(" ".join(strip.crop(region.x, region.right).text for strip in
                             strips[region.y:region.bottom]).split())


def paused_engine(*answers: str) -> tuple[ScriptedEngine, threading.Event]:
    """An engine whose first answer stops after its first word until the event is set (no clock)."""
    engine = ScriptedEngine(*answers)
    original, go_on = engine.stream, threading.Event()

    def pausing(image, prompt, options, cancel=None) -> Iterator[str]:  # type: ignore[no-untyped-def]
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if number == 1:
                go_on.wait(60)

    engine.stream = pausing  # type: ignore[method-assign]
    return engine, go_on


# -- 1: /find's results in a narrow window -------------------------------------------------------------------

@pilot_test
async def test_find_results_show_whole_names_in_a_narrow_window(tmp_path: Path, pictures) -> None:
    """Too narrow for the thumbnail beside the list, /find's results leave it out, so each name stays whole on
    its row (`/find red circle` at 60 columns wrapped each path 4 characters a line)."""
    names = ["sha256-0123456789abcdef.png", "sha256-fedcba9876543210.png"]
    for name in names:  # relative paths, from the working directory
        (tmp_path / name).write_bytes(pictures["red"].read_bytes())
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        app.push_screen(FindResultsScreen("red", [Found(name, 0.5) for name in names]))
        await wait_until(pilot, lambda: isinstance(app.screen, FindResultsScreen)
                         and bool(app.screen.query("#find-list")), what="the results")
        listed = app.screen.query_one("#find-list")
        lines = [f"{rank}. {name}" for rank, name in enumerate(names, 1)]
        await wait_until(pilot, lambda: all(any(line in row for row in shown(app, listed).splitlines())
                                            for line in lines), what="each result whole on its row")


# -- 2: a comparison drawn higher up ------------------------------------------------------------------------

@pilot_test
async def test_a_comparison_drawn_higher_up_is_scrolled_into_sight_and_said_at_the_bottom(pictures) -> None:
    """Q1, Q2, /retry, /undo, then /compare: the comparison belongs under Q1, above the notices that came
    after it; it is scrolled into sight, a notice at the bottom says where it went, and the next question
    is followed at the bottom again."""
    long_answer = " ".join(f"w{i}" for i in range(30))
    engine = ScriptedEngine(long_answer, "second", "second again", "OTHER SIDE", "third")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await ask(pilot, "Q1")
        await ask(pilot, "Q2")
        await send(pilot, "/retry")
        await wait_until(pilot, lambda: idle(app), what="the retried answer")
        await send(pilot, "/undo")
        for _ in range(4):  # more notices after the compared turn: it is well above the bottom
            await send(pilot, "/set")
        await send(pilot, f"/compare {pictures['green']}")
        await wait_until(pilot, lambda: bool(app.query(ComparisonView)) and app.comparing is None
                         and idle(app), what="the comparison")
        await pilot.pause()
        transcript = app.query_one(Transcript)
        assert "OTHER SIDE" in shown(app, transcript), shown(app)
        assert notices(app)[-1] == ("Comparing with green.jpg: the answers are side by side under the question "
                                    "“Q1”, above.")
        await ask(pilot, "Q3")
        await pilot.pause()
        assert "third" in shown(app, transcript), shown(app)


# -- 3: palette entries that need an argument -----------------------------------------------------------------

def test_palette_entries_that_need_an_argument_put_the_command_in_the_input(pictures) -> None:
    """/find and /open alone are refused ("needs more"): the palette puts them into the input box to finish,
    as /set; the others run (/image alone opens the picker)."""

    class Runner:
        def __init__(self) -> None:
            self.ran: list[str] = []
            self.prefilled: list[str] = []

        def run_slash(self, line: str) -> bool:
            self.ran.append(line)
            return True

        def prefill_input(self, text: str) -> None:
            self.prefilled.append(text)

    runner = Runner()
    for _, _, action in palette_entries(runner):
        action()
    assert runner.prefilled == ["/find ", "/open ", "/set "]
    assert "/image" in runner.ran and "/compare" in runner.ran and "/export md" in runner.ran
    assert not {"/find", "/open"} & set(runner.ran)


@pytest.mark.parametrize("name", ["find", "open"])
@pilot_test
async def test_the_palettes_find_and_open_wait_in_the_input_for_their_argument(name: str, pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*name)
        options = app.screen.query_one(OptionList)
        await wait_until(pilot, lambda: options.option_count > 0
                         and str(options.get_option_at_index(0).prompt).startswith(f"/{name}"), what=f"/{name} first")
        await pilot.press("enter")
        await wait_until(pilot, lambda: input_value(app) == f"/{name} ", what=f"/{name} in the input")
        assert errors(app) == []


# -- 4: the picker ------------------------------------------------------------------------------------------

@pilot_test
async def test_backspace_to_the_parent_folder_clears_the_preview(tmp_path: Path, pictures) -> None:
    inner = tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    (inner / "red.png").write_bytes(pictures["red"].read_bytes())
    app = scripted_app(ScriptedEngine("fine"), inner / "red.png")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        picker = app.screen
        tree = picker.query_one(ImageTree)
        await wait_until(pilot, lambda: len(tree.root.children) == 1, what="the folder listing")
        tree.move_cursor(tree.root.children[0])
        await wait_until(pilot, lambda: preview_source(picker, "#picker-preview") == str(inner / "red.png"),
                         what="the preview of red.png")
        await pilot.press("backspace")
        await wait_until(pilot, lambda: str(tree.path) == str(tmp_path / "outer"), what="the parent folder")
        await wait_until(pilot, lambda: preview_source(picker, "#picker-preview") is None, what="the preview cleared")
        assert "Highlight an image to preview it." in shown(app)


@pilot_test
async def test_the_picker_opened_mid_answer_says_first_that_the_choice_will_wait(pictures) -> None:
    """Opened while an answer streams, the picker says at once that the chosen image waits in the input box
    (the app's rule for switching mid-answer); the choice is kept there and opens once the answer ended."""
    waits = "An answer is still coming: the image you choose waits in the input box; press Enter there once it ends."
    engine, go_on = paused_engine("a long answer about red")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")  # idle: nothing to say
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        await pilot.pause()
        assert "Open an image" in words_in(app, app.screen.query_one("#picker"))
        assert "An answer is still coming" not in words_in(app, app.screen.query_one("#picker"))
        await pilot.press("escape")
        await send(pilot, "Describe it")
        await wait_until(pilot, lambda: app.answer is not None, what="the answer to start")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        await pilot.pause()
        assert waits in words_in(app, app.screen.query_one("#picker"))
        tree = app.screen.query_one(ImageTree)
        await wait_until(pilot, lambda: len(tree.root.children) == 2, what="the folder listing")
        tree.move_cursor(next(node for node in tree.root.children if str(node.label) == "green.jpg"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: input_value(app) == str(pictures["green"]), what="the choice kept")
        go_on.set()
        await wait_until(pilot, lambda: idle(app), what="the answer to end")
        await pilot.press("enter")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]), what="the switch")


# -- 5: the help closes with the key that opens it ------------------------------------------------------------

@pilot_test
async def test_the_help_closes_with_the_remapped_help_key_and_says_so(pictures) -> None:
    settings = Settings(model="scripted-opt", keys={"help": "f3"})
    app = scripted_app(ScriptedEngine(), pictures["red"], settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        await pilot.pause()
        assert "Esc, F3 or q: close" in shown(app)
        await pilot.press("f3")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="F3 to close the help")
        await pilot.press("f3")  # and it opens again, once
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help again")
        assert len(app.screen_stack) == 2
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="Esc to close the help")
