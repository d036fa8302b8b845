"""What a probe of odd paths found, replayed without a model: `/export` to a name too long for the file system
(the last-resort bug message, with a Python exception's name), other failures while exporting said as their
errno's words, a device or a pipe called "a file" with a name suggested inside /dev; a sessions folder that is
a file or a link to nothing (a lock error said twice, then "No saved sessions yet"); and `index --index` at a
link to nothing, a device or a folder that takes no files. Each is one plain sentence saying what to do."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

import chatbot.core.export as export_module
from chatbot.core.commands import Notice, after_saving, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.photo_index.folder import check_index_folder
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.session import Session, SessionError, Turn
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import PhotoIndexError
from chatbot.frontends.listings import run_sessions
from chatbot.images import load_image
from chatbot.locations import HOME_ENV
from tests.conftest import make_image

POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX paths, links and named pipes")
# What no message may hold: a Python exception's name, an errno number, the fallback for bugs
PYTHON_WORDS = re.compile(r"Error\b|Errno|\[Errno|failed \(|Traceback")


def plain(text: str) -> str:
    assert not PYTHON_WORDS.search(text), text
    return text


@pytest.fixture
def chat(tmp_path: Path, work: Path) -> Conversation:
    """A chat about one picture (outside the current folder), with one question asked."""
    root = tmp_path / "photos"
    root.mkdir()
    conversation = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"),
                                SessionStore(tmp_path / "sessions"), engine=ScriptedEngine("an answer", "another"))
    conversation.set_image(load_image(make_image(root / "red.png", (200, 30, 30))))
    list(conversation.ask("What is it?"))
    return conversation


def refused(conversation: Conversation, line: str) -> str:
    outcome = run_command(conversation, line)
    assert not outcome.ok and len(outcome.notices) == 1 and outcome.notices[0].kind == "error", outcome
    return plain(outcome.notices[0].text)


# -- 1. an OSError while exporting is said in words --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_a_name_too_long_for_the_file_system_is_one_plain_sentence(chat, work, fmt) -> None:
    name = "L" * 300
    assert refused(chat, f"/export {fmt} {name}.{fmt}") == (
        f"The name {'L' * 60}… is too long for the file system. Choose a shorter one, e.g. /export {fmt} chat.{fmt}.")
    assert refused(chat, f"/export {fmt} {name}/chat.{fmt}").startswith(f"The name {'L' * 60}… is too long")
    assert not os.listdir(work)


def test_a_name_near_the_limit_is_exported_and_its_pictures_folder_too_long_is_said(chat, work) -> None:
    name = "M" * 250  # fits (255 bytes); its temporary file's name must not push it over
    assert run_command(chat, f"/export html {name}.html").ok and (work / f"{name}.html").is_file()
    assert run_command(chat, f"/export json {name}.json").ok
    assert refused(chat, f"/export md {name}.md") == (  # NAME_files/ is 256 bytes
        f"The name of the pictures folder, {'M' * 60}…, would be too long for the file system. Choose a shorter "
        "name for the export, e.g. /export md chat.md.")
    assert sorted(os.listdir(work)) == [f"{name}.html", f"{name}.json"]  # nothing half-made, no temporary file


@pytest.mark.parametrize(("code", "said"), [
    (errno.ENOSPC, "Could not write {path}: the disk is full. Free some space, or export to another disk."),
    (errno.EDQUOT, "Could not write {path}: your disk quota is used up. Free some space, or export to another "
                   "disk."),
    (errno.EROFS, "Could not write {path}: it is on a read-only file system. Choose a folder you can write to, "
                  "e.g. /export html ~/chat.html."),
    (errno.EACCES, "Could not write {path}: you do not have permission to write there. Choose a folder you can "
                   "write to, e.g. /export html ~/chat.html."),
    (errno.EPERM, "Could not write {path}: you do not have permission to write there. Choose a folder you can "
                  "write to, e.g. /export html ~/chat.html."),
    (errno.EISDIR, "Could not write {path}: it is a folder. Name a file in it, e.g. /export html {path}/chat.html."),
    (errno.ENOTDIR, "Could not write {path}: a part of its path is not a folder. Choose another path."),
    (errno.ENOENT, "Could not write {path}: no file can be made in {work}. Choose another folder, e.g. "
                   "/export html ~/chat.html."),
    (errno.EIO, "Could not write {path}: an input/output error (the disk may be failing). Choose another path."),
    (errno.ENAMETOOLONG, "The path {path} is too long for the file system. Choose a shorter one, e.g. "
                         "/export html ~/chat.html."),
], ids=lambda value: errno.errorcode.get(value, "") if isinstance(value, int) else "")
def test_each_failure_while_writing_an_export_is_said_in_words(chat, work, monkeypatch, code, said) -> None:
    def failing(path: Path, text: str, *, private: bool = True) -> os.stat_result:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(export_module, "write_new", failing)
    path = work / "chat.html"
    assert refused(chat, f"/export html {path}") == said.format(path=path, work=work)


@POSIX
def test_a_file_where_the_exports_folder_should_be_is_named(chat, work) -> None:
    (work / "notes.txt").write_text("mine")
    for line in ("/export html notes.txt/chat.html", "/export html notes.txt/deeper/chat.html",
                 "/export md notes.txt/"):
        assert refused(chat, line) == (f"{work / 'notes.txt'} is a file, not a folder, so nothing can be exported "
                                       "into it. Choose another path.")
    (work / "gone").symlink_to(work / "nowhere")  # a link to a folder not made yet: that folder is named
    assert refused(chat, "/export html gone/chat.html") == (
        f"The folder {work / 'nowhere'} does not exist. Create it first or choose another path.")
    assert sorted(os.listdir(work)) == ["gone", "notes.txt"] and (work / "notes.txt").read_text() == "mine"


# -- 4. a device, a pipe: not "a file", and no name suggested inside /dev ----------------------------------


@POSIX
@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_device_is_not_called_a_file_and_a_name_here_is_suggested(chat, work) -> None:
    assert refused(chat, "/export html /dev/null") == (
        "/dev/null is a device, not a file an export can be written to. Choose a file name instead, e.g. "
        "/export html null.html (in the current folder).")
    assert run_command(chat, "/export html null.html").ok and (work / "null.html").is_file()  # the name suggested
    assert refused(chat, "/export html /dev/null").endswith("e.g. /export html null-2.html (in the current folder).")


@POSIX
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_or_a_link_to_one_is_not_an_export(chat, work, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "pipe.md")
    (elsewhere / "out.json").symlink_to(elsewhere / "pipe.md")
    assert refused(chat, f"/export md {elsewhere / 'pipe.md'}") == (
        f"{elsewhere / 'pipe.md'} is a named pipe, not a file an export can be written to. Choose a file name "
        "instead, e.g. /export md pipe.md (in the current folder).")
    assert refused(chat, f"/export json {elsewhere / 'out.json'}") == (
        f"{elsewhere / 'out.json'} is a link to a named pipe, not a file an export can be written to. Choose a file "
        "name instead, e.g. /export json out.json (in the current folder).")
    assert stat.S_ISFIFO(os.stat(elsewhere / "pipe.md").st_mode) and sorted(os.listdir(elsewhere)) == [
        "out.json", "pipe.md"]
    assert not os.listdir(work)


# -- 2. a sessions folder that is not a folder --------------------------------------------------------------


def sessions_sentence(root: Path, kind: str = "a file", hint: str = "Move it away") -> str:
    return (f"{root}, where blip2-chat keeps its chats, is {kind}, not a folder, so no chat can be saved or listed "
            f"there. {hint}; blip2-chat then makes the folder itself.")


@POSIX
@pytest.mark.parametrize("kind", ["a file", "a link to nothing"])
def test_a_sessions_folder_that_is_not_one_is_said_so(tmp_path, kind) -> None:
    root = tmp_path / "sessions"
    if kind == "a file":
        root.write_text("x")
        said = sessions_sentence(root)
    else:
        root.symlink_to(tmp_path / "nowhere")
        said = sessions_sentence(root, kind, f"Make the folder it leads to ({tmp_path / 'nowhere'}), or move the "
                                             "link away")
    store = SessionStore(root)
    session = Session(model="m", turns=[Turn("q?", "a", None)])
    for attempt in (lambda: store.save(session), store.summaries, store.latest, lambda: store.load(session.id),
                    lambda: store.delete(session.id)):
        with pytest.raises(SessionError) as error:
            attempt()
        assert plain(str(error.value)) == said
    assert not (tmp_path / "nowhere").exists() and os.listdir(tmp_path) == ["sessions"]


def test_a_save_that_fails_alike_is_said_once_and_slash_save_says_it_again(tmp_path, pictures) -> None:
    (tmp_path / "sessions").write_text("x")
    conversation = Conversation(Settings(model="scripted-opt"), None, SessionStore(tmp_path / "sessions"),
                                load_image(pictures["red"]), engine=ScriptedEngine("one", "two"))
    list(conversation.ask("first?"))
    said = sessions_sentence(tmp_path / "sessions")
    assert after_saving(conversation).notices == [Notice(said, "error")]
    list(conversation.ask("second?"))
    assert after_saving(conversation).notices == []  # the same failure: said once
    assert after_saving(conversation).notices == []
    assert after_saving(conversation, force=True).notices == [Notice(said, "error")]  # asked for: said
    (tmp_path / "sessions").unlink()
    assert after_saving(conversation).notices == [] and conversation.saved  # it works again


@POSIX
def test_sessions_listing_says_the_folder_is_a_file_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "sessions").write_text("x")
    for as_json in (False, True):
        with pytest.raises(SessionError) as error:  # the CLI says a UserError as one line, exit status 2
            run_sessions(as_json=as_json)
        assert str(error.value) == sessions_sentence(tmp_path / "home" / "sessions")
        assert capsys.readouterr().out == ""  # never "No saved sessions yet"


# -- 3. index --index at odd places --------------------------------------------------------------------------


@POSIX
def test_an_index_folder_that_is_a_link_to_nothing_or_a_device_is_one_sentence(tmp_path) -> None:
    (tmp_path / "idxlink").symlink_to(tmp_path / "nowhere")
    (tmp_path / "tofile").symlink_to(tmp_path / "afile")
    (tmp_path / "afile").write_text("x")
    odd = {tmp_path / "idxlink": "a link to nothing", tmp_path / "tofile": "a link to a file",
           tmp_path / "afile": "a file"}
    if os.path.exists("/dev/null"):
        odd[Path("/dev/null")] = "a device"
    for folder, kind in odd.items():
        with pytest.raises(PhotoIndexError) as error:
            check_index_folder(folder)
        assert plain(str(error.value)) == (f"{folder} is {kind}, not a folder for the search index. Give --index a "
                                           "folder (one that does not exist yet is made), e.g. --index ~/photo-index.")
    with pytest.raises(PhotoIndexError) as error:
        IndexStore.open(tmp_path / "idxlink" / "inside", "m", create=True)
    assert plain(str(error.value)) == (f"Could not make the index folder {tmp_path / 'idxlink' / 'inside'}: "
                                       f"{tmp_path / 'idxlink'} is a link to nothing, not a folder. Give --index a "
                                       "folder you can write to.")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self") or os.name == "nt", reason="Linux's /proc")
def test_an_index_folder_that_takes_no_files_is_one_sentence() -> None:
    with pytest.raises(PhotoIndexError) as error:
        IndexStore.open(Path("/proc/self"), "m", create=True)
    assert plain(str(error.value)) == ("The search index cannot be kept in /proc/self: no file can be made there. "
                                       "Give --index a folder you can write to (one that does not exist yet is "
                                       "made), e.g. --index ~/photo-index.")
    with pytest.raises(PhotoIndexError) as error:
        IndexStore.open(Path("/proc/self/index"), "m", create=True)
    assert plain(str(error.value)) == ("Could not make the index folder /proc/self/index: no folder can be made in "
                                       "/proc/self. Give --index a folder you can write to.")
