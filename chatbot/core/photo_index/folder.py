"""The index folder on disk and its life cycle: made, locked for one writer, set aside when damaged, rebuilt
beside the index it replaces, and put back when a rebuild is stopped.

An index is its own files in one folder: `index.sqlite` (with its -wal and -shm), `vectors.f16` and the
approximate stage's `centres.npy`, `lists-*.u16` and `inverted-*.npy`. --index may name a folder that holds
other things too, so only those files are ever moved or deleted. One run writes at a time (an advisory lock on
`writer.lock`). A damaged index's files move into `<folder>/damaged-<n>/`, never half-used. A --rebuild makes
its index in `rebuild-in-progress/` while the old one stays searchable; a stopped rebuild of another checkpoint
waits in `rebuild-in-progress/stopped-rebuild/` until the new one holds pictures, and is put back if it never
does. Files move with `index.sqlite` leaving first and arriving last, so a crash leaves an index whole or none,
never one's database with another's vectors. Only damage sets an index aside: a full disk, missing permissions,
an I/O error or a lock get one sentence saying which (`IndexAccessError`), and nothing moves. The open index
itself is `store.IndexStore`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from chatbot.core.session_files import entry_kind
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

REBUILDING = "rebuild-in-progress"  # the sub-folder a --rebuild makes its index in (see `rebuild.open_rebuild`)
SUPERSEDED = "stopped-rebuild"  # in REBUILDING: a stopped rebuild of another checkpoint, until the new one has pictures
REBUILD_RECORD = "rebuild.json"  # in REBUILDING: the paths and flags the rebuild indexes (`rebuild.RebuildPlan`)
REPLACED = "replaced-by-rebuild"  # the old index's files while a rebuild is swapped in
SWAP_MARK = "rebuild-swap.json"  # in the index folder while a rebuild is swapped in: the new index's file names
SWAP_WAIT_SECONDS = 10.0  # how long an open waits for a swap another run is making (it takes milliseconds)
_FILES = ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "vectors.f16", "vectors.f16.compact", "centres.npy")

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
    reason, way = _access_words(folder, error, reading=as_it_is)
    after = "the index keeps everything written before this" if doing == "written" else "nothing was moved or changed"
    return IndexAccessError(f"The search index at {visible(folder)} could not be {doing}: {reason}.",
                            f"{way} ({after}).")


def access_reason(folder: Path, error: sqlite3.Error | OSError) -> str:
    """Why, in words, the index in `folder` could not be used (`error` is not damage): "the disk it is on is full"."""
    return _access_words(folder, error)[0]


def _access_words(folder: Path, error: sqlite3.Error | OSError, reading: bool = False) -> tuple[str, str]:
    """(why, what to do) for `access_error`; `reading`: reading it as it is failed too (no "search it as it is")."""
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


def check_index_folder(folder: Path) -> None:
    """An index lives in a folder: a file (or anything else) in its place gets one sentence. A rebuild being
    swapped in there is waited for, and one a crash cut short is finished first (`settle_swap`)."""
    if os.path.lexists(folder) and not folder.is_dir():
        what = entry_kind(folder) or "something else"  # a file, a device, a link to nothing, ...
        raise PhotoIndexError(f"{visible(folder)} is {what}, not a folder for the search index.",
                              "Give --index a folder (one that does not exist yet is made), e.g. "
                              "--index ~/photo-index.")
    if os.path.lexists(folder / SWAP_MARK):
        settled = settle_swap(folder)
        if settled:
            from chatbot.core.runtime import say

            say(settled)


def make_index_folder(folder: Path) -> None:
    """Make the index folder (and its parents) when missing; one sentence when that cannot be done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        there = folder
        while not os.path.lexists(there) and there != there.parent:
            there = there.parent  # the nearest part of the path that is there
        kind = entry_kind(there)
        if there != folder and kind not in (None, "a folder", "a link to a folder"):  # `afile/index`
            reason = f"{visible(there)} is {kind}, not a folder"
        elif error.errno == errno.ENOENT and there != folder:  # a folder that takes no new ones (/proc/self)
            reason = f"no folder can be made in {visible(there)}"
        else:
            reason = _cannot_write(error)
        raise PhotoIndexError(f"Could not make the index folder {visible(folder)}: {reason}.",
                              "Give --index a folder you can write to.") from None


