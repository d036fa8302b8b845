"""The chat app while an image is still opening (a slow download): questions wait for it, the status says so.

The picture is served from 127.0.0.1 by a server that answers at once and sends the picture only when the
test opens its gate (or a 404, or nothing if the opening is stopped): no clock decides what the test sees.
Which picture an answer was about is read from what the engine was given.
"""

from __future__ import annotations

import threading

import pytest

from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.app import ChatApp
from chatbot.tui.widgets.bubbles import MessageBubble, Notice
from chatbot.tui.widgets.transcript import Transcript
from tests.tui_support import (
    NOT_ASKED_ONE,
    SIZE,
    errors,
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


class SeeingEngine(ScriptedEngine):
    """A scripted engine that records which picture each answer was about (its source)."""

    def __init__(self, *answers: str) -> None:
        super().__init__(*answers)
        self.seen: list[str] = []

    def stream(self, image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        self.seen.append(image.source)
        return super().stream(image, prompt, options, cancel)


def last_question(app: ChatApp) -> MessageBubble:
    return app.query_one(Transcript).query("MessageBubble.question").last(MessageBubble)


@pilot_test
async def test_a_question_sent_while_an_image_opens_is_answered_about_that_image(pictures, gated) -> None:
    engine = SeeingEngine("a green square")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, what="the model")
        await send(pilot, f"/image {gated.url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {gated.url}… (Esc stops)"))
        await send(pilot, "What colour is it?")
        assert last_question(app).border_subtitle == "waiting for the image…"
        assert ("An image is still opening: your question is asked about it once it is open (Esc stops the opening "
                "and gives the question back).") in notices(app)
        assert pairs(app) == [] and engine.seen == [] and input_value(app) == ""
        assert status(app).startswith(f"Opening {gated.url}…")
        gated.release()
        await wait_until(pilot, lambda: pairs(app) == [("What colour is it?", "a green square")], what="the answer")
        assert engine.seen == [gated.url]  # about the new picture, not the red one
        shown = list(app.query_one(Transcript).children)  # the switch is said before the answer, not after it
        switched = next(kid for kid in shown if isinstance(kid, Notice) and kid.text.startswith("Now talking about"))
        assert switched.text == f"Now talking about {gated.url}."
        assert shown.index(switched) < shown.index(app.query_one(Transcript).pairs[0].answer)
        await wait_until(pilot, lambda: status(app).startswith("Ready"), what="Ready")


@pilot_test
async def test_with_no_model_yet_a_question_waits_for_the_opening_image_too(pictures, gated) -> None:
    """The model loads and an image opens: the model ready first, the question still waits for the image; the
    status line says the image is opening until it is open (not Ready)."""
    loaded = threading.Event()
    engine = SeeingEngine("green it is")
    app = scripted_app(engine, pictures["red"], loaded=loaded)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: status(app).startswith("Loading model scripted-opt"))
        await send(pilot, f"/image {gated.url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {gated.url}… (Esc stops); loading model"))
        await send(pilot, "And now?")
        assert last_question(app).border_subtitle == "waiting for the image…"
        loaded.set()
        await wait_until(pilot, lambda: app.conversation.engine is not None, what="the model")
        await pilot.pause()
        assert pairs(app) == [] and engine.seen == []  # the model is ready; the image is not
        assert status(app).startswith(f"Opening {gated.url}… (Esc stops) |")  # not Ready
        gated.release()
        await wait_until(pilot, lambda: pairs(app) == [("And now?", "green it is")], what="the answer")
        assert engine.seen == [gated.url]
        await wait_until(pilot, lambda: status(app).startswith("Ready"), what="Ready")


