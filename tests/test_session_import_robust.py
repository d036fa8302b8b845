"""Saved and exported chats that are a little off: a bad option, a context_start that is no turn index, a
byte-order mark. The rest of the chat loads and one sentence says what was mended. And the lock file of a
chat goes when its process lets go, but never another process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.resume import session_to_resume
from chatbot.core.session import Session, SessionError, Turn
from chatbot.core.session_files import session_from_json
from chatbot.core.store import SessionStore

REPO = Path(__file__).resolve().parents[1]
BOM = b"\xef\xbb\xbf"

GOOD: dict[str, Any] = {
    "format": 1, "model": "scripted-opt", "id": "20250101-120000-abcdef", "created": 1_700_000_000.5,
    "turns": [{"question": "What is it?", "answer": "a cat", "image": None, "stopped": False,
               "created": 1_700_000_001.0},
              {"question": "Which colour?", "answer": "black", "image": None, "stopped": False,
               "created": 1_700_000_002.0}],
    "image": None, "context_start": 1, "options": {"max_new_tokens": 20, "temperature": 0.5},
}


def with_fields(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith("option_"):
            data["options"][key.removeprefix("option_")] = value
        else:
            data[key] = value
    return data


# -- 1. a bad option or context_start is mended, said once, and the rest loads ------------------------------

MENDED = {  # the file's change -> (the options kept, the context_start used, words the sentence has)
    "a list as top_p": (with_fields(option_top_p=[1]), {"max_new_tokens": 20, "temperature": 0.5}, 1,
                        "option 'top_p' is not a plain value"),
    "a seed past 2^64": (with_fields(option_seed=2**64), {"max_new_tokens": 20, "temperature": 0.5}, 1,
                         "option 'seed' is out of range"),
    "NaN temperature": (with_fields(option_temperature=float("nan")), {"max_new_tokens": 20}, 1,
                        "option 'temperature' is not a finite number"),
    "a list for options": (with_fields(options=[1]), {}, 1, "options are not a table"),
    "a negative context_start": (with_fields(context_start=-5), GOOD["options"], 0, "context start (-5)"),
    "a huge context_start": (with_fields(context_start=10**30), GOOD["options"], 2, "so it was set to 2"),
    "context_start past the turns": (with_fields(context_start=3), GOOD["options"], 2, "(0 to 2)"),
    "a boolean context_start": (with_fields(context_start=True), GOOD["options"], 0, "context start (True)"),
    "text as context_start": (with_fields(context_start="1"), GOOD["options"], 0, "so it was set to 0"),
}


@pytest.mark.parametrize("case", list(MENDED.values()), ids=list(MENDED))
def test_a_bad_option_or_context_start_is_mended_and_said_and_the_rest_loads(case: Any) -> None:
    data, options, context_start, words = case
    session = session_from_json(json.dumps(data), "chat.json")
    assert [turn.answer for turn in session.turns] == ["a cat", "black"]
    assert session.options == options and session.context_start == context_start
    assert len(session.load_notes) == 1 and words in session.load_notes[0]
    assert "load_notes" not in session.to_dict()  # never saved


def test_a_file_already_saved_here_goes_on_as_a_copy_and_says_so(tmp_path) -> None:
    # a probe: resuming an export of a chat saved here went on under a new id, said only as "Resumed session NEW"
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    store = SessionStore(tmp_path / "sessions")
    first = session_to_resume(store, continue_last=False, resume=str(tmp_path / "good.json"))
    assert first.id == GOOD["id"] and store.problems == []
    store.release(first)  # the first chat ended
    again = SessionStore(tmp_path / "sessions")
    copy = session_to_resume(again, continue_last=False, resume=str(tmp_path / "good.json"))
    assert copy.id != GOOD["id"]
    assert again.problems == [f"The chat in {tmp_path / 'good.json'} is saved here already as session {GOOD['id']}, "
                              f"which is left as it was: this copy goes on as session {copy.id}."]


def test_a_good_file_loads_as_before_with_nothing_to_say(tmp_path) -> None:
    session = session_from_json(json.dumps(GOOD), "chat.json")
    assert session.load_notes == [] and session.context_start == 1 and session.options == GOOD["options"]
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    store = SessionStore(tmp_path / "sessions")
    resumed = session_to_resume(store, continue_last=False, resume=str(tmp_path / "good.json"))
    assert store.problems == [] and resumed.options == GOOD["options"]


def test_an_import_with_bad_options_goes_on_and_says_each_in_one_sentence(tmp_path) -> None:
    exported = tmp_path / "chat.json"
    exported.write_text(json.dumps(with_fields(option_top_p=[1], option_num_beams=1000, context_start=-5)))
    store = SessionStore(tmp_path / "sessions")
    session = session_to_resume(store, continue_last=False, resume=str(exported))
    assert [turn.question for turn in session.turns] == ["What is it?", "Which colour?"]
    assert session.options == {"max_new_tokens": 20, "temperature": 0.5} and session.context_start == 0
    assert store.problems == [
        "The saved context start (-5) is not a turn of this chat (0 to 2), so it was set to 0.",
        "The saved option 'top_p' is not a plain value (text, a number, true, false or null), so its default is "
        "used.",
        "The saved option num_beams must be a whole number from 1 to 16 (got 1000), so its default is used.",
    ]
    again = SessionStore(store.root)  # the import was saved mended: resumed by its id, nothing more to say
    store.release(session)
    assert session_to_resume(again, continue_last=False, resume=session.id).options == session.options
    assert again.problems == []


def test_a_saved_chat_with_a_bad_option_is_loaded_not_set_aside(tmp_path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    (root / f"{GOOD['id']}.json").write_text(json.dumps(with_fields(option_top_p=[1], context_start=99)))
    store = SessionStore(root)
    assert [summary.turns for summary in store.summaries()] == [2]
    session = store.load(GOOD["id"])
    assert session.context_start == 2 and "top_p" not in session.options
    assert len(store.problems) == 2 and not list(root.glob("*.corrupt"))


def test_a_chat_without_its_turns_is_still_refused() -> None:
    with pytest.raises(SessionError, match=r"turns is not a list"):
        session_from_json(json.dumps(with_fields(turns="What is it? a cat")), "chat.json")


# -- 2. a byte-order mark ----------------------------------------------------------------------------------


def test_a_saved_chat_that_starts_with_a_byte_order_mark_is_read(tmp_path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    (root / f"{GOOD['id']}.json").write_bytes(BOM + json.dumps(GOOD).encode("utf-8"))
    store = SessionStore(root)
    assert [summary.id for summary in store.summaries()] == [GOOD["id"]]
    assert store.load(GOOD["id"]).turns[1].answer == "black"
    assert store.problems == [] and not list(root.glob("*.corrupt"))


def test_an_export_that_starts_with_a_byte_order_mark_is_imported(tmp_path) -> None:
    exported = tmp_path / "chat.json"
    exported.write_bytes(BOM + json.dumps(GOOD, ensure_ascii=False).encode("utf-8"))
    store = SessionStore(tmp_path / "sessions")
    session = session_to_resume(store, continue_last=False, resume=str(exported))
    assert session.turns[0].question == "What is it?" and store.problems == []
    assert session_from_json("\ufeff" + json.dumps(GOOD), "chat.json").id == GOOD["id"]  # text given as is


# -- 3. the lock file ---------------------------------------------------------------------------------------


def test_release_never_removes_a_lock_file_another_process_made_since(tmp_path) -> None:
    fcntl = pytest.importorskip("fcntl")
    store = SessionStore(tmp_path)
    session = Session(model="m", turns=[Turn("q?", "a", None)])
    store.save(session)
    lock = tmp_path / f"{session.id}.lock"
    lock.unlink()  # ours was removed (by hand, say), and another blip2-chat made and locked a new one
    other = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(other, b"99999\n")
        store.release(session)
        assert lock.read_text() == "99999\n"  # still there: it is the other process's lock
    finally:
        os.close(other)


LOCKING_SCRIPT = """
import os, sys
from pathlib import Path
from chatbot.core.session import Session, Turn
from chatbot.core.session_lock import let_go_of_everything
from chatbot.core.store import SessionStore
session = Session(model="m", id="20250101-120000-abcdef", turns=[Turn("q?", "a", None)])
SessionStore(Path(sys.argv[1])).save(session)
assert (Path(sys.argv[1]) / "20250101-120000-abcdef.lock").exists()
if sys.argv[2] == "os._exit":  # what blip2-chat should do before it skips the tear-down of a loaded model
    let_go_of_everything()
    os._exit(0)
if sys.argv[2] == "exit_now":  # what it does (chatbot.core.runtime.exit_now)
    from chatbot.core.runtime import exit_now
    exit_now(0, loaded=True)
"""


@pytest.mark.parametrize("how", ["exit", "os._exit", "exit_now"])
def test_a_clean_exit_leaves_no_lock_file(tmp_path, how: str) -> None:
    done = subprocess.run([sys.executable, "-c", LOCKING_SCRIPT, str(tmp_path), how], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["20250101-120000-abcdef.json"]