def lock_for_writing(folder: Path) -> IO[bytes] | None:
    """One writer per index: an advisory lock on `writer.lock`, released when the process ends.

    Two runs appending at once would write the same matrix rows. Where locks do not exist (not POSIX)
    the run goes on unlocked."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = open(folder / "writer.lock", "wb")  # noqa: SIM115 (held open: the lock lives as long as the file)
    except OSError as error:  # a folder no file can be made in: read-only, not yours, /proc
        raise PhotoIndexError(f"The search index cannot be kept in {visible(folder)}: {_cannot_write(error)}.",
                              "Give --index a folder you can write to (one that does not exist yet is made), e.g. "
                              "--index ~/photo-index.") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise PhotoIndexError(f"Another blip2-chat is indexing into {visible(folder)} right now.",
                              "Wait for it to finish, or stop it, then run this again.") from None
    except OSError:
        return handle  # a filesystem without locks
    return handle


def _cannot_write(error: OSError) -> str:
    """Why no file could be made in a folder, in words."""
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "you do not have permission to write there"
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "the disk is full"
    if error.errno == errno.ENOENT:  # the folder is there, yet it takes no new file (/proc/self)
        return "no file can be made there"
    return visible((error.strerror or "no file can be made there").lower())


def has_index(folder: Path) -> bool:
    """Whether `folder` holds an index (of any checkpoint, intact or not)."""
    return folder.is_dir() and (folder / "index.sqlite").exists()


def recorded(folder: Path) -> tuple[str | None, int]:
    """(the checkpoint that made the index in `folder`, how many files it holds), read without writing,
    locking or setting aside anything (a damaged or missing index: (None, 0), or what could be read). Not
    opened read-only first: a read-only reader of a WAL database leaves its -wal and -shm files behind; only
    an index SQLite may not write to is read as `IndexStore.open` reads it then (`read_only_uri`)."""
    path = folder / "index.sqlite"
    if not path.is_file():
        return None, 0
    made_by, pictures, refused = _read_record(str(path), uri=False)
    if made_by is None and refused is not None and may_read_only(refused):
        made_by, pictures, _ = _read_record(read_only_uri(folder), uri=True)
    return made_by, pictures


def _read_record(address: str, *, uri: bool) -> tuple[str | None, int, sqlite3.Error | None]:
    """`recorded`'s (checkpoint, files) from the database at `address`, and the error that stopped it, if one did."""
    made_by: str | None = None
    pictures = 0
    try:
        with contextlib.closing(sqlite3.connect(address, uri=uri, check_same_thread=False)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
            made_by = None if row is None else str(row[0])
            pictures = int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
    except sqlite3.Error as error:
        return made_by, pictures, error
    except ValueError:
        pass
    return made_by, pictures, None


def read_only_uri(folder: Path) -> str:
    """The address (`sqlite3.connect(address, uri=True)`) that reads the index in `folder` without writing
    anything, for a reader SQLite refused to open it for as usual (a read-only folder or file, a full disk).

    With no -wal file, or an empty one, `index.sqlite` alone holds every committed row (the last connection
    to close folds the WAL into it and deletes it), so it is read `immutable`: SQLite then makes no -shm or
    -wal file, takes no lock and reads that file alone. A run writing to it meanwhile (its owner's) could
    change pages under a read, so this is only for a reader that cannot open it otherwise, and what goes
    wrong is said, never taken for damage to set aside. With a -wal that holds rows, they are only there:
    `mode=ro` reads them through the -shm file, which must then be there too."""
    wal = folder / "index.sqlite-wal"
    try:
        immutable = not wal.exists() or wal.stat().st_size == 0
    except OSError:
        immutable = False
    return (folder / "index.sqlite").absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def index_flag(folder: Path) -> str:
    """' --index DIR' for a command suggested about the index in `folder`, unless it is the default one."""
    from chatbot.locations import index_dir

    with contextlib.suppress(OSError, RuntimeError):
        if os.path.realpath(folder) == os.path.realpath(index_dir()):
            return ""
    shown = visible(str(folder))
    return f" --index {shlex.quote(shown) if shown == str(folder) else repr(shown)}"


def index_files(folder: Path) -> list[Path]:
    """The index's own files that exist in `folder`, `index.sqlite` first."""
    return [path for path in [*(folder / name for name in _FILES), *_derived_files(folder)] if path.exists()]


def _derived_files(folder: Path) -> list[Path]:
    """The approximate stage's files besides `centres.npy` (named after the centres they belong to)."""
    return [*folder.glob("lists-*.u16"), *folder.glob("inverted-*.npy")]


def remove_index_files(folder: Path) -> None:
    """Delete the index in `folder`: its own files only (--index may name a folder that holds others)."""
    for path in index_files(folder):
        path.unlink(missing_ok=True)


def remove_index_folder(folder: Path) -> None:
    """Delete an index's own files (a rebuild's record too) and then its folder, when nothing else is left in it."""
    remove_index_files(folder)
    (folder / REBUILD_RECORD).unlink(missing_ok=True)
    (folder / "writer.lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def set_aside(folder: Path, made_by: str | None = None) -> PhotoIndexError:
    """Move a damaged index's own files (nothing else the folder holds: --index may name any folder) into a
    new `damaged-<n>` folder inside it; the error that says so and how to rebuild (with the model that made
    it, when that could still be read: without --model a new index takes the default one)."""
    n = 1
    while (folder / f"damaged-{n}").exists():
        n += 1
    aside = folder / f"damaged-{n}"
    moved: list[Path] = []
    try:
        aside.mkdir()
        for path in [*(folder / name for name in _FILES), *_derived_files(folder)]:
            if path.exists():
                path.rename(aside / path.name)
                moved.append(path)
    except OSError as error:  # a folder you may not write to: the files stay, all of them
        for path in reversed(moved):
            with contextlib.suppress(OSError):
                (aside / path.name).rename(path)
        with contextlib.suppress(OSError):
            aside.rmdir()
        return damaged_in_place(folder, made_by, _cannot_write(error))
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged; its files were moved to "
                           f"{visible(aside)}.",
                           f"Build it again with `blip2-chat index PATH{_model_flag(made_by)}{index_flag(folder)}` "
                           "(PATH: your photos folder).")


def damaged_in_place(folder: Path, made_by: str | None, reason: str) -> PhotoIndexError:
    """The error for a damaged index whose files could not be set aside (`reason`: why, in words)."""
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged, and its files could not be moved "
                           f"aside: {reason}.",
                           "Build a new one in a folder you can write to: "
                           f"`blip2-chat index PATH{_model_flag(made_by)} --index DIR` (PATH: your photos folder), "
                           "or fix the permissions and run this again.")


