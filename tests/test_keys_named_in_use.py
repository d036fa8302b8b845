"""Sentences that name one of the app's keys name the one in use: the config file's [keys] may change them."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.answer_wording import still_answering
from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.widgets.image_preview import ImagePreview
from tests.conftest import make_image
from tests.tui_support import SIZE, HeldEngine, errors, notices, pilot_test, ready, scripted_app, send, wait_until

pytestmark = pytest.mark.usefixtures("home")

REMAPPED = Settings(model="scripted-opt", keys={"stop": "ctrl+t", "open_image": "ctrl+k,f2"})


def test_the_refusal_while_an_answer_comes_names_the_stop_key_in_use() -> None:
    assert still_answering("/clear").hint == (
        "Let it finish, or stop it (Esc in the app, Ctrl+C in the screen-reader mode).")
    assert still_answering("/clear", {"stop": "ctrl+t,escape"}).hint == (
        "Let it finish, or stop it (Ctrl+T in the app, Ctrl+C in the screen-reader mode).")


@pilot_test
async def test_an_app_without_an_image_names_the_open_key_in_use(pictures: dict[str, Path]) -> None:
    app = scripted_app(ScriptedEngine("red"), settings=REMAPPED)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: notices(app), what="the first notice")
        assert notices(app)[0].endswith("Choose one here (Esc closes the picker; Ctrl+K opens it again).")
        assert app.query_one(ImagePreview).summary == "No image yet. Type /image PATH or press Ctrl+K."


@pilot_test
async def test_a_command_refused_while_answering_names_the_stop_key_in_use(pictures: dict[str, Path]) -> None:
    engine = HeldEngine("one two three", free=1)
    app = scripted_app(engine, pictures["red"], settings=REMAPPED)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Count?")
        await wait_until(pilot, lambda: app.answer is not None, what="the answer")
        await send(pilot, "/clear")
        await wait_until(pilot, lambda: errors(app) or [n for n in notices(app) if "/clear" in n], what="the refusal")
        said = errors(app) + notices(app)
        assert any("stop it (Ctrl+T in the app, Ctrl+C in the screen-reader mode)" in line for line in said), said
        engine.go.set()
        await wait_until(pilot, lambda: app.answer is None, what="the answer's end")


@pilot_test
async def test_a_resumed_chat_whose_image_is_gone_names_the_open_key_in_use(tmp_path: Path) -> None:
    photo = make_image(tmp_path / "photo.png", (10, 20, 200))
    app = scripted_app(ScriptedEngine("blue"), photo, settings=REMAPPED)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Colour?")
        await wait_until(pilot, lambda: app.conversation.session.turns and app.answer is None, what="the answer")
    photo.unlink()
    session = SessionStore().latest()
    assert isinstance(session, Session)
    app = scripted_app(ScriptedEngine("x"), session=session, settings=REMAPPED)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: errors(app), what="a notice about the image")
        assert errors(app)[0].endswith("open it again with /image PATH or Ctrl+K.")
