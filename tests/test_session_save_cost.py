"""What a save costs and what it keeps: the session file is made once per save, without deep copies or json's
pure-Python indenting encoder, and is the same text as before, character for character; an image whose name is
not UTF-8 keeps its link to the chat through the session file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import chatbot.core.store as store_module
from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn
from chatbot.core.session_files import session_from_json, session_json
from chatbot.core.store import SessionForked, SessionStore
from chatbot.images import load_image

# -- the reference: the session file as the version before this one wrote it ------------------------------


def reference_dict(session: Session) -> dict[str, Any]:
    """`Session.to_dict` as it was: `dataclasses.asdict`, then the private fields, an empty draft, empty
    `compared` lists and `fresh` when false taken out."""
    data = asdict(session)
    for private in ("load_notes", "not_understood", "untrusted_model", "from_elsewhere"):
        del data[private]
    if not session.draft:
        del data["draft"]
    for turn in data["turns"]:
        if not turn["compared"]:
            del turn["compared"]
        if not turn["fresh"]:
            del turn["fresh"]
    return data


def reference_json(session: Session) -> str:
    """The session file's text as the version before this one made it."""
    return json.dumps({"format": 1, **reference_dict(session)}, ensure_ascii=False, indent=1)


UNDECODABLE = "".join(chr(code) for code in range(0xDC80, 0xDD00))  # a non-UTF-8 name's bytes, via os.fsdecode
any_text = st.text(st.characters(exclude_categories=()), max_size=30)  # lone surrogates too
source_text = st.text(st.characters(exclude_characters=UNDECODABLE, exclude_categories=()), max_size=30)
numbers = st.floats() | st.integers(-(2**70), 2**70)  # NaN and infinities too: json writes them its own way
images = st.none() | st.builds(ImageRef, source_text, any_text)
plain = st.none() | st.booleans() | numbers | any_text
compared = st.builds(ComparedAnswer, st.builds(ImageRef, source_text, any_text), any_text, st.booleans())
turns = st.builds(Turn, any_text, any_text, images, st.booleans(), numbers, st.lists(compared, max_size=3),
                  st.booleans())
