"""The approximate first stage: every stored vector filed under its nearest of K centres (an IVF).

A query looks at the centres nearest to it, scores only the vectors filed there, and keeps the
images whose best such vector is highest; the store then re-scores those candidates exactly. Real
embeddings gather around concepts, so the few nearest lists hold the best matches; on structureless
random vectors the lists help little (docs/search.md gives both figures).

Files: `centres.npy` (K x 256 float32, unit rows) and `lists-<fingerprint>.u16`, one uint16 list number
per stored vector in row order. The fingerprint ties the lists to their centres, so a crash between
writing new centres and new lists can never pair them wrongly: lists that do not match are rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from chatbot.core.photo_index.vectors import QUERIES, VectorFile

_SAMPLE_PER_CENTRE = 20  # training vectors per centre
_ROUNDS = 8  # k-means rounds: enough for the lists to settle; more changes recall little
_ASSIGN_STEP = 16384  # vectors per assignment step


def centre_count(rows: int, queries: int = QUERIES) -> int:
    """K: about 2 sqrt(vectors), between 64 and 4096: short lists, so a search scores few vectors
    (numpy's float16-to-float32 cast, ~4 ns a number here, is what a search spends its time on)."""
    return int(np.clip(2 * np.sqrt(rows * queries), 64, 4096))


class CoarseLists:
    """Centres and the list number of every vector of the first `len(lists) // 32` rows."""

    def __init__(self, folder: Path, centres: np.ndarray) -> None:
        self.folder = folder
        self.centres = centres
        self.lists_path = folder / f"lists-{_fingerprint(centres)}.u16"

    @classmethod
    def load(cls, folder: Path) -> CoarseLists | None:
        """The saved centres, or None when there are none (or they cannot be read: they are rebuilt)."""
        try:
            centres = np.load(folder / "centres.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if centres.ndim != 2 or centres.dtype != np.float32:
            return None
        return cls(folder, centres)

    @classmethod
    def train(cls, folder: Path, vectors: VectorFile, seed: int = 0) -> CoarseLists:
        """Spherical k-means on a sample of the stored vectors; saved with every row assigned, crash-safely."""
        flat = vectors.matrix.reshape(-1, vectors.dim)
        k = centre_count(vectors.rows, vectors.queries)
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(flat), min(len(flat), k * _SAMPLE_PER_CENTRE), replace=False))
        sample = np.asarray(flat[picked], np.float32)
        centres = sample[rng.choice(len(sample), k, replace=False)].copy()
        for _ in range(_ROUNDS):
            nearest = _nearest(sample, centres)
            sums = np.zeros_like(centres)
            np.add.at(sums, nearest, sample)
            norms = np.linalg.norm(sums, axis=1)
            filled = norms > 0  # an empty list keeps its old centre
            centres[filled] = sums[filled] / norms[filled, None]
        made = cls(folder, centres)
        lists = np.concatenate([_nearest(np.asarray(flat[s:s + _ASSIGN_STEP], np.float32), centres)
                                for s in range(0, len(flat), _ASSIGN_STEP)]).astype(np.uint16)
        _write_new(made.lists_path, lists.tobytes())  # lists first: centres without them are rebuilt
        _write_new(folder / "centres.npy", _npy_bytes(centres))
        for old in folder.glob("lists-*.u16"):
            if old != made.lists_path:
                old.unlink(missing_ok=True)
        return made

    def assigned_rows(self, queries: int = QUERIES) -> int:
        try:
            return self.lists_path.stat().st_size // (2 * queries)
        except FileNotFoundError:
            return 0

    def extend(self, vectors: VectorFile) -> None:
        """File the rows after `assigned_rows()` (appended since), so searches need not scan them exactly."""
        start = self.assigned_rows(vectors.queries)
        if start >= vectors.rows:
            return
        flat = vectors.matrix[start:].reshape(-1, vectors.dim)
        lists = np.concatenate([_nearest(np.asarray(flat[s:s + _ASSIGN_STEP], np.float32), self.centres)
                                for s in range(0, len(flat), _ASSIGN_STEP)]).astype(np.uint16)
        fd = os.open(self.lists_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, lists.tobytes(), start * vectors.queries * 2)  # whole rows only: a torn tail is rewritten
            os.fsync(fd)
        finally:
            os.close(fd)

    def candidates(self, vectors: VectorFile, query: np.ndarray, probes: int, keep: int) -> np.ndarray:
        """Rows of the `keep` images whose best vector in the `probes` nearest lists scores highest.

        Rows not yet filed (appended after the last `extend`) are always candidates.
        """
        q = np.asarray(query, np.float32)
        assigned = min(self.assigned_rows(vectors.queries), vectors.rows)
        near = np.argpartition(-(self.centres @ q), min(probes, len(self.centres) - 1))[:probes]
        wanted = np.zeros(len(self.centres), bool)
        wanted[near] = True
        lists = np.memmap(self.lists_path, np.uint16, "r", shape=(assigned * vectors.queries,)) if assigned else \
            np.zeros(0, np.uint16)
        hit = np.flatnonzero(wanted[lists])
        scores = np.asarray(vectors.matrix.reshape(-1, vectors.dim)[hit], np.float32) @ q
        rows = hit // vectors.queries
        starts = np.flatnonzero(np.diff(rows, prepend=-1))  # `hit` is sorted, so each row's vectors are together
        best = np.maximum.reduceat(scores, starts) if len(starts) else scores[:0]
        rows = rows[starts]
        if len(rows) > keep:
            rows = rows[np.argpartition(-best, keep - 1)[:keep]]
        return np.concatenate([np.sort(rows), np.arange(assigned, vectors.rows)])


def _nearest(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.empty(len(vectors), np.int64)
    for start in range(0, len(vectors), 8192):
        out[start:start + 8192] = (vectors[start:start + 8192] @ centres.T).argmax(axis=1)
    return out


def _fingerprint(centres: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(centres).tobytes()).hexdigest()[:16]


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_new(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a temporary file, fsync, rename."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
