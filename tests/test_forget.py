"""Deleting saved chats (`blip2-chat sessions --delete ID...`): the file, its damaged copies, the pictures pasted
into it that no other chat uses, its questions in the Up arrow's line history; never a chat open in
another blip2-chat, never a link, never a picture that is the user's own file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.core.clipboard import save_pasted
from chatbot.core.forget import forget_chats
from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn
from chatbot.core.store import SessionStore
from chatbot.frontends.listings import forgotten_lines
from tests.test_sessions_hostile import other_blip2_chat


def png(shade: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (16, 16), (shade, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def chat(store: SessionStore, session_id: str, questions: list[str], *images: Path,
         compared: Path | None = None) -> Session:
    refs = [ImageRef(str(image), "ab" * 32) for image in images]
    session = Session(model="demo", id=session_id, image=refs[-1] if refs else None)
    session.turns = [Turn(question, "an answer", refs[0] if refs else None) for question in questions]
    session.turns += [Turn("And here?", "an answer", ref) for ref in refs[1:]]  # a turn about each other image
    if compared is not None:
        session.turns[0].compared = [ComparedAnswer(ImageRef(str(compared), "cd" * 32), "another answer")]
    store.save(session)
    store.release(session)
    return session


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Path]:
    folders = {"sessions": tmp_path / "sessions", "pasted": tmp_path / "pasted", "history": tmp_path / "plain-history"}
    folders["sessions"].mkdir()
    return folders


def forget(home: dict[str, Path], *ids: str):
    return forget_chats(list(ids), SessionStore(home["sessions"]), pasted=home["pasted"], history=home["history"])


def test_a_deleted_chat_is_gone_and_the_others_stay(home) -> None:
    store = SessionStore(home["sessions"])
    chat(store, "first", ["What is it?", "And the colour?"])
    chat(store, "second", ["Where is it?"])
    done = forget(home, "first")
    assert [deleted.id for deleted in done.deleted] == ["first"] and not done.problems
    assert sorted(path.name for path in home["sessions"].iterdir()) == ["second.json"]  # no lock file left either
    assert [summary.id for summary in SessionStore(home["sessions"]).summaries()] == ["second"]
    assert forgotten_lines(done) == ["Deleted chat first (2 turns, first question: What is it?)."]


def test_pasted_pictures_go_with_the_chat_unless_another_chat_uses_them(home, tmp_path) -> None:
    store = SessionStore(home["sessions"])
    only_here = save_pasted(png(10), folder=home["pasted"])
    shared = save_pasted(png(20), folder=home["pasted"])
    compared_only_here = save_pasted(png(30), folder=home["pasted"])
    own = tmp_path / "holiday.png"  # the user's own picture: never touched
    own.write_bytes(png(40))
    chat(store, "doomed", ["What is it?"], only_here, shared, own, compared=compared_only_here)
    chat(store, "kept", ["What else?"], shared)
    done = forget(home, "doomed")
    assert not only_here.exists() and not compared_only_here.exists()
    assert shared.exists() and own.exists()
    assert (done.pictures_removed, done.pictures_kept) == (2, 1)
    assert forgotten_lines(done)[1:] == ["Deleted 2 pictures pasted into it.",
                                         "Kept 1 pasted picture: another saved chat uses it."]


def test_pasted_pictures_stay_while_another_chat_is_open(home, tmp_path) -> None:
    store = SessionStore(home["sessions"])
    picture = save_pasted(png(50), folder=home["pasted"])
    chat(store, "doomed", ["What is it?"], picture)
    chat(store, "open-elsewhere", ["Hello?"])
    with other_blip2_chat(tmp_path, home["sessions"], "open-elsewhere") as other:
        assert other.first == "claim: None"
        done = forget(home, "doomed")
    assert [deleted.id for deleted in done.deleted] == ["doomed"]
    assert picture.exists() and done.pictures_kept == 1
    assert "another chat is open" in done.pictures_kept_why


def test_the_line_history_stays_while_another_chat_is_open(home, tmp_path) -> None:
    # a blind user's probe: with a chat open elsewhere, a question a saved chat shared left the history
    store = SessionStore(home["sessions"])
    chat(store, "doomed", ["What is it?"])
    chat(store, "open-elsewhere", ["What is it?"])
    home["history"].write_text("What is it?\n")
    with other_blip2_chat(tmp_path, home["sessions"], "open-elsewhere") as other:
        assert other.first == "claim: None"
        done = forget(home, "doomed")
    assert [deleted.id for deleted in done.deleted] == ["doomed"]
    assert home["history"].read_text() == "What is it?\n" and done.history_kept
    assert forgotten_lines(done)[-1] == ("Kept its questions in the Up arrow's line history: another chat "
                                         "is open, or a saved one could not be read, and it may have asked them too.")


def test_a_chat_open_in_another_blip2_chat_is_not_deleted(home, tmp_path) -> None:
    store = SessionStore(home["sessions"])
    chat(store, "busy", ["What is it?"])
    chat(store, "idle", ["Where?"])
    with other_blip2_chat(tmp_path, home["sessions"], "busy") as other:
        done = forget(home, "busy", "idle")
        assert done.problems == [f"The chat busy is open in another blip2-chat (pid {other.pid}), so it was not "
                                 "deleted. Close it there (/quit), then delete it."]
        assert other.send("ask") == "saved busy"  # it goes on saving its own file
    assert [deleted.id for deleted in done.deleted] == ["idle"]
    assert (home["sessions"] / "busy.json").is_file() and not (home["sessions"] / "idle.json").exists()


def test_damaged_copies_go_too_and_a_damaged_file_is_deleted(home) -> None:
    store = SessionStore(home["sessions"])
    chat(store, "worn", ["What is it?"])
    (home["sessions"] / "worn.20250101-000000.corrupt").write_text("{")
    (home["sessions"] / "worn-other.20250101-000000.corrupt").write_text("{")  # another chat's: stays
    (home["sessions"] / "broken.json").write_text("{not json")
    done = forget(home, "worn", "broken")
    assert not done.problems
    assert sorted(path.name for path in home["sessions"].iterdir()) == ["worn-other.20250101-000000.corrupt"]
    assert forgotten_lines(done) == [
        "Deleted chat worn (1 turn, first question: What is it?), and 1 damaged copy set aside earlier.",
        "Deleted chat broken (its file was damaged).",
    ]


def test_what_is_not_a_chat_is_refused_and_left_alone(home, tmp_path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text("precious")
    (home["sessions"] / "linked.json").symlink_to(outside)
    (home["sessions"] / "folder.json").mkdir()
    done = forget(home, "linked", "folder", "missing", "../escape")
    assert done.deleted == []
    assert done.problems == [
        "linked.json in the sessions folder is a link, not a regular file, so it was left where it is. "
        "Remove it yourself if you want it gone.",
        "folder.json in the sessions folder is a folder, not a regular file, so it was left where it is. "
        "Remove it yourself if you want it gone.",
        "There is no saved session missing. List them with `blip2-chat sessions`.",
        "'../escape' is not a session id: session ids look like 20250101-120000-abcdef (letters, digits, - and _). "
        "List the saved sessions with `blip2-chat sessions`.",
    ]
    assert outside.read_text() == "precious" and (home["sessions"] / "linked.json").is_symlink()


@pytest.mark.parametrize("libedit", [False, True])
def test_its_questions_leave_the_line_history(home, libedit) -> None:
    store = SessionStore(home["sessions"])
    chat(store, "doomed", ["What is at the top left?", "/not a question", "What size is it?"])
    chat(store, "kept", ["Where is it?", "What size is it?"])  # a line both asked stays: it is the kept one's too

    def written(line: str) -> str:
        return line.replace(" ", "\\040") if libedit else line

    lines = ["What is at the top left?", "/image a.png", "Where is it?", "  What is at the top left?  ",
             "What size is it?"]
    header = ["_HiStOrY_V2_"] if libedit else []
    home["history"].write_text("".join(f"{written(line)}\n" for line in header + lines))
    done = forget(home, "doomed")
    assert home["history"].read_text() == "".join(f"{written(line)}\n"
                                                  for line in header + ["/image a.png", "Where is it?",
                                                                        "What size is it?"])
    assert done.history_lines_removed == 2
    assert os.stat(home["history"]).st_mode & 0o077 == 0  # rewritten private


def test_the_command_deletes_and_says_what_it_could_not(tmp_path) -> None:
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)}
    store = SessionStore(tmp_path / "sessions")
    chat(store, "20250101-120000-abcdef", ["What is it?"])

    def blip2_chat(*args: str) -> subprocess.CompletedProcess[str]:  # the timeout only stops a hang
        return subprocess.run([sys.executable, "-m", "chatbot", *args], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)

    listed = blip2_chat("sessions", "--json")
    assert listed.returncode == 0
    record = json.loads(listed.stdout)
    assert {key: record[key] for key in ("id", "turns", "model", "image", "first_question")} == {
        "id": "20250101-120000-abcdef", "turns": 1, "model": "demo", "image": "", "first_question": "What is it?"}
    ran = blip2_chat("sessions", "--delete", "20250101-120000-abcdef", "20250101-120000-ffffff")
    assert ran.returncode == 2
    assert ran.stdout == "Deleted chat 20250101-120000-abcdef (1 turn, first question: What is it?).\n"
    assert ran.stderr == ("blip2-chat: There is no saved session 20250101-120000-ffffff. List them with "
                          "`blip2-chat sessions`.\n")
    assert not (tmp_path / "sessions" / "20250101-120000-abcdef.json").exists()
    assert blip2_chat("sessions", "--delete").returncode == 2  # an id is needed: argparse says so


def test_a_screen_reader_chat_open_meanwhile_adds_only_its_own_lines(tmp_path) -> None:
    readline = pytest.importorskip("readline")
    from chatbot.frontends.plain.terminal import _keep_history

    history = tmp_path / "plain-history"
    history.write_text("What is it?\nWhere is it?\n")
    readline.clear_history()
    try:
        readline.read_history_file(str(history))  # the chat starts: its Up arrow has both lines
        earlier = readline.get_current_history_length()
        readline.add_history("A new question?")
        history.write_text("Where is it?\n")  # meanwhile `sessions --delete` removed the first
        _keep_history(readline, history, readline.get_current_history_length() - earlier)
    finally:
        readline.clear_history()
    assert history.read_text() == "Where is it?\nA new question?\n"
