"""The sessions folder against what a tester put there: named pipes, devices and folders (never opened,
left alone), files nobody may read (left where they are, not called damaged), and an exported chat
resumed and quit at once (saved into the store, as the goodbye line says)."""

from __future__ import annotations

import errno
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.core.conversation import Conversation
from chatbot.core.resume import session_to_resume
from chatbot.core.session import Session, SessionError, Turn
from chatbot.core.session_files import session_json
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image

needs_pipes = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
GOOD_ID = "20250101-120000-abcdef"


def saved_chat(store: SessionStore, session_id: str = GOOD_ID) -> Session:
    """A chat with one turn, saved and let go of (as when its blip2-chat has quit)."""
    session = Session(model="scripted-opt", id=session_id, turns=[Turn("first?", "one", None)])
    store.save(session)
    store.release(session)
    return session


def never_open(monkeypatch: pytest.MonkeyPatch, *names: str) -> list[str]:
    """Make opening any file called one of `names` fail the test (opening a pipe blocks for ever)."""
    opened: list[str] = []
    real_open = os.open

    def guarded(path: object, *args: object, **kwargs: object) -> int:
        if os.path.basename(os.fsdecode(path)) in names:  # type: ignore[arg-type]
            opened.append(os.fsdecode(path))  # type: ignore[arg-type]
            raise AssertionError(f"opened {path}")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", guarded)
    return opened


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Opening a file called `name` fails as `chmod 000` makes it fail for anyone but root."""
    real_open = os.open

    def denied(path: object, *args: object, **kwargs: object) -> int:
        if os.path.basename(os.fsdecode(path)) == name:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))  # type: ignore[arg-type]
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)


# -- 1. what is not a regular file is never opened ------------------------------------------------------


@needs_pipes
def test_a_named_pipe_in_the_sessions_folder_is_left_out_and_never_opened(tmp_path, monkeypatch) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    saved_chat(SessionStore(root))
    os.mkfifo(root / "fifo.json")
    opened = never_open(monkeypatch, "fifo.json")

    store = SessionStore(root)
    assert [summary.id for summary in store.summaries()] == [GOOD_ID]  # `blip2-chat sessions`
    assert store.problems == ["fifo.json in the sessions folder is a named pipe, not a regular file, so it was "
                              "left out; move it out of the folder."]
    assert session_to_resume(SessionStore(root), continue_last=True, resume=None).id == GOOD_ID  # --continue
    with pytest.raises(SessionError) as refused:  # --resume fifo
        session_to_resume(SessionStore(root), continue_last=False, resume="fifo")
    assert str(refused.value) == (f"The session file {root / 'fifo.json'} is a named pipe, not a regular file, so "
                                  "it was not read. Move it out of the sessions folder; `blip2-chat sessions` lists "
                                  "the saved ones.")
    with pytest.raises(SessionError, match=r"is a named pipe, not a regular file"):  # --resume PATH to it
        session_to_resume(SessionStore(root), continue_last=False, resume=str(root / "fifo.json"))
    assert opened == []
    assert stat.S_ISFIFO(os.lstat(root / "fifo.json").st_mode) and not list(root.glob("*.corrupt"))  # left alone


@needs_pipes
def test_resume_path_to_a_pipe_a_device_or_a_folder_says_it_is_not_a_regular_file(tmp_path, monkeypatch) -> None:
    store = SessionStore(tmp_path / "sessions")
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "folder").mkdir()
    opened = never_open(monkeypatch, "pipe.json")
    cases = {"pipe.json": "a named pipe", "folder.json": "a folder", "folder": "a folder"}
    for name, kind in cases.items():
        with pytest.raises(SessionError) as refused:
            session_to_resume(store, continue_last=False, resume=str(tmp_path / name))
        assert str(refused.value) == (f"{tmp_path / name} is {kind}, not a regular file, so it was not read. "
                                      "--resume takes a saved session's id or an exported .json file.")
    if os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode):
        with pytest.raises(SessionError, match=r"^/dev/null is a device, not a regular file"):
            session_to_resume(store, continue_last=False, resume="/dev/null")
    assert opened == [] and store.problems == [] and not (tmp_path / "sessions").exists()


@needs_pipes
def test_blip2_chat_sessions_and_resume_do_not_hang_on_a_pipe(tmp_path) -> None:
    root = tmp_path / "home" / "sessions"
    root.mkdir(parents=True)
    saved_chat(SessionStore(root))
    os.mkfifo(root / "fifo.json")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path / "home")}

    def blip2_chat(*args: str) -> subprocess.CompletedProcess[str]:  # the timeout only stops a hang
        return subprocess.run([sys.executable, "-m", "chatbot", *args], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)

    listed = blip2_chat("sessions")
    assert listed.returncode == 0 and GOOD_ID in listed.stdout
    assert "fifo.json in the sessions folder is a named pipe, not a regular file" in listed.stderr
    resumed = blip2_chat("--resume", "fifo", "--plain", "--model", "demo")
    assert resumed.returncode == 2 and "is a named pipe, not a regular file" in resumed.stderr
    assert "Traceback" not in listed.stderr + resumed.stderr
    assert stat.S_ISFIFO(os.lstat(root / "fifo.json").st_mode)


# -- 2. a file nobody may read is not damaged --------------------------------------------------------------


def test_a_session_file_that_cannot_be_read_is_left_where_it_is(tmp_path, monkeypatch) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    saved_chat(SessionStore(root))
    kept = (root / f"{GOOD_ID}.json").read_bytes()
    refuse_to_open(monkeypatch, f"{GOOD_ID}.json")

    store = SessionStore(root)
    assert store.summaries() == []
    assert store.problems == [f"The session file {GOOD_ID}.json could not be read (permission denied), so it was "
                              "left out; check its permissions."]
    with pytest.raises(SessionError) as refused:
        session_to_resume(SessionStore(root), continue_last=False, resume=GOOD_ID)
    assert str(refused.value) == (f"The session file {root / f'{GOOD_ID}.json'} could not be read: permission "
                                  "denied. Check its permissions.")
    assert "damaged" not in str(refused.value)
    monkeypatch.undo()
    assert sorted(path.name for path in root.iterdir() if path.suffix != ".lock") == [f"{GOOD_ID}.json"]
    assert (root / f"{GOOD_ID}.json").read_bytes() == kept
    assert [turn.question for turn in SessionStore(root).load(GOOD_ID).turns] == ["first?"]  # readable again


def test_an_export_that_cannot_be_read_says_so(tmp_path, monkeypatch) -> None:
    export = tmp_path / "chat.json"
    export.write_text(session_json(Session(model="m", id=GOOD_ID, turns=[Turn("q?", "a", None)])))
    refuse_to_open(monkeypatch, "chat.json")
    with pytest.raises(SessionError) as refused:
        session_to_resume(SessionStore(tmp_path / "sessions"), continue_last=False, resume=str(export))
    assert str(refused.value) == f"{export} could not be read: permission denied. Check its permissions."


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root reads any file, whatever its mode")
def test_a_session_file_made_unreadable_with_chmod_is_not_moved(tmp_path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    saved_chat(SessionStore(root))
    path = root / f"{GOOD_ID}.json"
    path.chmod(0)
    try:
        store = SessionStore(root)
        assert store.summaries() == [] and "check its permissions" in store.problems[0]
        assert path.exists() and not list(root.glob("*.corrupt"))
    finally:
        path.chmod(0o600)


# -- 3. an exported chat resumed and quit at once ----------------------------------------------------------


def exported_chat(tmp_path: Path, picture: Path) -> Path:
    """A chat made in another place (its own sessions folder), exported to JSON: the file a user brings."""
    elsewhere = SessionStore(tmp_path / "elsewhere")
    chat = Conversation(Settings(model="scripted-opt"), None, elsewhere, load_image(picture),
                        engine=ScriptedEngine("a red square"))
    list(chat.ask("What is it?"))
    chat.save()
    elsewhere.release(chat.session)
    return chat.export("json", str(tmp_path / "chat.json")).path


def test_an_exported_chat_resumed_and_quit_at_once_can_be_resumed_by_its_id(tmp_path, pictures) -> None:
    export = exported_chat(tmp_path, pictures["red"])
    root = tmp_path / "sessions"
    store = SessionStore(root)
    session = session_to_resume(store, continue_last=False, resume=str(export))  # --resume chat.json
    assert store.problems == []
    chat = Conversation(Settings(model="scripted-opt"), session, store, load_image(pictures["red"]),
                        engine=ScriptedEngine())
    out, notes = io.StringIO(), io.StringIO()
    PlainChat(chat, out=out, notes=notes).run(["/quit"])
    assert notes.getvalue().splitlines()[-1] == (f"Chat saved as session {session.id}; "
                                                  "blip2-chat --continue goes on with it. Goodbye.")
    store.release(session)  # that blip2-chat has quit

    again = session_to_resume(SessionStore(root), continue_last=False, resume=session.id)  # --resume ID
    assert [(turn.question, turn.answer) for turn in again.turns] == [("What is it?", "a red square")]
    assert session_to_resume(SessionStore(root), continue_last=True, resume=None).id == session.id  # --continue


def test_an_import_the_store_already_has_is_saved_as_a_copy_and_the_original_kept(tmp_path, pictures) -> None:
    export = exported_chat(tmp_path, pictures["red"])
    root = tmp_path / "sessions"
    first = session_to_resume(SessionStore(root), continue_last=False, resume=str(export))
    SessionStore(root).release(first)
    original = (root / f"{first.id}.json").read_bytes()

    store = SessionStore(root)
    second = session_to_resume(store, continue_last=False, resume=str(export))
    assert second.id != first.id and (root / f"{first.id}.json").read_bytes() == original
    assert SessionStore(root).load(second.id).turns == first.turns
    store.release(second)


def test_an_empty_import_is_not_written_and_a_store_path_is_not_copied(tmp_path) -> None:
    root = tmp_path / "sessions"
    empty = tmp_path / "empty.json"
    empty.write_text(session_json(Session(model="m", id="20240101-000000-aaaaaa")))
    session = session_to_resume(SessionStore(root), continue_last=False, resume=str(empty))
    assert not list(root.glob("*.json"))  # an empty chat is never written (--continue never lands on one)
    SessionStore(root).release(session)

    saved_chat(SessionStore(root))  # --resume sessions/ID.json is --resume ID, not a copy of it
    resumed = session_to_resume(SessionStore(root), continue_last=False, resume=str(root / f"{GOOD_ID}.json"))
    assert resumed.id == GOOD_ID and [path.name for path in root.glob("*.json")] == [f"{GOOD_ID}.json"]
    SessionStore(root).release(resumed)
