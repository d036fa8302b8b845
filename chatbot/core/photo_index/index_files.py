"""An index's own files in its folder, by name: which of them are there, what they record (read without writing
anything), deleting them, and writing a file of the folder whole or not at all.

`index.sqlite` (with its -wal and -shm), `vectors.f16` and the approximate stage's `centres.npy`, `lists-*.u16` and
`inverted-*.npy` are the index; --index may name a folder that holds other things too, so only these are ever moved
or deleted. The folder's life cycle is `folder.py`'s, a rebuild swapped in `swap.py`'s.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import IO

from chatbot.core.photo_index.access_errors import may_read_only

REBUILDING = "rebuild-in-progress"  # the sub-folder a --rebuild makes its index in (see `rebuild.open_rebuild`)
SUPERSEDED = "stopped-rebuild"  # in REBUILDING: a stopped rebuild of another checkpoint, until the new one has pictures
REBUILD_RECORD = "rebuild.json"  # in REBUILDING: the paths and flags the rebuild indexes (`rebuild.RebuildPlan`)
FILE_NAMES = ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "vectors.f16", "vectors.f16.compact",
              "centres.npy")  # the index's files besides the approximate stage's `derived_files`, `index.sqlite` first


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



def index_files(folder: Path) -> list[Path]:
    """The index's own files that exist in `folder`, `index.sqlite` first."""
    return [path for path in [*(folder / name for name in FILE_NAMES), *derived_files(folder)] if path.exists()]


def derived_files(folder: Path) -> list[Path]:
    """The approximate stage's files besides `centres.npy` (named after the centres they belong to)."""
    return [*folder.glob("lists-*.u16"), *folder.glob("inverted-*.npy")]


def remove_index_files(folder: Path) -> None:
    """Delete the index in `folder`: its own files only (--index may name a folder that holds others)."""
    for path in index_files(folder):
        path.unlink(missing_ok=True)


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


def try_writer_lock(folder: Path) -> tuple[bool, IO[bytes] | None]:
    """Take `folder`'s writer lock (`writer.lock`, one writer per index, released when the process ends) if it is
    free: (whether it was, the open file that holds it now: None where it was not, or where there are no locks).

    Raises:
        OSError: no file can be made there (read-only, not yours).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locks, the run goes on unlocked
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
