"""Two chats on one sessions folder at once (a concurrency probe's findings 3 and 7).

3: a new chat holds its session from its start, not from its first save, so `sessions --delete` of another chat
   run meanwhile keeps a picture it pasted and asked nothing about yet; ended without a question, it leaves no file.
7: the goodbye names the command that opens the chat again: `--continue` only while that is the chat it opens
   (checked against `SessionStore.latest`, what --continue opens), else `--resume ID`.

Another blip2-chat is another process here (a lock is per process); it is followed by what it prints, never timed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatbot.core.clipboard import save_pasted
from chatbot.core.commands import saved_sentence, switch_image
from chatbot.core.conversation import Conversation
from chatbot.core.forget import forget_chats
from chatbot.core.resume import session_to_resume
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from chatbot.tui.app import create_app
from tests.test_sessions_hostile import other_blip2_chat
from tests.tui_support import ask, ready, run_tui_headless

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake clipboard tool is a shell script")

REPO = Path(__file__).resolve().parents[1]
HANG = 180  # seconds: only stops a chat that hangs, never a measure of anything


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "sessions").mkdir(parents=True)
    return tmp_path / "home"


def saved_chat(store: SessionStore, session_id: str, question: str, image: Path | None = None) -> Session:
    """A chat saved by a blip2-chat that has ended (its lock let go)."""
    ref = ImageRef(str(image), "ab" * 32) if image else None
    session = Session(model="demo", id=session_id, image=ref, turns=[Turn(question, "an answer", ref)])
    store.save(session)
    store.release(session)
    return session


def newer(path: Path, seconds: float) -> None:
    """Date `path` `seconds` after now: saved later than anything saved in this test, whatever the clock's grain."""
    when = time.time() + seconds
    os.utime(path, (when, when))


# -- 3: a new chat is open from its start ------------------------------------------------------------------


def fake_wl_paste(bin_folder: Path, picture: Path) -> None:
    """wl-paste, alone on PATH, whose clipboard holds `picture` as image/png."""
    bin_folder.mkdir(exist_ok=True)
    tool = bin_folder / "wl-paste"
    tool.write_text(f"""#!/bin/sh
case "$*" in
  *--list-types*) printf 'image/png\\n' ;;
  *"--type image/png"*) exec {shutil.which("cat")} '{picture}' ;;
  *) exit 1 ;;
esac
""")
    tool.chmod(0o755)


