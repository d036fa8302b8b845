"""An open index's database and matrix, read in agreement: the layer `CompactingIndex` and `IndexStore` build on.

It holds the SQLite connection, the matrix of embeddings (`vectors.py`) and the approximate stage's lists
(`coarse.py`) as this process last read them, and the few ways everything above touches them: a value of the
`meta` table, one write transaction, one read in which the row numbers and the matrix agree (an index run may
have compacted the matrix since) and that is of the index in the folder now (`index --rebuild` may have swapped
another one in since), and SQLite's and the files' errors said as one sentence.

Which index a store reads is the identity (device, inode) of the `index.sqlite` it opened: the connection keeps
that file open, while the matrix and the approximate stage's files are opened by name. A swap moves the old
`index.sqlite` out first and the new one in last, so while the folder's `index.sqlite` is the store's own file, the
files beside it are that index's: a read checked against it afterwards (one `stat`) read one whole index.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from chatbot.core.photo_index.access_errors import access_error, is_damage
from chatbot.core.photo_index.coarse import CoarseLists
from chatbot.core.photo_index.folder import damaged_while_open
from chatbot.core.photo_index.vectors import COMPACTED, DIM, FILE, QUERIES, VectorFile
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

EXACT_LIMIT = 2_000  # images: below this every search is exact (about 70 ms on 2 cores); no approximate stage kept
FOLLOWS = 3  # a read that finds another index swapped in reads the new one; this many times, then it says so
Read = TypeVar("Read")


def file_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the `index.sqlite` in `folder` now, or None when there is none (or it cannot be looked at)."""
    try:
        info = os.stat(folder / "index.sqlite")
    except OSError:
        return None
    return info.st_dev, info.st_ino


def changed_while_read(folder: Path) -> PhotoIndexError:
    """The error for an index that another run replaced again and again while it was being read."""
    return PhotoIndexError(f"The search index at {visible(folder)} was replaced again and again while it was read "
                           "(other runs are rebuilding it).",
                           "Run this again once they have finished (nothing was changed).")


class IndexDatabase:
    """An index folder's database and matrix, opened by `IndexStore.open`."""

    def __init__(self, folder: Path, db: sqlite3.Connection, checkpoint: str) -> None:
        self.folder = folder
        self.checkpoint = checkpoint
        self._db = db
        shape = (self._meta("shape") or f"{QUERIES}x{DIM}").split("x")
        self.vectors = VectorFile(self._vectors_path(), int(self._meta("rows") or 0), (int(shape[0]), int(shape[1])))
        self._generation = self._meta("generation")  # how many compactions the matrix read here has been through
        self._coarse = CoarseLists.load(folder)
        # the `index.sqlite` this connection reads (`file_identity`), for a store that follows a rebuild swapped in
        # under it (a reader: `IndexStore.open` sets it); None: one that holds the writer lock, so no swap happens
        self._identity: tuple[int, int] | None = None

    def _vectors_path(self) -> Path:
        """The matrix file: `vectors.f16`, or, when a compaction committed but was stopped before its rename (a
        crash), its new matrix, which the database's rows already count in (`_finish_compaction` renames it)."""
        pending = self.folder / COMPACTED
        if self._meta("compacting") is not None and pending.exists():
            return pending
        return self.folder / FILE

    @contextlib.contextmanager
    def _said(self, doing: str) -> Iterator[None]:
        """SQLite's and the files' errors while the index is `doing` ("read", "written") as one sentence: damage
        says to rebuild (an open index is not set aside), anything else why, and that nothing was lost."""
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            if isinstance(error, sqlite3.Error) and is_damage(error):
                raise damaged_while_open(self.folder, self.checkpoint, error) from None
            raise access_error(self.folder, error, doing) from None

    def _read(self, work: Callable[[], Read]) -> Read:
        """`work()` in one read (`_reading`) of the index that is in the folder when it ends: when `index --rebuild`
        swapped another one in since this store opened its own (its `index.sqlite` is another file now), whatever
        `work` got or met (results of the old index, a matrix that reads too short) was of a mix, so this store
        reads the new index (`_follow_rebuild`) and `work` runs again. SQLite's and the files' errors are raised as
        they are when the index is still this store's own (`_said` makes them sentences)."""
        for attempt in range(FOLLOWS + 1):
            try:
                with self._reading():
                    result = work()
            except (sqlite3.Error, OSError, ValueError):  # ValueError: a matrix mapped shorter than its file
                if attempt == FOLLOWS or not self._replaced():
                    raise
            else:
                if not self._replaced():
                    return result
            if attempt == FOLLOWS:
                break
            self._follow_rebuild()
        raise changed_while_read(self.folder)

    def _replaced(self) -> bool:
        """Whether the index in the folder is no longer the one this store reads (one `stat`); never for a store
        that holds the writer lock (nothing is swapped under it)."""
        return self._identity is not None and file_identity(self.folder) != self._identity

    def _follow_rebuild(self) -> None:
        """Read the index that is in the folder now instead of this one (`IndexStore` does)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction in which the row numbers and the matrix agree: when an index run compacted the
        index since this store read its matrix (a chat app's store stays open), the new matrix is read."""
        for attempt in range(2):
            self._db.execute("BEGIN")
            try:
                if attempt or self._meta("generation") != self._generation:
                    self._reread_matrix()
                self.vectors.matrix  # noqa: B018  mapped now: a matrix renamed since reads too short (ValueError)
                break
            except ValueError:  # compacted between this view and the mapping: look again
                self._db.execute("COMMIT")
                if attempt:
                    raise sqlite3.DatabaseError("the matrix is shorter than the index's rows") from None
        try:
            yield
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def _reread_matrix(self) -> None:
        shape = (self._meta("shape") or f"{QUERIES}x{DIM}").split("x")
        self.vectors = VectorFile(self._vectors_path(), int(self._meta("rows") or 0), (int(shape[0]), int(shape[1])))
        self._generation = self._meta("generation")
        self._coarse = CoarseLists.load(self.folder)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite has rolled back itself after some errors (a full disk)
                with contextlib.suppress(sqlite3.Error):  # the error to say is the first one
                    self._db.execute("ROLLBACK")
            raise
