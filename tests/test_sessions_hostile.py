"""Session files and ids from someone else: traversing ids, links, two processes on one chat, damaged and
huge files, and /export next to files it did not write. Each test replays the attack or the mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import chatbot.core.session_lock as lock_module
import chatbot.core.store as store_module
from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.resume import imported_session, session_to_resume
from chatbot.core.session import MAX_TEXT_CHARS, Session, SessionError, Turn, valid_session_id
from chatbot.core.session_files import MAX_SESSION_BYTES, session_from_json, session_json
from chatbot.core.settings import Settings
from chatbot.core.store import SessionForked, SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from chatbot.untrusted import has_controls

REPO = Path(__file__).resolve().parents[1]


def tree(root: Path) -> set[str]:
    """Every file and folder under `root`, as paths relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def questions(session: Session) -> list[str]:
    return [turn.question for turn in session.turns]


def chat_on(session: Session, store: SessionStore, picture: Path, *answers: str) -> Conversation:
    return Conversation(Settings(model="scripted-opt"), session, store, load_image(picture),
                        engine=ScriptedEngine(*answers))


def saved_chat(store: SessionStore) -> Session:
    """A chat with one turn, saved, and let go of (as when its blip2-chat has quit)."""
    session = Session(model="scripted-opt", turns=[Turn("first?", "one", None)])
    store.save(session)
    store.release(session)
    return session


# -- 1. ids and paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "x/../../../../package", "../../../../victim", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "C:evil",
    "-starts-with-dash", "_starts-with-underscore", ".hidden", "a.json", "a b", "é", "x" * 65, "a\x00b", "a\n",
    "\x1b]0;pwned\x07", None, 3,
])
def test_path_for_refuses_every_id_that_is_not_a_session_id(tmp_path, bad: Any) -> None:
    store = SessionStore(tmp_path / "sessions")
    assert not valid_session_id(bad)
    with pytest.raises(SessionError, match="is not a session id") as refused:
        store.path_for(bad)
    assert not has_controls(str(refused.value))  # shown, never emitted
    with pytest.raises(SessionError):
        store.load(bad)
    with pytest.raises(SessionError):
        store.save(Session(model="m", id=bad, turns=[Turn("q", "a", None)]))
    assert not tmp_path.exists() or tree(tmp_path) <= {"sessions"}  # nothing written, nothing made


@pytest.mark.parametrize("good", ["20250101-120000-abcdef", "a", "x" * 64, "20250101-120000-abcdef-b", "A_b-9"])
def test_the_ids_the_app_makes_and_their_kin_are_session_ids(tmp_path, good: str) -> None:
    assert valid_session_id(good) and valid_session_id(Session(model="m").id)
    assert SessionStore(tmp_path).path_for(good) == tmp_path / f"{good}.json"


