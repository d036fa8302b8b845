"""Helpers for driving the chat app in tests: build it on a scripted engine, type, wait, read the screen."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.dom import DOMNode
from textual.pilot import Pilot

from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import Engine
from chatbot.images import load_image
from chatbot.tui.app import ChatApp, create_app
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import Notice, Transcript

SIZE = (110, 36)


def pilot_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (keeps its fixtures: pytest reads the wrapped signature)."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))  # type: ignore[arg-type]

    return run


def scripted_app(
    engine: Engine, image: Path | None = None, *, session: Session | None = None, **kwargs: object
) -> ChatApp:
    """The app as the CLI builds it, on `engine`, saving under $BLIP2_CHAT_HOME (tests point it at a tmp dir)."""
    return create_app(
        Settings(model="scripted-opt"), image=load_image(image) if image else None, session=session,
        store=SessionStore(), engine_factory=lambda settings, progress: engine, renderer="halfcell",
        **kwargs,  # type: ignore[arg-type]
    )


async def wait_until(pilot: Pilot, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until `predicate()` is true; fail after `timeout` seconds saying what never happened."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await pilot.pause(0.02)


def idle(app: ChatApp) -> bool:
    """The model is loaded, nothing streams and no question waits."""
    return app.conversation.engine is not None and app.answer is None and not app.pending


async def ready(pilot: Pilot) -> None:
    await wait_until(pilot, lambda: idle(pilot.app), what="the model to load")  # type: ignore[arg-type]


async def send(pilot: Pilot, line: str) -> None:
    """Type `line` into the input box and press Enter."""
    field = pilot.app.query_one(ChatInput)
    field.focus()
    field.value = line
    await pilot.press("enter")  # returns once the app handled it; an answer may still be streaming


async def ask(pilot: Pilot, question: str) -> None:
    """Send a question and wait for its answer to finish."""
    await send(pilot, question)
    await wait_until(pilot, lambda: idle(pilot.app), what=f"the answer to {question!r}")  # type: ignore[arg-type]


def pairs(app: ChatApp) -> list[tuple[str, str]]:
    """(question, answer) as the transcript shows them."""
    return [(pair.question.text, pair.answer.text) for pair in app.query_one(Transcript).pairs]


def notices(app: ChatApp) -> list[str]:
    return [notice.text for notice in app.query(Notice)]


def errors(app: ChatApp) -> list[str]:
    return [notice.text for notice in app.query(Notice) if notice.kind == "error"]


def status(app: ChatApp) -> str:
    bar = app.query_one(StatusBar)
    return " | ".join([bar.activity, bar.model, bar.device, bar.precision, bar.memory, bar.speed])


def input_value(app: ChatApp) -> str:
    return app.query_one(ChatInput).value


def preview_source(node: DOMNode, selector: str = "#preview") -> str | None:
    """The file the image preview shows (`node`: the app, or a screen such as the picker)."""
    return node.query_one(selector, ImagePreview).source
