"""`index --rebuild`: a fresh index made beside the one it replaces, which stays searchable until it is whole.

The new index is made in `<folder>/rebuild-in-progress` (`folder.REBUILDING`); `IndexStore.swap_in` puts it in
place once the run is complete. The folder's life cycle (made, locked, set aside, put back) is `folder.py`'s.
"""

from __future__ import annotations

from pathlib import Path

from chatbot.core.photo_index.folder import (
    REBUILDING,
    SUPERSEDED,
    IndexAccessError,
    check_index_folder,
    has_index,
    index_files,
    lock_for_writing,
    make_index_folder,
    put_back,
    recorded,
    remove_index_files,
    remove_index_folder,
)
from chatbot.core.photo_index.store import IndexStore
from chatbot.errors import PhotoIndexError


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
            try:
                earlier = IndexStore.open_existing(aside)
            except IndexAccessError:
                raise  # not damage (a full disk, permissions): the stopped rebuild stays, and this run stops
            except PhotoIndexError:
                pass  # a damaged one is set aside, inside `aside`
            else:
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
    store.hold_lock(folder_lock)
    store.superseded = superseded
    return store
