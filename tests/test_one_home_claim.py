"""`SessionStore.save` serializes a chat again exactly when claiming it changed it, as claiming says (it guessed
from the id and the number of options): a copy under a new id, a saved option the settings refuse dropped."""

from __future__ import annotations

import json
import os

import pytest

from chatbot.core.session import Session, Turn
from chatbot.core.session_files import session_json
from chatbot.core.store import SessionForked, SessionStore


def test_a_dropped_option_is_not_saved_from_the_text_made_before_the_claim(tmp_path) -> None:
    store = SessionStore(tmp_path)
    session = Session(model="m", turns=[Turn("q?", "a.", None)], options={"max_new_tokens": 10**9, "temperature": 0.5})
    text = session_json(session)  # made before the claim: it still holds the refused option
    path = store.save(session, text)
    assert json.loads(path.read_text(encoding="utf-8"))["options"] == {"temperature": 0.5}
    assert any("max_new_tokens" in problem for problem in store.problems)


def test_a_copy_is_saved_under_its_own_id_from_the_text_made_before_the_claim(tmp_path) -> None:
    store = SessionStore(tmp_path)
    first = Session(model="m", turns=[Turn("q?", "a.", None)])
    store.save(first)
    store.release(first)
    session = SessionStore(tmp_path).load(first.id)
    other = tmp_path / f"{first.id}.json"
    other.write_text(other.read_text(encoding="utf-8").replace('"a."', '"changed elsewhere."'), encoding="utf-8")
    os.utime(other, (1, 1))
    text = session_json(session)  # made before the claim: it still names the old id
    with pytest.raises(SessionForked) as forked:
        SessionStore(tmp_path).save(session, text)
    assert session.id != first.id and forked.value.path == tmp_path / f"{session.id}.json"
    assert json.loads(forked.value.path.read_text(encoding="utf-8"))["id"] == session.id
