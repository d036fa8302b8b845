"""Exports that carry their pictures: Markdown with a `NAME_files/` folder of copies (or `--embed`), one
self-contained HTML page; pictures gone or changed since the chat are named as missing; a folder the export
did not make is never used or touched. Each test reads the export back the way a viewer would."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import EXPORT_FORMATS, Conversation
from chatbot.core.export import ExportLog, export_session
from chatbot.core.export_pages import copy_name
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image
from tests.conftest import make_image

MARKDOWN_PICTURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def chat_about(tmp_path: Path, *talks: tuple[Path, str]) -> Conversation:
    """A saved chat that asks one question about each picture in turn (switching image in between)."""
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"),
                        SessionStore(tmp_path / "sessions"), engine=ScriptedEngine(*(f"answer {n}" for n in range(9))))
    for picture, question in talks:
        chat.set_image(load_image(picture))
        list(chat.ask(question))
    return chat


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """Pictures of this test's own (they are moved and changed), one with a hostile name."""
    root = tmp_path / "photos"
    root.mkdir()
    return {"red": make_image(root / "red.png", (200, 30, 30)), "green": make_image(root / "green.jpg", (20, 180, 40)),
            "odd": make_image(root / "we\x1b[2Jird (1) #x.png", (30, 30, 200))}


def linked_files(markdown: Path) -> list[Path]:
    """Where the Markdown's picture links lead, resolved as a viewer does (relative to the file, decoded)."""
    links = MARKDOWN_PICTURE.findall(markdown.read_text(encoding="utf-8"))
    assert links and all(":" not in link and not link.startswith("/") for link in links)  # relative, no scheme
    return [(markdown.parent / unquote(link)).resolve() for link in links]


def test_markdown_links_resolve_to_copies_that_hold_the_recorded_pictures(work, photos, tmp_path) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"), (photos["odd"], "And this?"),
                      (photos["green"], "And this one?"))
    outcome = run_command(chat, '/export md "my chat (1) #2.md"')  # a name a link must percent-encode
    path, folder = work / "my chat (1) #2.md", work / "my chat (1) #2_files"
    assert outcome.ok and outcome.notices == [
        Notice(f"Exported the chat to {path}, with copies of its 3 pictures in {folder}.")]
    recorded = [turn.image.sha256 for turn in chat.session.turns]  # type: ignore[union-attr]
    copies = linked_files(path)
    assert [copy.parent for copy in copies] == [folder] * 3 and all(copy.is_file() for copy in copies)
    assert [sha256(copy) for copy in copies] == recorded  # each link shows the very picture the chat was about
    assert tree(folder) == {copy.name for copy in copies}
    for copy, turn in zip(copies, chat.session.turns, strict=True):
        assert copy.name.startswith(turn.image.sha256[:12] + "-")  # type: ignore[union-attr]
    assert copies[1].name == f"{recorded[1][:12]}-we_2Jird_1_x.png"  # the escape sequence is not in a file name
    assert str(photos["red"]) in path.read_text(encoding="utf-8")  # the original is still named


@pytest.mark.parametrize("line", ["/export md chat.md --embed", "/export md --embed chat.md",
                                  '/export md "chat.md" --embed'])
def test_embed_puts_the_pictures_inside_as_data_uris_of_the_original_bytes(work, photos, tmp_path, line) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"), (photos["green"], "And this one?"))
    outcome = run_command(chat, line)
    path = work / "chat.md"
    assert outcome.notices == [Notice(f"Exported the chat to {path}, with its 2 pictures inside it.")]
    uris = MARKDOWN_PICTURE.findall(path.read_text(encoding="utf-8"))
    assert [uri.split(",")[0] for uri in uris] == ["data:image/png;base64", "data:image/jpeg;base64"]
    assert [base64.b64decode(uri.split(",", 1)[1]) for uri in uris] == [
        photos["red"].read_bytes(), photos["green"].read_bytes()]
    assert tree(work) == {"chat.md"}  # no folder


