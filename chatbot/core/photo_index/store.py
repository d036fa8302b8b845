"""The open search index: which files were indexed (SQLite) and their embeddings (a float16 matrix), searched.

One folder holds `index.sqlite` (files: path, size, mtime_ns, sha256; embeddings: sha256 -> matrix row;
meta: the checkpoint that made it and the committed row count), `vectors.f16` (see `vectors.py`) and the
approximate stage's files (see `coarse.py`). Embeddings are keyed by content, so the same bytes under a
new path reuse them. A batch is one transaction whose vectors are fsynced before it commits: a kill -9
loses at most the batch in progress. Rows of contents no file has any more are given back by `compact`
(`compaction.py`), at the end of an `index` or `index --forget` run, once they are most of the matrix. A damaged
index is set aside (its files moved into `<folder>/damaged-<n>/`), never half-used; one that cannot be opened for
another reason (a full disk, permissions, an I/O error, a lock) is left as it is, with one sentence saying why,
and a search opens it read-only when it can. A store that reads follows a rebuild swapped in under it (it searches
the new index, whole: `database.py` says how it knows). The connection, the matrix as read and their errors are
`database.py`'s; the folder itself, its lock and a --rebuild's folders are `folder.py`'s, and a --rebuild's fresh
index is made by `rebuild.open_rebuild`. docs/search.md says why SQLite + numpy and not LanceDB.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from chatbot.core.photo_index.access_errors import access_error, access_reason, is_damage, may_read_only
from chatbot.core.photo_index.coarse import CoarseLists, probes_for
from chatbot.core.photo_index.compaction import CompactingIndex
from chatbot.core.photo_index.database import EXACT_LIMIT, FOLLOWS, changed_while_read, file_identity
from chatbot.core.photo_index.folder import (
    check_index_folder,
    damaged_in_place,
    index_flag,
    lock_for_writing,
    make_index_folder,
    remove_index_folder,
    set_aside,
)
from chatbot.core.photo_index.index_files import SUPERSEDED, read_only_uri, remove_index_files
from chatbot.core.photo_index.recorded_paths import UNDER, storable, under
from chatbot.core.photo_index.swap import SWAP_MARK
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

FORMAT = "1"
RETRAIN_GROWTH = 4  # the centres are trained again once the index is this many times larger
CANDIDATES = 100  # images the first stage hands to exact re-scoring (300 found no more at 10k or 100k)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                  sha256 TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS embeddings (sha256 TEXT PRIMARY KEY, row INTEGER NOT NULL UNIQUE);
"""


class IndexRebuilt(PhotoIndexError):
    """A reader's index was replaced by a rebuild made with another checkpoint: the store reads the new index
    now, and a query must be embedded again with its model (`Finder.find` does, once)."""


class _SwappedWhileOpening(Exception):
    """A reader's `index.sqlite` was replaced while it opened it (a rebuild swapped in): open it again."""


