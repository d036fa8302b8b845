"""Screenshots of the chat app, compared with accepted ones (pytest-textual-snapshot).

Deterministic on purpose: fixed terminal size, session id and times, a generated picture,
scripted answers with a fixed speed, a constant memory reading. After a deliberate change to
the look, review the new pictures and accept them with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.session import ImageRef, Session, Turn
from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.widgets.chat_input import ChatInput
from tests.conftest import make_image
from tests.tui_support import ask, errors, ready, scripted_app, send, wait_until

SIZE = (100, 30)
SESSION_ID = "20250101-120000-abcdef"
pytestmark = pytest.mark.usefixtures("home")


def fixed_app(engine: ScriptedEngine, session: Session, image: Path | None):  # type: ignore[no-untyped-def]
    """The app with a constant memory reading, so that every run draws the same status line."""
    return scripted_app(engine, image, session=session, memory_probe=lambda: 10**9)


def test_main_screen_after_an_exchange(snap_compare, tmp_path) -> None:
    picture = make_image(tmp_path / "red.png", (200, 30, 30), size=(96, 64))
    engine = ScriptedEngine("a red square on a light grey background", "it is red")
    app = fixed_app(engine, Session(model="scripted-opt", id=SESSION_ID, created=0.0), picture)

    async def converse(pilot) -> None:  # type: ignore[no-untyped-def]
        app.query_one(ChatInput).cursor_blink = False
        await ready(pilot)
        await ask(pilot, "What is in the picture?")
        await ask(pilot, "What colour is the square?")
        await send(pilot, "/imgae other.png")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=converse)


def test_resumed_session_whose_image_moved(snap_compare) -> None:
    gone = ImageRef("/nonexistent/holiday.jpg", "0" * 64)
    session = Session(model="scripted-opt", id=SESSION_ID, created=0.0, image=gone, turns=[
        Turn("What is in the picture?", "a beach with two people", gone, created=0.0),
        Turn("Describe the sky", "the sky is blue with a few white", gone, stopped=True, created=0.0),
    ])
    app = fixed_app(ScriptedEngine(), session, None)

    async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
        app.query_one(ChatInput).cursor_blink = False
        await ready(pilot)
        await wait_until(pilot, lambda: errors(app))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=settle)