def test_a_picture_gone_or_changed_since_the_chat_is_named_missing_and_counted(work, photos, tmp_path) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"), (photos["green"], "And this?"),
                      (photos["odd"], "And this one?"))
    photos["red"].unlink()  # gone
    make_image(photos["green"], (0, 0, 0))  # changed: a copy would show another picture than the chat's
    if hasattr(os, "mkfifo"):  # a pipe where a picture was must not hang the export
        photos["odd"].unlink()
        os.mkfifo(photos["odd"])
    outcome = run_command(chat, "/export md")
    path = work / f"blip2-chat-{chat.session.id}.md"
    warning = ("3 pictures could not be copied: they are gone or changed since the chat, so the export names them "
               "as missing.")
    assert outcome.ok and outcome.notices == [Notice(f"Exported the chat to {path}."), Notice(warning, "warning")]
    markdown = path.read_text(encoding="utf-8")
    assert markdown.count("*Missing: this picture is gone or has changed since the chat") == 3
    assert not MARKDOWN_PICTURE.search(markdown) and tree(work) == {path.name}  # no links, no empty folder
    make_image(photos["red"], (200, 30, 30))  # the very same picture again: it is found and copied
    outcome = run_command(chat, "/export html")
    assert outcome.notices[1] == Notice("2 pictures could not be included: they are gone or changed since the chat, "
                                        "so the export names them as missing.", "warning")
    assert outcome.notices[0].text.endswith(", with its picture inside it.")


def test_a_web_address_is_linked_and_a_gone_file_named_missing(tmp_path) -> None:
    dog = ImageRef("https://example.org/pics/dog (1)\x1b.png?size=big&x=\"y\"", "cd" * 32)
    session = Session(model="m", turns=[Turn("Is it a dog?", "yes", dog),
                                        Turn("And this?", "a cat", ImageRef("/no/such/cat.jpg", "ab" * 32))])
    result = export_session(session, "md", tmp_path / "chat.md")
    assert result.notice() == f"Exported the chat to {tmp_path / 'chat.md'}. 1 picture is a web address, so the " \
                              "export links to it."
    assert result.problem() == ("1 picture could not be copied: it is gone or changed since the chat, so the export "
                                "names it as missing.")
    markdown = (tmp_path / "chat.md").read_text()
    assert "[dog (1)\\\\x1b.png](https://example.org/pics/dog%20%281%29%1B.png?size=big&x=%22y%22)" in markdown
    page = export_session(session, "html", tmp_path / "chat.html").path.read_text()
    assert 'href="https://example.org/pics/dog%20%281%29%1B.png?size=big&amp;x=%22y%22"' in page
    assert "<img" not in page  # nothing to load: the web picture is a link, the gone one is named
    assert tree(tmp_path) == {"chat.md", "chat.html"}


def test_a_pictures_folder_the_export_did_not_make_is_refused_and_untouched(work, photos, tmp_path) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"))
    folder = work / "chat_files"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (work / "chat-2_files").mkdir()  # the suggested name frees the folder's name too
    outcome = run_command(chat, "/export md chat.md")
    assert not outcome.ok and outcome.notices == [Notice(
        f"There is already a folder {folder}, and /export only replaces its own earlier export. Choose another name, "
        "e.g. chat-3.md.", "error")]
    assert tree(work) == {"chat_files", "chat_files/notes.txt", "chat-2_files"}  # nothing written, nothing touched
    assert run_command(chat, "/export md chat.md --embed").ok  # embedded pictures need no folder
    assert tree(folder) == {"notes.txt"} and (folder / "notes.txt").read_text() == "mine"

    (work / "linked_files").symlink_to(tmp_path / "photos", target_is_directory=True)  # a link is not its folder
    assert not run_command(chat, "/export md linked.md").ok
    assert not (work / "linked.md").exists() and tree(tmp_path / "photos") == {p.name for p in photos.values()}

    other = chat_about(tmp_path, (photos["red"], "Another chat?"))
    assert run_command(other, "/export md shared.md").ok
    (work / "shared.md").unlink()
    assert not run_command(chat, "/export md shared.md").ok  # another conversation's export folder is not ours
    assert not (work / "shared.md").exists() and len(tree(work / "shared_files")) == 1