def damaged_while_open(folder: Path, made_by: str | None, error: sqlite3.Error) -> PhotoIndexError:
    """The error for damage found in an index already open (a search, an indexing run): not set aside then (it
    is in use), so the way forward is a rebuild, which replaces it whole."""
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged (SQLite said {visible(str(error))!r}).",
                           f"Build it again with `blip2-chat index PATH --rebuild{_model_flag(made_by)}"
                           f"{index_flag(folder)}` (PATH: your photos folder).")


def _model_flag(made_by: str | None) -> str:
    if not made_by:
        return ""
    shown = visible(made_by)
    return f" --model {shlex.quote(shown) if shown == made_by else repr(shown)}"


def waiting_rebuild(folder: Path) -> tuple[str, int] | None:
    """(checkpoint, pictures) of a stopped rebuild waiting in `folder/rebuild-in-progress`, or None."""
    aside = folder / REBUILDING
    if not has_index(aside):
        return None
    made_by, pictures = recorded(aside)
    return None if made_by is None else (made_by, pictures)


def restore_superseded(folder: Path) -> tuple[str | None, int] | None:
    """Put back the stopped rebuild that a rebuild in `folder` (the index folder) moved aside, when that
    rebuild made nothing (its index already removed); (its checkpoint, pictures), or None when none waited."""
    aside = folder / REBUILDING
    kept = aside / SUPERSEDED
    if not has_index(kept):
        return None
    put_back(kept, aside)
    return recorded(aside)


