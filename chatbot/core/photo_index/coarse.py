"""The approximate first stage: every stored vector filed under its nearest of K centres (an IVF).

A query looks at the centres nearest to it, scores only the vectors filed there, and keeps the
images whose best such vector is highest; the store then re-scores those candidates exactly. Real
embeddings gather around concepts, so the few nearest lists hold the best matches; on structureless
random vectors the lists help little (docs/search.md gives both figures).

Files: `centres.npy` (K x 256 float32, unit rows); `lists-<fingerprint>.u16`, one uint16 list number
per stored vector in row order; and `inverted-<fingerprint>.npy`, the same filing turned around so a
search reads only the lists it probes: K + 1 offsets, then the vector numbers (row * 32 + query) list
by list, ascending within each. The inverted file covers the first rows of the lists file (it is
rebuilt once the rows filed after it pass an eighth of it, and whenever it is missing or does not
match); a search scans the list numbers of the rows after it. The fingerprint ties both files to their
centres, so a crash between writing new centres and new lists can never pair them wrongly: files that
do not match are rebuilt. Every file is written to a temporary name, fsynced and renamed.

A compaction renumbers the rows: the lists and inverted files go before its renumbering commits, and the
rows' list numbers are written again in the new order afterwards (`kept_lists`, `refile`), with the same
centres, so a search finds what it found before.
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
SCORED = 16_384  # vectors a search scores by default: probes = this / the average list length (see probes_for)
MIN_PROBES = 16  # never fewer lists than this


def centre_count(rows: int, queries: int = QUERIES) -> int:
    """K: about 2 sqrt(vectors), between 64 and 4096: short lists, so a search scores few vectors
    (numpy's float16-to-float32 cast, ~4 ns a number here, is what a search spends its time on)."""
    return int(np.clip(2 * np.sqrt(rows * queries), 64, 4096))


def probes_for(rows: int, lists: int, queries: int = QUERIES) -> int:
    """The default number of lists a search probes: enough to hold about SCORED vectors on average.

    With K = 2 sqrt(vectors) a list holds sqrt(vectors) / 2 of them, so small indexes (coarse lists, few
    vectors each) probe more lists and large ones fewer, for about the same work: 58 of 1,131 lists at
    10,000 images, 19 of 3,577 at 100,000 (docs/search.md has recall and time for both)."""
    average = max(rows * queries / max(lists, 1), 1.0)
    return int(np.clip(np.ceil(SCORED / average), min(MIN_PROBES, lists), lists))


class CoarseLists:
    """Centres and the list number of every vector of the first `len(lists) // 32` rows."""

    def __init__(self, folder: Path, centres: np.ndarray) -> None:
        self.folder = folder
        self.centres = centres
        fingerprint = _fingerprint(centres)
        self.lists_path = folder / f"lists-{fingerprint}.u16"
        self.inverted_path = folder / f"inverted-{fingerprint}.npy"

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
        made._write_inverted(len(flat) // vectors.queries, vectors.queries)
        _write_new(folder / "centres.npy", _npy_bytes(centres))
        for old in [*folder.glob("lists-*.u16"), *folder.glob("inverted-*.npy")]:
            if old not in (made.lists_path, made.inverted_path):
                old.unlink(missing_ok=True)
        return made

    def assigned_rows(self, queries: int = QUERIES) -> int:
        try:
            return self.lists_path.stat().st_size // (2 * queries)
        except FileNotFoundError:
            return 0

    def extend(self, vectors: VectorFile) -> None:
        """File the rows after `assigned_rows()` (appended since), so searches need not scan them exactly;
        rebuild the inverted file when it is missing or the rows filed after it pass an eighth of it."""
        start = self.assigned_rows(vectors.queries)
        if start < vectors.rows:
            self._file_rows(vectors, start)
        assigned = min(self.assigned_rows(vectors.queries), vectors.rows)
        covered = self._inverted(assigned, vectors.queries)[0]
        if assigned - covered > covered // 8:  # also when there is none (covered 0)
            self._write_inverted(assigned, vectors.queries)

    def _file_rows(self, vectors: VectorFile, start: int) -> None:
        flat = vectors.matrix[start:].reshape(-1, vectors.dim)
        lists = np.concatenate([_nearest(np.asarray(flat[s:s + _ASSIGN_STEP], np.float32), self.centres)
                                for s in range(0, len(flat), _ASSIGN_STEP)]).astype(np.uint16)
        fd = os.open(self.lists_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, lists.tobytes(), start * vectors.queries * 2)  # whole rows only: a torn tail is rewritten
            os.fsync(fd)
        finally:
            os.close(fd)

    def kept_lists(self, live: np.ndarray, queries: int = QUERIES) -> np.ndarray:
        """The list numbers of the filed rows among `live` (ascending row numbers), in that order: the lists
        file of the matrix a compaction makes of those rows (they are its first rows, as `live` is sorted)."""
        assigned = self.assigned_rows(queries)
        filed = live[live < assigned]
        if not len(filed):
            return np.zeros(0, np.uint16)
        lists = np.fromfile(self.lists_path, np.uint16, count=assigned * queries).reshape(assigned, queries)
        return np.ascontiguousarray(lists[filed]).reshape(-1)

    def unfile(self) -> None:
        """Delete the lists and inverted files (the centres stay): the rows are about to be renumbered. Until
        `refile`, searches score every row exactly."""
        self.inverted_path.unlink(missing_ok=True)
        self.lists_path.unlink(missing_ok=True)

    def refile(self, lists: np.ndarray, vectors: VectorFile) -> None:
        """Write `lists` (from `kept_lists`) as the filing of the renumbered rows, then file the rest (`extend`)."""
        _write_new(self.lists_path, np.ascontiguousarray(lists, np.uint16).tobytes())
        self.extend(vectors)

    def candidates(self, vectors: VectorFile, query: np.ndarray, probes: int, keep: int) -> np.ndarray:
        """Rows of the `keep` images whose best vector in the `probes` nearest lists scores highest.

        Rows not yet filed (appended after the last `extend`) are always candidates.
        """
        q = np.asarray(query, np.float32)
        per_row = vectors.queries
        assigned = min(self.assigned_rows(per_row), vectors.rows)
        near = np.argpartition(-(self.centres @ q), min(probes, len(self.centres) - 1))[:probes]
        covered, offsets, numbers = self._inverted(assigned, per_row)
        parts = [numbers[offsets[i]:offsets[i + 1]] for i in near.tolist()] if covered else []
        if assigned > covered:  # filed after the inverted file was written: scan their list numbers
            wanted = np.zeros(len(self.centres), bool)
            wanted[near] = True
            tail = np.memmap(self.lists_path, np.uint16, "r", offset=2 * covered * per_row,
                             shape=((assigned - covered) * per_row,))
            parts.append(np.flatnonzero(wanted[tail]) + covered * per_row)
        hit = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        scores = np.asarray(vectors.matrix.reshape(-1, vectors.dim)[hit], np.float32) @ q
        rows = hit // vectors.queries
        starts = np.flatnonzero(np.diff(rows, prepend=-1))  # `hit` is sorted, so each row's vectors are together
        best = np.maximum.reduceat(scores, starts) if len(starts) else scores[:0]
        rows = rows[starts]
        if len(rows) > keep:
            rows = rows[np.argpartition(-best, keep - 1)[:keep]]
        return np.concatenate([np.sort(rows), np.arange(assigned, vectors.rows)])

    def _inverted(self, assigned: int, per_row: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(rows covered, K + 1 offsets, vector numbers) of the inverted file; (0, ...) when it is missing,
        unreadable, or covers more rows than the lists file holds (then it is not this filing's)."""
        nothing = (0, np.zeros(1, np.int64), np.zeros(0, np.int64))
        try:
            data = np.load(self.inverted_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return nothing
        k = len(self.centres)
        if data.ndim != 1 or data.dtype.kind != "u" or len(data) <= k:
            return nothing
        offsets, numbers = data[:k + 1], data[k + 1:]
        covered = len(numbers) // per_row
        if covered > assigned or len(numbers) % per_row or int(offsets[-1]) != len(numbers):
            return nothing
        return covered, np.asarray(offsets, np.int64), numbers

    def _write_inverted(self, rows: int, per_row: int) -> None:
        """Save the filing of the first `rows` rows list by list (a stable sort of their list numbers)."""
        lists = np.fromfile(self.lists_path, np.uint16, count=rows * per_row)
        numbers = np.argsort(lists, kind="stable").astype(np.uint32 if len(lists) < 2**32 else np.uint64)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=len(self.centres)))])
        _write_new(self.inverted_path, _npy_bytes(np.concatenate([offsets.astype(numbers.dtype), numbers])))


def remove_approximate(folder: Path) -> None:
    """Delete the approximate stage's files in `folder` (lists first: centres without lists are filed again)."""
    for path in [*folder.glob("inverted-*.npy"), *folder.glob("lists-*.u16"), folder / "centres.npy"]:
        path.unlink(missing_ok=True)


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