def test_exporting_twice_updates_its_own_export_and_replaces_its_copies(work, photos, tmp_path) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"))
    path, folder = work / "chat.md", work / "chat_files"
    assert run_command(chat, "/export md chat.md").ok
    first = tree(folder)
    (folder / "kept.txt").write_text("someone's")  # another's file in the folder: left alone, never replaced
    chat.set_image(load_image(photos["green"]))
    list(chat.ask("And this one?"))
    assert run_command(chat, "/export md chat.md").notices == [
        Notice(f"Updated the export {path}, with copies of its 2 pictures in {folder}.")]
    assert first < tree(folder) and len(tree(folder)) == 3 and (folder / "kept.txt").read_text() == "someone's"
    assert [sha256(copy) for copy in linked_files(path)] == [
        turn.image.sha256 for turn in chat.session.turns]  # type: ignore[union-attr]

    assert run_command(chat, "/export md chat.md --embed").notices == [
        Notice(f"Updated the export {path}, with its 2 pictures inside it.")]
    assert tree(folder) == {"kept.txt"}  # its own copies went with the export that linked them; the folder stays
    (folder / "kept.txt").unlink()
    assert run_command(chat, "/export md chat.md").ok and len(tree(folder)) == 2
    assert run_command(chat, "/export md chat.md --embed").ok and not folder.exists()  # made by it, removed by it

    assert run_command(chat, "/export md chat.md").ok
    copy = next(folder.iterdir())
    copy.write_bytes(b"edited since")  # changed by someone: no longer this export's copy
    outcome = run_command(chat, "/export md chat.md")
    assert not outcome.ok and outcome.notices[0].text.startswith(f"There is already a folder {folder},")
    assert copy.read_bytes() == b"edited since"


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of each h1/h2/h3."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2", "h3"):
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_heading = self._in_heading and tag not in ("h1", "h2", "h3")

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings[-1] += data


def test_the_html_export_is_one_escaped_page_that_loads_and_runs_nothing(work, photos, tmp_path) -> None:
    hostile = 'is <b>this</b> & "that" \x1b]0;pwned\x07 </html><script>alert(1)</script>?'
    named = make_image(tmp_path / "photos" / "<img src=x onerror=alert(1)>.png", (90, 90, 90))
    engine_says = ScriptedEngine(hostile, "plain")
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"),
                        SessionStore(tmp_path / "sessions"), load_image(named), engine=engine_says)
    list(chat.ask(hostile))
    chat.set_image(load_image(photos["green"]))
    list(chat.ask("And this one?"))
    assert "html" in EXPORT_FORMATS  # so the app's palette offers /export html
    outcome = run_command(chat, "/export html")
    path = work / f"blip2-chat-{chat.session.id}.html"
    assert outcome.notices == [Notice(f"Exported the chat to {path}, with its 2 pictures inside it.")]
    page = path.read_text(encoding="utf-8")

    assert "<script" not in page.lower() and "\x1b" not in page and "\x07" not in page
    assert page.count("</html>") == 1 and page.endswith("</html>\n")
    escaped = ("is &lt;b&gt;this&lt;/b&gt; &amp; &quot;that&quot; \\x1b]0;pwned\\x07 &lt;/html&gt;&lt;script&gt;"
               "alert(1)&lt;/script&gt;?")
    assert page.count(escaped) == 4  # the question and the answer, as text; the question's heading; the alt text
    parsed = Page()
    parsed.feed(page)
    assert parsed.tags[0] == ("html", {"lang": "en"})
    assert not any(name.startswith("on") for _, attributes in parsed.tags for name in attributes)
    assert {tag for tag, _ in parsed.tags} <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2",
                                               "h3", "p", "code", "strong", "em", "img", "details", "summary", "a",
                                               "span"}
    assert all(attributes == {"lang": "", "dir": "auto"} for tag, attributes in parsed.tags if tag == "span")
    images = [attributes for tag, attributes in parsed.tags if tag == "img"]
    said = hostile.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert [image["alt"] for image in images] == [f"Picture 1, <img src=x onerror=alert(1)>.png: {said}",
                                                  "Picture 2, green.jpg: plain"]
    assert [base64.b64decode(str(image["src"]).split(",", 1)[1]) for image in images] == [
        named.read_bytes(), photos["green"].read_bytes()]
    assert all(str(image["src"]).startswith("data:image/") for image in images)  # nothing from outside the page
    assert parsed.headings[1:] == ["Picture 1: <img src=x onerror=alert(1)>.png", f"Question 1: {said}",
                                   "Picture 2: green.jpg", "Question 2: And this one?"]


