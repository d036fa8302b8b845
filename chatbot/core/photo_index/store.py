"""The open search index: which files were indexed (SQLite) and their embeddings (a float16 matrix), searched.

One folder holds `index.sqlite` (files: path, size, mtime_ns, sha256; embeddings: sha256 -> matrix row;
meta: the checkpoint that made it and the committed row count), `vectors.f16` (see `vectors.py`) and the
approximate stage's files (see `coarse.py`). Embeddings are keyed by content, so the same bytes under a
new path reuse them. A batch is one transaction whose vectors are fsynced before it commits: a kill -9
loses at most the batch in progress. An index that cannot be read is set aside (its files moved into
`<folder>/damaged-<n>/`), never half-used; the folder itself, its lock and a --rebuild's folders are
`folder.py`'s. docs/search.md says why SQLite + numpy and not LanceDB.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from chatbot.core.photo_index.coarse import CoarseLists, probes_for
from chatbot.core.photo_index.folder import (
    REBUILDING,
    SUPERSEDED,
    check_index_folder,
    has_index,
    index_files,
    index_flag,
    lock_for_writing,
    make_index_folder,
    put_back,
    recorded,
    remove_index_files,
    remove_index_folder,
    set_aside,
)
from chatbot.core.photo_index.vectors import DIM, QUERIES, VectorFile
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

FORMAT = "1"
EXACT_LIMIT = 2_000  # images: below this every search is exact (about 70 ms on 2 cores)
RETRAIN_GROWTH = 4  # the centres are trained again once the index is this many times larger
CANDIDATES = 100  # images the first stage hands to exact re-scoring (300 found no more at 10k or 100k)
NOT_UTF8 = "its name is not valid UTF-8; rename it to index it."  # why a file `storable` refuses is not indexed
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                  sha256 TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS embeddings (sha256 TEXT PRIMARY KEY, row INTEGER NOT NULL UNIQUE);
"""