@contextmanager
def demo_chat(home: Path, bin_folder: Path) -> Iterator[subprocess.Popen[str]]:
    """`blip2-chat chat --plain --model demo` with no image yet, reading its lines from a pipe; killed only when
    it hangs."""
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home), "PATH": str(bin_folder)}
    process = subprocess.Popen([sys.executable, "-m", "chatbot", "chat", "--plain", "--model", "demo"], cwd=REPO,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    watchdog = threading.Timer(HANG, process.kill)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def said_until(process: subprocess.Popen[str], start: str) -> list[str]:
    """What the chat said (stderr) up to the line starting with `start`."""
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = process.stderr.readline()
        assert line, f"the chat ended before saying {start!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if line.startswith(start):
            return lines


def send_line(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


@pytest.mark.parametrize("ending", ["/quit", "end of input", "SIGTERM", "SIGHUP"])
def test_a_picture_pasted_into_a_new_chat_outlives_deleting_another_chat_with_it(
    ending: str, home: Path, tmp_path: Path, pictures: dict[str, Path]
) -> None:
    sessions, pasted, history = home / "sessions", home / "pasted", home / "plain-history"
    picture = save_pasted(pictures["red"].read_bytes(), folder=pasted)  # chat A pasted it and asked about it
    saved_chat(SessionStore(sessions), "chat-a", "What is it?", picture)
    history.write_text("What is it?\n")
    fake_wl_paste(tmp_path / "bin", pictures["red"])

    with demo_chat(home, tmp_path / "bin") as chat_b:  # a new chat B pastes the same picture, asks nothing yet
        said_until(chat_b, "No image is open")
        send_line(chat_b, "/paste")
        assert said_until(chat_b, "Now talking about")[-1] == f"Now talking about {picture}."
        assert [path.name for path in sessions.glob("*.json")] == ["chat-a.json"]  # B has saved nothing

        done = forget_chats(["chat-a"], SessionStore(sessions), pasted=pasted, history=history)
        assert [deleted.id for deleted in done.deleted] == ["chat-a"] and not done.problems
        assert picture.read_bytes() == pictures["red"].read_bytes()  # B shows it: kept
        assert (done.pictures_removed, done.pictures_kept) == (0, 1)
        assert "another chat is open" in done.pictures_kept_why
        assert history.read_text() == "What is it?\n" and done.history_kept  # B may have typed it too

        if ending == "/quit":
            send_line(chat_b, "/quit")
        elif ending == "end of input":
            assert chat_b.stdin is not None
            chat_b.stdin.close()
        else:
            chat_b.send_signal(getattr(signal, ending))
        assert chat_b.wait(HANG) == {"/quit": 0, "end of input": 0, "SIGTERM": 143, "SIGHUP": 129}[ending]
    assert os.listdir(sessions) == []  # B had no question: no session file, no lock file
    assert picture.exists()


def test_a_new_chat_in_the_app_is_open_for_sessions_delete_before_its_first_question(
    home: Path, tmp_path: Path, pictures: dict[str, Path]
) -> None:
    sessions, pasted, history = home / "sessions", home / "pasted", home / "plain-history"
    picture = save_pasted(pictures["green"].read_bytes(), folder=pasted)
    saved_chat(SessionStore(sessions), "chat-a", "Where is it?", picture)
    history.write_text("Where is it?\n")
    app = create_app(Settings(model="scripted-opt"), store=SessionStore(sessions),
                     engine_factory=lambda settings, progress: ScriptedEngine())  # as the CLI makes it
    switch_image(app.conversation, load_image(str(picture)))  # what /paste does with the picture it kept
    assert [path.name for path in sessions.glob("*.json")] == ["chat-a.json"]  # no question yet: B saved nothing

    script = ("import json, sys\nfrom pathlib import Path\nfrom chatbot.core.forget import forget_chats\n"
              "from chatbot.core.store import SessionStore\n"
              "done = forget_chats(['chat-a'], SessionStore(Path(sys.argv[1])), pasted=Path(sys.argv[2]), "
              "history=Path(sys.argv[3]))\n"
              "print(json.dumps([[d.id for d in done.deleted], done.pictures_removed, done.pictures_kept, "
              "done.history_kept]))\n")
    ran = subprocess.run([sys.executable, "-c", script, str(sessions), str(pasted), str(history)], cwd=REPO,
                         capture_output=True, text=True, timeout=HANG)  # `sessions --delete chat-a` in a terminal
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [["chat-a"], 0, 1, True]
    assert picture.exists() and history.read_text() == "Where is it?\n"
    store = app.conversation.store
    assert store is not None
    store.release(app.conversation.session)  # the app has closed (the process ending does the same)
    assert os.listdir(sessions) == []


# -- 7: the goodbye's way back ------------------------------------------------------------------------------


def test_only_the_chat_continue_opens_is_told_to_use_continue(home: Path) -> None:
    sessions = home / "sessions"
    store = SessionStore(sessions)
    first = saved_chat(store, "20250101-120000-aaaaaa", "First?")
    second = saved_chat(store, "20250101-120000-bbbbbb", "Second?")

    def check(expected_latest: str) -> None:
        latest = SessionStore(sessions).latest()  # what --continue opens: the reference
        assert latest is not None and latest.id == expected_latest
        for session_id in (first.id, second.id):
            opened = SessionStore(sessions).opened_by_continue(session_id)
            assert opened == (session_id == latest.id)
            way = "blip2-chat --continue" if opened else f"blip2-chat --resume {session_id}"
            assert saved_sentence(session_id, SessionStore(sessions)) == (f"Chat saved as session {session_id}; "
                                                                           f"{way} goes on with it.")

    newer(sessions / f"{second.id}.json", 60)
    check(second.id)
    newer(sessions / f"{first.id}.json", 120)  # the first chat saved again since
    check(first.id)
    emptied = Session(model="demo", id="20250101-120000-cccccc")  # newest, but its questions were all undone
    store.save(emptied)
    store.release(emptied)
    newer(sessions / f"{emptied.id}.json", 180)
    check(first.id)
    for session_id in (first.id, second.id):  # saved in the same instant: --continue takes one of them
        os.utime(sessions / f"{session_id}.json", (2e9, 2e9))
    check(SessionStore(sessions).summaries()[0].id)
    assert not SessionStore(sessions).opened_by_continue("20250101-120000-dddddd")  # no such chat


def plain_chat_asked(store: SessionStore, picture: Path, notes: io.StringIO) -> PlainChat:
    conversation = Conversation(Settings(model="scripted-opt"), None, store, load_image(picture),
                                engine=ScriptedEngine("It is red."))
    plain = PlainChat(conversation, out=io.StringIO(), notes=notes)
    assert plain.handle("What colour is it?")
    return plain


@pytest.mark.parametrize("other_saved_since", [False, True])
def test_the_screen_reader_goodbye_names_resume_when_another_chat_was_saved_since(
    other_saved_since: bool, home: Path, pictures: dict[str, Path]
) -> None:
    sessions = home / "sessions"
    notes = io.StringIO()
    plain = plain_chat_asked(SessionStore(sessions), pictures["red"], notes)
    if other_saved_since:  # another terminal's chat
        other = saved_chat(SessionStore(sessions), "20250101-120000-bbbbbb", "Another?")
        newer(sessions / f"{other.id}.json", 60)
    assert plain.run(["/quit"]) == 0
    session_id = plain.conversation.session.id
    latest = SessionStore(sessions).latest()
    assert latest is not None and (latest.id != session_id) == other_saved_since  # what --continue opens
    way = f"blip2-chat --resume {session_id}" if other_saved_since else "blip2-chat --continue"
    assert notes.getvalue().splitlines()[-1] == f"Chat saved as session {session_id}; {way} goes on with it. Goodbye."


def test_a_chat_open_in_another_terminal_goes_on_in_a_copy_that_is_saved_and_named(
    home: Path, tmp_path: Path, pictures: dict[str, Path]
) -> None:
    sessions = home / "sessions"
    first = plain_chat_asked(SessionStore(sessions), pictures["red"], io.StringIO())  # saved as a chat saves it
    original = first.conversation.session
    SessionStore(sessions).release(original)
    with other_blip2_chat(tmp_path, sessions, original.id) as first_terminal:  # the chat is open there
        assert first_terminal.first == "claim: None"
        store = SessionStore(sessions)
        session = session_to_resume(store, continue_last=True, resume=None)  # --continue in a second terminal
        assert store.problems == [f"This chat is open in another blip2-chat (pid {first_terminal.pid}); continuing "
                                  f"in a copy, session {session.id}."]
        conversation = Conversation(Settings(model="scripted-opt"), session, store, load_image(pictures["red"]),
                                    engine=ScriptedEngine())
        notes = io.StringIO()
        assert PlainChat(conversation, out=io.StringIO(), notes=notes).run(["/quit"]) == 0
        latest = SessionStore(sessions).latest()
        assert latest is not None and latest.id == session.id != original.id  # the copy is saved: --continue opens it
        assert latest.turns == original.turns
        assert notes.getvalue().splitlines()[-1] == (f"Chat saved as session {session.id}; blip2-chat --continue goes "
                                                     "on with it. Goodbye.")
        # the first terminal's chat, ending now, is not the one --continue opens
        assert saved_sentence(original.id, SessionStore(sessions)) == (
            f"Chat saved as session {original.id}; blip2-chat --resume {original.id} goes on with it.")
        store.release(session)


@pytest.mark.parametrize("other_saved_since", [False, True])
def test_the_app_goodbye_names_resume_when_another_chat_was_saved_since(
    other_saved_since: bool, home: Path, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def use(pilot) -> None:  # type: ignore[no-untyped-def]
        await ready(pilot)
        await ask(pilot, "What colour is it?")
        if other_saved_since:  # another terminal's chat
            other = saved_chat(SessionStore(), "20250101-120000-bbbbbb", "Another?")
            newer(home / "sessions" / f"{other.id}.json", 60)
        await pilot.press("ctrl+q")

    status, made = run_tui_headless(ScriptedEngine("It is red."), pictures["red"], use, monkeypatch)
    assert status == 0
    session_id = made[0].conversation.session.id
    latest = SessionStore().latest()
    assert latest is not None and (latest.id != session_id) == other_saved_since  # what --continue opens
    way = f"blip2-chat --resume {session_id}" if other_saved_since else "blip2-chat --continue"
    assert capsys.readouterr().err.strip() == f"Chat saved as session {session_id}; {way} goes on with it."
