"""Every /clear of a chat is kept with the turn asked after it (`Turn.fresh`), so a resumed chat and its exports show
where the model stopped seeing the questions before; they showed the last /clear only (`context_start`), and an
export none, so a reader took answers given afresh for answers that knew the turns above them."""

from __future__ import annotations

import json

import pytest

from chatbot.core.conversation import Conversation
from chatbot.core.export import export_session
from chatbot.core.session import CONTEXT_CLEARED, ImageRef, Session, SessionError, Turn
from chatbot.core.session_files import session_from_json, session_json
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from tests.test_export_accessible import read_html, read_markdown
from tests.tui_support import SIZE, notices, pilot_test, ready, scripted_app, wait_until


@pytest.fixture
def chat(engines, pictures) -> Conversation:
    return Conversation.with_engine(engines["opt"], load_image(pictures["red"]), GenerationOptions(max_new_tokens=3))


def ask(chat: Conversation, question: str) -> None:
    "".join(chat.ask(question))


def test_each_clear_marks_the_turn_after_it_and_undo_and_retry_keep_the_mark(chat, pictures) -> None:
    ask(chat, "one")
    chat.clear()
    ask(chat, "two")
    ask(chat, "three")
    chat.clear()
    chat.clear()  # twice in a row is one fresh start
    ask(chat, "four")
    assert [turn.fresh for turn in chat.session.turns] == [False, True, False, True]
    chat.undo()
    ask(chat, "five")  # asked where "four" was, after the same /clear
    list(chat.retry())
    assert [(turn.question, turn.fresh) for turn in chat.session.turns][2:] == [("three", False), ("five", True)]
    chat.undo()
    chat.undo()
    ask(chat, "six")  # the /clear that came after "three" still holds: "two" is not folded back in
    assert [turn.fresh for turn in chat.session.turns] == [False, True, True]
    assert chat.prepare("seven").text.count("Question:") == 2  # "six" and "seven" only
    assert [chat.session.cleared_before(index) for index in range(4)] == [False, True, True, False]


def test_another_picture_starts_afresh_but_is_not_a_clear(chat, pictures) -> None:
    ask(chat, "one")
    chat.set_image(load_image(pictures["green"]))
    ask(chat, "two")
    assert [turn.fresh for turn in chat.session.turns] == [False, True]
    assert not chat.session.cleared_before(1)  # the picture's change is what a transcript shows


def test_the_mark_is_saved_only_where_true_and_read_back(chat, home) -> None:
    ask(chat, "one")
    chat.clear()
    ask(chat, "two")
    text = session_json(chat.session)
    assert text == json.dumps({"format": 1, **chat.session.to_dict()}, ensure_ascii=False, indent=1)
    turns = json.loads(text)["turns"]
    assert "fresh" not in turns[0] and turns[1]["fresh"] is True
    back = session_from_json(text, "chat.json")
    assert [turn.fresh for turn in back.turns] == [False, True] and back == chat.session


def turns_data(count: int) -> list[dict[str, object]]:
    return [{"question": f"q{index}", "answer": f"a{index}", "image": None} for index in range(count)]


def test_a_file_from_before_the_mark_shows_its_last_clear() -> None:
    old = {"format": 1, "model": "m", "id": "x", "created": 1.0, "turns": turns_data(4), "context_start": 2}
    session = session_from_json(json.dumps(old), "old.json")
    assert [session.cleared_before(index) for index in range(4)] == [False, False, True, False]
    assert session.load_notes == [] and session.not_understood == ""


def test_a_mark_on_the_first_turn_means_nothing_and_a_mark_not_true_or_false_is_refused() -> None:
    data = {"format": 1, "model": "m", "id": "x", "created": 1.0, "turns": turns_data(2)}
    data["turns"][0]["fresh"] = True  # type: ignore[index]
    assert not session_from_json(json.dumps(data), "f.json").cleared_before(0)
    data["turns"][1]["fresh"] = "yes"  # type: ignore[index]
    with pytest.raises(SessionError, match=r"turns\[1\]\.fresh is not true or false"):
        session_from_json(json.dumps(data), "f.json")


@pytest.fixture
def cleared_twice(tmp_path) -> Session:
    """One picture asked about with two /clears, then another picture (a fresh start that is no /clear)."""
    first, second = ImageRef(str(tmp_path / "a.png"), "1" * 64), ImageRef(str(tmp_path / "b.png"), "2" * 64)
    return Session(model="m", context_start=4, turns=[
        Turn("q1", "a1", first), Turn("q2", "a2", first, fresh=True), Turn("q3", "a3", first),
        Turn("q4", "a4", first, fresh=True), Turn("q5", "a5", second, fresh=True)])


def test_markdown_says_each_clear_before_the_question_after_it(cleared_twice, tmp_path) -> None:
    page = export_session(cleared_twice, "md", tmp_path / "chat.md").path.read_text(encoding="utf-8")
    blocks = read_markdown(page)[2]
    said = [block for block in blocks if block in (CONTEXT_CLEARED, "You: q2", "You: q4", "You: q5")]
    assert said == [CONTEXT_CLEARED, "You: q2", CONTEXT_CLEARED, "You: q4", "You: q5"]


def test_html_says_each_clear_before_the_question_after_it(cleared_twice, tmp_path) -> None:
    page = export_session(cleared_twice, "html", tmp_path / "chat.html").path.read_text(encoding="utf-8")
    reading = read_html(page)
    order = [text for kind, text in reading.items if (kind, text) == ("text", CONTEXT_CLEARED) or kind == "h3"]
    assert order == ["Question 1: q1", CONTEXT_CLEARED, "Question 2: q2", "Question 3: q3", CONTEXT_CLEARED,
                     "Question 4: q4", "Question 5: q5"]


@pilot_test
async def test_a_resumed_chat_shows_every_clear_in_the_app(pictures, home) -> None:
    red = load_image(pictures["red"])
    ref = ImageRef(red.source, red.sha256)
    session = Session(model="m", image=ref, context_start=3, turns=[
        Turn("q1", "a1", ref), Turn("q2", "a2", ref, fresh=True), Turn("q3", "a3", ref, fresh=True)])
    SessionStore().save(session)
    app = scripted_app(ScriptedEngine("x"), session=SessionStore().load(session.id))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: any(note.startswith("Resumed session") for note in notices(app)))
        assert notices(app).count(CONTEXT_CLEARED) == 2
