"""`/export` after a restart: a chat resumed with `--continue` updates the export it made yesterday (its record is
kept in the sessions folder's exports/), and still replaces nothing else: not a file changed since, not another's
at that name, not on the word of a damaged or forged record, not for a chat file from elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.export_log import read_log
from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from tests.conftest import make_image


def first_run(tmp_path: Path, picture: Path) -> Conversation:
    store = SessionStore(tmp_path / "sessions")
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"), store,
                        engine=ScriptedEngine("a red square", "still red"))
    chat.set_image(load_image(picture))
    list(chat.ask("What is it?"))
    chat.save()
    return chat


def resumed(tmp_path: Path, session_id: str) -> Conversation:
    """The chat as `blip2-chat --resume ID` opens it in a new process: nothing of the first run's memory."""
    store = SessionStore(tmp_path / "sessions")
    session = store.load(session_id)
    return Conversation(Settings(model="scripted-opt"), session, store, engine=ScriptedEngine("and more"))


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    return make_image(tmp_path / "photos" / "red.png", (200, 30, 30))


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_a_resumed_chat_updates_its_own_earlier_export(work, tmp_path, picture, fmt) -> None:
    chat = first_run(tmp_path, picture)
    assert run_command(chat, f"/export {fmt}").ok
    path = work / f"blip2-chat-{chat.session.id}.{fmt}"
    chat.store.release(chat.session)  # type: ignore[union-attr]  # the first run ends

    again = resumed(tmp_path, chat.session.id)
    again.set_image(load_image(picture))
    list(again.ask("And now?"))
    outcome = run_command(again, f"/export {fmt}")
    assert outcome.ok and outcome.notices[0].text.startswith(f"Updated the export {path}")
    assert "And now?" in path.read_text(encoding="utf-8")
    if fmt == "md":  # its pictures folder is its own too: updated, not refused as another's
        assert len(list((work / f"blip2-chat-{chat.session.id}_files").iterdir())) == 1


def test_an_export_changed_since_is_refused_after_a_restart_as_before(work, tmp_path, picture) -> None:
    chat = first_run(tmp_path, picture)
    assert run_command(chat, "/export md").ok
    path = work / f"blip2-chat-{chat.session.id}.md"
    path.write_text("my own notes, edited since", encoding="utf-8")
    chat.store.release(chat.session)  # type: ignore[union-attr]

    outcome = run_command(resumed(tmp_path, chat.session.id), "/export md")
    assert not outcome.ok and outcome.notices[0].text.startswith(f"There is already a file {path},")
    assert path.read_text(encoding="utf-8") == "my own notes, edited since"


def test_a_file_put_in_its_place_is_anothers_even_with_the_same_size(work, tmp_path, picture) -> None:
    chat = first_run(tmp_path, picture)
    assert run_command(chat, "/export json").ok
    path = work / f"blip2-chat-{chat.session.id}.json"
    text = path.read_bytes()
    path.unlink()
    path.write_bytes(text.replace(b"red", b"RED"))  # same size, a new file (another inode)
    chat.store.release(chat.session)  # type: ignore[union-attr]

    outcome = run_command(resumed(tmp_path, chat.session.id), "/export json")
    assert not outcome.ok and b"RED" in path.read_bytes()


def test_the_record_is_private_names_only_what_is_still_its_own_and_goes_with_the_chat(work, tmp_path,
                                                                                       picture) -> None:
    chat = first_run(tmp_path, picture)
    store = chat.store
    assert store is not None and run_command(chat, "/export md").ok and run_command(chat, "/export html").ok
    record = store.export_log_path(chat.session.id)
    assert record == tmp_path / "sessions" / "exports" / f"{chat.session.id}.json"
    assert record.stat().st_mode & 0o077 == 0  # private: where your files are, like the chats themselves
    html = work / f"blip2-chat-{chat.session.id}.html"
    assert html in read_log(record).written
    html.unlink()  # gone: no longer named once the record is written again
    assert run_command(chat, "/export md").ok and html not in read_log(record).written
    assert [s.id for s in store.summaries()] == [chat.session.id]  # not taken for a chat
    store.release(chat.session)
    store.delete(chat.session.id)
    assert not record.exists()


def test_a_chat_file_from_elsewhere_keeps_no_record_and_uses_none(work, tmp_path, picture) -> None:
    """A chat file someone sent may carry the id of one of yours: it never replaces your chat's export."""
    chat = first_run(tmp_path, picture)
    assert run_command(chat, "/export md").ok
    path = work / f"blip2-chat-{chat.session.id}.md"
    before = path.read_bytes()
    chat.store.release(chat.session)  # type: ignore[union-attr]
    stranger = resumed(tmp_path, chat.session.id)
    stranger.session.from_elsewhere = True
    outcome = run_command(stranger, "/export md")
    assert not outcome.ok and path.read_bytes() == before


