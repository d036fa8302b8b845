"""Exports: a chat as Markdown with its pictures, as one self-contained HTML page, or as JSON (which imports back).

`/export` never creates a folder it was not asked to and never replaces a file it did not write itself
(`ExportLog`). The one folder it makes is part of the export: `NAME_files/` beside `NAME.md`, holding a
copy of each picture the chat was about (a local file that still has the sha256 the chat recorded).
Text from outside (questions, answers, file names) is escaped: Markdown's own characters and HTML lose
their meaning, control characters are shown, never written raw, and copies are named from the sha256
and a sanitised file name. The HTML page loads nothing (pictures are `data:` URIs) and runs nothing.

Over 300 lines: the three formats share one picture plan and one set of rules about what may be written.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import html
import io
import os
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from PIL import Image

from chatbot.core.session import EMPTY_ANSWER, ImageRef, Session
from chatbot.core.session_files import (
    BINARY,
    NOFOLLOW,
    Stamp,
    entry_kind,
    file_stamp,
    reason_words,
    session_json,
    shown,
    write_atomic,
    write_new,
)
from chatbot.errors import UserError
from chatbot.images import IMAGE_SUFFIXES, is_url, quiet_decoding
from chatbot.locations import exports_dir
from chatbot.untrusted import visible

FORMATS = ("md", "html", "json")
# A file name's suffix that says which export it is: a name of another format's is refused (no HTML in page.md)
FORMAT_SUFFIXES = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}
FORMAT_NAMES = {"md": "Markdown", "html": "HTML", "json": "JSON"}
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO someone put where a picture was must not hang
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
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


def _relative_link(folder: str, name: str) -> str:
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


def export_markdown(session: Session, links: Mapping[ImageRef, str | None] | None = None) -> str:
    """A readable transcript that names each image by path and sha256.

    `links`: where each picture is (a relative path, a `data:` URI or a web address, made safe for a link
    already), None for one that is gone or changed; without `links` the pictures are only named.
    """
    lines = [f"# blip2-chat session {markdown_text(session.id)}", "", f"Model: {markdown_code(session.model)}", ""]
    current = None
    for turn in session.turns:
        if turn.image and turn.image != current:
            current = turn.image
            source, sha256 = markdown_code(current.source), markdown_code(current.sha256)
            lines += [f"## Image: {source}", "", f"sha256: {sha256}", ""]
            if links is not None:
                link = links.get(current)
                shows = "" if is_url(current.source) else "!"  # a web picture is linked, never fetched by a viewer
                lines += [f"{shows}[{markdown_text(picture_name(current.source))}]({link})" if link else
                          "*Missing: this picture is gone or has changed since the chat, so the export holds no "
                          "copy of it.*", ""]
        answer = markdown_text(turn.answer or EMPTY_ANSWER) + (" *(stopped)*" if turn.stopped else "")
        lines += [f"**You:** {markdown_text(turn.question)}", "", f"**Assistant:** {answer}", ""]
        for other in turn.compared:  # /compare: the same question about another picture, asked alone
            name, link = markdown_text(picture_name(other.image.source)), (links or {}).get(other.image)
            stopped = " *(stopped)*" if other.stopped else ""
            said = markdown_text(other.answer or EMPTY_ANSWER)
            lines += [f"**Compared with {name}** ({markdown_code(other.image.source)}, sha256 "
                      f"{markdown_code(other.image.sha256)}): {said}{stopped}", ""]
            lines += [f"{'' if is_url(other.image.source) else '!'}[{name}]({link})", ""] if link else []
    return "\n".join(lines)


def export_html(session: Session, links: Mapping[ImageRef, str | None]) -> str:
    """One page that needs nothing else: pictures as `data:` URIs, every text escaped, no script, a heading
    per picture and per question (so a screen reader can move by them), readable without its style."""
    title = html_text(f"blip2-chat session {session.id}")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{title}</title>",
             f"<style>{_STYLE}</style>", "</head>", "<body>", "<main>", f"<h1>{title}</h1>",
             f"<p>Model: <code>{html_text(session.model)}</code></p>"]
    current, pictures = None, 0
    for number, turn in enumerate(session.turns, 1):
        if turn.image and turn.image != current:
            current, pictures = turn.image, pictures + 1
            name, link = html_text(picture_name(current.source)), links.get(current)
            sha256 = f"sha256 <code>{html_text(current.sha256)}</code>"
            parts.append(f"<h2>Picture {pictures}: {name}</h2>")
            if link and is_url(current.source):
                parts.append(f'<p>On the web at <a href="{html_text(link)}" rel="noreferrer">'
                             f"{html_text(current.source)}</a>, {sha256} (not included in this page).</p>")
            elif link:
                parts.append(f'<figure><img src="{html_text(link)}" alt="{name}"><figcaption>From <code>'
                             f"{html_text(current.source)}</code>, {sha256}.</figcaption></figure>")
            else:
                parts.append(f"<p><strong>Missing:</strong> this picture is gone or has changed since the chat, so "
                             f"this page does not hold it. It was <code>{html_text(current.source)}</code>, "
                             f"{sha256}.</p>")
        stopped = " <em>(stopped)</em>" if turn.stopped else ""
        parts += [f"<h2>Question {number}</h2>", f"<p><strong>You:</strong> {html_text(turn.question)}</p>",
                  f"<p><strong>Assistant:</strong> {html_text(turn.answer or EMPTY_ANSWER)}{stopped}</p>"]
        for other in turn.compared:  # /compare: the same question about another picture, asked alone
            name, link = html_text(picture_name(other.image.source)), links.get(other.image)
            picture = f'<img src="{html_text(link)}" alt="{name}">' if link and not is_url(other.image.source) else ""
            parts.append(f"<p><strong>Compared with {name}:</strong> {html_text(other.answer or EMPTY_ANSWER)}"
                         f"{' <em>(stopped)</em>' if other.stopped else ''}</p>{picture}")
    return "\n".join([*parts, "</main>", "</body>", "</html>", ""])


# -- writing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What one `/export` wrote."""

    path: Path
    updated: bool  # it replaced this conversation's earlier export at `path`
    folder: Path | None = None  # NAME_files/, when pictures were copied into it
    copies: bool = False  # pictures go into NAME_files/ as copies (Markdown without --embed), not inside the file
    included: int = 0  # pictures copied there, or held inside the file (md --embed, html)
    linked: int = 0  # pictures that are web addresses: linked, not copied
    missing: int = 0  # local pictures gone or changed since the chat: named as missing

    def notice(self) -> str:
        """What happened, in one or two sentences."""
        said = f"Updated the export {self.path}" if self.updated else f"Exported the chat to {self.path}"
        many = "" if self.included == 1 else f" {self.included}"
        if self.included and self.folder is not None:
            copies = "a copy of its picture" if self.included == 1 else f"copies of its {self.included} pictures"
            said += f", with {copies} in {self.folder}"
        elif self.included:
            said += f", with its{many} picture{_s(self.included)} inside it"
        if self.linked:
            are = "is a web address" if self.linked == 1 else "are web addresses"
            said += f". {_count(self.linked)} {are}, so the export links to {_them(self.linked)}"
        return said + "."

    def problem(self) -> str | None:
        """The sentence about the pictures that could not be copied, if any."""
        if not self.missing:
            return None
        done, are = "copied" if self.copies else "included", "is" if self.missing == 1 else "are"
        return (f"{_count(self.missing)} could not be {done}: {_them(self.missing, 'it', 'they')} {are} gone or "
                f"changed since the chat, so the export names {_them(self.missing)} as missing.")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _count(count: int) -> str:
    return f"{count} picture{_s(count)}"