@pilot_test
async def test_the_status_says_opening_after_an_answer_ends_while_an_image_still_opens(pictures, gated) -> None:
    """A question sent while the model loads, before /image, is about the open picture: asked as soon as the
    model is ready, also while the new one opens. When its answer ends the status says the image is still
    opening; a question sent during the opening is about the new picture."""
    loaded = threading.Event()
    engine = SeeingEngine("red, I think", "now green")
    app = scripted_app(engine, pictures["red"], loaded=loaded)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "First?")
        assert last_question(app).border_subtitle == "waiting for the model…"
        await send(pilot, f"/image {gated.url}")
        await send(pilot, "Second?")
        loaded.set()
        await wait_until(pilot, lambda: pairs(app) == [("First?", "red, I think")] and app.answer is None,
                         what="the first answer")
        await pilot.pause()
        assert engine.seen == [str(pictures["red"])]
        assert status(app).startswith(f"Opening {gated.url}… (Esc stops) |")  # not Ready
        assert last_question(app).border_subtitle == "waiting for the image…"
        gated.release()
        await wait_until(pilot, lambda: len(pairs(app)) == 2 and idle(app), what="the second answer")
        assert pairs(app)[1] == ("Second?", "now green")
        assert engine.seen == [str(pictures["red"]), gated.url]
        assert status(app).startswith("Ready")


@pilot_test
async def test_a_question_waiting_for_an_image_that_fails_is_given_back(pictures, gated) -> None:
    engine = SeeingEngine("never said")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, what="the model")
        await send(pilot, f"/image {gated.url}")
        await send(pilot, "Is it green?")
        gated.fail()
        await wait_until(pilot, lambda: NOT_ASKED_ONE in notices(app), what="the question given back")
        assert errors(app) and "404" in errors(app)[-1]  # why the image did not open, said first
        assert input_value(app) == "Is it green?"
        assert last_question(app).border_subtitle == "not asked"
        assert engine.seen == [] and pairs(app) == [] and not app.pending
        assert status(app).startswith("Ready")
        await send(pilot, input_value(app))  # sent again: about the picture that is open
        await wait_until(pilot, lambda: pairs(app) == [("Is it green?", "never said")], what="the answer")
        assert engine.seen == [str(pictures["red"])]


@pilot_test
async def test_stopping_an_opening_gives_the_waiting_question_back(pictures, gated) -> None:
    """Also with no model yet: stopped with Esc, the question typed meanwhile is not asked, and is in the input."""
    loaded = threading.Event()
    engine = SeeingEngine()
    app = scripted_app(engine, pictures["red"], loaded=loaded)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, f"/image {gated.url}")
        await send(pilot, "//etc is a folder?")  # given back as typed
        await pilot.press("escape")
        await wait_until(pilot, lambda: NOT_ASKED_ONE in notices(app), what="the question given back")
        assert f"Stopped opening {gated.url}." in notices(app)
        assert input_value(app) == "//etc is a folder?"
        loaded.set()
        await wait_until(pilot, lambda: status(app).startswith("Ready"), what="Ready")
        assert engine.seen == [] and pairs(app) == [] and not app.pending


@pilot_test
async def test_the_status_names_the_stop_key_of_the_config_file(pictures, gated) -> None:
    """[keys] stop = "ctrl+t": the status line names Ctrl+T while an image opens and while an answer comes, and
    Ctrl+T does stop them."""
    engine = SeeingEngine("one two three four five")
    go_on = threading.Event()
    original = engine.stream

    def pausing(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if number == 1:  # the answer waits here until the test has read the status line (no clock)
                go_on.wait(30)

    engine.stream = pausing  # type: ignore[method-assign]
    app = scripted_app(engine, pictures["red"], settings=Settings(model="scripted-opt", keys={"stop": "ctrl+t"}))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, what="the model")
        await send(pilot, f"/image {gated.url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {gated.url}… (Ctrl+T stops)"))
        await send(pilot, "Waiting?")
        assert ("An image is still opening: your question is asked about it once it is open (Ctrl+T stops the "
                "opening and gives the question back).") in notices(app)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: f"Stopped opening {gated.url}." in notices(app), what="the stop")
        assert input_value(app) == "Waiting?"
        await send(pilot, "Counting?")
        await wait_until(pilot, lambda: app.answer is not None and pairs(app)[-1][1] == "one", what="the first word")
        assert status(app).startswith("Answering… (Ctrl+T stops)")
        await send(pilot, "Next?")
        assert ("An answer is still coming: your question is asked next, as soon as it ends (Ctrl+T stops it "
                "sooner).") in notices(app)
        await pilot.press("ctrl+t")
        go_on.set()
        await wait_until(pilot, lambda: len(pairs(app)) == 2 and idle(app), what="both answers")
        assert pairs(app)[0][0] == "Counting?" and app.conversation.session.turns[0].stopped