def put_back(kept: Path, aside: Path) -> None:
    """Move a stopped rebuild kept in `kept` back into `aside` (its record too), in place of whatever index is
    there."""
    remove_index_files(aside)
    (aside / REBUILD_RECORD).unlink(missing_ok=True)
    if (kept / REBUILD_RECORD).exists():
        (kept / REBUILD_RECORD).rename(aside / REBUILD_RECORD)
    for path in reversed(index_files(kept)):  # index.sqlite last: never its database with other vectors
        path.rename(aside / path.name)
    with contextlib.suppress(OSError):
        kept.rmdir()


# --- a rebuild swapped in, and a swap cut short

def swap_rebuild_in(folder: Path) -> None:
    """Put the complete index in `folder/rebuild-in-progress` in place of `folder`'s own (closed, both of them;
    the caller holds `folder`'s writer lock). `rebuild-swap.json` names both indexes' files before anything
    moves, and goes last, so a swap a crash cuts short is finished by the next open (`settle_swap`)."""
    swap = Swap([path.name for path in index_files(folder / REBUILDING)], [path.name for path in index_files(folder)])
    write_atomically(folder / SWAP_MARK, json.dumps({"incoming": swap.incoming, "outgoing": swap.outgoing}))
    _finish_swap(folder, swap)


def settle_swap(folder: Path) -> str | None:
    """Wait for a rebuild another run is swapping into `folder` (it holds the writer lock), or finish (or, when
    the new index is not whole, undo) one a crash cut short; the sentence saying which, or None when there was
    nothing to do or the wait ran out (SWAP_WAIT_SECONDS). IndexAccessError when it cannot be done now."""
    deadline = time.monotonic() + SWAP_WAIT_SECONDS
    while os.path.lexists(folder / SWAP_MARK):
        try:
            free, lock = _try_lock(folder)
        except OSError as error:  # a folder this user may not write to
            raise _unsettled(folder, error) from None
        if not free:  # a run is swapping right now: it takes milliseconds
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        try:
            if not os.path.lexists(folder / SWAP_MARK):
                return None  # that run finished it
            swap = _recorded_swap(folder)
            if swap is None:  # not written by us: nothing can be known from it
                (folder / SWAP_MARK).unlink()
                return None
            finished = _finish_swap(folder, swap)
        except OSError as error:
            raise _unsettled(folder, error) from None
        finally:
            if lock is not None:
                lock.close()
        held = recorded(folder)[1]
        if finished:
            return (f"A rebuild of the search index at {visible(folder)} was cut short while it put the new index "
                    f"in place; that is finished now, and the rebuilt index ({held} pictures) is in place.")
        return (f"A rebuild of the search index at {visible(folder)} was cut short while it put the new index in "
                f"place, and the new index was not whole, so the old one ({held} pictures) is back in place.")
    return None


@dataclass(frozen=True)
class Swap:
    """A rebuild being swapped in: its index's file names (`incoming`, in the order they move: `index.sqlite`
    last) and those of the index it replaces (`outgoing`, `index.sqlite` first)."""

    incoming: list[str]
    outgoing: list[str]

    def __post_init__(self) -> None:
        self.incoming.sort(key=lambda name: name == "index.sqlite")