def _them(count: int, one: str = "it", more: str = "them") -> str:
    return one if count == 1 else more


def missing_folder(folder: Path) -> UserError:
    """/export never creates a folder it was named: the sentence for one that does not exist, or for a path whose
    folder is something else (`photo.jpg/chat.md`: a file where a folder should be; a link to nothing)."""
    return _not_a_folder(folder) or UserError(f"The folder {shown(folder, 400)} does not exist.",
                                              "Create it first or choose another path.")


def _not_a_folder(folder: Path) -> UserError | None:
    """The sentence for the part of `folder` (it, or the nearest of its parents that is there) that is something
    other than a folder; None when that part is a folder (or nothing of the path is there)."""
    there = folder
    while not os.path.lexists(there) and there != there.parent:
        there = there.parent  # the nearest part of the path that is there decides
    kind = entry_kind(there)
    if kind is None or kind in ("a folder", "a link to a folder"):
        return None
    return UserError(f"{shown(there, 400)} is {kind}, not a folder, so nothing can be exported into it.",
                     "Choose another path.")


_NAME_MAX = 255  # bytes in one name, on the file systems blip2-chat meets (ext4, XFS, Btrfs, APFS, NTFS)


def write_failure(error: OSError, path: Path, fmt: str, what: str = "") -> UserError:
    """One sentence for an OSError while exporting to `path` (checking it, or writing it or, `what` naming it,
    the pictures folder beside it): what went wrong, in words, and what to do. Never the exception's name."""
    target = shown(path, 400)
    example = f"e.g. /export {fmt} ~/chat.{fmt}"
    code = error.errno
    if code == errno.ENAMETOOLONG:
        parts = [part for part in path.parts if len(os.fsencode(part)) > _NAME_MAX]
        if parts and what:
            return UserError(f"The name of {what}, {shown(parts[-1], 60)}, would be too long for the file system.",
                             f"Choose a shorter name for the export, e.g. /export {fmt} chat.{fmt}.")
        if parts:
            return UserError(f"The name {shown(parts[-1], 60)} is too long for the file system.",
                             f"Choose a shorter one, e.g. /export {fmt} chat.{fmt}.")
        return UserError(f"The path {shown(path, 200)} is too long for the file system.",
                         f"Choose a shorter one, {example}.")
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        full = "the disk is full" if code == errno.ENOSPC else "your disk quota is used up"
        return UserError(f"Could not write {target}: {full}.", "Free some space, or export to another disk.")
    if code == errno.EROFS:
        return UserError(f"Could not write {target}: it is on a read-only file system.",
                         f"Choose a folder you can write to, {example}.")
    if code in (errno.EACCES, errno.EPERM):
        return UserError(f"Could not write {target}: you do not have permission to write there.",
                         f"Choose a folder you can write to, {example}.")
    if code == errno.ENOTDIR:  # the part of the path that is not a folder, named when it can be told
        return _not_a_folder(path.parent) or UserError(f"Could not write {target}: a part of its path is not a "
                                                       "folder.", "Choose another path.")
    if code == errno.EISDIR:
        return UserError(f"Could not write {target}: it is a folder.",
                         f"Name a file in it, e.g. /export {fmt} {shown(path / f'chat.{fmt}', 400)}.")
    if code == errno.ENOENT and os.path.isdir(path.parent):  # a folder that takes no new files (/proc)
        return UserError(f"Could not write {target}: no file can be made in {shown(path.parent, 400)}.",
                         f"Choose another folder, {example}.")
    if code == errno.ELOOP:
        return UserError(f"Could not write {target}: the links on its path lead round in a loop.",
                         "Choose another path.")
    reason = _READABLE.get(code or 0) or reason_words(error)
    return UserError(f"Could not write {target}: {reason}.", "Choose another path.")


