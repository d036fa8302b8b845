"""Sessions on disk: atomic saves, listing, damaged files set aside, exports that round-trip."""

from __future__ import annotations

import json

import pytest

from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.store import SessionError, SessionStore, export_markdown, export_session, session_from_json


def sample_session() -> Session:
    cat = ImageRef("/photos/cat.jpg", "ab" * 32)
    dog = ImageRef("https://example.org/dog.png", "cd" * 32)
    session = Session(model="Salesforce/blip2-opt-2.7b", image=dog, options={"max_new_tokens": 20})
    session.turns = [
        Turn("What is it?", "a cat", cat), Turn("What colour?", "black and white", cat, stopped=True),
        Turn("And this one?", "a dog", dog),
    ]
    session.context_start = 2
    return session


def test_save_load_list_latest(tmp_path) -> None:
    store = SessionStore(tmp_path)
    first, second = sample_session(), sample_session()
    second.id = first.id + "-b"
    store.save(first)
    store.save(second)
    assert store.load(first.id) == first
    summaries = store.summaries()
    assert {s.id for s in summaries} == {first.id, second.id}
    assert summaries[0].turns == 3 and summaries[0].first_question == "What is it?"
    latest = store.latest()
    assert latest is not None and latest.id == summaries[0].id
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


def test_damaged_file_is_set_aside_and_reported(tmp_path) -> None:
    store = SessionStore(tmp_path)
    good = sample_session()
    store.save(good)
    (tmp_path / "broken.json").write_text('{"model": "x", "turns": [')
    assert [s.id for s in store.summaries()] == [good.id]
    assert list(tmp_path.glob("broken.*.corrupt")) and "broken.json" in store.problems[0]
    (tmp_path / "half.json").write_text("{}")
    with pytest.raises(SessionError, match="not a readable"):
        store.load("half")
    with pytest.raises(SessionError, match="no saved session"):
        store.load("nope")


def test_exports(tmp_path) -> None:
    session = sample_session()
    markdown = export_markdown(session)
    assert "/photos/cat.jpg" in markdown and "ab" * 32 in markdown and "cd" * 32 in markdown
    assert "**You:** What colour?" in markdown and "*(stopped)*" in markdown
    path = export_session(session, "json", tmp_path / "chat.json")
    assert session_from_json(path.read_text(), "export") == session  # JSON export round-trips
    assert json.loads(path.read_text())["format"] == 1
    with pytest.raises(Exception, match="Unknown export format"):
        export_session(session, "pdf", tmp_path / "chat.pdf")
