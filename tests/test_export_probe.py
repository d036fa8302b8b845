"""What probes of `/export` found: links planted at the export's path, a session that names a file that is no
picture, Markdown that fetched web pictures, a format written under another format's name, and exports
made private. Each test replays the probe and checks the files themselves."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from PIL import Image

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.export import ExportLog, _write_copies, export_session
from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from tests.conftest import make_image

needs_links = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="symbolic links")


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chat_with(tmp_path: Path, session: Session) -> Conversation:
    return Conversation(Settings(model="scripted-opt"), session, SessionStore(tmp_path / "sessions"),
                        engine=ScriptedEngine("an answer"))


@pytest.fixture
def chat(tmp_path: Path, work: Path) -> Conversation:
    """A chat about one picture of the test's own, outside the folder exports go to."""
    root = tmp_path / "photos"
    root.mkdir()
    conversation = chat_with(tmp_path, Session(model="scripted-opt"))
    conversation.set_image(load_image(make_image(root / "red.png", (200, 30, 30))))
    list(conversation.ask("What is it?"))
    return conversation


# -- 1. a link where the export goes --------------------------------------------------------------------


@needs_links
@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_a_dangling_link_at_the_path_is_refused_and_its_target_never_made(chat, work, tmp_path, fmt) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    link = work / f"chat.{fmt}"
    link.symlink_to(victim / ".profile_addon")
    outcome = run_command(chat, f"/export {fmt} {link}")
    assert not outcome.ok and outcome.notices == [Notice(
        f"There is already a link {link}, and /export only replaces its own earlier export. Choose another name, "
        f"e.g. chat-2.{fmt}.", "error")]
    assert tree(victim) == set() and tree(work) == {link.name} and os.readlink(link) == str(victim / ".profile_addon")
    assert run_command(chat, f"/export {fmt} chat-2.{fmt}").ok  # the name it suggested


