"""A long chat in the chat app: only its newest turns are on screen, and everything else still works.

A resumed chat of thousands of turns used to mount every bubble, one at a time, before the first paint (minutes at
5,000 turns; never at 20,000): now the newest `SHOWN_TURNS` are shown, below one line counting the others, which
stay saved. These tests count widgets and read the screen; how fast it is is benchmarks/bench_app_long_chat.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.line_history import HISTORY_LINES
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from chatbot.tui.widgets import transcript as transcript_module
from chatbot.tui.widgets.bubbles import EarlierTurns, MessageBubble, Notice
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.transcript import SHOWN_TURNS, Transcript
from tests.tui_support import SIZE, ask, notices, pairs, pilot_test, ready, scripted_app, send, wait_until

LONG = 3000
pytestmark = pytest.mark.usefixtures("home")


def long_chat(picture: Path, turns: int, answer: str = "Answer {index}: a red square.") -> Session:
    """A saved chat of `turns` turns about `picture`, read back from the store as `--continue` reads it."""
    ref = ImageRef(str(picture), load_image(picture).sha256)
    session = Session(model="scripted-opt", image=ref)
    session.turns = [Turn(f"Question {index}?", answer.format(index=index), ref) for index in range(turns)]
    store = SessionStore()
    store.save(session)
    return store.load(session.id)


def saved_turns(session_id: str) -> list[tuple[str, str]]:
    return [(turn.question, turn.answer) for turn in SessionStore().load(session_id).turns]


def earlier_line(app: object) -> str | None:
    """The text of the line counting the turns not shown (None when there is none): it must be the first line."""
    transcript = app.query_one(Transcript)  # type: ignore[attr-defined]
    lines = list(transcript.query(EarlierTurns))
    if not lines:
        return None
    assert transcript.children[0] is lines[0] and len(lines) == 1
    return str(lines[0].text)


@pilot_test
async def test_a_long_chat_opens_with_its_newest_turns_and_a_line_for_the_others(pictures) -> None:
    session = long_chat(pictures["red"], LONG)
    app = scripted_app(ScriptedEngine("fine"), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        expected = [(f"Question {index}?", f"Answer {index}: a red square.") for index in range(LONG)]
        assert pairs(app) == expected[-SHOWN_TURNS:]
        assert len(app.query(MessageBubble)) == 2 * SHOWN_TURNS  # nothing else of the chat is mounted
        assert earlier_line(app) == (f"{LONG - SHOWN_TURNS} earlier turns are saved but not shown here; /export md "
                                     "or /export html writes the whole chat to read.")
        assert f"Resumed session {session.id} ({LONG} turns)." in notices(app)
        await pilot.press("ctrl+q")
    assert saved_turns(session.id) == expected  # every turn kept in the saved chat


@pilot_test
async def test_undo_and_retry_act_on_the_last_turn_of_a_long_chat(pictures) -> None:
    session = long_chat(pictures["red"], LONG)
    app = scripted_app(ScriptedEngine("a second look"), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/undo")
        assert f"Removed the last question and its answer: Question {LONG - 1}?" in notices(app)
        assert pairs(app)[-1] == (f"Question {LONG - 2}?", f"Answer {LONG - 2}: a red square.")
        assert len(pairs(app)) == SHOWN_TURNS - 1
        assert earlier_line(app) is not None and earlier_line(app).startswith(f"{LONG - SHOWN_TURNS} earlier")
        await send(pilot, "/retry")
        await wait_until(pilot, lambda: app.answer is None, what="the retried answer")
        assert pairs(app)[-1] == (f"Question {LONG - 2}?", "a second look")
        assert len(pairs(app)) == SHOWN_TURNS - 1
    assert saved_turns(session.id)[-2:] == [(f"Question {LONG - 3}?", f"Answer {LONG - 3}: a red square."),
                                            (f"Question {LONG - 2}?", "a second look")]
    assert len(saved_turns(session.id)) == LONG - 1


@pilot_test
async def test_undo_past_the_turns_shown_brings_the_earlier_ones_back(pictures, monkeypatch) -> None:
    monkeypatch.setattr(transcript_module, "SHOWN_TURNS", 3)
    session = long_chat(pictures["red"], 7)
    app = scripted_app(ScriptedEngine(), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert [question for question, _ in pairs(app)] == ["Question 4?", "Question 5?", "Question 6?"]
        assert earlier_line(app) is not None and earlier_line(app).startswith("4 earlier turns are saved")
        for _ in range(3):
            await send(pilot, "/undo")
        assert [question for question, _ in pairs(app)] == ["Question 1?", "Question 2?", "Question 3?"]
        assert earlier_line(app) is not None and earlier_line(app).startswith("1 earlier turn is saved")
        for _ in range(3):
            await send(pilot, "/undo")
        assert pairs(app) == [("Question 0?", "Answer 0: a red square.")]
        assert earlier_line(app) is None  # nothing left unshown: the line goes


@pilot_test
async def test_a_chat_grown_long_in_the_app_lets_its_oldest_bubbles_go(pictures, monkeypatch) -> None:
    monkeypatch.setattr(transcript_module, "SHOWN_TURNS", 3)
    monkeypatch.setattr(transcript_module, "TRIM_STEP", 2)
    app = scripted_app(ScriptedEngine(*(f"answer {index}" for index in range(6))), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for index in range(4):
            await ask(pilot, f"question {index}")
            if index < 2:
                await send(pilot, "/clear")  # a notice after the answer
        assert len(pairs(app)) == 4 and earlier_line(app) is None
        await ask(pilot, "question 4")  # 3 + 2 on screen: the oldest 2 go
        assert pairs(app) == [(f"question {index}", f"answer {index}") for index in (2, 3, 4)]
        assert len(app.query(MessageBubble)) == 6
        assert earlier_line(app) is not None and earlier_line(app).startswith("2 earlier turns are saved")
        shown = [type(child) for child in app.query_one(Transcript).children]  # the notice between the dropped
        assert shown == [EarlierTurns, Notice, *[MessageBubble] * 6]  # turns went; the one before those kept stays
        await send(pilot, "/undo")
        assert pairs(app) == [(f"question {index}", f"answer {index}") for index in (2, 3)]
        assert len(app.conversation.session.turns) == 4


@pilot_test
async def test_ctrl_y_copies_an_answer_not_shown_when_those_shown_have_no_words(pictures, monkeypatch) -> None:
    monkeypatch.setattr(transcript_module, "SHOWN_TURNS", 2)
    monkeypatch.setenv("PATH", str(pictures["red"].parent / "no-tools"))  # no clipboard tool: the terminal's way
    session = long_chat(pictures["red"], 4)
    for turn in session.turns[-2:]:
        turn.answer = ""  # the model said nothing to the last two
    app = scripted_app(ScriptedEngine(), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+y")
        assert app.clipboard == "Answer 1: a red square."


@pilot_test
async def test_up_recalls_the_newest_questions_of_a_long_chat(pictures) -> None:
    session = long_chat(pictures["red"], LONG)
    session.turns[-3].question = "Question 2999?"  # asked twice: once in Up's lines, where it was asked last
    app = scripted_app(ScriptedEngine(), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        field = app.query_one(ChatInput)
        for expected in ("Question 2999?", "Question 2998?", "Question 2996?", "Question 2995?"):
            await pilot.press("up")
            assert field.value == expected
        kept = [line for line in field.history if line.startswith("Question ")]
        assert kept == [turn.question for turn in session.turns[-HISTORY_LINES:] if turn is not session.turns[-3]]
