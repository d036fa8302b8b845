"""What a chat's `/export` wrote, so that it replaces its own earlier export and nothing else, also after a restart.

A file is this chat's own while it is unchanged since the export wrote it: the same device, inode, size and
modification time (`Stamp`); a pictures folder while it is the very folder the export made and every copy in it
is unchanged or gone. The log lives in memory and, for a chat saved among your own, in the data folder's
`exports/<session id>.json` (private, like the sessions), so `blip2-chat --continue` and `/export md` update the
file the chat exported yesterday instead of refusing it as another's. What that file holds is checked as it is
read: anything unexpected, and it is left unread (the export is then refused as another's would be, with a free
name suggested: nothing is replaced on a damaged record's word). Entries for files that changed or went away are
dropped when it is written again, so it never grows past the exports that are still the chat's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chatbot.core.session_files import Stamp, file_stamp, write_atomic

MAX_RECORD_BYTES = 1 << 20  # a log is a few hundred bytes per export: anything larger is not one of ours
MAX_ENTRIES = 4096  # files (exports and their pictures) one log may name


@dataclass(frozen=True)
class ExportFolder:
    """The pictures folder a Markdown export made (`NAME_files/`), and the copies it wrote there."""

    path: Path
    identity: tuple[int, int]  # device and inode of the folder an export made
    names: frozenset[str]  # the copies it wrote there


class ExportLog:
    """The files one conversation exported, so `/export` may update its own earlier export and nothing else.

    `place`: where it is kept between runs (None: in memory only). `follow` points it at a chat's record (its
    session id can change: a fork), `keep` writes it there."""

    def __init__(self) -> None:
        self.written: dict[Path, Stamp] = {}  # resolved path -> the file as this conversation left it
        self.folders: dict[Path, ExportFolder] = {}  # an export -> the pictures folder made for it
        self.place: Path | None = None

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

    # -- kept between runs --------------------------------------------------------------------------------

    def follow(self, place: Path | None) -> None:
        """Keep this log at `place` from now on, taking in what is recorded there (what this run wrote wins)."""
        if place == self.place:
            return
        self.place = place
        if place is not None:
            kept = read_log(place)
            self.written = {**kept.written, **self.written}
            self.folders = {**kept.folders, **self.folders}

    def keep(self) -> None:
        """Write what is still this chat's own to `place` (removed when nothing is). A failure is quiet: the
        only loss is that a later run refuses the export as another's, and says so."""
        if self.place is None:
            return
        files = {path: stamp for path, stamp in self.written.items() if self.ours(path)}
        folders = {target: record for target, record in self.folders.items()
                   if target in files and self.folder_is_ours(target, record.path)}
        with contextlib.suppress(OSError):
            if not files:
                self.place.unlink(missing_ok=True)
                return
            self.place.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.place, json.dumps({
                "files": [[str(path), *stamp] for path, stamp in files.items()],
                "folders": [[str(target), str(record.path), *record.identity, sorted(record.names)]
                            for target, record in folders.items()],
            }))


def read_log(place: Path) -> ExportLog:
    """The log kept at `place`: empty when there is none, or when it is not exactly what `keep` writes."""
    log = ExportLog()
    try:
        with open(place, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
        if len(data) > MAX_RECORD_BYTES:
            return log
        record = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):  # none, unreadable, not UTF-8, not JSON
        return log
    try:
        written, folders = _checked(record)
    except (TypeError, ValueError):
        return log
    log.written, log.folders = written, folders
    return log


def _checked(record: Any) -> tuple[dict[Path, Stamp], dict[Path, ExportFolder]]:
    """The entries of a kept log; ValueError or TypeError at anything `ExportLog.keep` would not have written."""
    if not isinstance(record, dict) or set(record) != {"files", "folders"}:
        raise ValueError("not a log")
    files, folders = record["files"], record["folders"]
    if not isinstance(files, list) or not isinstance(folders, list) or len(files) + len(folders) > MAX_ENTRIES:
        raise ValueError("not a log")
    written: dict[Path, Stamp] = {}
    for entry in files:
        if not isinstance(entry, list) or len(entry) != 5:
            raise ValueError("not a file entry")
        device, inode, size, mtime = (_number(value) for value in entry[1:])
        written[_absolute(entry[0])] = (device, inode, size, mtime)
    made: dict[Path, ExportFolder] = {}
    for entry in folders:
        if not isinstance(entry, list) or len(entry) != 5 or not isinstance(entry[4], list):
            raise ValueError("not a folder entry")
        target, folder = _absolute(entry[0]), _absolute(entry[1])
        names = frozenset(_name(name) for name in entry[4])
        if folder.parent != target.parent:  # a Markdown export's pictures folder is beside it, never elsewhere
            raise ValueError("a folder elsewhere")
        made[target] = ExportFolder(folder, (_number(entry[2]), _number(entry[3])), names)
    return written, made


def _number(value: Any) -> int:
    if type(value) is not int or value < 0:  # not bool, not float
        raise ValueError("not a count")
    return value


def _absolute(value: Any) -> Path:
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        raise ValueError("not an absolute path")
    return Path(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or os.sep in value or "\0" in value:
        raise ValueError("not a file name")
    return value
