"""The indexing run: bring an index up to date with folders of images, incrementally.

Unchanged files (same path, size and mtime) are not opened. A changed or new file is hashed first:
content the index already holds (a renamed or copied file) reuses its embeddings without being decoded
or embedded. Only new content is decoded and embedded, `batch_size` at a time, and each batch is one
transaction, so Ctrl+C, `cancel` or a kill -9 keep every finished batch. Unreadable files, and files whose
names are not valid UTF-8 (the index cannot hold them), become noted failures and the run goes on. Files
gone from the given roots leave the index. A run that was not stopped ends with `IndexStore.compact`: the
embeddings no file has any more leave, and the matrix gives their space back once they are most of it.

The counts, by path and bytes: `added` and `updated` were embedded (a new path; a known path with new bytes);
`reused` are new paths, or known paths with new bytes, whose bytes the index already held (a renamed or copied
file: not embedded); `unchanged` are known paths with the bytes they had, whether not opened (same size and
time) or hashed because only their time changed (`touched`, counted in `unchanged` too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from chatbot.core.photo_index.files import Found, FoundFile, find_image_files
from chatbot.core.photo_index.recorded_paths import NOT_UTF8, storable
from chatbot.core.photo_index.store import FileState, IndexStore
from chatbot.errors import ImageError
from chatbot.image_files import file_sha256
from chatbot.images import LoadedImage, load_image

Embed = Callable[[list[LoadedImage]], np.ndarray]  # images -> float32 [n, 32, 256], normalised


class FileReader(Protocol):
    """How the run reads the files it must look at: on this machine, or a Ray run's results (chatbot.cluster)."""

    def start(self, paths: list[str]) -> None:
        """Told once, before the first batch, every path that will be read, in order."""

    def sha256(self, path: str) -> str:
        """The file's sha256 ("" when it cannot be read: `load` then says why)."""

    def load(self, path: str) -> LoadedImage:
        """The decoded image; ImageError when it cannot be used."""


class LocalFiles:
    """Reading on this machine: hash, then decode only what is new."""

    def start(self, paths: list[str]) -> None:
        pass

    def sha256(self, path: str) -> str:
        return file_sha256(path)

    def load(self, path: str) -> LoadedImage:
        return load_image(path)


@dataclass
class IndexSummary:
    """How a run went."""

    added: int = 0  # new paths with bytes the index did not hold (embedded)
    updated: int = 0  # known paths whose bytes changed to ones the index did not hold (embedded)
    reused: int = 0  # new paths, or known paths with new bytes, whose bytes the index held already (not embedded)
    unchanged: int = 0  # known paths with the same bytes: same size and mtime (not opened), or `touched`
    touched: int = 0  # of `unchanged`: a new mtime (or size) but the same bytes (hashed; the new time recorded)
    removed: int = 0  # gone from the given roots, or no longer readable
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    cancelled: bool = False
    freed_bytes: int = 0  # given back to the disk by the compaction at the end (0: none was needed)

    def sentence(self) -> str:
        touched = f" ({self.touched} of them touched, same bytes)" if self.touched else ""
        stopped = " Stopped early; run it again to go on." if self.cancelled else ""
        freed = f" {freed_words(self.freed_bytes)}" if self.freed_bytes else ""
        return (f"{self.added} added, {self.updated} updated, {self.reused} reused, {self.unchanged} unchanged"
                f"{touched}, {self.removed} removed, {len(self.failed)} failed in {self.seconds:.1f} s."
                f"{freed}{stopped}")


def freed_words(count: int) -> str:
    """'The index gave back 41 MB of disk space.': the one sentence for what a compaction freed, said after an
    indexing run's counts and after `index --forget`."""
    return f"The index gave back {size_words(count)} of disk space."