def _recorded_swap(folder: Path) -> Swap | None:
    """The swap `rebuild-swap.json` records, or None when it is not one we wrote (a file on disk: untrusted)."""
    try:
        with open(folder / SWAP_MARK, "rb") as file:
            record = json.loads(file.read(1 << 16))
        incoming, outgoing = record["incoming"], record["outgoing"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(incoming, list) or not isinstance(outgoing, list) or "index.sqlite" not in incoming:
        return None
    if not all(isinstance(name, str) and (name in _FILES or re.fullmatch(r"(lists-\w+\.u16|inverted-\w+\.npy)", name))
               for name in [*incoming, *outgoing]):
        return None
    return Swap(incoming, outgoing)


def _finish_swap(folder: Path, swap: Swap) -> bool:
    """Go on with `swap` from wherever it stands: True when the new index is in place, False when it was not whole
    (a file of it neither beside the index nor moved in) and the old one went back instead.

    The old files all leave (into `replaced-by-rebuild/`) before the first new one arrives, and the new database
    arrives last, so where each file is says how far the swap got, even where both indexes have a file's name."""
    aside, replaced = folder / REBUILDING, folder / REPLACED
    waiting = [name for name in swap.incoming if (aside / name).exists()]
    old_out = all((replaced / name).exists() for name in swap.outgoing)  # new files may have arrived
    if "index.sqlite" in waiting:
        arrived = [name for name in swap.incoming if name not in waiting] if old_out else []
        whole = all((folder / name).exists() for name in arrived) and len(arrived) + len(waiting) == len(swap.incoming)
    else:  # the new database arrived (last of all), or is lost
        arrived = [name for name in swap.incoming if name not in waiting and name != "index.sqlite"] if old_out else []
        whole = not waiting and (folder / "index.sqlite").exists()
    if not whole:
        _swap_back(folder, swap, [name for name in arrived if (folder / name).exists()])
        return False
    if "index.sqlite" in waiting:
        replaced.mkdir(exist_ok=True)
        for name in swap.outgoing:  # index.sqlite first: never the old database with new vectors
            if (folder / name).exists() and not (replaced / name).exists():
                os.replace(folder / name, replaced / name)
        for name in waiting:  # index.sqlite last
            os.replace(aside / name, folder / name)
    remove_index_files(replaced)  # the new index is whole here: the old one goes, then the mark
    for name in ("writer.lock", REBUILD_RECORD):
        (aside / name).unlink(missing_ok=True)
    (folder / SWAP_MARK).unlink(missing_ok=True)
    for emptied in (replaced, aside):  # each is left when it holds something else (a damaged rebuild)
        with contextlib.suppress(OSError):
            emptied.rmdir()
    return True


def _swap_back(folder: Path, swap: Swap, arrived: list[str]) -> None:
    """Undo a swap whose new index is not whole: what of it arrived goes back beside the index, and the old one's
    files come back (index.sqlite last)."""
    aside, replaced = folder / REBUILDING, folder / REPLACED
    for name in arrived:
        os.replace(folder / name, aside / name)
    for name in reversed(swap.outgoing):
        if (replaced / name).exists():
            os.replace(replaced / name, folder / name)
    (folder / SWAP_MARK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        replaced.rmdir()


def _try_lock(folder: Path) -> tuple[bool, IO[bytes] | None]:
    """(whether `folder`'s writer lock was free, the file that holds it now: None where there are no locks)."""
    try:
        import fcntl
    except ImportError:
        return True, None
    handle = open(folder / "writer.lock", "ab")  # noqa: SIM115 (held open: the lock lives as long as the file)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False, None
    except OSError:
        return True, handle  # a filesystem without locks
    return True, handle


def _unsettled(folder: Path, error: OSError) -> IndexAccessError:
    reason, way = _access_words(folder, error)
    return IndexAccessError(f"A rebuild of the search index at {visible(folder)} was cut short while it put the "
                            f"new index in place, and that cannot be finished now: {reason}.",
                            f"{way} (both indexes are kept as they are).")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file, fsynced, renamed over it."""
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
