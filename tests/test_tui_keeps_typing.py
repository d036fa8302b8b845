"""Nothing typed or said is lost out of sight (a user probe's findings in `blip2-chat demo`).

A line sent after PageUp is answered where it can be seen; Up then Down gives back the line being typed, as
readline does; a paste while the chat has the focus lands in the input; the palette never overwrites a typed line;
at 60 columns the footer still shows the help key; Ctrl+Y copies the latest answer with words. Each test reads the
screen, the input box, the clipboard or the files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual import events
from textual.command import CommandPalette
from textual.widgets import Footer, OptionList

from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from chatbot.locations import line_history_file
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.transcript import Transcript
from tests.tui_support import (
    SIZE,
    HeldEngine,
    ask,
    idle,
    input_value,
    notices,
    numbered_words,
    pilot_test,
    preview_source,
    ready,
    released,
    scripted_app,
    send,
    shown,
    wait_until,
)

LONG = numbered_words(120)
UP_NOTICE = "Up brings back what you had typed."
pytestmark = pytest.mark.usefixtures("home")


def said(app: object) -> list[str]:
    """The toasts the app has shown (notifications), oldest first."""
    return [str(notification.message) for notification in app._notifications]  # type: ignore[attr-defined]


# -- 1. a line sent after PageUp is shown where it can be seen ----------------------------------------------

@pytest.mark.parametrize("line", ["And the last one?", "/set"])
@pilot_test
async def test_a_line_sent_after_pageup_brings_the_chat_back_to_the_bottom(pictures, line: str) -> None:
    """The probe: after one PageUp, new questions, answers and command replies appeared out of sight."""
    app = scripted_app(ScriptedEngine(LONG, LONG, LONG, "THE LAST ANSWER"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        for question in ("One?", "Two?", "Three?"):
            await ask(pilot, question)
        chat = app.query_one(Transcript)
        page = chat.scrollable_content_region.height
        await wait_until(pilot, lambda: chat.max_scroll_y > page and chat.scroll_y == chat.max_scroll_y,
                         what="the chat, longer than a page, at its end")
        await pilot.press("pageup")
        await wait_until(pilot, lambda: chat.scroll_y <= chat.max_scroll_y - page + 1, what="a page up")
        await send(pilot, line)
        await wait_until(pilot, lambda: idle(app), what="the line's answer")
        expected = "THE LAST ANSWER" if line.endswith("?") else notices(app)[-1].split(":")[0]
        await wait_until(pilot, lambda: expected in shown(app, chat) and chat.scroll_y == chat.max_scroll_y,
                         what=f"{expected!r} in sight at the bottom")


# -- 2. Up then Down gives back the line being typed (readline) ------------------------------------------

@pilot_test
async def test_up_then_down_gives_back_the_half_typed_line(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine", "fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "one")
        await ask(pilot, "two")
        await pilot.press(*"draft text", "up")
        assert input_value(app) == "two"
        await pilot.press("down")
        assert input_value(app) == "draft text"
        await pilot.press("down")  # below the newest line already: stays
        assert input_value(app) == "draft text"


@pilot_test
async def test_an_edited_recalled_line_is_kept_while_browsing_and_restored_once_a_line_is_sent(pictures) -> None:
    """readline with `revert-all-at-newline`: an edit left on a recalled line is there again when browsing comes
    back to it; sending a line puts every recalled line back as it was (the sent one is the newest)."""
    app = scripted_app(ScriptedEngine("fine", "fine", "fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "one")
        await ask(pilot, "two")
        await pilot.press(*"draft", "up", "!", "up")
        assert input_value(app) == "one"
        await pilot.press("down")
        assert input_value(app) == "two!"
        await pilot.press("down")
        assert input_value(app) == "draft"
        await pilot.press("up", "enter")
        await wait_until(pilot, lambda: idle(app), what="the answer to two!")
        recalled = []
        for _ in range(3):
            await pilot.press("up")
            recalled.append(input_value(app))
        assert recalled == ["two!", "two", "one"]


@pilot_test
async def test_a_resumed_draft_comes_back_after_up_and_down(pictures) -> None:
    history = line_history_file()
    history.parent.mkdir(parents=True)
    history.write_text("an earlier line\n")
    history.chmod(0o600)
    app = scripted_app(ScriptedEngine("fine"), pictures["red"],
                       session=Session(model="scripted-opt", draft="the resumed draft"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert input_value(app) == "the resumed draft"
        await pilot.press("up")
        assert input_value(app) == "an earlier line"
        await pilot.press("down")
        assert input_value(app) == "the resumed draft"


# -- 3. a paste while the chat has the focus goes to the input -------------------------------------------

@pilot_test
async def test_a_paste_while_the_chat_has_the_focus_lands_in_the_input(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        field = app.query_one(ChatInput)
        await pilot.press(*"typed ", "tab")
        assert app.focused is app.query_one(Transcript)
        app.post_message(events.Paste("pasted\nwords"))  # as the terminal's bracketed paste arrives
        await wait_until(pilot, lambda: input_value(app) == "typed pasted words", what="the paste in the input")
        assert app.focused is field


@pilot_test
async def test_an_image_dropped_while_the_chat_has_the_focus_opens(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await pilot.press("tab")  # the input is empty: Tab moves the focus to the chat
        assert app.focused is app.query_one(Transcript)
        app.post_message(events.Paste(f"'{pictures['green']}'"))  # a dropped file
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"].resolve()),
                         what="the dropped image to open")
        assert app.focused is app.query_one(ChatInput) and input_value(app) == ""


# -- 4. the palette never overwrites a typed line ---------------------------------------------------------

@pilot_test
async def test_a_palette_entry_put_over_a_typed_line_leaves_it_to_up(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await pilot.press(*"my draft", "ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*"find")
        options = app.screen.query_one(OptionList)

        def find_first() -> bool:
            highlighted = options.highlighted
            return highlighted is not None and str(options.get_option_at_index(highlighted).prompt).startswith(
                "/find")

        await wait_until(pilot, find_first, what="/find highlighted")
        await pilot.press("enter")
        await wait_until(pilot, lambda: input_value(app) == "/find ", what="/find in the input")
        await wait_until(pilot, lambda: UP_NOTICE in said(app), what="the notice that Up brings it back")
        await pilot.press("up")
        assert input_value(app) == "my draft"
        await pilot.press("up")
        assert input_value(app) == "What is it?"
    assert "my draft" not in line_history_file().read_text()  # never sent: not in the history file


@pilot_test
async def test_a_prefill_keeps_the_draft_set_aside_by_up_and_says_nothing_over_an_empty_input(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        app.prefill_input("/open ")  # over an empty input: nothing to keep, nothing said
        await pilot.pause()
        assert input_value(app) == "/open " and UP_NOTICE not in said(app)
        app.query_one(ChatInput).value = ""
        await pilot.press(*"my draft", "up")  # the draft set aside, a sent line shown unchanged
        assert input_value(app) == "What is it?"
        app.prefill_input("/find ")
        assert input_value(app) == "/find "
        await wait_until(pilot, lambda: UP_NOTICE in said(app), what="the notice that Up brings it back")
        await pilot.press("up")
        assert input_value(app) == "my draft"
        await pilot.press("up")
        assert input_value(app) == "What is it?"


# -- 5. the footer at 60 columns --------------------------------------------------------------------------

def footer_text(app: object) -> str:
    return shown(app, app.query_one(Footer))  # type: ignore[arg-type, attr-defined]


@pilot_test
async def test_a_narrow_footer_shows_the_help_key_and_stop_only_while_something_can_stop(pictures) -> None:
    engine = HeldEngine("a red square", free=1)
    app = scripted_app(engine, pictures["red"])
    async with released(engine), app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert footer_text(app).split()[:2] == ["f1", "Help"], footer_text(app)  # first: never cut off
        assert "Stop answer" not in footer_text(app), footer_text(app)
        await send(pilot, "What colour is it?")
        await wait_until(pilot, lambda: "Stop answer" in footer_text(app), what="Stop answer while it answers")
        assert footer_text(app).split()[:2] == ["f1", "Help"], footer_text(app)
        engine.go.set()
        await wait_until(pilot, lambda: idle(app), what="the answer to end")
        await wait_until(pilot, lambda: "Stop answer" not in footer_text(app), what="Stop answer gone")


@pilot_test
async def test_a_help_key_moved_by_the_config_file_still_comes_first(pictures) -> None:
    settings = Settings(model="scripted-opt", keys={"help": "f2"})
    app = scripted_app(ScriptedEngine("fine"), pictures["red"], settings=settings)
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert footer_text(app).split()[:2] == ["f2", "Help"], footer_text(app)


# -- 6. Ctrl+Y copies the latest answer with words ----------------------------------------------------------

@pilot_test
async def test_copy_takes_the_latest_answer_with_words(pictures, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no clipboard tool: only the terminal's way
    app = scripted_app(ScriptedEngine("copy me please", ""), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "Say something")
        await ask(pilot, "Now say nothing")
        assert [turn.answer for turn in app.conversation.session.turns] == ["copy me please", ""]
        await pilot.press("ctrl+y")
        assert app.clipboard == "copy me please"
        assert "There is no answer to copy yet." not in said(app)