def size_words(count: int) -> str:
    """'41 MB', '2.5 MB', '640 KB' (decimal units, as `ls -h --si` and file managers say them)."""
    for unit, size in (("GB", 10**9), ("MB", 10**6)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if count < 10 * size else f"{count / size:.0f} {unit}"
    return f"{max(round(count / 1000), 1)} KB"


def update_index(
    store: IndexStore,
    roots: list[Path],
    *,
    recursive: bool,
    embed: Embed,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    reader: FileReader | None = None,
    found: Found | None = None,
) -> IndexSummary:
    """Index what `roots` hold now; returns the counts. A Ctrl+C (KeyboardInterrupt) between or during batches
    goes on up with `finished`: the counts of the batches the index holds, marked cancelled.

    Args:
        store: the open index (made with `create=True`).
        roots: files and folders; folders' image files are indexed (sub-folders with `recursive`).
        embed: the model's image side; called only for content the index does not hold.
        batch_size: images per `embed` call and per transaction.
        on_progress: called with (files done, new or changed files to look at): once with 0 before the
            first batch, then after each batch (never when nothing changed).
        cancel: asked between batches; True stops the run (finished batches are kept).
        reader: hashes and decodes the new or changed files (default: here, `LocalFiles`).
        found: what `find_image_files(roots, recursive)` returned, when the caller looked already.
    """
    started = time.monotonic()
    summary = IndexSummary()
    found = found if found is not None else find_image_files(roots, recursive)
    summary.failed += found.unreadable
    summary.failed += [(file.path, NOT_UTF8) for file in found.files if not storable(file.path)]
    files = [file for file in found.files if storable(file.path)]
    known = store.all_states()
    here = {file.path for file in files}
    gone = [path for root in found.roots for path in store.paths_under(root)
            if path not in here and (recursive or os.path.dirname(path) == root or path == root)]
    todo = [file for file in files if not _unchanged(known.get(file.path), file)]
    summary.unchanged = len(files) - len(todo)
    reader = reader or LocalFiles()
    reader.start([file.path for file in todo])
    if on_progress is not None and todo:
        on_progress(0, len(todo))
    finished = replace(summary, failed=list(summary.failed))  # the counts of the batches in the index
    try:
        for start in range(0, len(todo), batch_size):
            if cancel is not None and cancel():
                summary.cancelled = True
                break
            _index_batch(store, todo[start:start + batch_size], known, embed, summary, reader)
            finished = replace(summary, failed=list(summary.failed))
            if on_progress is not None:
                on_progress(min(start + batch_size, len(todo)), len(todo))
    except KeyboardInterrupt as stop:  # Ctrl+C: the caller may say what the finished batches did
        stop.finished = replace(finished, seconds=time.monotonic() - started, cancelled=True)  # type: ignore[attr-defined]
        raise
    if gone:  # after the new paths are in, so moved files reuse the embeddings of their old paths
        store.remove_paths(gone)
        summary.removed += len(gone)
    if not summary.cancelled:
        compaction = store.compact()
        summary.freed_bytes = compaction.freed if compaction is not None else 0
        store.refresh_approximate()
    summary.seconds = time.monotonic() - started
    return summary


def _unchanged(state: FileState | None, file: FoundFile) -> bool:
    return state is not None and state.size == file.size and state.mtime_ns == file.mtime_ns


def _index_batch(store: IndexStore, batch: list[FoundFile], known: dict[str, FileState], embed: Embed,
                 summary: IndexSummary, reader: FileReader) -> None:
    """Hash, reuse or decode and embed one batch, then record it in one transaction."""
    states: list[FileState] = []
    loaded: list[LoadedImage] = []
    failed: list[str] = []
    for file in batch:
        was_known = file.path in known
        sha = reader.sha256(file.path)
        if sha and (store.known_sha(sha) or any(image.sha256 == sha for image in loaded)):
            states.append(FileState(file.path, file.size, file.mtime_ns, sha))
            if was_known and known[file.path].sha256 == sha:  # touched: a new time, the same bytes
                summary.unchanged += 1
                summary.touched += 1
            else:
                summary.reused += 1
            continue
        try:
            image = reader.load(file.path)
        except ImageError as error:
            summary.failed.append((file.path, str(error)))
            if was_known:
                failed.append(file.path)
            continue
        loaded.append(image)
        states.append(FileState(file.path, file.size, file.mtime_ns, image.sha256))
        if was_known:
            summary.updated += 1
        else:
            summary.added += 1
    vectors = embed(loaded) if loaded else np.zeros((0, 32, 256), np.float32)
    if len(vectors) != len(loaded):
        raise ValueError(f"embed returned {len(vectors)} embeddings for {len(loaded)} images")
    store.add_batch(states, {image.sha256: vector for image, vector in zip(loaded, vectors, strict=True)})
    if failed:
        store.remove_paths(failed)
        summary.removed += len(failed)