@needs_links
def test_a_link_to_a_file_or_a_folder_named_like_an_export_is_refused_and_untouched(chat, work, tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.md").write_text("my notes")
    (work / "chat.md").symlink_to(victim / "notes.md")
    (work / "page.html").symlink_to(victim, target_is_directory=True)  # a "file name" that leads into a folder
    for line in ("/export md chat.md", "/export md chat.md --embed", "/export html page.html"):
        outcome = run_command(chat, line)
        assert not outcome.ok and outcome.notices[0].text.startswith("There is already a link ")
    assert tree(victim) == {"notes.md"} and (victim / "notes.md").read_text() == "my notes"
    assert tree(work) == {"chat.md", "page.html"}
    os.mkdir(work / "real.html")  # a real folder named so is still a folder to export into
    assert run_command(chat, "/export html real.html").ok and len(tree(work / "real.html")) == 1


@needs_links
def test_an_earlier_export_swapped_for_a_link_is_not_written_through(chat, work, tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    assert run_command(chat, "/export html chat.html").ok
    (work / "chat.html").unlink()
    (work / "chat.html").symlink_to(victim)
    assert not run_command(chat, "/export html chat.html").ok
    assert victim.read_text() == "keep" and (work / "chat.html").is_symlink()


@needs_links
def test_copies_are_never_written_through_a_link_put_where_the_folder_was(tmp_path) -> None:
    """Between the check and the write someone swaps the pictures folder for a link: nothing lands there."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "chat_files").symlink_to(victim, target_is_directory=True)
    with pytest.raises(FileExistsError):
        _write_copies(tmp_path / "chat_files", tmp_path / "chat.md", {"abc-red.png": b"picture"}, ExportLog())
    assert tree(victim) == set()


# -- 2. a session naming a file that is not a picture -----------------------------------------------------


def test_a_file_a_session_names_that_is_no_picture_is_never_copied_or_inlined(tmp_path, work) -> None:
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    turn = Turn("What is it?", "a picture", ImageRef(str(secret), sha256(secret.read_bytes())))
    chat = chat_with(tmp_path, Session(model="scripted-opt", turns=[turn]))
    warning = Notice("1 picture could not be copied: it is gone or changed since the chat, so the export names it "
                     "as missing.", "warning")
    assert run_command(chat, "/export md chat.md").notices == [Notice(f"Exported the chat to {work / 'chat.md'}."),
                                                                warning]
    assert run_command(chat, "/export html chat.html").notices[1].text.startswith("1 picture could not be included")
    assert run_command(chat, "/export md embedded.md --embed").ok
    assert tree(work) == {"chat.md", "chat.html", "embedded.md"}  # no chat_files/ and no copy in it
    encoded = base64.b64encode(secret.read_bytes()).decode()
    for name in ("chat.md", "chat.html", "embedded.md"):
        text = (work / name).read_text(encoding="utf-8")
        assert "root:x:0" not in text and encoded not in text and "octet-stream" not in text
        assert "Missing" in text


def test_a_picture_of_a_kind_without_a_known_signature_is_still_copied(tmp_path, work) -> None:
    """Only a picture is copied, but every picture blip2-chat opens is one: a PPM, named without a suffix."""
    picture = tmp_path / "scan"
    Image.new("RGB", (16, 12), (10, 200, 10)).save(picture, format="PPM")
    chat = chat_with(tmp_path, Session(model="scripted-opt"))
    chat.set_image(load_image(picture))
    list(chat.ask("What is it?"))
    outcome = run_command(chat, "/export md chat.md")
    assert outcome.ok and len(outcome.notices) == 1
    [copy] = (work / "chat_files").iterdir()
    assert copy.read_bytes() == picture.read_bytes() and copy.name == f"{sha256(picture.read_bytes())[:12]}-scan.ppm"


# -- 3. web pictures are links, never fetched ------------------------------------------------------------


def test_a_web_picture_is_a_plain_link_in_markdown(tmp_path) -> None:
    dog = ImageRef('https://example.org/pics/dog (1).png?x="y"', "cd" * 32)
    cat = ImageRef("http://example.org/cat.jpg", "ef" * 32)
    turn = Turn("Is it a dog?", "yes", dog, compared=[ComparedAnswer(cat, "a cat")])
    export_session(Session(model="m", turns=[turn]), "md", tmp_path / "chat.md")
    markdown = (tmp_path / "chat.md").read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").parse(markdown)
    inline = [child for token in tokens if token.children for child in token.children]
    assert not [child for child in inline if child.type == "image"]  # a viewer loads nothing
    links = [child.attrGet("href") for child in inline if child.type == "link_open"]
    assert links == ["https://example.org/pics/dog%20%281%29.png?x=%22y%22", "http://example.org/cat.jpg"]
    assert "[dog (1).png](https://example.org/pics/dog%20%281%29.png?x=%22y%22)" in markdown


# -- 4. a format under another format's name -------------------------------------------------------------


@pytest.mark.parametrize(("line", "said"), [
    ("/export html page.md", "page.md is the name of a Markdown file, and this export is HTML. Name it page.html, "
                             "or use /export md."),
    ("/export md a.html", "a.html is the name of an HTML file, and this export is Markdown. Name it a.md, or use "
                          "/export html."),
    ("/export json x.md", "x.md is the name of a Markdown file, and this export is JSON. Name it x.json, or use "
                          "/export md."),
    ("/export md X.JSON", "X.JSON is the name of a JSON file, and this export is Markdown. Name it X.md, or use "
                          "/export json."),
    ("/export md page.htm --embed", "page.htm is the name of an HTML file"),
    ("/export html notes.markdown", "notes.markdown is the name of a Markdown file"),
])
def test_a_name_of_another_formats_file_is_refused(chat, work, line, said) -> None:
    outcome = run_command(chat, line)
    assert not outcome.ok and outcome.notices[0].kind == "error" and outcome.notices[0].text.startswith(said)
    assert tree(work) == set()


@pytest.mark.parametrize("line", ["/export html page.htm", "/export md notes.markdown", "/export md notes.txt",
                                  "/export json chat", "/export html .hidden", "/export json backup.json.old"])
def test_names_of_the_same_format_or_of_none_are_written(chat, work, line) -> None:
    outcome = run_command(chat, line)
    name = line.split()[-1]
    assert outcome.ok and (work / name).is_file()


# -- 5. an export is for sharing --------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_exports_get_the_usual_mode_like_their_pictures(chat, work, mask) -> None:
    previous = os.umask(mask)
    try:
        for line in ("/export md chat.md", "/export md chat.md", "/export html", "/export json a.json"):
            assert run_command(chat, line).ok  # the second one updates the first (written another way)
    finally:
        os.umask(previous)
    expected = 0o666 & ~mask
    modes = {name: stat.S_IMODE(os.stat(work / name).st_mode) for name in tree(work)
             if (work / name).is_file()}
    assert len(modes) == 4 and set(modes.values()) == {expected}, modes  # three exports and the copy
    assert not [name for name in tree(work) if name.endswith(".tmp")]


def test_an_answer_without_words_is_exported_as_none(tmp_path) -> None:
    """As the chat says it: "(no answer)", never a bare label (a screen reader reads the export too)."""
    session = Session(model="m", turns=[Turn("<script>alert(1)</script>", "", None), Turn("and?", "", None, True)])
    markdown = export_session(session, "md", tmp_path / "chat.md").path.read_text()
    assert "**Assistant:** (no answer)\n" in markdown and "**Assistant:** (no answer) *(stopped)*" in markdown
    page = export_session(session, "html", tmp_path / "chat.html").path.read_text()
    assert "<p><strong>Assistant:</strong> (no answer)</p>" in page
    assert "<strong>Assistant:</strong> </p>" not in page


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_a_nul_in_the_export_name_is_one_sentence_and_nothing_written(chat, work, fmt) -> None:
    """`/export md a<NUL>b.md` raised ValueError from os.stat, out of the command."""
    outcome = run_command(chat, f"/export {fmt} a\0b.{fmt}")
    assert not outcome.ok and outcome.notices == [Notice(
        f"{work / 'a'}\\x00b.{fmt} is not a usable file name: it holds a NUL character. Type the name again, e.g. "
        f"/export {fmt} chat.{fmt}.", "error")]
    assert tree(work) == set()