def test_a_forged_record_does_not_make_anothers_file_ours(work, tmp_path, picture) -> None:
    """A record naming a file whose stamp does not match (another inode) changes nothing: refused, untouched."""
    chat = first_run(tmp_path, picture)
    store = chat.store
    assert store is not None
    theirs = work / f"blip2-chat-{chat.session.id}.md"
    theirs.write_text("someone's", encoding="utf-8")
    status = theirs.stat()
    record = store.export_log_path(chat.session.id)
    assert record is not None
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"files": [[str(theirs), status.st_dev, status.st_ino + 1, status.st_size,
                                             status.st_mtime_ns]], "folders": []}))
    outcome = run_command(chat, "/export md")
    assert not outcome.ok and theirs.read_text(encoding="utf-8") == "someone's"


NO_PATH = st.text(st.characters(exclude_characters="/"), max_size=20)  # never an absolute path: no entry is valid
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**64) | st.floats() | NO_PATH,
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), JSON.map(lambda value: json.dumps(value).encode()),
                         st.builds(lambda files, folders: json.dumps({"files": files, "folders": folders}).encode(),
                                   JSON, JSON)))
def test_a_record_that_is_not_exactly_one_is_left_unread(tmp_path, content: bytes) -> None:
    """Anything but what `keep` writes (random bytes, any JSON, the right keys holding anything but a path) reads
    as an empty log: nothing is ours on its word."""
    place = tmp_path / "record.json"
    place.write_bytes(content)
    log = read_log(place)
    assert (log.written, log.folders) == ({}, {})


def test_a_well_formed_record_of_a_file_changed_since_makes_nothing_ours(tmp_path) -> None:
    """The record names the file with another inode (a file put in its place): read, but the stamp decides."""
    probe = tmp_path / "export.md"
    probe.write_text("someone's", encoding="utf-8")
    status = probe.stat()
    place = tmp_path / "record.json"
    place.write_text(json.dumps({"files": [[str(probe), status.st_dev, status.st_ino + 1, status.st_size,
                                            status.st_mtime_ns]], "folders": []}))
    log = read_log(place)
    assert probe in log.written and not log.ours(probe)
    place.write_text(json.dumps({"files": [[str(probe), status.st_dev, status.st_ino, status.st_size,
                                            status.st_mtime_ns]], "folders": []}))
    assert read_log(place).ours(probe)  # the same file, unchanged: its own


def test_the_notice_says_updated_after_a_restart(work, tmp_path, picture) -> None:
    chat = first_run(tmp_path, picture)
    assert run_command(chat, "/export html").ok
    chat.store.release(chat.session)  # type: ignore[union-attr]
    path = work / f"blip2-chat-{chat.session.id}.html"
    assert run_command(resumed(tmp_path, chat.session.id), "/export html").notices == [
        Notice(f"Updated the export {path}, with its picture inside it.")]


def test_a_chat_never_saved_keeps_no_record(work, tmp_path, picture) -> None:
    """Its id would be free for a chat file from elsewhere to take, and with it what the export may replace."""
    store = SessionStore(tmp_path / "sessions")
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"), store,
                        engine=ScriptedEngine("x"))
    chat.set_image(load_image(picture))
    assert run_command(chat, "/export md").ok  # no question yet: nothing saved
    record = store.export_log_path(chat.session.id)
    assert record is not None and not record.exists()


def test_a_chat_file_with_the_id_of_a_recorded_chat_is_imported_under_a_new_id(work, tmp_path, picture) -> None:
    """A record without its session (deleted by hand) still holds the id: an import of that id gets a fresh one,
    so it never updates that chat's export."""
    from chatbot.core.resume import imported_session
    from chatbot.core.session_files import session_json

    chat = first_run(tmp_path, picture)
    store = chat.store
    assert store is not None and run_command(chat, "/export md").ok
    path = work / f"blip2-chat-{chat.session.id}.md"
    before = path.read_bytes()
    store.release(chat.session)
    store.path_for(chat.session.id).unlink()  # the session gone, its export record left
    forged = tmp_path / "evil.json"
    forged.write_text(session_json(Session(model="scripted-opt", id=chat.session.id)), encoding="utf-8")
    imported = imported_session(store, forged)
    assert imported.id != chat.session.id
    copy = Conversation(Settings(model="scripted-opt"), imported, store, engine=ScriptedEngine("x"))
    copy.set_image(load_image(picture))
    list(copy.ask("Wire the money?"))
    copy.save()
    store.release(copy.session)
    outcome = run_command(resumed(tmp_path, imported.id), f"/export md {path}")  # `--continue`: its own chat now
    assert not outcome.ok and path.read_bytes() == before
