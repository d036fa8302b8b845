"""Streaming in the chat app: tokens shown in batches (not one repaint each), and questions sent while an
answer is still coming wait in line and are asked when it ends.

Nothing here is timed: engines hold their tokens until the test lets them go, and the tests count repaints.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.widgets.bubbles import MessageBubble
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.comparison_view import ComparisonView
from chatbot.tui.widgets.transcript import Transcript
from chatbot.tui.workers import RepaintPace, StreamBuffer
from tests.tui_support import (
    SIZE,
    STOP_HINT,
    HeldEngine,
    ask,
    idle,
    input_value,
    notices,
    numbered_words,
    pairs,
    pilot_test,
    ready,
    released,
    saved_turns,
    scripted_app,
    send,
    wait_until,
)

BURST = " ".join(f"w{i}" for i in range(200))
LONG = numbered_words(40)
WAITS = "An answer is still coming: your question is asked next, as soon as it ends (Esc stops it sooner)."
pytestmark = pytest.mark.usefixtures("home")


@pytest.fixture
def repaints(monkeypatch: pytest.MonkeyPatch) -> dict[MessageBubble, list[str]]:
    """Every text each bubble was repainted with (`Static.update`), in order."""
    shown: dict[MessageBubble, list[str]] = {}
    update = MessageBubble.update

    def counted(self: MessageBubble, content: Any = "", **kwargs: Any) -> None:
        shown.setdefault(self, []).append(str(content))
        update(self, content, **kwargs)

    monkeypatch.setattr(MessageBubble, "update", counted)
    return shown


def let_all_tokens_come_at_once(engine: HeldEngine) -> None:
    """Let the held answer stream to its end while the app's loop is blocked: every token arrives before the
    app handles the first message about them."""
    engine.go.set()
    assert engine.streamed.acquire(timeout=30), "the answer never ended"


# -- 1. tokens that come together are shown together -------------------------------------------------


@pilot_test
async def test_tokens_arriving_together_cost_one_repaint_and_the_answer_is_exact(pictures, repaints) -> None:
    engine = HeldEngine(BURST)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)  # the scripted engine stops at max_new_tokens words
        await send(pilot, "Describe it")
        bubble = app.query_one(Transcript).pairs[-1].answer
        let_all_tokens_come_at_once(engine)
        await wait_until(pilot, lambda: idle(app), what="the answer to end")
        shown = repaints.get(bubble, [])
        assert 1 <= len(shown) <= 3, len(shown)  # 200 tokens: one repaint, and the recorded turn's (was 201)
        assert all(BURST.startswith(text) for text in shown)  # nothing lost, nothing twice
        assert bubble.text == BURST and shown[-1] == BURST
        assert pairs(app) == [("Describe it", BURST)] and saved_turns()[0]["answer"] == BURST


@pilot_test
async def test_a_comparison_streams_in_batches_too(pictures, repaints) -> None:
    engine = HeldEngine("a red square", BURST)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        engine.go.set()
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: idle(app), what="the first answer")
        assert engine.streamed.acquire(timeout=5)
        engine.go.clear()
        await send(pilot, f"/compare {pictures['green']}")
        await wait_until(pilot, lambda: app.comparing is not None, what="the comparison to start")
        view = app.query_one(ComparisonView)
        before = len(repaints.get(view.second, []))
        let_all_tokens_come_at_once(engine)
        await wait_until(pilot, lambda: idle(app) and app.comparing is None, what="the comparison to end")
        shown = repaints[view.second][before:]
        assert 1 <= len(shown) <= 3, len(shown)
        assert all(BURST.startswith(text) for text in shown) and view.second.text == BURST


def test_the_buffer_tells_once_per_batch_and_gives_everything_in_order() -> None:
    buffer = StreamBuffer()
    told = [buffer.put(word) for word in ("a", " b", " c")]
    assert told == [True, False, False]  # one message for the three
    assert buffer.take() == "a b c" and buffer.take() == ""
    assert buffer.put(" d") is True  # taken: the next token is told again
    assert buffer.take() == " d"


def test_repaints_are_paced_by_the_clock_not_by_the_tokens() -> None:
    now = [0.0]
    pace = RepaintPace(10, clock=lambda: now[0])
    painted = []
    for token in range(1000):  # a token every 2 ms (pretend) for 2 s: 500 a second
        now[0] = token * 0.002
        if pace.wait() == 0:
            painted.append(now[0])
            pace.painted()
    assert painted[0] == 0.0  # the first at once
    assert 19 <= len(painted) <= 21  # then ten a second, not 500
    assert all(later - earlier > 0.099 for earlier, later in zip(painted, painted[1:], strict=False))


# -- 2. a question sent while an answer streams waits, and is asked next ------------------------------


def bubbles(app: Any) -> list[tuple[str, str]]:
    """The transcript's bubbles in screen order: (role, text)."""
    return [(child.role, child.text) for child in app.query_one(Transcript).children
            if isinstance(child, MessageBubble)]


