"""Exports: a chat as Markdown with its pictures, as one self-contained HTML page, or as JSON (which imports back).

`/export` never creates a folder it was not asked to and never replaces a file it did not write itself
(`ExportLog`). The one folder it makes is part of the export: `NAME_files/` beside `NAME.md`, holding a
copy of each picture the chat was about (a local file that still has the sha256 the chat recorded).
The pages themselves (Markdown, HTML, the picture plan) are made in chatbot.core.export_pages; here is what
may be written where, and the writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.export_log import ExportFolder, ExportLog
from chatbot.core.export_pages import (
    FORMAT_NAMES,
    FORMAT_SUFFIXES,
    FORMATS,
    copy_name,
    data_uri,
    export_html,
    export_markdown,
    picture_bytes,
    relative_link,
    web_link,
)
from chatbot.core.session import ImageRef, Session
from chatbot.core.session_files import (
    BINARY,
    NOFOLLOW,
    entry_kind,
    reason_words,
    session_json,
    shown,
    write_atomic,
    write_new,
)
from chatbot.errors import UserError
from chatbot.images import is_url
from chatbot.locations import exports_dir

DIRECTORY = getattr(os, "O_DIRECTORY", 0)


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
            links[ref] = relative_link(folder.name, name)
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
        log.folders[target] = ExportFolder(folder, (status.st_dev, status.st_ino), frozenset(names))
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