def test_an_import_whose_id_climbs_out_gets_a_fresh_id_and_nothing_is_written_outside(
        tmp_path, pictures, monkeypatch) -> None:
    home, work, root = tmp_path / "home", tmp_path / "work", tmp_path / "a" / "b" / "sessions"
    for folder in (home, work, work / "out"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    evil_id = "x/../../../../package"  # from the sessions folder, four levels up: tmp_path/package.json
    evil = json.loads(session_json(Session(model="scripted-opt", turns=[Turn("hi?", "yo", None)])))
    evil["id"] = evil_id
    (work / "evil.json").write_text(json.dumps(evil))
    before = tree(tmp_path)

    store = SessionStore(root)
    session = session_to_resume(store, continue_last=False, resume="evil.json")  # --resume evil.json
    assert valid_session_id(session.id) and session.id != evil_id
    assert store.problems == [f"The chat in evil.json had an id that cannot name a session file ('{evil_id}'), so "
                              f"it goes on as session {session.id}."]
    chat = chat_on(session, store, pictures["red"], "an answer")
    list(chat.ask("And now?"))
    chat.save()
    assert run_command(chat, "/export json").ok and run_command(chat, "/export json out").ok
    assert run_command(chat, "/export md ~").ok  # a folder: the file is named by the new id, inside it

    made = tree(tmp_path) - before
    copy = f"home/blip2-chat-{session.id}_files/{chat.session.turns[-1].image.sha256[:12]}-red.png"  # type: ignore
    assert made == {"a", "a/b", "a/b/sessions", f"a/b/sessions/{session.id}.json", f"a/b/sessions/{session.id}.lock",
                    f"work/blip2-chat-{session.id}.json", f"work/out/blip2-chat-{session.id}.json",
                    f"home/blip2-chat-{session.id}.md", f"home/blip2-chat-{session.id}_files", copy}
    store.release(session)

    # a session object with such an id (however it came) can neither be saved nor name an export
    chat.session.id = evil_id
    with pytest.raises(SessionError, match="is not a session id"):
        chat.save(force=True)
    assert run_command(chat, "/export md").ok and (work / "blip2-chat-chat.md").is_file()
    assert not (tmp_path / "package.json").exists() and not (home / "package.json").exists()


def test_resume_with_an_id_that_is_not_a_session_id_is_refused_and_touches_nothing(tmp_path) -> None:
    root = tmp_path / "a" / "b" / "sessions"
    root.mkdir(parents=True)
    victim = tmp_path / "a" / "victim.json"  # what `--resume ../../victim` named from the sessions folder
    victim.write_text("{ not a session, somebody's file")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    store = SessionStore(root)
    for resume in ("../victim", "../../victim", "../../../a/victim", str(victim.with_suffix(""))):
        with pytest.raises(SessionError) as refused:
            session_to_resume(store, continue_last=False, resume=resume)
        assert str(refused.value) == (f"'{resume}' is neither a saved session's id (they look like "
                                      "20250101-120000-abcdef) nor an exported .json file. List the sessions "
                                      "with `blip2-chat sessions`.")
    with pytest.raises(SessionError) as shown:
        session_to_resume(store, continue_last=False, resume="\x1b]0;pwned\x07")
    assert "'\\x1b]0;pwned\\x07'" in str(shown.value) and not has_controls(str(shown.value))
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert store.problems == []


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs symbolic links")
def test_the_store_never_follows_a_link_out_of_its_folder(tmp_path) -> None:
    root, outside = tmp_path / "sessions", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(session_json(Session(model="m", id="20250101-120000-aaaaaa")))
    kept = secret.read_bytes()
    (root / "linked.json").symlink_to(secret)
    store = SessionStore(root)
    with pytest.raises(SessionError, match="is a link"):
        store.load("linked")
    assert store.summaries() == []
    assert secret.read_bytes() == kept  # never read through, never renamed, never written
    assert (root / "linked.json").is_symlink() and not list(root.glob("linked.*.corrupt"))  # left where it is

    target = outside / "target.json"
    target.write_text("precious")
    (root / "written.json").symlink_to(target)
    session = Session(model="m", id="written", turns=[Turn("q?", "a", None)])
    with pytest.raises(SessionForked):  # a file there it did not read: saved as a copy, the link left alone
        store.save(session)
    assert target.read_text() == "precious" and (root / "written.json").is_symlink()

    lock_target = outside / "lock-victim"
    lock_target.write_text("precious")
    (root / "locked.lock").symlink_to(lock_target)
    with pytest.raises(SessionError, match="Could not lock"):
        store.claim(Session(model="m", id="locked"))
    assert lock_target.read_text() == "precious"


# -- 2. two processes on one chat ------------------------------------------------------------------------

OTHER_BLIP2_CHAT = """
import os, sys
from pathlib import Path
from chatbot.core.session import Turn
from chatbot.core.store import SessionStore

store = SessionStore(Path(sys.argv[1]))
session = store.load(sys.argv[2])
print("claim:", store.claim(session) if "claim" in sys.argv[3:] else "-", flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "ask":
        session.turns.append(Turn("asked there?", "yes", None))
        try:
            store.save(session)
        except Exception as error:
            print("error:", error, flush=True)
        else:
            print("saved", session.id, flush=True)
    elif word == "release":
        store.release(session)
        print("released", flush=True)
    elif word == "quit":
        break
"""


class Other:
    """Another blip2-chat process with a chat open, driven one line at a time (no sleeping, no timing)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.pid = process.pid
        self.first = self.reply()

    def reply(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read() if self.process.stderr else "the other process ended"
        return line.strip()

    def send(self, word: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()
        return self.reply()


@contextmanager
def other_blip2_chat(tmp_path: Path, root: Path, session_id: str, claim: bool = True) -> Iterator[Other]:
    script = tmp_path / "other_blip2_chat.py"
    script.write_text(OTHER_BLIP2_CHAT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(script), str(root), session_id, *(["claim"] if claim else [])],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        yield Other(process)
        assert process.stdin is not None
        process.stdin.write("quit\n")
        process.stdin.flush()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_continue_in_two_terminals_goes_on_in_a_copy_and_keeps_every_turn(tmp_path, pictures) -> None:
    root = tmp_path / "sessions"
    original = saved_chat(SessionStore(root))
    with other_blip2_chat(tmp_path, root, original.id) as other:  # `blip2-chat --continue` in terminal 1
        assert other.first == "claim: None"
        store = SessionStore(root)
        session = session_to_resume(store, continue_last=True, resume=None)  # ... and in terminal 2
        assert session.id != original.id and valid_session_id(session.id)
        assert store.problems == [f"This chat is open in another blip2-chat (pid {other.pid}); continuing in a copy, "
                                  f"session {session.id}."]
        chat = chat_on(session, store, pictures["red"], "here")
        list(chat.ask("asked here?"))
        assert chat.save() == root / f"{session.id}.json"  # the copy, quietly: the sentence was said on opening
        assert other.send("ask") == f"saved {original.id}"  # the other one saves its own turn to its own file
    found = SessionStore(root)
    assert questions(found.load(original.id)) == ["first?", "asked there?"]
    assert questions(found.load(session.id)) == ["first?", "asked here?"]


def test_a_save_never_overwrites_a_chat_another_process_holds(tmp_path, pictures) -> None:
    root = tmp_path / "sessions"
    original = saved_chat(SessionStore(root))
    store = SessionStore(root)
    session = store.load(original.id)  # read before the other one opened it, never claimed
    with other_blip2_chat(tmp_path, root, original.id) as other:
        chat = chat_on(session, store, pictures["red"], "here", "again")
        list(chat.ask("asked here?"))
        with pytest.raises(SessionForked) as forked:
            chat.save()
        copy_id = chat.session.id
        assert str(forked.value) == (f"This chat is open in another blip2-chat (pid {other.pid}); continuing in a "
                                     f"copy, session {copy_id}.")
        assert forked.value.path == root / f"{copy_id}.json" and chat.saved
        list(chat.ask("and again?"))
        assert chat.save() == root / f"{copy_id}.json"  # later saves go to the copy
        assert other.send("ask") == f"saved {original.id}"
    found = SessionStore(root)
    assert questions(found.load(original.id)) == ["first?", "asked there?"]
    assert questions(found.load(copy_id)) == ["first?", "asked here?", "and again?"]


def test_a_chat_changed_by_a_process_that_has_quit_since_is_not_overwritten(tmp_path, pictures) -> None:
    root = tmp_path / "sessions"
    original = saved_chat(SessionStore(root))
    store = SessionStore(root)
    session = store.load(original.id)  # both read it; the other one saves a turn and quits
    with other_blip2_chat(tmp_path, root, original.id, claim=False) as other:
        assert other.send("ask") == f"saved {original.id}"
    chat = chat_on(session, store, pictures["red"], "here")
    list(chat.ask("asked here?"))
    with pytest.raises(SessionForked, match=f"The saved chat {original.id} was changed by another blip2-chat since "
                                            "this one read it; continuing in a copy, session "):
        chat.save()
    found = SessionStore(root)
    assert questions(found.load(original.id)) == ["first?", "asked there?"]
    assert questions(found.load(chat.session.id)) == ["first?", "asked here?"]


def test_two_conversations_on_one_chat_in_one_process_keep_every_turn(tmp_path, pictures) -> None:
    root = tmp_path / "sessions"
    original = saved_chat(SessionStore(root))
    one, two = SessionStore(root), SessionStore(root)
    first = chat_on(one.load(original.id), one, pictures["red"], "one")
    second = chat_on(two.load(original.id), two, pictures["red"], "two")
    list(first.ask("from the first?"))
    assert first.save() == root / f"{original.id}.json"
    list(second.ask("from the second?"))
    with pytest.raises(SessionForked, match="was changed by another blip2-chat since this one read it"):
        second.save()
    list(first.ask("first again?"))
    assert first.save() == root / f"{original.id}.json"  # the first one's own file, as it left it
    found = SessionStore(root)
    assert questions(found.load(original.id)) == ["first?", "from the first?", "first again?"]
    assert questions(found.load(second.session.id)) == ["first?", "from the second?"]


def test_release_lets_another_process_take_the_chat(tmp_path) -> None:
    root = tmp_path / "sessions"
    store = SessionStore(root)
    session = saved_chat(store)
    assert store.claim(session) is None and store.claim(session) is None  # held, and held again: no fork
    with other_blip2_chat(tmp_path, root, session.id) as other:
        message, copy_id = other.first.rsplit(" ", 1)
        assert message == f"claim: This chat is open in another blip2-chat (pid {os.getpid()}); continuing in a copy, "\
                          "session" and copy_id.rstrip(".") != session.id
    store.release(session)
    assert not (root / f"{session.id}.lock").exists()
    with other_blip2_chat(tmp_path, root, session.id) as other:
        assert other.first == "claim: None"


def test_the_portable_lock_without_fcntl_knows_live_and_stale_holders(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lock_module, "_fcntl", None)  # as on Windows
    root = tmp_path / "sessions"
    store = SessionStore(root)
    session = saved_chat(store)
    lock = root / f"{session.id}.lock"
    assert not lock.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock.write_text(f"{sleeper.pid}\n")  # a live blip2-chat holds it
        held = store.load(session.id)
        assert store.claim(held) == (f"This chat is open in another blip2-chat (pid {sleeper.pid}); continuing in a "
                                     f"copy, session {held.id}.")
        assert lock.read_text() == f"{sleeper.pid}\n" and (root / f"{held.id}.lock").read_text() == f"{os.getpid()}\n"
        store.release(held)
        assert not (root / f"{held.id}.lock").exists()
    finally:
        sleeper.communicate(b"")
    for stale in (f"{2**30}\n", ""):  # a pid no process can have (Linux allows at most 2**22); an empty old file
        lock.write_text(stale)
        os.utime(lock, (1_000_000_000, 1_000_000_000))
        fresh = store.load(session.id)
        assert store.claim(fresh) is None and fresh.id == session.id
        assert lock.read_text() == f"{os.getpid()}\n"
        store.release(fresh)
        assert not lock.exists()


# -- 3. damaged session files ------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "format": 1, "model": "scripted-opt", "id": "20250101-120000-abcdef", "created": 1_700_000_000.5,
    "turns": [{"question": "What is it?", "answer": "a cat", "image": {"source": "/p/cat.jpg", "sha256": "ab" * 32},
               "stopped": False, "created": 1_700_000_001.0}],
    "image": {"source": "/p/cat.jpg", "sha256": "ab" * 32}, "context_start": 0, "options": {"max_new_tokens": 20},
}


def changed(path: str, value: Any) -> str:
    """GOOD as JSON with the field at `path` ("turns.0.question") set to `value` (removed when `value` is
    `...`); NaN and infinities written as Python's json module writes them."""
    data = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    holder: Any = data
    for key in parents:
        holder = holder[int(key)] if isinstance(holder, list) else holder[key]
    key = int(last) if isinstance(holder, list) else last
    if value is ...:
        del holder[key]
    else:
        holder[key] = value
    return json.dumps(data)


DAMAGED = {
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "deep nesting in a field": changed("options", {}).replace('"options": {}', '"options": {"a": '
                                                                   + "[" * 100_000 + "]" * 100_000 + "}"),
    "a list, not an object": "[1, 2]",
    "null": "null",
    "torn": json.dumps(GOOD)[:-20],
    "an int as image source": changed("turns.0.image.source", 3),
    "an int as question": changed("turns.0.question", 42),
    "null answer": changed("turns.0.answer", None),
    "a list where the image belongs": changed("image", ["/p/cat.jpg", "ab"]),
    "a list where a turn belongs": changed("turns.0", ["What is it?", "a cat"]),
    "a string for turns": changed("turns", "What is it? a cat"),
    "an object for turns": changed("turns", {"0": {}}),
    "a boolean for created": changed("created", True),
    "NaN for created": changed("created", float("nan")),
    "infinity for created": changed("created", float("inf")),
    "a negative created": changed("created", -5),
    "a 400-digit created": changed("created", 10**400),
    "a 5000-digit number": changed("created", 1).replace('"created": 1,', '"created": ' + "9" * 5000 + ","),
    "text for created": changed("created", "yesterday"),
    "NaN for a turn's created": changed("turns.0.created", float("nan")),
    "text for stopped": changed("turns.0.stopped", "no"),
    "no model": changed("model", ...),
    "no id": changed("id", ...),
    "an int id": changed("id", 7),
    "no question": changed("turns.0.question", ...),
    "a lone surrogate": changed("turns.0.question", "\ud800"),
    "an over-long answer": changed("turns.0.answer", "a" * (MAX_TEXT_CHARS + 1)),
    "an image without its hash": changed("image.sha256", ...),
}


@pytest.mark.parametrize("text", list(DAMAGED.values()), ids=list(DAMAGED))
def test_a_damaged_session_raises_session_error_and_nothing_else(text: str) -> None:
    with pytest.raises(SessionError, match="is not a readable blip2-chat session"):
        session_from_json(text, "The session file x.json")


def test_damaged_files_are_set_aside_and_listing_and_continue_go_on(tmp_path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    for number, text in enumerate(DAMAGED.values()):
        (root / f"damaged-{number}.json").write_text(text, encoding="utf-8")
    (root / "not-utf8.json").write_bytes(b'{"model": "\xff\xfe"}')
    (root / "a-folder.json").mkdir()  # not a file: nothing in it is damaged, so it is left alone, said
    (root / "my chat.json").write_text(json.dumps(GOOD))  # not named like a session: left alone, said
    (root / f"{GOOD['id']}.json").write_text(json.dumps(GOOD))
    store = SessionStore(root)
    assert [summary.id for summary in store.summaries()] == [GOOD["id"]]
    set_aside = len(DAMAGED) + 1
    assert len(list(root.glob("*.corrupt"))) == set_aside and len(store.problems) == set_aside + 2
    assert sum(problem.startswith("my chat.json in the sessions folder is not named like a session")
               for problem in store.problems) == 1
    assert ("a-folder.json in the sessions folder is a folder, not a regular file, so it was left out; move it "
            "out of the folder.") in store.problems
    assert (root / "my chat.json").exists() and (root / "a-folder.json").is_dir()
    assert session_to_resume(store, continue_last=True, resume=None).id == GOOD["id"]  # --continue

    (root / "torn.json").write_text('{"model": ')
    with pytest.raises(SessionError, match=r"not a readable blip2-chat session.*moved aside to torn\."):
        session_to_resume(SessionStore(root), continue_last=False, resume="torn")
    (root / f"{GOOD['id']}.json").write_text(DAMAGED["a string for turns"])
    with pytest.raises(SessionError, match="There is no saved session to continue"):
        session_to_resume(SessionStore(root), continue_last=True, resume=None)


def test_a_session_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    big = changed("turns.0.answer", "a" * MAX_SESSION_BYTES)  # 58 MB took 105 s and 5 GB to answer with
    (root / f"{GOOD['id']}.json").write_text(big)
    (tmp_path / "big.json").write_text(big)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(json, "loads", never)
    store = SessionStore(root)
    message = f"is {len(big) / 1e6:.1f} MB, more than the 8 MB a session file may have, so it was not read."
    with pytest.raises(SessionError, match=message.replace(".", r"\.")):
        store.load(GOOD["id"])
    assert list(root.glob("*.corrupt"))
    with pytest.raises(SessionError, match="8 MB a session file may have"):
        imported_session(store, tmp_path / "big.json")  # --resume big.json
    with pytest.raises(SessionError, match="8 MB a session file may have"):
        session_from_json(big, "text")


def test_the_store_never_writes_a_session_it_would_refuse_to_read(tmp_path, monkeypatch) -> None:
    store = SessionStore(tmp_path)
    long = Session(model="m", turns=[Turn("q?", "a" * (MAX_TEXT_CHARS + 1), None)])
    with pytest.raises(SessionError, match="longer than 100000 characters"):
        store.save(long)
    monkeypatch.setattr(store_module, "MAX_SESSION_BYTES", 2_000)
    many = Session(model="m", turns=[Turn(f"question {n}?", "an answer", None) for n in range(40)])
    with pytest.raises(SessionError, match="too long to save"):
        store.save(many)
    assert not list(tmp_path.glob("*.json"))


# -- 4. /export --------------------------------------------------------------------------------------------


@pytest.fixture
def chat(tmp_path: Path, work: Path, pictures) -> Conversation:
    conversation = chat_on(Session(model="scripted-opt"), SessionStore(tmp_path / "sessions"), pictures["red"],
                           "a red square", "red")
    list(conversation.ask("What is it?"))
    return conversation


def test_export_refuses_a_folder_that_does_not_exist_and_makes_none(chat, work, tmp_path) -> None:
    for line, folder in [("/export md missing/chat.md", work / "missing"), ("/export json missing/", work / "missing"),
                         (f"/export json {tmp_path / 'a' / 'b' / 'c.json'}", tmp_path / "a" / "b")]:
        outcome = run_command(chat, line)
        assert not outcome.ok and outcome.notices == [Notice(
            f"The folder {folder} does not exist. Create it first or choose another path.", "error")]
    assert tree(work) == set() and not (tmp_path / "a").exists() and not (work / "missing").exists()


def test_export_never_replaces_a_file_it_did_not_write(chat, work, tmp_path, pictures) -> None:
    notes = work / "notes.md"
    notes.write_text("my own notes")
    outcome = run_command(chat, "/export md notes.md")
    assert not outcome.ok and outcome.notices == [Notice(
        f"There is already a file {notes}, and /export only replaces its own earlier export. Choose another name, "
        "e.g. notes-2.md.", "error")]
    assert notes.read_text() == "my own notes"
    assert run_command(chat, "/export md notes-2.md").ok  # the name it suggested

    other = chat_on(Session(model="scripted-opt"), SessionStore(tmp_path / "sessions"), pictures["red"], "blue")
    list(other.ask("Another chat?"))
    assert run_command(other, "/export md shared.md").ok
    assert not run_command(chat, "/export md shared.md").ok  # another conversation's export is not this one's
    assert "Another chat?" in (work / "shared.md").read_text()

    assert run_command(chat, "/export md mine.md").ok
    (work / "mine.md").write_text("edited since")  # changed by someone: no longer this conversation's export
    assert not run_command(chat, "/export md mine.md").ok
    assert (work / "mine.md").read_text() == "edited since"


def test_export_twice_to_the_default_path_updates_the_first(chat, work) -> None:
    path = work / f"blip2-chat-{chat.session.id}.md"
    folder = work / f"blip2-chat-{chat.session.id}_files"
    assert run_command(chat, "/export md").notices == [
        Notice(f"Exported the chat to {path}, with a copy of its picture in {folder}.")]
    assert chat.last_export_updated is False
    list(chat.ask("Which colour?"))
    assert run_command(chat, "/export md").notices == [
        Notice(f"Updated the export {path}, with a copy of its picture in {folder}.")]
    assert chat.last_export_updated is True and path.read_text().count("**You:**") == 2
    copy = f"{folder.name}/{chat.session.turns[0].image.sha256[:12]}-red.png"  # type: ignore[union-attr]
    assert tree(work) == {path.name, folder.name, copy}  # no temporaries left, nothing else made


def test_listing_removes_the_lock_files_no_process_holds(tmp_path) -> None:
    root = tmp_path / "sessions"
    store = SessionStore(root)
    kept, left = saved_chat(store), saved_chat(store)
    (root / f"{left.id}.lock").write_text("12345\n")  # left by a process that ended at once (os._exit)
    assert store.claim(kept) is None
    with other_blip2_chat(tmp_path, root, kept.id) as other:  # forks: holds a copy's lock, not kept's
        copy_lock = root / f"{other.first.rsplit(' ', 1)[1].rstrip('.')}.lock"
        assert copy_lock.exists()
        assert {summary.id for summary in store.summaries()} == {kept.id, left.id}
        assert not (root / f"{left.id}.lock").exists()  # nobody held it: removed
        assert (root / f"{kept.id}.lock").exists() and copy_lock.exists()  # held here and there: kept
    store.release(kept)