_READABLE = {errno.EFBIG: "the file would be too large for its disk",
             errno.EIO: "an input/output error (the disk may be failing)"}


def export_session(session: Session, fmt: str, path: Path, log: ExportLog | None = None, *,
                   embed: bool = False) -> ExportResult:
    """Write the session to `path` as Markdown (`md`, pictures copied into `NAME_files/` beside it, or inside
    it as `data:` URIs with `embed`), HTML (`html`, one page holding its pictures) or JSON (`json`).

    The folder `path` is in must exist. An existing file, or an existing `NAME_files/`, is refused unless
    `log` says it is this conversation's own earlier export, unchanged since; then it is replaced (the
    copies it wrote, too). `log` (a fresh one when None) then remembers what was written.
    """
    log = log if log is not None else ExportLog()
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format '{shown(fmt)}'.", "Use /export md, /export html or /export json.")
    if embed and fmt != "md":
        raise UserError("--embed goes with /export md only.",
                        "An HTML export always holds its pictures, and a JSON export holds none.")
    if "\0" in str(path):  # no file can have this name; os.stat would raise ValueError, not OSError
        raise UserError(f"{shown(str(path), 200)} is not a usable file name: it holds a NUL character.",
                        f"Type the name again, e.g. /export {fmt} chat.{fmt}.")
    named = FORMAT_SUFFIXES.get(path.suffix.lower(), fmt)
    if named != fmt:  # `/export html page.md`: HTML in a file every viewer opens as Markdown
        article = "an" if named == "html" else "a"
        raise UserError(f"{shown(path.name, 200)} is the name of {article} {FORMAT_NAMES[named]} file, and this "
                        f"export is {FORMAT_NAMES[fmt]}.",
                        f"Name it {shown(path.stem, 200)}.{fmt}, or use /export {named}.")
    if not path.parent.is_dir():
        raise missing_folder(path.parent)
    updated = log.ours(path)
    if not updated and os.path.lexists(path):  # a link there (even to nothing) is another's, never followed
        raise _exists_error(path, fmt)
    folder = path.with_name(f"{path.stem}_files")
    copies: dict[str, bytes] = {}
    links: dict[ImageRef, str | None] = {}
    refs = list(dict.fromkeys(ref for turn in session.turns for ref in (turn.image, *(c.image for c in turn.compared))
                              if ref)) if fmt != "json" else []
    for ref in refs:
        data = picture_bytes(ref)
        if is_url(ref.source):
            links[ref] = web_link(ref.source)
        elif data is None:
            links[ref] = None
        elif fmt == "html" or embed:
            links[ref] = data_uri(data)
        else:
            name = copy_name(ref.source, data)
            if copies.get(name, data) != data:  # twelve hex digits alike, different pictures
                name = f"{hashlib.sha256(data).hexdigest()}-{name[13:]}"
            copies[name] = data
            links[ref] = _relative_link(folder.name, name)
    if fmt == "json":
        text = session_json(session)
    else:
        text = export_markdown(session, links) if fmt == "md" else export_html(session, links)
    if copies and (os.path.lexists(folder) and not log.folder_is_ours(path, folder) or any(
            os.path.lexists(folder / name) and not log.ours(folder / name) for name in copies)):
        raise _exists_error(folder, fmt, path)
    writing = folder
    try:
        if copies:
            try:
                _write_copies(folder, path, copies, log)
            except FileExistsError:  # made, or a file put there, since it was checked
                raise _exists_error(folder, fmt, path) from None
        writing = path
        (write_atomic if updated else write_new)(path, text, private=False)  # for sharing: the usual mode
    except FileExistsError:
        raise _exists_error(path, fmt) from None
    except OSError as error:
        raise write_failure(error, writing, fmt, "the pictures folder" if writing == folder else "") from None
    log.remember(path)
    if fmt == "md":
        log.tidy(path, folder, set(copies))  # the copies its earlier export made that this one does not link
    web = sum(is_url(ref.source) for ref in refs)
    missing = sum(link is None for link in links.values())
    return ExportResult(path, updated, folder if copies else None, fmt == "md" and not embed,
                        len(refs) - web - missing, web, missing)


