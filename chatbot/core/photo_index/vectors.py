"""The embeddings matrix on disk: one append-only file of float16 rows, each an image's query vectors
(32 x 256 for BLIP-2's checkpoints; the shape is the index's, recorded with it, so smaller models work too).

Row r starts at byte r * row_bytes. Appends write past the committed end and fsync before the
database commits the rows, so a crash leaves at most uncommitted bytes at the end, which the next
append overwrites. Float16 keeps 11 significant bits: a unit vector's similarity is off by at most
about 5e-4, so rankings equal float32 MaxSim except between images closer than that.

Rows no file uses any more stay until the store compacts the matrix (`IndexStore.compact`): `copy_rows` writes
the rows still used, in their order, to `vectors.f16.compact` beside it, which replaces it by a rename.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

QUERIES = 32  # BLIP-2's query tokens: vectors per image (the hub checkpoints')
DIM = 256  # the ITC projection's width (the hub checkpoints')
_CHUNK_ROWS = 256  # images per exact-scan step: 8 MiB of float32, small enough to stay in cache
FILE = "vectors.f16"
COMPACTED = "vectors.f16.compact"  # a compaction's new matrix, until it is renamed to FILE


class VectorFile:
    """The float16 matrix of `rows` committed images, memory-mapped for reading; `shape` (vectors per image,
    their width) is the index's, (32, 256) until the first append says otherwise."""

    def __init__(self, path: Path, rows: int, shape: tuple[int, int] = (QUERIES, DIM)) -> None:
        self.path = path
        self.rows = rows
        self.queries, self.dim = shape
        self._map: np.ndarray | None = None

    @property
    def row_bytes(self) -> int:
        return self.queries * self.dim * 2  # float16

    def has_rows(self, rows: int) -> bool:
        """Whether the file is long enough to hold `rows` images (shorter means damaged)."""
        try:
            return self.path.stat().st_size >= rows * self.row_bytes
        except FileNotFoundError:
            return rows == 0

    @property
    def matrix(self) -> np.ndarray:
        """[rows, queries, dim] float16, read-only; empty when there are no rows."""
        if self._map is None or len(self._map) != self.rows:
            if self.rows == 0:
                self._map = np.zeros((0, self.queries, self.dim), np.float16)
            else:
                self._map = np.memmap(self.path, np.float16, "r", shape=(self.rows, self.queries, self.dim))
        return self._map

    def append(self, vectors: np.ndarray) -> range:
        """Write `vectors` [n, queries, dim] after the committed rows, durably; returns their row numbers.

        The first append into an empty file sets the shape. The caller commits `rows` (and the shape) in
        its database afterwards and then calls `committed(n)`.
        """
        data = np.ascontiguousarray(vectors, dtype=np.float16)
        if self.rows == 0 and data.ndim == 3:
            self.queries, self.dim = data.shape[1:]
            self._map = None
        if data.shape[1:] != (self.queries, self.dim):
            raise ValueError(f"expected [n, {self.queries}, {self.dim}] vectors, got {data.shape}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data.tobytes(), self.rows * self.row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        return range(self.rows, self.rows + len(data))

    def committed(self, added: int) -> None:
        self.rows += added

    def copy_rows(self, rows: np.ndarray, target: Path) -> None:
        """Write the given committed rows, in this order, as a new matrix file `target`, durably (the file and its
        folder fsynced), for a compaction; this file is not changed."""
        matrix = self.matrix
        with open(target, "wb") as handle:
            for start in range(0, len(rows), _CHUNK_ROWS * 4):
                handle.write(np.ascontiguousarray(matrix[rows[start:start + _CHUNK_ROWS * 4]]).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        fsync_folder(target.parent)

    def exact_scores(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """MaxSim of `query` [dim] with every row (or the given rows), in float32: [len(rows)]."""
        matrix = self.matrix
        q = np.asarray(query, np.float32)
        if rows is None:
            out = np.empty(len(matrix), np.float32)
            for start in range(0, len(matrix), _CHUNK_ROWS):
                block = np.asarray(matrix[start:start + _CHUNK_ROWS], np.float32)
                out[start:start + len(block)] = (block @ q).max(axis=1)
            return out
        out = np.empty(len(rows), np.float32)
        for start in range(0, len(rows), _CHUNK_ROWS):
            block = np.asarray(matrix[rows[start:start + _CHUNK_ROWS]], np.float32)
            out[start:start + len(block)] = (block @ q).max(axis=1)
        return out


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (where the system lets a folder be fsynced)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) do not fsync folders; the rename is as durable as they make it
        pass
    finally:
        os.close(fd)
