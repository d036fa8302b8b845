"""What a person types is never lost to the focus, and Up remembers earlier chats (a user probe's findings).

Tab on a question moves the focus to the chat, which shows it and sends every key back: a character goes on in
the input, Enter and Esc return to it; coming back never finds the text selected (the next key replaced it).
PageUp and PageDown scroll the chat from the input. Up recalls the lines of earlier runs from the line history
file the screen-reader mode keeps, private and never through a link. `/export` while an answer comes says what
the export lacks, as the core decides. Each test reads the screen, the input box or the files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chatbot.engine.scripted import ScriptedEngine
from chatbot.locations import line_history_file
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.transcript import Transcript
from tests.tui_support import (
    SIZE,
    HeldEngine,
    ask,
    errors,
    idle,
    input_value,
    notices,
    numbered_words,
    pairs,
    pilot_test,
    ready,
    released,
    scripted_app,
    send,
    wait_until,
)

LONG = numbered_words(120)
pytestmark = pytest.mark.usefixtures("home")


# -- 1. Tab never loses or replaces what was typed -----------------------------------------------------------

@pilot_test
async def test_typing_between_tabs_goes_on_in_the_input(pictures) -> None:
    """The probe: `abc` Tab `d` Tab `e` showed `e`. Every character lands after the others."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")  # (the probe had sent a question first)
        await pilot.press(*"abc", "tab", "d", "tab", "e")
        assert input_value(app) == "abcde" and app.focused is app.query_one(ChatInput)


@pilot_test
async def test_coming_back_to_the_input_never_finds_its_text_selected(pictures) -> None:
    """A refused line is kept selected, so that the next line replaces it; but once the focus has left the box the
    selection was not on screen, and the key that brings the focus back adds to the line, cursor at its end."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/undo")  # nothing to undo: refused, kept selected
        assert errors(app) and input_value(app) == "/undo"
        await pilot.press("shift+tab")
        field = app.query_one(ChatInput)
        assert app.focused is not field
        await pilot.press("x")
        assert app.focused is field and input_value(app) == "/undox"
        assert field.selection.is_empty and field.cursor_position == len("/undox")


@pilot_test
async def test_the_chat_shows_its_focus_and_enter_or_esc_go_back_to_the_input(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        chat, field = app.query_one(Transcript), app.query_one(ChatInput)
        assert chat.styles.outline_left[0] == ""  # no mark while the input has the focus
        await pilot.press(*"half typed", "tab")
        assert app.focused is chat and chat.styles.outline_left[0] == "thick"  # a bar down its left edge
        for key in ("enter", "escape"):
            await pilot.press(key)
            await wait_until(pilot, lambda: app.focused is field, what=f"{key} to go back to the input")
            assert input_value(app) == "half typed" and pairs(app) == [("What is it?", "fine")]  # nothing sent
            await pilot.press("tab")
        await pilot.press("!")
        assert input_value(app) == "half typed!"


@pilot_test
async def test_pageup_and_pagedown_scroll_the_chat_from_the_input(pictures) -> None:
    app = scripted_app(ScriptedEngine(LONG, LONG, LONG), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        for question in ("One?", "Two?", "Three?"):
            await ask(pilot, question)
        chat, field = app.query_one(Transcript), app.query_one(ChatInput)
        page = chat.scrollable_content_region.height
        await wait_until(pilot, lambda: chat.max_scroll_y > page and chat.scroll_y == chat.max_scroll_y,
                         what="the chat, longer than a page, at its end")
        await pilot.press(*"typing")
        await pilot.press("pageup")
        await wait_until(pilot, lambda: chat.scroll_y <= chat.max_scroll_y - page + 1,
                         what="a page up")
        await pilot.press("pagedown")
        await wait_until(pilot, lambda: chat.scroll_y == chat.max_scroll_y, what="a page down")
        assert app.focused is field and input_value(app) == "typing"


# -- 2. Up recalls earlier runs' lines, kept as the screen-reader mode keeps them --------------------------

@pilot_test
async def test_up_brings_back_the_lines_of_an_earlier_run(pictures) -> None:
    history = line_history_file()
    first = scripted_app(ScriptedEngine("fine", "fine"), pictures["red"])
    async with first.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await send(pilot, "/undo")
        await send(pilot, "/set temperature 9")  # refused: kept all the same, as readline keeps it
    assert history.read_text().splitlines() == ["What is it?", "/undo", "/set temperature 9"]
    assert stat.S_IMODE(history.stat().st_mode) == 0o600  # made private to the user
    with history.open("a") as file:  # then a chat in the screen-reader mode
        file.write("a line from the screen-reader mode\n")

    again = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot)
        recalled = []
        for _ in range(5):
            await pilot.press("up")
            recalled.append(input_value(again))
        assert recalled == ["a line from the screen-reader mode", "/set temperature 9", "/undo", "What is it?",
                            "What is it?"]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="symbolic links")
@pilot_test
async def test_a_link_at_the_history_path_is_never_followed(pictures, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("secret\n")
    line_history_file().parent.mkdir(parents=True)
    line_history_file().symlink_to(target)
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await pilot.press("up", "up")
        assert input_value(app) == "What is it?"  # the link's target was not read
        said = [str(notification.message) for notification in app._notifications]
    assert target.read_text() == "secret\n"  # nor written
    assert any("is a symbolic link, which blip2-chat does not follow" in sentence for sentence in said), said


# -- 3. /export while an answer comes says what the export lacks ----------------------------------------------

@pilot_test
async def test_export_during_the_first_answer_says_the_answer_is_not_in_it(pictures, home: Path) -> None:
    engine = HeldEngine("a red square", free=1)
    app = scripted_app(engine, pictures["red"])
    async with released(engine), app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "What colour is it?")
        await wait_until(pilot, lambda: app.answer is not None, what="the answer to start")
        await send(pilot, "/export json")
        target = home / f"blip2-chat-{app.conversation.session.id}.json"
        said = notices(app)
        assert f"Exported the chat to {target}." in said
        assert ("The question being answered now and its answer are not in the export: /export again once the "
                "answer is done to include them.") in said
        assert "What colour is it?" not in target.read_text()
        engine.go.set()
        await wait_until(pilot, lambda: idle(app), what="the answer to end")
        await send(pilot, "/export json")
        assert notices(app)[-1] == f"Updated the export {target}."
        assert "What colour is it?" in target.read_text()