def storable(path: str) -> bool:
    """Whether the index can hold this path: SQLite text is UTF-8, and a file name that is not valid UTF-8
    comes from `os.fsdecode` with its bytes as lone surrogates, which have no UTF-8 form."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


class IndexStore:
    """An open index folder. `open` checks it; writes go through `add_batch`, `set_path`, `remove_paths`."""

    def __init__(self, folder: Path, db: sqlite3.Connection, checkpoint: str) -> None:
        self.folder = folder
        self.checkpoint = checkpoint
        self._db = db
        shape = (self._meta("shape") or f"{QUERIES}x{DIM}").split("x")
        self.vectors = VectorFile(folder / "vectors.f16", int(self._meta("rows") or 0), (int(shape[0]), int(shape[1])))
        self._coarse = CoarseLists.load(folder)
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
        `create` or `writing`) another run writing to it.
        """
        folder = Path(folder)
        check_index_folder(folder)
        if rebuild:
            remove_index_files(folder)
        if not (folder / "index.sqlite").exists():
            if not create:
                raise PhotoIndexError(f"There is no search index at {visible(folder)} yet.",
                                      f"Build it with `blip2-chat index PATH{index_flag(folder)}` "
                                      "(PATH: your photos folder).")
            make_index_folder(folder)
        writer_lock = lock_for_writing(folder) if create or writing else None
        db: sqlite3.Connection | None = None
        made_by: str | None = None
        try:
            db = sqlite3.connect(folder / "index.sqlite", isolation_level=None, check_same_thread=False)
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
            intact = store._meta("format") == FORMAT and store.vectors.has_rows(store.vectors.rows)
        except (sqlite3.DatabaseError, ValueError):
            intact = False
        if not intact:
            if db is not None:
                db.close()
            if writer_lock is not None:
                writer_lock.close()
            raise set_aside(folder, made_by)
        assert db is not None
        store.checkpoint = str(made_by)
        store._writer_lock = writer_lock
        if checkpoint is not None and made_by != checkpoint:
            store.close()
            raise PhotoIndexError(
                f"The index at {visible(folder)} was made with {visible(made_by)}, not {visible(checkpoint)}.",
                f"Search with `--model {visible(made_by)}`, or index again with this model: "
                f"`blip2-chat index PATH --rebuild{index_flag(folder)}`.")
        return store

    def close(self) -> None:
        """Close the database and let go of the locks (again: nothing happens)."""
        self._db.close()
        for lock in (self._writer_lock, self._folder_lock):
            if lock is not None:
                lock.close()  # closing the file lets go of the lock

    def is_empty(self) -> bool:
        """Whether the index holds no picture at all (a search has nothing to rank)."""
        return self.vectors.rows == 0 or self.count() == 0

    def swap_in(self) -> None:
        """Close this index, made by `open_rebuild`, and put it in place of the index it rebuilds.

        The old index's `index.sqlite` leaves first and the new one arrives last, so a crash half-way leaves
        either index whole or no index (never one's database with the other's vectors); the old files are
        deleted only once the new ones are in place."""
        self._db.close()  # the last connection: SQLite folds the WAL into index.sqlite
        aside, folder = self.folder, self.folder.parent
        try:
            replaced = folder / "replaced-by-rebuild"
            replaced.mkdir(exist_ok=True)
            old = [path.rename(replaced / path.name) for path in index_files(folder)]
            for path in reversed(index_files(aside)):
                path.rename(folder / path.name)
            for path in old:
                path.unlink()
            (aside / "writer.lock").unlink(missing_ok=True)
            for emptied in (replaced, aside):  # each is left when it holds something else (a damaged rebuild)
                with contextlib.suppress(OSError):
                    emptied.rmdir()
        finally:
            self.close()

    # ----- what the index knows

    def count(self) -> int:
        """How many files are indexed."""
        return int(self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def all_states(self) -> dict[str, FileState]:
        """Every indexed file by path (one query: a rescan of 10,000 files asks once, not 10,000 times)."""
        return {row[0]: FileState(*row) for row in self._db.execute("SELECT path, size, mtime_ns, sha256 FROM files")}

    def paths_under(self, root: str) -> list[str]:
        """Indexed paths inside folder `root` (or `root` itself when it is a file)."""
        if not storable(root):
            return []  # nothing under a name the index cannot hold was indexed
        return [row[0] for row in self._db.execute(f"SELECT path FROM files WHERE {_UNDER}", _under(root))]

    def known_sha(self, sha256: str) -> bool:
        return self._db.execute("SELECT 1 FROM embeddings WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def vectors_for(self, shas: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored [32, 256] float32 embeddings of these contents (unknown ones are left out)."""
        rows = {sha: row for sha in shas for (row,) in
                self._db.execute("SELECT row FROM embeddings WHERE sha256 = ?", (sha,))}
        return {sha: np.asarray(self.vectors.matrix[row], np.float32) for sha, row in rows.items()}

    # ----- writing

    def add_batch(self, files: list[FileState], embeddings_by_sha: dict[str, np.ndarray]) -> None:
        """Record `files` and the embeddings of contents not stored yet, as one transaction."""
        new = [sha for sha in dict.fromkeys(embeddings_by_sha) if not self.known_sha(sha)]
        added = self.vectors.append(np.stack([embeddings_by_sha[sha] for sha in new])) if new else range(0)
        with self._transaction():
            self._db.executemany("INSERT INTO embeddings VALUES (?, ?)", zip(new, added, strict=True))
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                                 [(f.path, f.size, f.mtime_ns, f.sha256) for f in files])
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'rows'", (str(self.vectors.rows + len(new)),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('shape', ?)",
                             (f"{self.vectors.queries}x{self.vectors.dim}",))
        self.vectors.committed(len(new))
        if self.superseded is not None and files:  # this rebuild has really started: the stopped one goes now
            remove_index_folder(self.folder / SUPERSEDED)
            self.superseded = None

    def set_path(self, state: FileState) -> None:
        """Record a file whose content is already stored (a renamed copy, or a touched but unchanged file)."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                             (state.path, state.size, state.mtime_ns, state.sha256))

    def remove_paths(self, paths: Iterable[str]) -> None:
        """Forget these files, and the embeddings no remaining file has (their matrix rows go unused)."""
        with self._transaction():
            self._db.executemany("DELETE FROM files WHERE path = ?", ((path,) for path in paths))
            self._db.execute("DELETE FROM embeddings WHERE sha256 NOT IN (SELECT sha256 FROM files)")

    def refresh_approximate(self) -> None:
        """Train the approximate stage once the index passes EXACT_LIMIT (again when it has grown
        RETRAIN_GROWTH times), and file the rows added since. Derived data: safe to lose at any moment."""
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
        which scales with the number of lists). Ties are broken by the order images were added.
        """
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

    # ----- helpers

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def open_rebuild(folder: Path, checkpoint: str) -> IndexStore:
    """A fresh index made with `checkpoint` in `<folder>/rebuild-in-progress`, for `index --rebuild`.

    The index in `folder` is not touched, and stays searchable, until `swap_in` replaces it with this one:
    a model that fails to load, an error or Ctrl+C leave it as it was. A stopped rebuild with the same
    checkpoint is gone on with. One with another checkpoint is moved into `rebuild-in-progress/stopped-rebuild`
    (`store.superseded` says which) and deleted only once this rebuild holds its first pictures: until then
    (its model may not even load) `restore_superseded` puts it back. The returned store also holds
    `folder`'s writer lock, so no other run writes to the index being replaced."""
    check_index_folder(folder)
    make_index_folder(folder)
    folder_lock = lock_for_writing(folder)
    try:
        aside = folder / REBUILDING
        check_index_folder(aside)
        kept = aside / SUPERSEDED
        if has_index(kept):  # a run killed after it moved a stopped rebuild aside
            if recorded(aside)[1] > 0:  # ... once it had pictures of its own: it had really started
                remove_index_folder(kept)
            else:
                put_back(kept, aside)
        superseded: tuple[str, int] | None = None
        if has_index(aside):
            made_by: str | None = None
            with contextlib.suppress(PhotoIndexError):  # a damaged one is set aside, inside `aside`
                earlier = IndexStore.open_existing(aside)
                made_by = earlier.checkpoint
                earlier.close()
            if made_by is None:
                remove_index_files(aside)
            elif made_by != checkpoint:
                superseded = (made_by, recorded(aside)[1])
                kept.mkdir(exist_ok=True)
                for path in reversed(index_files(aside)):  # index.sqlite last: kept is whole once it is there
                    path.rename(kept / path.name)
        try:
            store = IndexStore.open(aside, checkpoint, create=True)
        except BaseException:
            if superseded is not None:
                put_back(kept, aside)
            raise
    except BaseException:
        if folder_lock is not None:
            folder_lock.close()
        raise
    store._folder_lock = folder_lock
    store.superseded = superseded
    return store


def recorded_under(folder: Path, root: str) -> int:
    """How many files the index in `folder` records at or under `root` (an absolute path, as `index` records
    them), read as `folder.recorded` reads: without writing, locking or setting aside anything (0 when it cannot
    be read)."""
    path = folder / "index.sqlite"
    if not storable(root) or not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, check_same_thread=False)) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM files WHERE {_UNDER}", _under(root)).fetchone()[0])
    except (sqlite3.Error, ValueError):
        return 0


# a file recorded at `root`, or inside it as a folder: its path begins with `root/`. Compared exactly, not with
# LIKE, which ignores the case of ASCII letters: /p/Photos is not /p/photos on most file systems.
_UNDER = "path = ? OR substr(path, 1, ?) = ?"


def _under(root: str) -> tuple[str, int, str]:
    """The parameters of `_UNDER` for `root` (SQLite's `substr` and `length` count characters, as Python does)."""
    prefix = root.rstrip("/\\") + "/"
    return root, len(prefix), prefix
