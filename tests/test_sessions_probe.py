"""What a probe of `blip2-chat --resume`, `--continue` and `sessions` found, replayed at the level of the
store and resume functions (no model is loaded): a chat file from someone else choosing the model folder
through the copy saved at import, a newer format or unknown fields lost on the next save, the listing
saying a file was damaged without saying why, links in the sessions folder renamed as damaged, and chats
without a question that `--continue` landed on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.conversation import Conversation
from chatbot.core.resume import is_import, session_to_resume
from chatbot.core.session import Session, SessionError, Turn
from chatbot.core.session_files import SessionFileUnreadable, session_from_json, session_json
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.frontends.listings import NO_QUESTIONS, run_sessions, session_rows
from chatbot.locations import HOME_ENV, sessions_dir

FOREIGN_ID = "20240101-000000-abcde4"
OWN_ID = "20240101-000000-aaaaaa"
OLD = 1_600_000_000  # modification times set outright, so "newest" never depends on the clock


def chat(model: str = "scripted-opt", session_id: str = FOREIGN_ID, **changes: Any) -> dict[str, Any]:
    """A valid session file's data, with `changes` laid over it."""
    data: dict[str, Any] = {
        "format": 1, "model": model, "id": session_id, "created": 1_700_000_000.0,
        "turns": [{"question": "What is it?", "answer": "a cat", "image": None, "stopped": False,
                   "created": 1_700_000_001.0}],
        "image": None, "context_start": 0, "options": {},
    }
    return {**data, **changes}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A blip2-chat home of this test's own; its sessions folder exists."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    sessions_dir().mkdir(parents=True)
    return tmp_path


def saved_data(session_id: str) -> dict[str, Any]:
    """The session file `session_id` in the store, as plain JSON (not through the code under test)."""
    data: dict[str, Any] = json.loads((sessions_dir() / f"{session_id}.json").read_text(encoding="utf-8"))
    return data