@pilot_test
async def test_a_question_sent_while_an_answer_streams_is_asked_when_it_ends(pictures) -> None:
    engine = HeldEngine(LONG, "it is red", free=2)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        await send(pilot, "Describe it")
        await wait_until(pilot, lambda: bubbles(app)[-1] == ("answer", "word0 word1"), what="two words")
        await send(pilot, "And the square?")
        assert input_value(app) == ""  # it left the input at once: what is typed next is a new line
        waiting = app.query_one(Transcript).children[-2]
        assert isinstance(waiting, MessageBubble) and waiting.text == "And the square?"
        assert waiting.has_class("-waiting") and waiting.border_subtitle == "waiting its turn…"
        assert notices(app)[-1] == WAITS
        await send(pilot, "/undo")  # a command that changes the turns is still refused, and kept to send later
        assert notices(app)[-1] == f"An answer is still coming, so /undo has to wait. {STOP_HINT}"
        assert input_value(app) == "/undo"
        app.query_one(ChatInput).value = ""
        assert len(engine.prompts) == 1  # not asked yet
        engine.go.set()
        await wait_until(pilot, lambda: idle(app), what="both answers")
        assert bubbles(app) == [("question", "Describe it"), ("answer", LONG),
                                ("question", "And the square?"), ("answer", "it is red")]
        assert not waiting.has_class("-waiting") and "waiting" not in str(waiting.border_subtitle)
        assert engine.prompts[-1].endswith(f"Question: Describe it Answer: {LONG}. Question: And the square? Answer:")
        assert [(t["question"], t["answer"]) for t in saved_turns()] == [
            ("Describe it", LONG), ("And the square?", "it is red")]
        assert input_value(app) == ""


@pilot_test
async def test_escape_stops_the_answer_and_the_waiting_question_is_asked_at_once(pictures) -> None:
    engine = HeldEngine(LONG, "it is red", free=2)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        await send(pilot, "Describe it")
        await wait_until(pilot, lambda: bubbles(app)[-1] == ("answer", "word0 word1"), what="two words")
        await send(pilot, "And the square?")
        await send(pilot, "Is it big?")  # two wait, asked in the order they were sent
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(engine.prompts) == 2, what="the first waiting question to be asked")
        first = app.query_one(Transcript).pairs[0].answer
        assert first.text == "word0 word1" and first.border_subtitle == "stopped"
        engine.go.set()
        await wait_until(pilot, lambda: idle(app), what="the waiting questions' answers")
        assert pairs(app) == [("Describe it", "word0 word1"), ("And the square?", "it is red"),
                              ("Is it big?", "I cannot tell.")]
        assert [t["stopped"] for t in saved_turns()] == [True, False, False]


@pilot_test
async def test_quitting_keeps_a_waiting_question_after_the_stopped_answer(pictures) -> None:
    engine = HeldEngine(LONG, free=2)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        await send(pilot, "Describe it")
        await wait_until(pilot, lambda: bubbles(app)[-1] == ("answer", "word0 word1"), what="two words")
        await send(pilot, "And the square?")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app._exit, what="the app to exit")
    assert [(t["question"], t["answer"], t["stopped"]) for t in saved_turns()] == [
        ("Describe it", "word0 word1", True), ("And the square?", "", True)]
    assert len(engine.prompts) == 1  # the waiting question was kept, not asked


@pilot_test
async def test_a_question_sent_while_a_comparison_streams_comes_after_it(pictures) -> None:
    engine = HeldEngine("a red square", LONG, "still red", free=2)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot, released(engine):
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        engine.go.set()
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: idle(app), what="the first answer")
        engine.go.clear()
        await send(pilot, f"/compare {pictures['green']}")
        await wait_until(pilot, lambda: app.comparing is not None and app.comparing.view.second.text == "word0 word1",
                         what="two words of the comparison")
        await send(pilot, "And now?")
        assert input_value(app) == "" and notices(app)[-1] == WAITS
        engine.go.set()
        await wait_until(pilot, lambda: idle(app) and app.comparing is None and len(pairs(app)) == 2,
                         what="the comparison, then the waiting question's answer")
        transcript = app.query_one(Transcript)
        order = [child for child in transcript.children if isinstance(child, (MessageBubble, ComparisonView))]
        first, second = transcript.pairs
        assert order == [first.question, first.answer, *first.comparisons, second.question, second.answer]
        assert first.comparisons[0].second.text == LONG and pairs(app)[-1] == ("And now?", "still red")


@pilot_test
async def test_the_app_marks_an_answer_cut_off_by_max_new_tokens(pictures) -> None:
    app = scripted_app(ScriptedEngine("one two three four five", "six"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=3)
        await ask(pilot, "What is it?")
        await ask(pilot, "And?")
        first, second = (pair.answer for pair in app.query_one(Transcript).pairs)
        assert first.text == "one two three"
        assert first.border_subtitle == "cut off at 3 tokens: /set max_new_tokens 6 for more"
        assert second.border_subtitle.endswith("tok/s")  # it ended by itself
