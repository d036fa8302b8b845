"""The pages of an export, as text: a chat as Markdown or as one HTML page, and the picture plan they share
(which bytes a picture is, what its copy is called, how a page links to it). Pure formatting: chatbot.core.export
decides what may be written where, and writes.

Text from outside (questions, answers, file names) is escaped: Markdown's own characters and HTML lose their
meaning, control characters are shown, never written raw, and copies are named from the sha256 and a sanitised
file name. The HTML page loads nothing (pictures are `data:` URIs) and runs nothing.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import os
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from PIL import Image

from chatbot.core.session import CONTEXT_CLEARED, EMPTY_ANSWER, ImageRef, Session, Turn
from chatbot.core.session_files import (
    BINARY,
)
from chatbot.core.text_width import characters
from chatbot.images import IMAGE_SUFFIXES, is_url, quiet_decoding
from chatbot.untrusted import visible

FORMATS = ("md", "html", "json")
# A file name's suffix that says which export it is: a name of another format's is refused (no HTML in page.md)
FORMAT_SUFFIXES = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}
FORMAT_NAMES = {"md": "Markdown", "html": "HTML", "json": "JSON"}
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO someone put where a picture was must not hang
MAX_PICTURE_BYTES = 1 << 30  # a larger "picture" (a session can name any file) is not read, so not copied

# Characters that mean something anywhere in a line (our text never starts one: it follows a label, and
# line breaks are shown as \n), so the transcript's raw Markdown stays readable.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&])")
# What a picture's bytes are, by their first bytes only (never by a name someone chose).
_SNIFF = ((b"\x89PNG\r\n\x1a\n", "image/png", ".png"), (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
          (b"GIF87a", "image/gif", ".gif"), (b"GIF89a", "image/gif", ".gif"), (b"BM", "image/bmp", ".bmp"),
          (b"II*\x00", "image/tiff", ".tif"), (b"MM\x00*", "image/tiff", ".tif"),
          (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon", ".ico"))
_WEB_SAFE = ":/?#[]@!$&'*+,;=%~"  # kept as they are in a web address; everything else is percent-encoded
_STYLE = ("body{font-family:sans-serif;line-height:1.5;max-width:48rem;margin:auto;padding:1rem}"
          "img{max-width:100%;height:auto}code{overflow-wrap:anywhere}")
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing loads, nothing runs


def markdown_text(text: str) -> str:
    """`text` as literal Markdown: its special characters escaped, control characters shown."""
    return _MARKDOWN.sub(r"\\\1", visible(text))


def markdown_code(text: str) -> str:
    """`text` inside a code span, whatever backticks it holds (CommonMark: a longer fence)."""
    text = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"


def html_text(text: object) -> str:
    """`text` as literal HTML (also inside a quoted attribute), control characters shown."""
    return html.escape(visible(text), quote=True)


# -- the pictures ---------------------------------------------------------------------------------------


def picture_name(source: str) -> str:
    """The file name a picture is known by (a web address: its last part), for alt text and copies."""
    if is_url(source):
        parts = urlsplit(source)
        return unquote(parts.path.rstrip("/").rpartition("/")[2]) or parts.netloc or "picture"
    return os.path.basename(source.rstrip("/\\")) or "picture"


def sniffed(data: bytes) -> tuple[str, str]:
    """The MIME type and file suffix the bytes say (`application/octet-stream`, `.bin` when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", ".webp"
    known = next(((mime, suffix) for magic, mime, suffix in _SNIFF if data.startswith(magic)), None)
    return known or image_kind(data) or ("application/octet-stream", ".bin")


def image_kind(data: bytes) -> tuple[str, str] | None:
    """The MIME type and file suffix of `data` when its content is a picture of a kind blip2-chat opens (Pillow
    reads its header as an image's, within blip2-chat's size limit), else None. Nothing is decoded."""
    with quiet_decoding(tiff=False):  # the header only: warnings dropped, Pillow's limits blip2-chat's
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind, size = image.format or "", image.size
        except Exception:  # noqa: BLE001 - Pillow's plugins raise many types; all mean "not a picture"
            return None
    mime = Image.MIME.get(kind, "image/")
    if not mime.startswith("image/") or min(size) < 1:  # Pillow also opens PostScript, PDF, MPEG headers
        return None
    suffixes = [ext for ext, name in Image.registered_extensions().items() if name == kind]
    suffix = f".{kind.lower()}" if f".{kind.lower()}" in suffixes else next(iter(suffixes), ".bin")
    return (mime if mime != "image/" else "application/octet-stream"), suffix


def copy_name(source: str, data: bytes) -> str:
    """`<sha256[:12]>-<name>` for a picture's copy: letters, digits, `.`, `-` and `_` of its file name (at most
    80 bytes of them), and its suffix when it is an image suffix, else the one its bytes say."""
    stem, suffix = os.path.splitext(picture_name(source))
    suffix = suffix.lower() if suffix.lower() in IMAGE_SUFFIXES else sniffed(data)[1]
    stem = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", stem))
    stem = re.sub(r"\.{2,}", ".", re.sub(r"_+", "_", stem)).strip("._-")
    while len(stem.encode("utf-8", "replace")) > 80:
        stem = stem[:-1]
    return f"{hashlib.sha256(data).hexdigest()[:12]}-{stem.rstrip('._-') or 'picture'}{suffix}"


def data_uri(data: bytes) -> str:
    return f"data:{sniffed(data)[0]};base64,{base64.b64encode(data).decode('ascii')}"


def web_link(url: str) -> str:
    """A web address for a link: spaces, quotes, brackets, controls and non-ASCII percent-encoded."""
    return quote(url, safe=_WEB_SAFE, errors="replace")


def relative_link(folder: str, name: str) -> str:
    try:  # a typed name's undecodable bytes are written back as they were on disk
        return quote(f"{folder}/{name}", errors="surrogateescape")
    except UnicodeEncodeError:
        return quote(f"{folder}/{name}", errors="replace")


def picture_bytes(ref: ImageRef) -> bytes | None:
    """The bytes of a local picture as the chat saw it; None when it is a web address, gone, not a regular
    file, unreadable, over MAX_PICTURE_BYTES, changed since (its sha256 differs from the recorded one), or not
    a picture at all (a session from elsewhere can name any file and its sha256: only a picture is copied)."""
    if is_url(ref.source) or not os.path.isabs(ref.source):
        return None
    try:
        fd = os.open(ref.source, os.O_RDONLY | BINARY | NONBLOCK)
    except (OSError, ValueError, UnicodeError):
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_PICTURE_BYTES:
                return None
            data = handle.read(MAX_PICTURE_BYTES + 1)
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != ref.sha256 or image_kind(data) is None:
        return None
    return data


# -- the formats ----------------------------------------------------------------------------------------
#
# Both pages have one outline, for moving by heading with a screen reader: the title (h1), then a section per
# picture (h2, "Picture 1: shapes-7.png"; the questions asked with no picture under "Questions without a
# picture"), and in it a heading per question that holds the question (h3, "Question 2: What colour is it?", a
# long one cut with an ellipsis; the whole of it is in the text below). A picture's alt text is what the chat
# first said about it. Its path and sha256 (how an export proves which bytes were talked about) close its section,
# after its questions, in one short line (Markdown) or a "File details" disclosure that is read only when opened
# (HTML): never between a picture and what was said about it.

HEADING_CHARS = 100  # a question longer than this is cut in its heading
ALT_CHARS = 150  # an answer longer than this is cut in a picture's alt text (after a sentence when one fits)
NO_PICTURE = "Questions without a picture"


def shortened(text: str, limit: int, *, sentences: bool = False) -> str:
    """`text` on one line (each run of white space one space), at most `limit` characters: with `sentences`, its
    whole sentences that fit; else (or when not even the first fits) cut after a word, with an ellipsis. A page
    counts characters, not terminal cells (`chatbot.core.text_width`), but is cut, like a terminal's line, only
    between characters a reader sees as one (never inside an emoji sequence or before an accent)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if sentences:
        ends = [match.end() for match in re.finditer(r"[.!?](?=\s)", text[:limit + 1])]
        if ends:
            return text[:ends[-1]]
    cut = ""
    for char in characters(text[:limit]):
        if len(cut) + len(char) > limit - 1:
            break
        cut += char
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:-") + "…"


def export_date(made: datetime.date | None = None) -> str:
    """"Exported on 2025-03-04." (`made`, today when None)."""
    return f"Exported on {(made or datetime.date.today()).isoformat()}."


def first_answers(session: Session) -> dict[ImageRef, str]:
    """What the chat first said about each picture: its first answer with words that was not stopped (a turn's own,
    or a /compare answer), in the order they were given."""
    said: dict[ImageRef, str] = {}
    for turn in session.turns:
        for image, answer, stopped in [(turn.image, turn.answer, turn.stopped),
                                       *((other.image, other.answer, other.stopped) for other in turn.compared)]:
            if image is not None and image not in said and answer.strip() and not stopped:
                said[image] = answer
    return said


def alt_text(number: int, source: str, answer: str | None) -> str:
    """"Picture 1, shapes-7.png: a large red circle at the top left" (the answer cut at ALT_CHARS), or
    "Picture 1, shapes-7.png" when the chat said nothing about it. Not escaped yet."""
    label = f"Picture {number}, {picture_name(source)}"
    answer = shortened(answer, ALT_CHARS, sentences=True) if answer else ""
    return f"{label}: {answer}" if answer else label


def their_words(text: str) -> str:
    """A question or an answer in the HTML page, escaped, in a span of unknown language (`lang=""`: a screen
    reader reads it in the reader's own voice, not in English as the page's words around it) whose direction
    follows its own first letters (`dir="auto"`: Arabic and Hebrew read right to left). No words: "(no answer)"."""
    if not text:  # our own words, in the page's language
        return html_text(EMPTY_ANSWER)
    return f'<span lang="" dir="auto">{html_text(text)}</span>'


def question_heading(number: int, question: str) -> str:
    """"Question 2: What colour is it?" (cut at HEADING_CHARS), "Question 2" for one without words. Not escaped."""
    label, words = question_heading_parts(number, question)
    return f"{label}: {words}" if words else label


def question_heading_parts(number: int, question: str) -> tuple[str, str]:
    """The heading's two parts: our label ("Question 2") and the question's words cut at HEADING_CHARS ("" for
    one without words), for a page that marks their words as theirs (`their_words`). Not escaped."""
    return f"Question {number}", shortened(question, HEADING_CHARS)


@dataclass(frozen=True)
class _Section:
    """A picture and the questions asked about it in a row (or the questions asked with no picture)."""

    image: ImageRef | None
    number: int  # the picture's number, in the order pictures first appear (0: no picture)
    again: bool  # the chat came back to a picture it was about before
    turns: list[tuple[int, Turn]]  # each with its number in the chat

    def heading(self) -> str:
        if self.image is None:
            return NO_PICTURE
        return f"Picture {self.number}{' again' if self.again else ''}: {picture_name(self.image.source)}"


def _sections(session: Session) -> list[_Section]:
    sections: list[_Section] = []
    numbers: dict[ImageRef, int] = {}
    for number, turn in enumerate(session.turns, 1):
        if not sections or turn.image != sections[-1].image:
            again = turn.image in numbers
            picture = numbers.setdefault(turn.image, len(numbers) + 1) if turn.image else 0
            sections.append(_Section(turn.image, picture, again, []))
        sections[-1].turns.append((number, turn))
    return sections


def markdown_heading(text: str) -> str:
    """`text` as literal Markdown in an ATX heading: `#` escaped too (a trailing run would close the heading)."""
    return markdown_text(text).replace("#", "\\#")


def export_markdown(session: Session, links: Mapping[ImageRef, str | None] | None = None, *,
                    made: datetime.date | None = None) -> str:
    """A readable transcript: a section per picture, a heading per question, each picture's path and sha256.

    `links`: where each picture is (a relative path, a `data:` URI or a web address, made safe for a link
    already), None for one that is gone or changed; without `links` the pictures are only named. `made`: the
    date the export says it was made (today when None).
    """
    lines = [f"# blip2-chat session {markdown_heading(session.id)}", "", export_date(made), "",
             f"Model: {markdown_code(session.model)}", ""]
    said = first_answers(session)
    for section in _sections(session):
        lines += [f"## {markdown_heading(section.heading())}", ""]
        current = section.image
        if current is not None and links is not None:
            link = links.get(current)
            if link and is_url(current.source):  # a web picture is linked, never fetched by a viewer
                lines += [f"[{markdown_text(picture_name(current.source))}]({link})", ""]
            elif link:
                alt = alt_text(section.number, current.source, said.get(current))
                lines += [f"![{markdown_text(alt)}]({link})", ""]
            else:
                lines += ["*Missing: this picture is gone or has changed since the chat, so the export holds no "
                          "copy of it.*", ""]
        for number, turn in section.turns:
            lines += [f"*{CONTEXT_CLEARED}*", ""] if session.cleared_before(number - 1) else []
            answer = markdown_text(turn.answer or EMPTY_ANSWER) + (" *(stopped)*" if turn.stopped else "")
            lines += [f"### {markdown_heading(question_heading(number, turn.question))}", "",
                      f"**You:** {markdown_text(turn.question)}", "", f"**Assistant:** {answer}", ""]
            for other in turn.compared:  # /compare: the same question about another picture, asked alone
                name, link = markdown_text(picture_name(other.image.source)), (links or {}).get(other.image)
                stopped = " *(stopped)*" if other.stopped else ""
                answered = markdown_text(other.answer or EMPTY_ANSWER)
                lines += [f"**Compared with {name}** ({markdown_code(other.image.source)}, sha256 "
                          f"{markdown_code(other.image.sha256)}): {answered}{stopped}", ""]
                lines += [f"{'' if is_url(other.image.source) else '!'}[{name}]({link})", ""] if link else []
        if current is not None:  # last, in one line: a listener hears the picture and the chat about it first
            lines += [f"File details of picture {section.number}: {markdown_code(current.source)}, sha256 "
                      f"{markdown_code(current.sha256)}.", ""]
    return "\n".join(lines)


def export_html(session: Session, links: Mapping[ImageRef, str | None], *, made: datetime.date | None = None) -> str:
    """One page that needs nothing else: pictures as `data:` URIs, every text escaped, no script, readable
    without its style, its headings an outline to move by (a picture's h2, its questions' h3, each holding the
    question). `made`: the date the page says it was made (today when None)."""
    title = html_text(f"blip2-chat session {session.id}")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{title}</title>",
             f"<style>{_STYLE}</style>", "</head>", "<body>", "<main>", f"<h1>{title}</h1>",
             f"<p>{html_text(export_date(made))}</p>", f"<p>Model: <code>{html_text(session.model)}</code></p>"]
    said = first_answers(session)
    for section in _sections(session):
        parts.append(f"<h2>{html_text(section.heading())}</h2>")
        current = section.image
        if current is not None:
            link = links.get(current)
            if link and is_url(current.source):
                parts.append(f'<p>On the web at <a href="{html_text(link)}" rel="noreferrer">'
                             f"{html_text(current.source)}</a> (not included in this page).</p>")
            elif link:
                alt = alt_text(section.number, current.source, said.get(current))
                parts.append(f'<p><img src="{html_text(link)}" alt="{html_text(alt)}"></p>')
            else:
                parts.append("<p><strong>Missing:</strong> this picture is gone or has changed since the chat, so "
                             "this page does not hold it.</p>")
        for number, turn in section.turns:
            parts += [f"<p><em>{CONTEXT_CLEARED}</em></p>"] if session.cleared_before(number - 1) else []
            stopped = " <em>(stopped)</em>" if turn.stopped else ""
            label, short = question_heading_parts(number, turn.question)
            parts += [f"<h3>{html_text(label)}{': ' + their_words(short) if short else ''}</h3>",
                      f"<p><strong>You:</strong> {their_words(turn.question)}</p>",
                      f"<p><strong>Assistant:</strong> {their_words(turn.answer)}{stopped}</p>"]
            for other in turn.compared:  # /compare: the same question about another picture, asked alone
                name, link = html_text(picture_name(other.image.source)), links.get(other.image)
                shown = f'<img src="{html_text(link)}" alt="{name}">' if link and not is_url(other.image.source) else ""
                parts.append(f"<p><strong>Compared with {name}:</strong> {their_words(other.answer)}"
                             f"{' <em>(stopped)</em>' if other.stopped else ''}</p>{shown}")
        if current is not None:  # last, and closed: read only when opened, never between a picture and its chat
            parts.append(f"<details><summary>File details of picture {section.number}</summary><p>From <code>"
                         f"{html_text(current.source)}</code>, sha256 <code>{html_text(current.sha256)}</code>."
                         "</p></details>")
    return "\n".join([*parts, "</main>", "</body>", "</html>", ""])
