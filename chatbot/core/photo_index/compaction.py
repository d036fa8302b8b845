"""Giving back the space of embeddings no file has any more: the matrix compacted, index.sqlite vacuumed.

`IndexStore.compact` runs at the end of an `index` or `index --forget` run; it does nothing until unused rows are
most of the matrix. It is crash-safe by its order (a new matrix beside the old one, one transaction that
renumbers, then a rename), and a compaction a crash stopped is finished by the next run that writes
(`_finish_compaction`), before anything else.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from chatbot.core.photo_index.coarse import remove_approximate
from chatbot.core.photo_index.database import EXACT_LIMIT, IndexDatabase
from chatbot.core.photo_index.index_files import index_files
from chatbot.core.photo_index.vectors import COMPACTED, FILE, VectorFile, fsync_folder

COMPACT_SHARE = 0.5  # the matrix is compacted when more than this share of its rows is unused ...
COMPACT_MIN_ROWS = 1_000  # ... and at least this many rows are (16 MB at ViT-g's 16 KB a picture) ...
COMPACT_MIN_BYTES = 16 << 20  # ... or this many bytes (for models with larger rows)
VACUUM_MIN_BYTES = 1 << 20  # index.sqlite is rewritten (VACUUM) when over half of it, and this much, is free pages


@dataclass(frozen=True)
class Compaction:
    """What `IndexStore.compact` did: the matrix's rows and the index's bytes on disk before and after."""

    rows_before: int
    rows_after: int
    bytes_before: int
    bytes_after: int
    seconds: float

    @property
    def freed(self) -> int:
        """Bytes given back to the disk."""
        return max(self.bytes_before - self.bytes_after, 0)


class CompactingIndex(IndexDatabase):
    """An open index that gives unused rows' space back (`compact`) and finishes a compaction a crash stopped."""

    def compact(self, *, always: bool = False) -> Compaction | None:
        """Drop the embeddings no file has any more (a changed, deleted or forgotten picture's), and, when their
        rows are most of the matrix (more than COMPACT_SHARE, and COMPACT_MIN_ROWS or COMPACT_MIN_BYTES; any
        with `always`), give the space back: the rows still used are copied, in their order, into a new matrix
        beside the old one and fsynced; one transaction renumbers them (and marks the compaction); the new
        matrix is renamed into place, and the mark cleared. A crash before the commit leaves the old index
        whole; after it, the new matrix is read where it is and renamed by the next run that writes
        (`_finish_compaction`). The approximate stage keeps its centres, refiled in the new order; index.sqlite
        is VACUUMed when it is mostly free pages. Searches rank as before. Returns what was done, or None."""
        with self._said("written"):
            return self._compact(always)

    def _compact(self, always: bool) -> Compaction | None:
        started = time.monotonic()
        with self._transaction():
            self._db.execute("DELETE FROM embeddings WHERE sha256 NOT IN (SELECT sha256 FROM files)")
        live = np.fromiter((row for (row,) in self._db.execute("SELECT row FROM embeddings ORDER BY row")), np.int64)
        dead = self.vectors.rows - len(live)
        if dead <= 0 or not (always or (dead > COMPACT_SHARE * self.vectors.rows and (
                dead >= COMPACT_MIN_ROWS or dead * self.vectors.row_bytes >= COMPACT_MIN_BYTES))):
            return None
        before, rows_before = self._bytes_on_disk(), self.vectors.rows
        queries, dim = self.vectors.queries, self.vectors.dim
        self.vectors.copy_rows(live, self.folder / COMPACTED)
        coarse = self._coarse if len(live) > EXACT_LIMIT else None
        kept_lists = coarse.kept_lists(live, queries) if coarse is not None else None
        if coarse is not None:
            coarse.unfile()  # before the renumbering commits: lists of the old numbers never meet the new ones
        else:
            remove_approximate(self.folder)  # trained again once the index passes EXACT_LIMIT
        generation = str(int(self._generation or 0) + 1)
        with self._transaction():
            self._db.executemany("UPDATE embeddings SET row = ? WHERE row = ?",  # ascending: never two rows alike
                                 ((new, int(old)) for new, old in enumerate(live)))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'rows'", (str(len(live)),))
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [("generation", generation), ("compacting", "1")])
            if coarse is None:
                self._db.execute("DELETE FROM meta WHERE key = 'trained_rows'")
            else:  # trained again once the index is RETRAIN_GROWTH (store.py) times what it holds now
                trained = min(int(self._meta("trained_rows") or 0), len(live))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('trained_rows', ?)", (str(trained),))
        self._generation = generation
        self.vectors = VectorFile(self.folder / COMPACTED, len(live), (queries, dim))
        self._finish_compaction()
        self._coarse = coarse
        if coarse is not None and kept_lists is not None:
            coarse.refile(kept_lists, self.vectors)
        self._vacuum_if_mostly_free()
        return Compaction(rows_before, len(live), before, self._bytes_on_disk(), time.monotonic() - started)

    def _vacuum_if_mostly_free(self) -> None:
        """Rewrite index.sqlite without its free pages when they are most of it (a forgotten folder's files),
        and fold the WAL back so the space is given back now."""
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        with contextlib.suppress(sqlite3.OperationalError):  # locked by a search, a full disk: nothing is lost
            if free * 2 > pages and free * size >= VACUUM_MIN_BYTES:
                self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # busy while a search reads: done later

    def _bytes_on_disk(self) -> int:
        total = 0
        for path in index_files(self.folder):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def _finish_compaction(self) -> None:
        """Writing to the index: finish a compaction a crash stopped after its commit (rename its matrix into
        place), or delete the new matrix of one stopped before it (the index never used it)."""
        pending = self.folder / COMPACTED
        with self._said("updated"):
            if self._meta("compacting") is None:
                pending.unlink(missing_ok=True)
                return
            if pending.exists():
                os.replace(pending, self.folder / FILE)
                fsync_folder(self.folder)
            with self._transaction():
                self._db.execute("DELETE FROM meta WHERE key = 'compacting'")
            self.vectors = VectorFile(self.folder / FILE, self.vectors.rows, (self.vectors.queries, self.vectors.dim))
