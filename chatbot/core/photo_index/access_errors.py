"""What an error met while opening or using an index means: damage (its files are set aside, see
`folder.set_aside`), or a reason of the machine's (a full disk, missing permissions, an I/O error, a lock), said in
one sentence (`IndexAccessError`) while nothing moves. SQLite's result codes are read here, from the code or from
its words.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

# SQLite's primary result codes (https://sqlite.org/rescode.html; an extended code's low byte is its primary one)
_ERROR, _PERM, _BUSY, _LOCKED, _READONLY, _INTERRUPT, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _PROTOCOL = (
    1, 3, 5, 6, 8, 9, 10, 11, 13, 14, 15)
_AUTH, _FORMAT, _NOTADB = 23, 24, 26
# The file itself is damaged, or is no index of ours (SQLITE_ERROR: our tables without our columns)
_DAMAGE = {_ERROR, _CORRUPT, _FORMAT, _NOTADB}
# The machine's, not the file's: a read-only connection may still read the index (see `store.IndexStore.open`)
_NO_ACCESS = {_PERM, _READONLY, _CANTOPEN, _AUTH}
_LOCKS = {_BUSY, _LOCKED, _PROTOCOL}
# What SQLite says for each code (sqlite3_errstr): Python 3.10's exceptions carry the words, not the code
_CODE_BY_WORDS = (("database disk image is malformed", _CORRUPT), ("file is not a database", _NOTADB),
                  ("disk i/o error", _IOERR), ("database or disk is full", _FULL),
                  ("unable to open database file", _CANTOPEN), ("attempt to write a readonly database", _READONLY),
                  ("access permission denied", _PERM), ("not authorized", _AUTH), ("authorization denied", _AUTH),
                  ("is locked", _BUSY), ("locking protocol", _PROTOCOL), ("interrupted", _INTERRUPT))
_NEARLY_FULL = 1 << 20  # bytes free: below this an I/O error is taken for a full disk (SQLite says "disk I/O error"
#                         when it cannot grow the -shm file WAL needs)


class IndexAccessError(PhotoIndexError):
    """The index could not be read or written for a reason of the machine's (a full disk, permissions, an I/O
    error, a lock), not because it is damaged: nothing was moved, and it is whole once the reason is gone."""


def sqlite_code(error: sqlite3.Error) -> int:
    """SQLite's primary result code for `error`: the one it carries (Python 3.11+), else read from its words
    (3.10); an OperationalError with other words is an error in the SQL (SQLITE_ERROR), any other one damage."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    words = str(error).lower()
    for text, known in _CODE_BY_WORDS:
        if text in words:
            return known
    return _ERROR if isinstance(error, sqlite3.OperationalError) else _CORRUPT


def is_damage(error: Exception) -> bool:
    """Whether `error`, met while opening or using an index, means its files are damaged (or not an index):
    our own checks' ValueError, or SQLite's "malformed", "not a database" and errors in our own SQL. An I/O
    error, a full disk, a permission or a lock is not (the index is whole once the reason is gone)."""
    if isinstance(error, sqlite3.Error):
        return sqlite_code(error) in _DAMAGE
    return isinstance(error, ValueError)


def may_read_only(error: sqlite3.Error) -> bool:
    """Whether a read-only connection may still read an index that could not be opened with `error`: one that
    was refused a write (its folder or file read-only, the disk full), not a damaged or locked one."""
    return sqlite_code(error) in {*_NO_ACCESS, _IOERR, _FULL}


def access_error(folder: Path, error: sqlite3.Error | OSError, doing: str, *,
                 as_it_is: bool = False) -> IndexAccessError:
    """One sentence for an index that could not be `doing` ("opened", "read", "updated", or "written": in the
    middle of a change) because of `error`, which is not damage: why in words (a full disk, permissions, an I/O
    error, a lock) and the way forward. `as_it_is`: reading it read-only failed too (so not "search it as it is")."""
    reason, way = access_words(folder, error, reading=as_it_is)
    after = "the index keeps everything written before this" if doing == "written" else "nothing was moved or changed"
    return IndexAccessError(f"The search index at {visible(folder)} could not be {doing}: {reason}.",
                            f"{way} ({after}).")


def access_reason(folder: Path, error: sqlite3.Error | OSError) -> str:
    """Why, in words, the index in `folder` could not be used (`error` is not damage): "the disk it is on is full"."""
    return access_words(folder, error)[0]


def access_words(folder: Path, error: sqlite3.Error | OSError, reading: bool = False) -> tuple[str, str]:
    """(why, what to do) for an index in `folder` that `error` (not damage) kept from being used: `access_error`'s
    words, and a cut-short swap's (`swap.settle_swap`); `reading`: reading it as it is failed too (no "search it as
    it is")."""
    if isinstance(error, OSError):
        code = {errno.ENOSPC: _FULL, getattr(errno, "EDQUOT", errno.ENOSPC): _FULL, errno.EACCES: _PERM,
                errno.EPERM: _PERM, errno.EROFS: _READONLY}.get(error.errno or 0, _IOERR)
        detail = (error.strerror or str(error)).lower()
    else:
        code, detail = sqlite_code(error), str(error)
    if code == _FULL or (code == _IOERR and _nearly_full(folder)):
        return "the disk it is on is full", "Free some space on that disk, then run this again"
    if code in _NO_ACCESS:
        if _read_only_file_system(folder):
            copy = "copy the folder to a disk you can write to and give that to --index"
            return "it is on a read-only file system", (copy[0].upper() + copy[1:] if reading else
                                                        f"Search it as it is, or {copy}")
        readable = os.access(folder / "index.sqlite", os.R_OK) and os.access(folder, os.R_OK | os.X_OK)
        return (f"you do not have permission to {'write to' if readable else 'read'} its files",
                f"Give yourself permission to read and write {visible(folder)} and the files in it (or ask "
                "whoever owns them), then run this again")
    if code in _LOCKS:
        return ("another program is using it and holds its lock",
                "Wait for that program to finish (or stop it), then run this again")
    if code == _IOERR:
        return ("the disk could not be read or written (an I/O error)",
                "Check that the disk is still there and works (an unplugged drive or a network folder that went "
                "away does this), then run this again")
    return f"SQLite said {visible(detail)!r}", "Run this again; if it says the same, check the disk and the folder"


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def _read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False