@dataclass(frozen=True)
class FileState:
    """What the index knows of one file: enough to tell, without reading it, whether it changed."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Hit:
    """One search result: a file and its image-text contrastive score (MaxSim, float32)."""

    path: str
    sha256: str
    itc: float
    size: int = -1  # the file's size and mtime when it was indexed (-1: not known)
    mtime_ns: int = -1


def _set_aside(folder: Path, made_by: str | None, opened: tuple[int, int] | None) -> PhotoIndexError:
    """Set the damaged index in `folder` aside (`folder.set_aside`) under its writer lock, and only when it is still
    the one found damaged (`opened`: a reader's index.sqlite; None: a writer's, which holds the lock). A reader
    that finds another run writing to it leaves it as it is (that run may be a rebuild about to replace it)."""
    if opened is None:
        return set_aside(folder, made_by)
    try:
        lock = lock_for_writing(folder)
    except PhotoIndexError:
        if not os.access(folder, os.W_OK):
            return set_aside(folder, made_by)  # nothing can be moved: it says so, and why
        return PhotoIndexError(f"The search index at {visible(folder)} is damaged, and another blip2-chat is "
                               "writing to it right now, so it was left as it is.",
                               "Run this again once that run has finished (a damaged index is then moved aside), "
                               f"or build it again with `blip2-chat index PATH --rebuild{index_flag(folder)}` "
                               "(PATH: your photos folder).")
    try:
        if file_identity(folder) != opened:
            raise _SwappedWhileOpening  # swapped just now: the new index is opened instead
        return set_aside(folder, made_by)
    finally:
        if lock is not None:
            lock.close()


class IndexStore(CompactingIndex):
    """An open index folder. `open` checks it; writes go through `add_batch`, `set_path`, `remove_paths`."""

    def __init__(self, folder: Path, db: sqlite3.Connection, checkpoint: str) -> None:
        super().__init__(folder, db, checkpoint)
        self._writer_lock: IO[bytes] | None = None  # held while this store may write (opened with `create`)
        self._folder_lock: IO[bytes] | None = None  # a rebuild's: the lock of the index it will replace
        # a rebuild's: the stopped rebuild of another checkpoint it replaces, (checkpoint, pictures), kept in
        # <this folder>/SUPERSEDED until this one holds its first pictures (`add_batch` deletes it then)
        self.superseded: tuple[str, int] | None = None

    @classmethod
    def open_existing(cls, folder: Path) -> IndexStore:
        """Open the index in `folder` with whichever checkpoint made it (`store.checkpoint` says which)."""
        return cls.open(folder, None, create=False)

    @classmethod
    def open(cls, folder: Path, checkpoint: str | None, *, create: bool, rebuild: bool = False,
             writing: bool = False) -> IndexStore:
        """Open the index in `folder` made with `checkpoint`; with `create`, make it when there is none.

        `checkpoint` None (only without `create`): whichever made it. With `create` or `writing` the store
        holds the index's writer lock (`writing` alone: an existing index that is written to, `index --forget`).
        `rebuild` deletes an existing index first (its own files only). Raises PhotoIndexError: no index
        (and not `create`), one made by another checkpoint, or a damaged one (set aside first), or (with
        `create` or `writing`) another run writing to it, or one that cannot be opened for a reason that is not
        damage (a full disk, permissions, an I/O error, a lock: nothing is moved; IndexAccessError). Without
        `create` or `writing`, an index SQLite may not write to is opened read-only when it can be
        (`_open_read_only`), and the store is a reader: an index that `index --rebuild` swaps in while it opens
        is opened again (never taken for damage), and one swapped in later is followed (`_follow_rebuild`).
        """
        folder = Path(folder)
        for attempt in range(FOLLOWS + 1):
            try:
                return cls._open(folder, checkpoint, create=create, rebuild=rebuild and not attempt, writing=writing)
            except _SwappedWhileOpening:
                continue
        raise changed_while_read(folder)

    @classmethod
    def _open(cls, folder: Path, checkpoint: str | None, *, create: bool, rebuild: bool,
              writing: bool) -> IndexStore:
        """`open`, once; _SwappedWhileOpening when a reader found the index replaced under it (it opens again)."""
        check_index_folder(folder)
        if rebuild:
            remove_index_files(folder)
        new = not (folder / "index.sqlite").exists()
        if new:
            if not create and os.path.lexists(folder / SWAP_MARK):
                raise _SwappedWhileOpening  # a rebuild began its swap just now: the next try waits for it
            if not create:
                raise PhotoIndexError(f"There is no search index at {visible(folder)} yet.",
                                      f"Build it with `blip2-chat index PATH{index_flag(folder)}` "
                                      "(PATH: your photos folder).")
            make_index_folder(folder)
        writes = create or writing
        writer_lock = lock_for_writing(folder) if writes else None
        opened = None if writes else file_identity(folder)  # a reader's: the index.sqlite it is about to connect to
        if not writes and opened is None:
            raise _SwappedWhileOpening  # gone since it was seen: a rebuild being swapped in (waited for next time)
        db: sqlite3.Connection | None = None
        made_by: str | None = None
        try:
            # a reader never makes index.sqlite (`mode=rw`): where none is, swapped out this instant, SQLite would
            # leave an empty one; the connect fails instead, and the file identity below says why
            where = folder / "index.sqlite"
            db = (sqlite3.connect(where, isolation_level=None, check_same_thread=False) if writes else
                  sqlite3.connect(where.absolute().as_uri() + "?mode=rw", uri=True, isolation_level=None,
                                  check_same_thread=False))
            if not writes and file_identity(folder) != opened:  # before a word is written: the new index is opened
                db.close()
                raise _SwappedWhileOpening
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            store = cls(folder, db, checkpoint or "")
            made_by = store._meta("checkpoint")
            if made_by is None:
                if checkpoint is None:  # made but killed before it was stamped: empty, and set aside
                    raise ValueError("an index without the checkpoint that made it")
                with store._transaction():
                    db.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("checkpoint", checkpoint), ("format", FORMAT), ("rows", "0")])
                made_by = checkpoint
            store._check_intact()
            if writes:
                store._check_writable()
            elif file_identity(folder) != opened:  # what was read may be of two indexes
                db.close()
                raise _SwappedWhileOpening
        except (sqlite3.Error, ValueError) as error:
            if db is not None:
                db.close()
            try:
                if not writes and file_identity(folder) != opened:
                    raise _SwappedWhileOpening from None  # a rebuild swapped in: not damage, open the new one
                if is_damage(error) or not isinstance(error, sqlite3.Error):  # not an error: our checks' ValueError
                    raise _set_aside(folder, made_by, opened) from None
                if new:  # what this open made of a new index goes again: nothing half-made is left
                    remove_index_files(folder)
                if writes or not may_read_only(error):
                    raise access_error(folder, error, "updated" if writes and made_by else "opened") from None
            finally:
                if writer_lock is not None:
                    writer_lock.close()
            store = cls._open_read_only(folder, error, opened)
            made_by = store.checkpoint
        store.checkpoint = str(made_by)
        store._writer_lock = writer_lock
        store._identity = opened
        if writes:
            try:
                store._finish_compaction()
            except BaseException:
                store.close()
                raise
        if checkpoint is not None and made_by != checkpoint:
            store.close()
            raise PhotoIndexError(
                f"The index at {visible(folder)} was made with {visible(made_by)}, not {visible(checkpoint)}.",
                f"Search with `--model {visible(made_by)}`, or index again with this model: "
                f"`blip2-chat index PATH --rebuild{index_flag(folder)}`.")
        return store

    @classmethod
    def _open_read_only(cls, folder: Path, refused: sqlite3.Error, opened: tuple[int, int] | None) -> IndexStore:
        """The index opened for reading only (see `read_only_uri`, which says when and why it is safe), after
        SQLite refused to open it as usual (`refused`): its folder or files read-only to this user, or a disk
        too full for the -shm file a WAL database needs. Damage found here is said, not set aside (nothing here
        may write), and any other failure is said as `refused`. `opened`: the index.sqlite the first try meant to
        read (_SwappedWhileOpening when it is another one now)."""
        db: sqlite3.Connection | None = None
        made_by: str | None = None
        try:
            db = sqlite3.connect(read_only_uri(folder), uri=True, isolation_level=None, check_same_thread=False)
            store = cls(folder, db, "")
            made_by = store._meta("checkpoint")
            if made_by is None:
                raise ValueError("an index without the checkpoint that made it")
            store._check_intact()
            if file_identity(folder) != opened:
                db.close()
                raise _SwappedWhileOpening
        except (sqlite3.Error, ValueError) as error:
            if db is not None:
                db.close()
            if file_identity(folder) != opened:
                raise _SwappedWhileOpening from None
            if is_damage(error):
                raise damaged_in_place(folder, made_by, access_reason(folder, refused)) from None
            raise access_error(folder, refused, "opened", as_it_is=True) from None  # read-only, too
        store.checkpoint = made_by
        return store

    def _follow_rebuild(self) -> None:
        """Read the index that `index --rebuild` swapped into the folder since this store opened its own (a reader's:
        a chat's `/find` keeps its store): the old one's connection is closed and the new one's taken over.
        IndexRebuilt when it was made with another checkpoint (the query's model must change too); the new
        index's errors (none there now, damaged) as `open` raises them."""
        fresh = type(self).open(self.folder, None, create=False)
        before = self.checkpoint
        self._db.close()
        vars(self).update(vars(fresh))  # every attribute of the open index, its connection among them
        if self.checkpoint != before:
            raise IndexRebuilt(
                f"The index at {visible(self.folder)} was rebuilt with {visible(self.checkpoint)} (it was made with "
                f"{visible(before)}), so it is searched with that model now.",
                "Search again.")

    def _check_intact(self) -> None:
        """ValueError when the index is not of this format, or its matrix is shorter than its rows (damage)."""
        if self._meta("format") != FORMAT or not self.vectors.has_rows(self.vectors.rows):
            raise ValueError("not an index of this format, or its matrix is cut short")

    def _check_writable(self) -> None:
        """Write a value as it is, so that an index SQLite may not write to (a read-only file, a full disk) is
        said now, before a model loads, rather than at the first batch."""
        with self._transaction():
            self._db.execute("UPDATE meta SET value = value WHERE key = 'format'")

    def close(self) -> None:
        """Close the database and let go of the locks (again: nothing happens)."""
        self._db.close()
        for lock in (self._writer_lock, self._folder_lock):
            if lock is not None:
                lock.close()  # closing the file lets go of the lock

    def hold_lock(self, lock: IO[bytes] | None) -> None:
        """Hold `lock` too until `close` (a rebuild's: the writer lock of the index it will replace)."""
        self._folder_lock = lock

    def is_empty(self) -> bool:
        """Whether the index holds no picture at all (a search has nothing to rank)."""
        return self.vectors.rows == 0 or self.count() == 0

    def swap_in(self) -> None:
        """Close this index, made by `open_rebuild`, and put it in place of the index it rebuilds.

        The old index's `index.sqlite` leaves first and the new one arrives last, so a crash half-way never leaves
        one's database with the other's vectors; the old files are deleted only once the new ones are in place.
        `swap.swap_rebuild_in` first records both indexes' files, so the next open finishes a swap a crash
        cut short (`swap.settle_swap`), and a search meanwhile waits for it rather than finding no index."""
        from chatbot.core.photo_index.swap import swap_rebuild_in

        self._db.close()  # the last connection: SQLite folds the WAL into index.sqlite
        try:
            swap_rebuild_in(self.folder.parent)
        except OSError as error:  # a full disk, permissions: the next open finishes it (both indexes are kept)
            raise access_error(self.folder.parent, error, "written") from None
        finally:
            self.close()  # the writer locks go last: no other run meets the swap half-made

    # ----- what the index knows

    def count(self) -> int:
        """How many files are indexed."""
        with self._said("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def all_states(self) -> dict[str, FileState]:
        """Every indexed file by path (one query: a rescan of 10,000 files asks once, not 10,000 times)."""
        with self._said("read"):
            return {row[0]: FileState(*row) for row in
                    self._db.execute("SELECT path, size, mtime_ns, sha256 FROM files")}

    def paths_under(self, root: str) -> list[str]:
        """Indexed paths inside folder `root` (or `root` itself when it is a file)."""
        if not storable(root):
            return []  # nothing under a name the index cannot hold was indexed
        with self._said("read"):
            return [row[0] for row in self._db.execute(f"SELECT path FROM files WHERE {UNDER}", under(root))]

    def known_sha(self, sha256: str) -> bool:
        with self._said("read"):
            return self._db.execute("SELECT 1 FROM embeddings WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def vectors_for(self, shas: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored [32, 256] float32 embeddings of these contents (unknown ones are left out)."""
        wanted = list(shas)

        def read() -> dict[str, np.ndarray]:
            rows = {sha: row for sha in wanted for (row,) in
                    self._db.execute("SELECT row FROM embeddings WHERE sha256 = ?", (sha,))}
            return {sha: np.asarray(self.vectors.matrix[row], np.float32) for sha, row in rows.items()}

        with self._said("read"):
            return self._read(read)

    # ----- writing

    def add_batch(self, files: list[FileState], embeddings_by_sha: dict[str, np.ndarray]) -> None:
        """Record `files` and the embeddings of contents not stored yet, as one transaction."""
        new = [sha for sha in dict.fromkeys(embeddings_by_sha) if not self.known_sha(sha)]
        with self._said("written"):
            self._add_batch(files, new, embeddings_by_sha)
        if self.superseded is not None and files:  # this rebuild has really started: the stopped one goes now
            remove_index_folder(self.folder / SUPERSEDED)
            self.superseded = None

    def _add_batch(self, files: list[FileState], new: list[str], embeddings_by_sha: dict[str, np.ndarray]) -> None:
        added = self.vectors.append(np.stack([embeddings_by_sha[sha] for sha in new])) if new else range(0)
        with self._transaction():
            self._db.executemany("INSERT INTO embeddings VALUES (?, ?)", zip(new, added, strict=True))
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                                 [(f.path, f.size, f.mtime_ns, f.sha256) for f in files])
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'rows'", (str(self.vectors.rows + len(new)),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('shape', ?)",
                             (f"{self.vectors.queries}x{self.vectors.dim}",))
        self.vectors.committed(len(new))

    def set_path(self, state: FileState) -> None:
        """Record a file whose content is already stored (a renamed copy, or a touched but unchanged file)."""
        with self._said("written"), self._transaction():
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                             (state.path, state.size, state.mtime_ns, state.sha256))

    def remove_paths(self, paths: Iterable[str]) -> None:
        """Forget these files, and the embeddings no remaining file has (their matrix rows go unused until
        `compact`)."""
        with self._said("written"), self._transaction():
            self._db.executemany("DELETE FROM files WHERE path = ?", ((path,) for path in paths))
            self._db.execute("DELETE FROM embeddings WHERE sha256 NOT IN (SELECT sha256 FROM files)")

    def refresh_approximate(self) -> None:
        """Train the approximate stage once the index passes EXACT_LIMIT (again when it has grown
        RETRAIN_GROWTH times), and file the rows added since. Derived data: safe to lose at any moment."""
        with self._said("written"):
            self._refresh_approximate()

    def _refresh_approximate(self) -> None:
        rows = self.vectors.rows
        if rows <= EXACT_LIMIT:
            return
        trained = int(self._meta("trained_rows") or 0)
        if self._coarse is None or rows >= RETRAIN_GROWTH * trained:
            self._coarse = CoarseLists.train(self.folder, self.vectors)
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('trained_rows', ?)", (str(rows),))
        self._coarse.extend(self.vectors)

    # ----- searching

    def search(self, query: np.ndarray, top: int = 10, *, exact: bool | None = None,
               probes: int | None = None, candidates: int = CANDIDATES) -> list[Hit]:
        """The `top` best-matching images for a [256] text embedding, best first; every path of each.

        Exact MaxSim up to EXACT_LIMIT images (or with `exact=True`); above it the approximate stage's
        `candidates` images, re-scored exactly. `probes`: lists the first stage reads (None: `probes_for`,
        which scales with the number of lists). Ties are broken by the order images were added. A reader's results
        are of one whole index: the one in the folder when the search ends (`_read`; IndexRebuilt when a rebuild
        with another checkpoint was swapped in, whose vectors `query` does not match).
        """
        with self._said("read"):
            return self._read(lambda: self._search(query, top, exact, probes, candidates))

    def _search(self, query: np.ndarray, top: int, exact: bool | None, probes: int | None,
                candidates: int) -> list[Hit]:
        if self.vectors.rows == 0:
            return []  # nothing to rank (and no recorded vector width to check the query against)
        q = np.asarray(query, np.float32).reshape(self.vectors.dim)
        if exact is None:
            exact = self.vectors.rows <= EXACT_LIMIT or self._coarse is None
        if exact or self._coarse is None:
            rows = np.arange(self.vectors.rows)
            scores = self.vectors.exact_scores(q)
        else:
            if probes is None:
                probes = probes_for(self.vectors.rows, len(self._coarse.centres), self.vectors.queries)
            rows = self._coarse.candidates(self.vectors, q, probes, max(candidates, 4 * top))
            scores = self.vectors.exact_scores(q, rows)
        order = np.lexsort((rows, -scores))
        return self._hits(rows[order], scores[order], top)

    def _hits(self, rows: np.ndarray, scores: np.ndarray, top: int) -> list[Hit]:
        """Map ranked matrix rows to files, skipping rows no file uses any more, until `top` images."""
        hits: list[Hit] = []
        images = 0
        step = max(2 * top, 32)
        for start in range(0, len(rows), step):
            chunk = [int(row) for row in rows[start:start + step]]
            marks = ",".join("?" * len(chunk))
            paths: dict[int, list[tuple[str, str, int, int]]] = {}
            for row, path, sha, size, mtime_ns in self._db.execute(
                    f"SELECT e.row, f.path, f.sha256, f.size, f.mtime_ns FROM embeddings e JOIN files f "
                    f"ON f.sha256 = e.sha256 WHERE e.row IN ({marks}) ORDER BY f.path", chunk):
                paths.setdefault(row, []).append((path, sha, size, mtime_ns))
            for row, score in zip(chunk, scores[start:start + step], strict=True):
                if row in paths:
                    hits += [Hit(path, sha, float(score), size, mtime_ns) for path, sha, size, mtime_ns in paths[row]]
                    images += 1
                    if images == top:
                        return hits
        return hits
