"""Forgetting pictures on request: `index --forget PATH...` takes out of the index every file recorded at or
under each PATH (a folder gone for good: deleted, moved elsewhere, a drive given away), without looking at any
file or loading a model.

Nothing is forgotten by itself: a missing file may be on a drive that is only unplugged, so `index` keeps what
it cannot see under paths it was not given and `search` lists such results as gone, until the user asks. A
stopped rebuild waiting beside the index forgets the same paths, so going on with it does not bring them back.
The embeddings no remaining file uses leave as they do when `index` finds files deleted
(`IndexStore.remove_paths`), and, as at the end of an `index` run, the matrix gives their rows' space back once
they are most of it (`IndexStore.compact`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.photo_index.access_errors import IndexAccessError
from chatbot.core.photo_index.folder import check_index_folder
from chatbot.core.photo_index.index_files import REBUILDING, has_index
from chatbot.core.photo_index.store import IndexStore
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible


def recorded_form(raw: str) -> str:
    """PATH as `index` records the files it names: `~` expanded, absolute, normalised (`..`, `.` and trailing
    slashes gone), links not resolved (`chatbot.image_files.find_images`)."""
    return os.path.abspath(os.path.expanduser(raw))


@dataclass(frozen=True)
class ForgottenPath:
    """One PATH given: as the index records paths, and how many files recorded at or under it were forgotten."""

    path: str
    forgotten: int
    file: bool = False  # what was forgotten is one file recorded at PATH itself (not inside a folder PATH)


@dataclass(frozen=True)
class Forgotten:
    """What `forget_paths` did."""

    folder: Path  # the index folder
    checkpoint: str  # the model that made the index
    paths: list[ForgottenPath]  # in the order given, each once
    forgotten: int  # files forgotten in all (a file under two PATHs given counts once)
    in_index: int  # of them, files the index held
    in_rebuild: int  # ... and files a stopped rebuild waiting beside the index held (0: none waits)
    pictures: int  # files the index holds now
    freed_bytes: int = 0  # given back to the disk by compacting the index (and the stopped rebuild)


def _freed(store: IndexStore) -> int:
    """Compact `store` when its unused rows are most of it; the bytes given back."""
    compaction = store.compact()
    return compaction.freed if compaction is not None else 0


def forget_paths(folder: Path, paths: Sequence[str]) -> Forgotten:
    """Forget every file recorded at or under each of `paths` in the index in `folder` (and in a stopped rebuild
    waiting beside it), holding the index's writer lock; no file on disk is touched.

    Raises:
        PhotoIndexError: no index in `folder`, a damaged one (set aside, as every command does), or another run
            writing to it.
    """
    check_index_folder(folder)
    if not has_index(folder):
        raise PhotoIndexError(f"There is no search index at {visible(folder)}, so there is nothing to forget.",
                              "Give --index the folder of the index that holds the pictures.")
    roots = list(dict.fromkeys(recorded_form(raw) for raw in paths))
    store = IndexStore.open(folder, None, create=False, writing=True)  # a rebuild holds this lock too
    rebuild: IndexStore | None = None
    try:
        aside = folder / REBUILDING
        if has_index(aside):
            try:
                rebuild = IndexStore.open(aside, None, create=False, writing=True)
            except IndexAccessError:  # not damage (a full disk, permissions): said, nothing skipped quietly
                raise
            except PhotoIndexError:  # a damaged one is set aside inside it, as a rebuild does
                pass
        found: list[ForgottenPath] = []
        here: set[str] = set()
        there: set[str] = set()
        for root in roots:
            mine = set(store.paths_under(root))
            waiting = set(rebuild.paths_under(root)) if rebuild is not None else set()
            both = mine | waiting
            found.append(ForgottenPath(root, len(both), file=both == {root}))
            here |= mine
            there |= waiting
        freed = 0
        if here:
            store.remove_paths(sorted(here))
            freed += _freed(store)
        if rebuild is not None and there:
            rebuild.remove_paths(sorted(there))
            freed += _freed(rebuild)
        return Forgotten(folder, store.checkpoint, found, len(here | there), len(here), len(there), store.count(),
                         freed)
    finally:
        if rebuild is not None:
            rebuild.close()
        store.close()