_BY_FOLDER = os.open in os.supports_dir_fd and os.unlink in os.supports_dir_fd and bool(NOFOLLOW and DIRECTORY)


def _write_copies(folder: Path, target: Path, copies: dict[str, bytes], log: ExportLog) -> None:
    """Make `folder` if it is not there, and write each copy into it (replacing only this export's own).

    The folder is opened without following a link and each copy is made relative to it, so a link put in
    the folder's place since it was checked is never written through.
    """
    made = not os.path.lexists(folder)
    if made:
        os.mkdir(folder)  # FileExistsError if someone made it since it was checked: refused
    status = os.stat(folder, follow_symlinks=False)
    record = log.folders.get(target)
    names = set(record.names) if record is not None and not made else set()
    here = -1
    try:
        if _BY_FOLDER:
            try:
                here = os.open(folder, os.O_RDONLY | DIRECTORY | NOFOLLOW)
            except OSError:  # a link or a file put there since it was checked: refused as another's
                raise FileExistsError(errno.EEXIST, "File exists", str(folder)) from None
            opened = os.fstat(here)
            if (opened.st_dev, opened.st_ino) != (status.st_dev, status.st_ino):
                raise FileExistsError(errno.EEXIST, "File exists", str(folder))
        at = {"dir_fd": here} if here >= 0 else {}
        for name, data in copies.items():
            copy = folder / name
            where = name if here >= 0 else copy
            if log.ours(copy):
                os.unlink(where, **at)
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | BINARY, 0o666,
                         **at)  # never over another's, never through a link
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(where, **at)
                raise
            log.remember(copy)
            names.add(name)
    finally:
        if here >= 0:
            os.close(here)
        log.folders[target] = _Folder(folder, (status.st_dev, status.st_ino), frozenset(names))
        if made and not names:
            log.tidy(target, folder, set())