def test_embed_and_unknown_flags_are_refused_in_one_sentence(work, photos, tmp_path) -> None:
    chat = chat_about(tmp_path, (photos["red"], "What is it?"))
    for line, said in [
        ("/export json --embed", "--embed goes with /export md only. An HTML export always holds its pictures, and a "
                                 "JSON export holds none."),
        ("/export html page.html --embed", "--embed goes with /export md only."),
        ("/export md chat.md --embd", "/export does not know --embd. Its one option is --embed, after md: "
                                      "/export md [PATH] --embed (quote a file name that starts with --)."),
        ("/export md --inline", "/export does not know --inline."),
        ("/export --embed", "/export needs a format, md, html or json, not '--embed'."),
    ]:
        outcome = run_command(chat, line)
        assert not outcome.ok and outcome.notices[0].kind == "error" and outcome.notices[0].text.startswith(said)
    assert tree(work) == set()
    assert run_command(chat, '/export md "odd --embed name.md"').ok  # quoted: a name, not the flag
    assert (work / "odd --embed name.md").is_file() and (work / "odd --embed name_files").is_dir()


@pytest.mark.parametrize("source", [
    "/p/../../etc/passwd.png", "/p/\x1b]0;x\x07.png", "/p/.hidden.png", "/p/.png", "/p/CON.jpg", "/p/a b\\c.JPG",
    "/p/" + "é" * 300 + ".png", "/p/x.svg", "/p/x.html", "/p/\u202eevil\u202c.png", "https://x.org/a/../b%2F..%2Fc.png",
])
def test_copies_are_named_from_the_sha256_and_a_sanitised_name(source) -> None:
    data = b"\x89PNG\r\n\x1a\n" + source.encode("utf-8", "replace")
    name = copy_name(source, data)
    assert re.fullmatch(r"[0-9a-f]{12}-\w[\w.-]*\.(png|jpg)", name), name
    assert name.startswith(hashlib.sha256(data).hexdigest()[:12]) and ".." not in name
    assert len(name.encode()) <= 12 + 1 + 80 + 4 and name.isprintable()


def test_the_log_keeps_the_export_to_its_own_folder(tmp_path, photos) -> None:
    """Two exports of one chat to names with the same stem (chat.md, chat.markdown) share no folder."""
    session = Session(model="m", turns=[Turn("q", "a", ImageRef(str(photos["red"]), sha256(photos["red"])))])
    log = ExportLog()
    assert export_session(session, "md", tmp_path / "chat.md", log).folder == tmp_path / "chat_files"
    with pytest.raises(Exception, match="There is already a folder"):
        export_session(session, "md", tmp_path / "chat.markdown", log)
    assert export_session(session, "md", tmp_path / "chat.md", log).updated