sessions = st.builds(Session, any_text, any_text, numbers, st.lists(turns, max_size=6), images,
                     st.integers(-5, 10**12), st.dictionaries(any_text, plain, max_size=4), any_text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(sessions)
def test_the_session_file_is_the_same_text_as_before(session: Session) -> None:
    assert json.dumps(session.to_dict()) == json.dumps(reference_dict(session))
    assert session_json(session) == reference_json(session)


def test_the_reference_and_the_file_agree_on_a_known_session() -> None:
    """The reference itself, checked on a session whose file is written out here by hand."""
    cat = ImageRef("/photos/cat.jpg", "ab")
    session = Session(model="m", id="20250101-120000-abcdef", created=1.5, image=cat, options={"seed": 3},
                      turns=[Turn("q?", "a", cat, created=2.0, compared=[ComparedAnswer(cat, "b", True)])])
    expected = ('{\n "format": 1,\n "model": "m",\n "id": "20250101-120000-abcdef",\n "created": 1.5,\n "turns": [\n'
                '  {\n   "question": "q?",\n   "answer": "a",\n   "image": {\n    "source": "/photos/cat.jpg",\n'
                '    "sha256": "ab"\n   },\n   "stopped": false,\n   "created": 2.0,\n   "compared": [\n    {\n'
                '     "image": {\n      "source": "/photos/cat.jpg",\n      "sha256": "ab"\n     },\n'
                '     "answer": "b",\n     "stopped": true\n    }\n   ]\n  }\n ],\n "image": {\n'
                '  "source": "/photos/cat.jpg",\n  "sha256": "ab"\n },\n "context_start": 0,\n "options": {\n'
                '  "seed": 3\n }\n}')
    assert reference_json(session) == expected
    assert session_json(session) == expected


# -- the cost, counted in Python function calls (not timed) ---------------------------------------------


def long_chat(turns: int) -> Session:
    cat = ImageRef("/photos/cat.jpg", "ab" * 32)
    session = Session(model="Salesforce/blip2-opt-2.7b", image=cat, options={"max_new_tokens": 20})
    session.turns = [Turn(f"What is in picture {n}?", f"a cat, number {n}", cat,
                          compared=[ComparedAnswer(cat, "a dog")] if n % 10 == 0 else []) for n in range(turns)]
    return session


def python_calls(work: Callable[[], object]) -> int:
    """How many Python functions (and generator resumptions) `work` runs: its cost, the same on any machine."""
    count = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal count
        count += event == "call"

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def test_making_the_session_file_costs_a_few_calls_a_turn() -> None:
    short, long = long_chat(100), long_chat(1100)
    per_turn = (python_calls(lambda: session_json(long)) - python_calls(lambda: session_json(short))) / 1000
    assert per_turn < 15  # asdict's deep copy and json's indenting encoder made over 100
    per_turn = (python_calls(long.to_dict) - python_calls(short.to_dict)) / 1000
    assert per_turn < 5  # asdict made about 47


def test_a_save_given_the_text_does_not_make_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = long_chat(2000)
    text = session_json(session)
    made: list[Session] = []

    def counted(session: Session) -> str:
        made.append(session)
        return session_json(session)

    monkeypatch.setattr(store_module, "session_json", counted)
    path = SessionStore(tmp_path).save(session, text)
    assert made == []
    assert path.read_text(encoding="utf-8") == text == reference_json(session)
    assert SessionStore(tmp_path).load(session.id) == session


def test_a_save_that_forks_writes_the_copy_under_its_new_id(tmp_path: Path) -> None:
    """The text made before the save names the old id; the copy's file must name its own."""
    first_store, second_store = SessionStore(tmp_path), SessionStore(tmp_path)
    original = long_chat(3)
    SessionStore(tmp_path).save(original)
    first, second = first_store.load(original.id), second_store.load(original.id)
    first.turns.append(Turn("from the first?", "yes", None))
    first_store.save(first, session_json(first))
    second.turns.append(Turn("from the second?", "no", None))
    with pytest.raises(SessionForked) as forked:
        second_store.save(second, session_json(second))
    assert second.id != original.id and forked.value.path == tmp_path / f"{second.id}.json"
    assert json.loads(forked.value.path.read_text(encoding="utf-8"))["id"] == second.id
    assert SessionStore(tmp_path).load(second.id) == second
    assert SessionStore(tmp_path).load(original.id) == first


def test_a_save_that_drops_a_refused_option_writes_the_session_without_it(tmp_path: Path) -> None:
    session = long_chat(2)
    session.options = {"max_new_tokens": -5, "seed": 7}
    SessionStore(tmp_path).save(session, session_json(session))
    data = json.loads((tmp_path / f"{session.id}.json").read_text(encoding="utf-8"))
    assert data["options"] == {"seed": 7} == session.options


# -- an image whose name is not UTF-8 ---------------------------------------------------------------------


@pytest.fixture
def badly_named_picture(tmp_path: Path) -> str:
    """A PNG whose name holds the byte 0xff (not UTF-8), as Python names it: with the lone surrogate U+DCFF."""
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    path = os.path.join(os.fsencode(tmp_path), b"bad\xffname.png")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(os.fsdecode(path), "PNG")
    return os.fsdecode(path)


def test_an_image_whose_name_is_not_utf8_keeps_its_link_to_the_chat(tmp_path: Path,
                                                                      badly_named_picture: str) -> None:
    assert "\udcff" in badly_named_picture
    picture = load_image(badly_named_picture)
    ref = ImageRef(picture.source, picture.sha256)
    session = Session(model="Salesforce/blip2-opt-2.7b", image=ref, turns=[Turn("What is it?", "red", ref)])
    store = SessionStore(tmp_path / "sessions")
    path = store.save(session)
    assert "bad\\udcffname.png" in path.read_text(encoding="utf-8")  # valid UTF-8: the byte as an escape
    back = SessionStore(tmp_path / "sessions").load(session.id)
    assert back == session and back.image is not None and back.image.source == badly_named_picture
    assert os.fsencode(back.image.source).endswith(b"/bad\xffname.png")
    again = load_image(back.image.source)  # the untouched file is found and is the same picture
    assert again.sha256 == picture.sha256 and again.source == badly_named_picture
    assert [summary.image for summary in SessionStore(tmp_path / "sessions").summaries()] == [badly_named_picture]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.characters(codec="utf-8") | st.sampled_from(UNDECODABLE), max_size=40)
       .map(lambda parts: os.fsdecode(os.fsencode("".join(parts)))))  # a name as Python gives it (os.fsdecode)
def test_every_undecodable_byte_of_a_source_comes_back(source: str) -> None:
    ref = ImageRef(source, "ab" * 32)
    session = Session(model="m", image=ref, turns=[Turn("q?", "a", ref, compared=[ComparedAnswer(ref, "b")])])
    data = session_json(session).encode("utf-8")  # no "?" in place of anything: every character is kept
    assert session_from_json(data.decode("utf-8"), "test") == session


def test_other_lone_surrogates_are_written_as_before(tmp_path: Path) -> None:
    """Only an image's source may hold a name's bytes; a lone surrogate elsewhere (no question holds one: they are
    refused before they are asked) is written as "?", as before, and the file still loads."""
    session = Session(model="m", draft="half\udcff", turns=[Turn("q\udcff?", "a", ImageRef("/p/\ud800x", "ab"))])
    SessionStore(tmp_path).save(session)
    saved = (tmp_path / f"{session.id}.json").read_bytes()
    assert saved == reference_json(session).encode("utf-8", "replace")
    back = SessionStore(tmp_path).load(session.id)
    assert (back.draft, back.turns[0].question, back.turns[0].image) == ("half?", "q??", ImageRef("/p/?x", "ab"))


def test_a_name_spelt_with_escapes_for_valid_utf8_is_read_as_that_text() -> None:
    """`x\\udcc2\\udc9b.png` and `x\\x9b.png` name one file (os.fsencode gives the same bytes): a chat file holds
    it in one spelling only, the one os.fsdecode gives, so `sessions` never lists one picture two ways."""
    import os

    from chatbot.core.session import Session

    crafted = Session.from_dict({"format": 1, "model": "m", "id": "20260101-000000-abcdef", "created": 0,
                                 "updated": 0, "turns": [], "context_start": 0,
                                 "image": {"source": "/p/x\udcc2\udc9b-\udcff.png", "sha256": "0" * 64}})
    assert crafted.image is not None
    assert crafted.image.source == "/p/x\x9b-\udcff.png" == os.fsdecode(b"/p/x\xc2\x9b-\xff.png")
