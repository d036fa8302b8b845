"""Sessions on disk: atomic saves, listing, damaged files set aside, exports that round-trip; and, as properties
over arbitrary JSON, that loading a session file gives a well-typed Session or a SessionError, never a crash."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.core.export import export_session
from chatbot.core.export_pages import export_markdown
from chatbot.core.session import ImageRef, Session, SessionError, Turn
from chatbot.core.session_files import session_from_json, session_json
from chatbot.core.store import SessionStore


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
    path = export_session(session, "json", tmp_path / "chat.json").path
    assert session_from_json(path.read_text(), "export") == session  # JSON export round-trips
    assert json.loads(path.read_text())["format"] == 1
    with pytest.raises(Exception, match="Unknown export format"):
        export_session(session, "pdf", tmp_path / "chat.pdf")


# -- properties: whatever a session file holds, loading it raises SessionError or gives a well-typed Session --

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=0, max_value=2e9) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
FIELDS = ("model", "id", "created", "turns", "image", "context_start", "options", "format", "turns.0", "turns.1",
          "turns.0.question", "turns.0.answer", "turns.0.image", "turns.0.stopped", "turns.0.created",
          "turns.1.image.source", "turns.1.image.sha256", "image.source", "image.sha256", "options.max_new_tokens",
          "options.seed", "options.temperature", "options.unknown")
MISSING = object()


def valid_document() -> dict[str, Any]:
    session = sample_session()
    session.options = {"max_new_tokens": 20, "seed": None, "temperature": 0.5}
    return json.loads(session_json(session))


def replaced(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    *parents, last = path.split(".")
    holder: Any = document
    for key in parents:
        holder = holder[int(key)] if isinstance(holder, list) else holder[key]
    key: Any = int(last) if isinstance(holder, list) else last
    if value is MISSING and isinstance(holder, dict):
        holder.pop(key, None)
    elif value is MISSING:
        del holder[key]
    else:
        holder[key] = value
    return document


def assert_well_typed(session: Session) -> None:
    """Every field has its type and range, and the session saves and loads back unchanged."""
    def finite_time(value: object) -> bool:
        return type(value) is float and math.isfinite(value) and value >= 0

    def image_ok(image: object) -> bool:
        return image is None or (isinstance(image, ImageRef) and isinstance(image.source, str)
                                 and isinstance(image.sha256, str))

    assert isinstance(session.model, str) and isinstance(session.id, str) and finite_time(session.created)
    assert isinstance(session.turns, list) and image_ok(session.image)
    assert type(session.context_start) is int and 0 <= session.context_start <= len(session.turns)
    for turn in session.turns:
        assert isinstance(turn, Turn) and isinstance(turn.question, str) and isinstance(turn.answer, str)
        assert type(turn.stopped) is bool and finite_time(turn.created) and image_ok(turn.image)
    assert isinstance(session.options, dict)
    for key, value in session.options.items():
        assert isinstance(key, str) and (value is None or type(value) in (bool, int, float, str))
        assert not isinstance(value, float) or math.isfinite(value)
    assert session_from_json(session_json(session), "again") == session


def loads_or_refuses(text: str) -> None:
    try:
        session = session_from_json(text, "The session file x.json")
    except SessionError as error:
        assert "x.json" in error.message
    else:
        assert_well_typed(session)
    try:
        data = json.loads(text)
    except ValueError:
        return
    try:
        Session.from_dict(data)
    except SessionError:
        pass


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_any_json_value_loads_as_a_well_typed_session_or_raises_session_error(value: object) -> None:
    loads_or_refuses(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(FIELDS), value=json_values | st.just(MISSING))
def test_a_session_with_any_field_replaced_loads_well_typed_or_raises_session_error(path: str, value: object) -> None:
    loads_or_refuses(json.dumps(replaced(valid_document(), path, value)))


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), min_size=1, max_size=4))
def test_a_session_with_several_fields_replaced_loads_well_typed_or_raises_session_error(
        changes: list[tuple[str, object]]) -> None:
    document = valid_document()
    for path, value in changes:
        try:
            document = replaced(document, path, value)
        except (KeyError, IndexError, TypeError, ValueError):  # an earlier change removed or retyped its parent
            continue
    loads_or_refuses(json.dumps(document))


def test_the_valid_document_loads() -> None:  # the mutations start from a session that loads
    assert_well_typed(session_from_json(json.dumps(valid_document()), "x"))


def test_markdown_export_escapes_what_came_from_outside() -> None:
    """Questions, answers and file names are literal text in the export: no emphasis, links, HTML or raw
    escape sequences; code spans hold backticks."""
    image = ImageRef("/photos/`odd` name\x1b[2J.png", "ab" * 32)
    session = Session(model="m", turns=[Turn("is *this* [a link](http://x) or <b>bold</b>?", "a_b | c & d", image)])
    markdown = export_markdown(session)
    assert "**You:** is \\*this\\* \\[a link\\](http://x) or \\<b\\>bold\\</b\\>?" in markdown
    assert "**Assistant:** a\\_b \\| c \\& d" in markdown
    assert "## Picture 1: \\`odd\\` name\\\\x1b\\[2J.png" in markdown  # its heading: the file name, as text
    assert "picture 1: ``/photos/`odd` name\\x1b[2J.png``, sha256" in markdown  # its path, in a code span
    assert "\x1b" not in markdown