def write(path: Path, data: object, mtime: float | None = None) -> bytes:
    path.write_text(json.dumps(data), encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path.read_bytes()


def opened(resume: str | None = None) -> tuple[Session, SessionStore]:
    """What `--resume RESUME` (or `--continue` without it) opens, let go of again as when blip2-chat quits."""
    store = SessionStore()
    session = session_to_resume(store, continue_last=resume is None, resume=resume)
    store.release(session)
    return session, store


# -- 1. a chat file from someone else never chooses the model, not even through its saved copy -------------


def test_the_copy_saved_at_import_never_names_a_model_blip2_chat_does_not_know(home: Path) -> None:
    folder = str(home / "some-folder")
    foreign = home / "foreign.json"
    original = write(foreign, chat(model=folder))

    session, _ = opened(str(foreign))  # --resume foreign.json, then Ctrl+C while the model loads
    assert (session.untrusted_model, session.model) == (folder, "")  # named (cli says it is not known), not used
    assert saved_data(FOREIGN_ID)["model"] == ""  # but the copy among the user's chats does not name it
    assert foreign.read_bytes() == original

    for later in (None, FOREIGN_ID, str(sessions_dir() / f"{FOREIGN_ID}.json")):  # --continue, --resume ID|PATH
        resumed, store = opened(later)
        assert resumed.id == FOREIGN_ID and not is_import(store, later)  # the user's own chat now ...
        assert resumed.model == ""  # ... which names no model: the configured one is used (cli.py)

    # a save before the chat's model is set (a command while it loads) does not write it either
    session, store = opened(str(foreign))
    conversation = Conversation(Settings(model="scripted-opt"), session, store)
    conversation.save(force=True)
    assert saved_data(session.id)["model"] == ""
    session.model = "scripted-opt"  # the model the chat goes on with, once loaded (Conversation.attach)
    store.save(session)
    assert saved_data(session.id)["model"] == "scripted-opt"
    store.release(session)


@pytest.mark.parametrize("model", ["demo", "Salesforce/blip2-opt-2.7b", "opt-2.7b"])
def test_an_import_naming_a_model_blip2_chat_lists_keeps_it(home: Path, model: str) -> None:
    foreign = home / "shared.json"
    write(foreign, chat(model=model))
    session, _ = opened(str(foreign))
    assert session.model == model and saved_data(FOREIGN_ID)["model"] == model
    assert opened(FOREIGN_ID)[0].model == model


def test_a_chat_made_here_keeps_whatever_model_it_was_made_with(home: Path) -> None:
    folder = str(home / "my own checkpoint")
    store = SessionStore()
    store.save(Session(model=folder, id=OWN_ID, turns=[Turn("q?", "a", None)]))
    store.release(Session(model=folder, id=OWN_ID))
    assert saved_data(OWN_ID)["model"] == folder and opened(OWN_ID)[0].model == folder


# -- 2. a newer format, or fields this version does not know, are never lost by a save --------------------


@pytest.mark.parametrize(("changes", "said"), [
    ({"format": 999}, "format 999, newer than the format 1 this one reads"),
    ({"format": "2.0"}, "format \"2.0\", which this one does not know: it reads format 1"),
    ({"mood": "calm", "tags": ["x"]}, "fields this blip2-chat does not know: 'mood', 'tags'"),
    ({"turns": [{"question": "What is it?", "answer": "a cat", "image": None, "rating": 5}]},
     "field this blip2-chat does not know: 'turns.rating'"),
])
def test_a_file_this_version_does_not_fully_know_is_kept_and_the_chat_goes_on_in_a_copy(
        home: Path, changes: dict[str, Any], said: str) -> None:
    path = sessions_dir() / f"{OWN_ID}.json"
    original = write(path, chat(session_id=OWN_ID, **changes), mtime=OLD)

    session, store = opened(OWN_ID)  # --resume ID
    assert session.id != OWN_ID and [turn.question for turn in session.turns] == ["What is it?"]
    assert store.problems == [
        f"The session file {OWN_ID}.json holds what this blip2-chat does not know ({said}), so it is kept as it "
        f"is and this chat goes on in a copy, session {session.id}; a newer blip2-chat can open the file itself."]
    assert saved_data(session.id)["format"] == 1  # the copy is saved at once, as an import is
    store.save(session)  # and every later save goes to the copy
    assert path.read_bytes() == original
    assert opened(None)[0].id == session.id  # --continue: the copy, newer than the original
    assert path.read_bytes() == original


def test_a_file_this_version_wrote_is_not_copied(home: Path) -> None:
    store = SessionStore()
    store.save(Session(model="scripted-opt", id=OWN_ID, turns=[Turn("q?", "a", None)]))
    store.release(Session(model="m", id=OWN_ID))
    session, store = opened(OWN_ID)
    assert session.id == OWN_ID and session.not_understood == "" and store.problems == []
    assert "not_understood" not in session_json(session) and "untrusted_model" not in session_json(session)


def test_an_import_in_a_newer_format_says_what_the_copy_leaves_out(home: Path) -> None:
    foreign = home / "newer.json"
    original = write(foreign, chat(format=2, mood="calm"))
    session, store = opened(str(foreign))
    assert (f"The chat in {foreign} holds what this blip2-chat does not know (format 2, newer than the format 1 "
            "this one reads; field this blip2-chat does not know: 'mood'); the copy goes on without it, and the "
            "file itself is kept as it is.") in store.problems
    assert foreign.read_bytes() == original and saved_data(session.id)["format"] == 1


def test_unknown_field_names_are_shown_as_text_and_counted() -> None:
    session = session_from_json(json.dumps(chat(**{"a\x1b[2J": 1, "b": 2, "c": 3, "d": 4, "e": 5})), "x")
    assert session.not_understood == "fields this blip2-chat does not know: 'a\\x1b[2J', 'b', 'c' and 2 more"


# -- 3. the listing says why a file was damaged, in the words --resume uses ----------------------------------


def test_the_listing_and_resume_give_the_same_reason_for_a_damaged_file(home: Path, capsys) -> None:
    write(sessions_dir() / "listed.json", chat(created="yesterday"))
    assert run_sessions() == 0  # blip2-chat sessions
    (aside,) = sessions_dir().glob("listed.*.corrupt")
    assert (f"blip2-chat: The damaged session file listed.json was moved aside to {aside.name} "
            "(created is not a number).") in capsys.readouterr().err.splitlines()

    write(sessions_dir() / "resumed.json", chat(created="yesterday"))
    store = SessionStore()
    with pytest.raises(SessionError) as refused:  # --resume resumed
        session_to_resume(store, continue_last=False, resume="resumed")
    (aside,) = sessions_dir().glob("resumed.*.corrupt")
    assert refused.value.message.endswith("is not a readable blip2-chat session (created is not a number).")
    assert (f"The damaged session file resumed.json was moved aside to {aside.name} (created is not a number)."
            in refused.value.hint)


def test_the_reason_is_given_for_every_kind_of_damage(home: Path) -> None:
    (sessions_dir() / "torn.json").write_text('{"model": ')
    (sessions_dir() / "latin1.json").write_bytes(b'{"model": "\xff"}')
    store = SessionStore()
    assert store.summaries() == []
    reasons = sorted(problem.rsplit(" (", 1)[1] for problem in store.problems)
    assert reasons == ["it is not JSON: JSONDecodeError).", "it is not UTF-8 text)."]


# -- 4. links in the sessions folder are left where they are, named, and never opened ------------------------


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs symbolic links")
def test_links_in_the_sessions_folder_are_left_where_they_are_and_named(home: Path, monkeypatch) -> None:
    root = sessions_dir()
    target = home / "elsewhere.json"
    kept = write(target, chat(session_id="elsewhere"))
    write(root / f"{OWN_ID}.json", chat(session_id=OWN_ID))
    (root / "linked.json").symlink_to(target)
    (root / "dangling.json").symlink_to(home / "nothing-here.json")
    (root / "looped.json").symlink_to(root / "looped.json")
    real_open = os.open

    def never_through_a_link(path: Any, *args: Any, **kwargs: Any) -> int:
        assert os.path.basename(os.fsdecode(path)) not in {"linked.json", "dangling.json", "looped.json",
                                                           "elsewhere.json"}, f"opened {path}"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", never_through_a_link)
    store = SessionStore()
    assert [summary.id for summary in store.summaries()] == [OWN_ID]
    assert sorted(store.problems) == [
        "dangling.json in the sessions folder is a link to nothing, not a regular file, so it was left out; move "
        "it out of the folder.",
        "linked.json in the sessions folder is a link, not a regular file, so it was left out; move it out of the "
        "folder.",
        "looped.json in the sessions folder is a link to nothing, not a regular file, so it was left out; move it "
        "out of the folder.",
    ]
    for name in ("linked", "dangling", "looped"):
        with pytest.raises(SessionFileUnreadable) as refused:  # --resume NAME
            session_to_resume(SessionStore(), continue_last=False, resume=name)
        assert str(refused.value) == (f"The session file {root / name}.json is a link, and the sessions folder's "
                                      "links are never followed. Move it out of the sessions folder; `blip2-chat "
                                      "sessions` lists the saved ones.")
    assert opened(None)[0].id == OWN_ID  # --continue
    assert all((root / f"{name}.json").is_symlink() for name in ("linked", "dangling", "looped"))
    assert not list(root.glob("*.corrupt")) and target.read_bytes() == kept


# -- 5. a chat without a question: listed as such, never where --continue lands -----------------------------


def test_a_chat_without_questions_is_listed_as_such_and_continue_passes_it_over(home: Path) -> None:
    root = sessions_dir()
    write(root / f"{OWN_ID}.json", chat(session_id=OWN_ID), mtime=OLD)
    empty_id = "20240202-000000-eeeeee"
    write(root / f"{empty_id}.json", chat(session_id=empty_id, turns=[]), mtime=OLD + 100)  # all undone

    summaries = SessionStore().summaries()
    assert [(summary.id, summary.turns) for summary in summaries] == [(empty_id, 0), (OWN_ID, 1)]
    rows = session_rows(summaries)
    assert rows[1].startswith(empty_id) and NO_QUESTIONS in rows[1] and "What is it?" in rows[2]
    assert NO_QUESTIONS not in rows[2]
    assert opened(None)[0].id == OWN_ID  # --continue: the newest chat with a question
    assert opened(empty_id)[0].turns == []  # --resume ID still opens it

    (root / f"{OWN_ID}.json").unlink()
    with pytest.raises(SessionError, match="There is no saved session to continue"):
        session_to_resume(SessionStore(), continue_last=True, resume=None)


# -- a chat file from someone else does not make blip2-chat fetch its web picture ---------------------------


def test_an_imported_chats_web_picture_is_not_fetched_on_its_word(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening someone's chat file downloaded the picture it named: a tracking pixel that tells its server
    that, and from where, the file was opened. A local picture is still reopened (its sha256 must match)."""
    from chatbot.core.resume import reopen_image
    from chatbot.core.session import ImageRef

    url = "https://tracker.example/p.png?who=\x1b[31mx"
    foreign = home / "foreign.json"
    write(foreign, chat(image={"source": url, "sha256": "0" * 64}))
    session, _ = opened(str(foreign))
    assert session.from_elsewhere and session.image == ImageRef(url, "0" * 64)
    assert "from_elsewhere" not in saved_data(FOREIGN_ID)

    def no_download(*_: object, **__: object) -> None:
        raise AssertionError("the picture was fetched")

    monkeypatch.setattr("chatbot.core.resume.load_image", no_download)
    image, problem = reopen_image(session.image, from_elsewhere=session.from_elsewhere)
    shown_url = "https://tracker.example/p.png?who=\\x1b[31mx"
    assert image is None and problem == (
        f"This chat came from a file, and its picture is on the web ({shown_url}); it was not downloaded, since a "
        f"download tells that server this chat was opened. If you trust it, open it with /image {shown_url}.")
    own, _ = opened(FOREIGN_ID)  # the copy among the user's own chats is theirs: reopened as any other
    assert not own.from_elsewhere


@pytest.mark.parametrize(("saved", "untrusted", "given", "expected"), [
    ("flan-t5-xl", "", False, ("flan-t5-xl", "Going on with flan-t5-xl, the model this chat was made with "
                                             "(choose another with --model).")),
    ("flan-t5-xl", "", True, ("opt-2.7b", None)),
    ("opt-2.7b", "", False, ("opt-2.7b", None)),
    ("", "", False, ("opt-2.7b", None)),
    ("", "/tmp/evil\x1b[2J", False, ("opt-2.7b", "This chat was made with /tmp/evil\\x1b[2J, which is not a model "
                                                 "blip2-chat knows; going on with opt-2.7b (to use that one, pass "
                                                 "--model with it).")),
    ("", "/tmp/evil", True, ("opt-2.7b", None)),
])
def test_the_model_a_resumed_chat_goes_on_with(saved: str, untrusted: str, given: bool,
                                               expected: tuple[str, str | None]) -> None:
    from chatbot.core.resume import model_to_go_on_with

    session = Session(model=saved)
    session.untrusted_model = untrusted
    assert model_to_go_on_with(session, "opt-2.7b", model_given=given) == expected
