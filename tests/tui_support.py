"""Helpers for driving the chat app in tests: build it on a scripted engine, type, wait, read the screen."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from textual.app import App
from textual.dom import DOMNode
from textual.pilot import Pilot
from textual.widget import Widget

from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import CancelToken, Engine
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from chatbot.locations import sessions_dir
from chatbot.tui import app as app_module
from chatbot.tui.app import ChatApp, create_app
from chatbot.tui.widgets.bubbles import Notice
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import Transcript

SIZE = (110, 36)

# Sentences the app says, written out so that a front end that words them its own way fails.
STOP_HINT = "Let it finish, or stop it (Esc in the app, Ctrl+C in the screen-reader mode)."
NOT_ASKED_ONE = "The question that waited for the image was not asked; it is back in the input."


def numbered_words(count: int) -> str:
    """A long answer of `count` words, "word0 word1 ...", whose every prefix is easy to recognise."""
    return " ".join(f"word{i}" for i in range(count))


def pilot_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (keeps its fixtures: pytest reads the wrapped signature)."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))  # type: ignore[arg-type]

    return run


def scripted_app(
    engine: Engine, image: Path | None = None, *, session: Session | None = None, settings: Settings | None = None,
    loaded: threading.Event | None = None, renderer: str = "halfcell", **kwargs: object
) -> ChatApp:
    """The app as the CLI builds it, on `engine`, saving under $BLIP2_CHAT_HOME (tests point it at a tmp dir).

    Args:
        engine: what the app's model loading gives it.
        image: the picture open at the start.
        session: a saved chat to go on with.
        settings: the app's settings (default: the scripted model, nothing else changed).
        loaded: when given, the model is loaded only once this is set.
        renderer: how the preview draws the picture.
        **kwargs: passed on to `create_app`.
    """

    def factory(settings: Settings, progress: object) -> Engine:
        if loaded is not None:
            assert loaded.wait(30)
        return engine

    return create_app(
        settings or Settings(model="scripted-opt"), image=load_image(image) if image else None, session=session,
        store=SessionStore(), engine_factory=factory, renderer=renderer,
        **kwargs,  # type: ignore[arg-type]
    )


def run_tui_headless(engine: Engine, picture: Path, use: Callable[[Pilot], Awaitable[None]],
                     monkeypatch: Any) -> tuple[int, list[ChatApp]]:
    """`run_tui` as the CLI calls it, all the way to its farewell, headless on `engine` and driven by `use` (an
    auto-pilot that ends the app); its exit status, and the app it made."""
    made: list[ChatApp] = []

    def app_on_the_engine(*args: object, **kwargs: object) -> ChatApp:
        made.append(create_app(*args, **{**kwargs, "engine_factory": lambda settings, progress: engine}))  # type: ignore[arg-type]
        return made[-1]

    real_run = App.run
    monkeypatch.setattr(app_module, "create_app", app_on_the_engine)
    monkeypatch.setattr(app_module, "prepare_terminal_graphics", lambda: "halfcell")
    monkeypatch.setattr(app_module, "exit_now", lambda code, loaded=None: code)
    monkeypatch.setattr(ChatApp, "run", lambda self: real_run(self, headless=True, size=SIZE, auto_pilot=use))
    status = app_module.run_tui(Settings(model="scripted-opt"), image=load_image(picture))
    return status, made


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


async def ready(pilot: Pilot, timeout: float = 10.0, what: str = "the model to load") -> None:
    """Wait until the model is loaded and nothing streams (a real checkpoint wants a longer `timeout`)."""
    await wait_until(pilot, lambda: idle(pilot.app), timeout, what)  # type: ignore[arg-type]


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


def rows(app: App[None], widget: Widget | None = None) -> list[str]:
    """The text the screen shows, a row a line (only `widget`'s part of it when given)."""
    strips = app.screen._compositor.render_strips()
    if widget is None:
        return [strip.text for strip in strips]
    region = widget.region
    return [strip.crop(region.x, region.right).text for strip in strips[region.y:region.bottom]]


def shown(app: App[None], widget: Widget | None = None) -> str:
    return "\n".join(rows(app, widget))


def saved_turns() -> list[dict[str, Any]]:
    """The turns of the one chat saved under $BLIP2_CHAT_HOME, as its file holds them."""
    files = list(sessions_dir().glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())["turns"]  # type: ignore[no-any-return]


class HeldEngine(ScriptedEngine):
    """Streams the first `free` words of each answer, then holds the rest until `go` is set (or it is stopped);
    `streamed` is released each time an answer has given all it will."""

    def __init__(self, *answers: str, free: int = 0) -> None:
        super().__init__(*answers)
        self.free = free
        self.go = threading.Event()
        self.streamed = threading.Semaphore(0)
        self._given = 0

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        self._given = 0
        yield from super().stream(*args, **kwargs)
        self.streamed.release()

    def _wait(self, cancel: CancelToken) -> None:
        if self._given >= self.free:
            while not cancel.cancelled and not self.go.wait(0.01):
                pass
        self._given += 1


@contextlib.asynccontextmanager
async def released(engine: HeldEngine) -> AsyncIterator[None]:
    """Let the engine go when the test ends, also when it fails: the app waits for its worker on exit."""
    try:
        yield
    finally:
        engine.go.set()
