"""The chat app's finish (a user probe's findings): bursts of keys after Tab, typed joiners, narrow windows,
high contrast measured on the screen, the palette, the goodbye line, the status line while answering, the
help's way out, and the preview with colour off. Each test reads what the screen shows."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual import events
from textual.app import App
from textual.command import CommandPalette
from textual.widget import Widget
from textual.widgets import OptionList

from chatbot.core.settings import HIGH_CONTRAST_THEME, Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import Engine
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from chatbot.tui.app import create_app
from chatbot.tui.palette import palette_entries
from chatbot.tui.screens.file_picker import ImagePickerScreen
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.status_bar import StatusBar
from tests.tui_support import (
    SIZE,
    ask,
    input_value,
    notices,
    pairs,
    pilot_test,
    ready,
    run_tui_headless,
    scripted_app,
    send,
    shown,
    wait_until,
)

# -- 1, 2: what is typed reaches the input, in order ---------------------------------------------------------

@pilot_test
async def test_a_burst_typed_after_tab_lands_in_the_input_whole_and_in_order(pictures) -> None:
    """Tab moves the focus to the chat; the keys of a burst typed then (`abc` Enter at once) all go to the input,
    in order, so `abc` is asked (the first key moved the focus and the others were lost: `a` was asked)."""
    app = scripted_app(ScriptedEngine("fine", "also fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "first")
        await pilot.press("tab")
        assert app.focused is not app.query_one(ChatInput)
        for key, character in [("a", "a"), ("b", "b"), ("c", "c"), ("enter", "\r")]:
            app.post_message(events.Key(key, character))
        await wait_until(pilot, lambda: len(pairs(app)) == 2 and app.answer is None, what="the burst's question")
        assert pairs(app)[1] == ("abc", "also fine")
        assert input_value(app) == ""


@pilot_test
async def test_typed_joiners_stay_in_the_question(pictures) -> None:
    """Persian's zero-width non-joiner and the joiner inside an emoji family are kept when typed, as when pasted
    (they are not printable to Python, so Textual's input dropped them)."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        text = "می\u200cخواهم 👨\u200d👩\u200d👧"
        for character in text:
            app.post_message(events.Key(f"key{ord(character)}", character))
        await wait_until(pilot, lambda: input_value(app) == text, what=f"{text!r} in the input")
        await pilot.press("tab")  # typed in the chat too, a joiner brings them to the input
        for character in "\u200d👦":
            app.post_message(events.Key(f"key{ord(character)}", character))
        await wait_until(pilot, lambda: input_value(app) == text + "\u200d👦", what="the joiner after Tab")


# -- 3, 4: narrow windows -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(60, 20), (40, 15)])
@pilot_test
async def test_the_picker_shows_whole_names_in_a_narrow_window(size: tuple[int, int], tmp_path: Path, pictures) -> None:
    """Too narrow for the preview beside the list, the picker leaves the preview out: the names stay whole
    (`└── 📄 sha` at 60 columns, no name at all at 40, before)."""
    name = "sha256-0123456789abcdef0123.png"
    (tmp_path / name).write_bytes(pictures["red"].read_bytes())
    app = scripted_app(ScriptedEngine("fine"), tmp_path / name)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await send(pilot, "/image")
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        await wait_until(pilot, lambda: name in shown(app), what=f"{name} whole")


@pilot_test
async def test_a_narrow_window_names_the_image_above_the_chat(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"], memory_probe=lambda: 1_000_000)
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        assert not app.query_one("#sidebar").display or app.query_one("#sidebar").region.width == 0
        assert "red.png · 64×48" in shown(app)


@pilot_test
async def test_the_status_line_gives_way_from_its_least_important_end(pictures) -> None:
    """At 40 columns the status line drops the precision (not half of the memory), and while a model with a
    long path loads, its path is clipped from the left and the activity stays whole."""
    release = threading.Event()
    long_model = "/home/someone/checkpoints/experiments/2026-01/opt-2.7b-ft"
    engine = ScriptedEngine("fine", model_id=long_model)

    def slow_load(settings: Settings, progress: object) -> Engine:
        release.wait(30)
        return engine

    app = create_app(Settings(model=long_model), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=slow_load, renderer="halfcell", memory_probe=lambda: 1_000_000)
    async with app.run_test(size=(40, 15)) as pilot:
        bar = app.query_one(StatusBar)
        await wait_until(pilot, lambda: "Loading model" in shown(app, bar), what="the loading line")
        assert shown(app, bar).strip()[2:].startswith("Loading model …/opt-2.7b-ft…")
        release.set()
        await ready(pilot)
        await wait_until(pilot, lambda: "Ready" in shown(app, bar), what="Ready")
        assert shown(app, bar).strip() == "Ready │ …/opt-2.7b-ft │ RAM 1.0 MB"
    app = scripted_app(ScriptedEngine("fine"), pictures["red"], memory_probe=lambda: 1_000_000)
    async with app.run_test(size=(40, 15)) as pilot:
        await ready(pilot)
        bar = app.query_one(StatusBar)
        await wait_until(pilot, lambda: "Ready" in shown(app, bar), what="Ready")
        assert shown(app, bar).strip() == "Ready │ scripted-opt │ RAM 1.0 MB"  # was `... │ float32 │ RA`


def test_the_clock_stays_when_the_activity_is_clipped() -> None:
    from chatbot.tui.widgets.status_bar import fit_status

    line = fit_status("⠙ Loading /a/long/path/to/the/checkpoint on cuda:0", " 12 s", {"memory": "RAM 3.0 GB"}, 24)
    assert line == "⠙ Loading …/checkp… 12 s" and cell_len(line) <= 24


# -- 5: high contrast, measured -------------------------------------------------------------------------------

def _linear(channel: int) -> float:
    value = channel / 255
    return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4


def contrast(foreground: tuple[int, int, int], background: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""
    lighter, darker = sorted(
        (0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b) for r, g, b in (foreground, background)),
        reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def low_contrast(app: App[None], widget: Widget | None = None) -> list[tuple[str, float]]:
    """Every run of characters (text and borders) on the screen whose colour is under 7:1 against its background."""
    region = widget.region if widget is not None else app.screen.region
    found = []
    for strip in app.screen._compositor.render_strips()[region.y:region.bottom]:
        for segment in strip.crop(region.x, region.right):
            style = segment.style
            if not segment.text.strip() or style is None or style.color is None or style.bgcolor is None:
                continue
            ratio = contrast(style.color.get_truecolor(), style.bgcolor.get_truecolor())
            if style.dim or ratio < 7:
                found.append((segment.text.strip(), round(ratio, 2)))
    return found


@pilot_test
async def test_high_contrast_keeps_every_text_at_seven_to_one(pictures) -> None:
    settings = Settings(model="scripted-opt", theme=HIGH_CONTRAST_THEME)
    app = scripted_app(ScriptedEngine("It is red."), pictures["red"], settings=settings,
                       renderer="none", memory_probe=lambda: 1_000_000)  # "none": the picture is not text
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What colour is it?")  # greys out `esc Stop answer`
        app.notice("A warning.", "warning")
        app.notice("An error.", "error")
        await pilot.pause()
        assert low_contrast(app) == []
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        await pilot.pause()
        assert low_contrast(app, app.screen.query_one("#help")) == []


# -- 6: the palette -------------------------------------------------------------------------------------------

@pilot_test
async def test_the_palette_offers_our_commands_only_each_with_its_own_help(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        options = app.screen.query_one(OptionList)

        def gathered() -> bool:  # every entry of ours is listed, and the palette has stopped gathering
            gathering = [worker for worker in app.workers
                         if worker.group == CommandPalette._GATHER_COMMANDS_GROUP and not worker.is_finished]
            return options.option_count >= len(palette_entries(app)) and not gathering

        await wait_until(pilot, gathered, what="every entry")
        entries = [str(options.get_option_at_index(index).prompt) for index in range(options.option_count)]
        names = [entry.splitlines()[0] for entry in entries]
        assert all(name.startswith("/") for name in names), names
        assert not any(word in entry for entry in entries for word in ("Screenshot", "Maximize", "Keys", "Theme"))
        exports = [entry.splitlines()[1] for entry in entries if entry.startswith("/export")]
        assert len(exports) == 3 and len(set(exports)) == 3, exports


# -- 7: the goodbye line --------------------------------------------------------------------------------------

@pytest.mark.parametrize("asked", [True, False])
def test_the_app_says_where_the_chat_went_when_it_closes(asked: bool, pictures, monkeypatch, capsys) -> None:
    async def use(pilot) -> None:  # type: ignore[no-untyped-def]
        await ready(pilot)
        if asked:
            await ask(pilot, "What colour is it?")
        await pilot.press("ctrl+q")

    status, made = run_tui_headless(ScriptedEngine("It is red."), pictures["red"], use, monkeypatch)
    assert status == 0
    said = capsys.readouterr().err.strip()
    if asked:
        session_id = made[0].conversation.session.id
        assert said == f"Chat saved as session {session_id}; blip2-chat --continue goes on with it."
    else:
        assert said == ""


# -- 8, 9, 10 -------------------------------------------------------------------------------------------------

@pilot_test
async def test_the_last_answers_speed_is_not_shown_while_the_next_answer_streams(pictures) -> None:
    engine = ScriptedEngine("It is red.", "Slowly now.")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What colour is it?")
        bar = app.query_one(StatusBar)
        await wait_until(pilot, lambda: "25.0 tok/s" in shown(app, bar), what="the first answer's speed")
        engine.delay = 60.0  # the next answer streams until quitting stops it
        await send(pilot, "And now?")
        await wait_until(pilot, lambda: app.answer is not None and "Answering" in shown(app, bar), what="answering")
        assert "tok/s" not in shown(app, bar)
        await pilot.press("escape")  # stops it at once
        await wait_until(pilot, lambda: app.answer is None, what="the answer to stop")


@pilot_test
async def test_the_help_says_how_to_close_it(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        await pilot.pause()
        assert "Esc, F1 or q: close" in shown(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="the help to close")


@pilot_test
async def test_with_colour_off_the_preview_says_so_in_words(pictures, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        sidebar = app.query_one("#sidebar")
        text = " ".join(shown(app, sidebar).split())
        assert "▀" not in text
        assert "needs colour" in text and "red.png" in text and "64×48" in text


@pilot_test
async def test_the_busy_status_line_repaints_without_laying_the_screen_out_again(pictures) -> None:
    """The spinner changes the line 10 times a second while the model works: each change repaints that line
    only. A re-layout of the whole screen each time kept the model's thread waiting on the interpreter."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"], memory_probe=lambda: 1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        bar = app.query_one(StatusBar)
        layouts: list[bool] = []
        repaint = bar.refresh

        def counted(*args: object, layout: bool = False, **kwargs: object) -> object:
            layouts.append(layout)
            return repaint(*args, layout=layout, **kwargs)  # type: ignore[arg-type]

        bar.refresh = counted  # type: ignore[method-assign]
        bar.set_activity("Answering…", busy=True)
        for _ in range(20):
            bar._tick()
        bar.set_memory("RAM 2.0 MB")
        await pilot.pause()
        assert len(layouts) >= 20 and not any(layouts)
        assert bar.region.width == SIZE[0]  # the whole width, whatever the text says


@pilot_test
async def test_a_chat_opened_without_an_image_offers_the_picker(pictures) -> None:
    from chatbot.core.commands import NO_IMAGE_YET
    from chatbot.tui.screens.file_picker import ImagePickerScreen

    app = scripted_app(ScriptedEngine("fine"), None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        await pilot.press("escape")  # the picker closed: the chat goes on without an image, and says how to open one
        await wait_until(pilot, lambda: not isinstance(app.screen, ImagePickerScreen), what="the chat")
        assert notices(app) == [f"{NO_IMAGE_YET} Choose one here (Esc closes the picker; Ctrl+O opens it again)."]
