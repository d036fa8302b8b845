"""An open index's database and matrix, read in agreement: the layer `CompactingIndex` and `IndexStore` build on.

It holds the SQLite connection, the matrix of embeddings (`vectors.py`) and the approximate stage's lists
(`coarse.py`) as this process last read them, and the few ways everything above touches them: a value of the
`meta` table, one write transaction, one read in which the row numbers and the matrix agree (an index run may
have compacted the matrix since), and SQLite's and the files' errors said as one sentence.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from chatbot.core.photo_index.coarse import CoarseLists
from chatbot.core.photo_index.folder import access_error, damaged_while_open, is_damage
from chatbot.core.photo_index.vectors import COMPACTED, DIM, FILE, QUERIES, VectorFile

EXACT_LIMIT = 2_000  # images: below this every search is exact (about 70 ms on 2 cores); no approximate stage kept


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