def _free_name(path: Path, fmt: str, *, this_one: bool = False) -> str:
    """A name beside `path` that nothing has: `path`'s own when `this_one` and it is free, else NAME-2, NAME-3..."""
    def free(candidate: Path) -> bool:  # a Markdown export's name frees its pictures folder's name too
        return not os.path.lexists(candidate) and not (
            fmt == "md" and os.path.lexists(candidate.with_name(f"{candidate.stem}_files")))

    if this_one and free(path):
        return path.name
    for number in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if free(candidate):
            return candidate.name
    return f"{path.stem}-new{path.suffix}"


def _exists_error(path: Path, fmt: str, target: Path | None = None) -> UserError:
    """The sentence for a name that is taken: `path` is the export's file (`target` None) or its pictures folder.

    A file, a folder, or a link to one or to nothing is another's, and a free name beside it is suggested. A
    device, a named pipe or a socket (or a link to one: `/dev/null`, `/dev/stdout`) is no file an export can be
    written to at all, and a name in the folder exports go to by default (the current one) is suggested."""
    kind = entry_kind(path) or "a file"  # gone since it was seen: it was a file, most likely
    if kind.endswith(("a device", "a named pipe", "a socket", "not a regular file")):
        stem = (target or path).stem.lstrip(".") or "chat"
        name = _free_name(exports_dir() / f"{stem}.{fmt}", fmt, this_one=True)
        what = "" if kind.endswith("not a regular file") else f"{kind}, "
        return UserError(f"{shown(path, 400)} is {what}not a file an export can be written to.",
                         f"Choose a file name instead, e.g. /export {fmt} {shown(name, 200)} (in the current "
                         "folder).")
    kind = kind if kind in ("a file", "a folder") else "a link"
    return UserError(f"There is already {kind} {shown(path, 400)}, and /export only replaces its own earlier "
                     "export.", f"Choose another name, e.g. {shown(_free_name(target or path, fmt), 200)}.")


@dataclass(frozen=True)
class _Folder:
    path: Path
    identity: tuple[int, int]  # device and inode of the folder an export made
    names: frozenset[str]  # the copies it wrote there


class ExportLog:
    """The files one conversation exported, so `/export` may update its own earlier export and nothing else."""

    def __init__(self) -> None:
        self.written: dict[Path, Stamp] = {}  # resolved path -> the file as this conversation left it
        self.folders: dict[Path, _Folder] = {}  # an export -> the pictures folder made for it

    def ours(self, path: Path) -> bool:
        """True when `path` holds this conversation's export, unchanged since it was written."""
        try:
            status = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        return self.written.get(path) == file_stamp(status)

    def remember(self, path: Path) -> None:
        """`path` was just written by this conversation's export."""
        try:
            self.written[path] = file_stamp(os.stat(path, follow_symlinks=False))
        except OSError:
            self.written.pop(path, None)

    def folder_is_ours(self, target: Path, folder: Path) -> bool:
        """True when `folder` is the very one the export to `target` made (not a link, not another folder of
        that name), and each copy it wrote there is gone or unchanged."""
        record = self.folders.get(target)
        try:
            status = os.stat(folder, follow_symlinks=False)
        except OSError:
            return False
        return (record is not None and record.path == folder and stat.S_ISDIR(status.st_mode)
                and (status.st_dev, status.st_ino) == record.identity
                and all(self.ours(folder / name) or not os.path.lexists(folder / name) for name in record.names))

    def tidy(self, target: Path, folder: Path, keep: set[str]) -> None:
        """Remove the copies the export to `target` wrote that are not in `keep` (and the folder, once empty)."""
        record = self.folders.get(target)
        if record is None or not self.folder_is_ours(target, folder):
            return
        for name in record.names - keep:
            if self.ours(folder / name):
                with contextlib.suppress(OSError):
                    os.unlink(folder / name)
            self.written.pop(folder / name, None)
        if record.names & keep:
            self.folders[target] = replace(record, names=frozenset(record.names & keep))
        else:
            try:
                os.rmdir(folder)  # only when empty: another's file in it keeps it (and it stays this export's)
            except OSError:
                self.folders[target] = replace(record, names=frozenset())
            else:
                del self.folders[target]

