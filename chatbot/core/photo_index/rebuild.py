"""`index --rebuild`: a fresh index made beside the one it replaces, which stays searchable until it is whole.

The new index is made in `<folder>/rebuild-in-progress` (`index_files.REBUILDING`); `IndexStore.swap_in` puts it
in place once the run is complete (`swap.py`). The folder's life cycle (made, locked, set aside, put back) is
`folder.py`'s. A rebuild records what it indexes (`RebuildPlan`: its paths, and -r) in
`rebuild-in-progress/rebuild.json`, so the command said to go on with a stopped one is that rebuild's own, and a
rebuild of other paths is refused rather than mixed into it.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.photo_index.access_errors import IndexAccessError, access_error
from chatbot.core.photo_index.folder import (
    check_index_folder,
    index_flag,
    lock_for_writing,
    make_index_folder,
    put_back,
    remove_index_folder,
)
from chatbot.core.photo_index.index_files import (
    REBUILD_RECORD,
    REBUILDING,
    SUPERSEDED,
    has_index,
    index_files,
    recorded,
    remove_index_files,
    write_atomically,
)
from chatbot.core.photo_index.store import IndexStore
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible

_MOST_RECORD_BYTES = 1 << 20  # a record longer than this was not written by a rebuild (or is not worth reading)


@dataclass(frozen=True)
class RebuildPlan:
    """What a rebuild indexes: its paths (absolute, as `index` records them) and whether sub-folders count (-r)."""

    paths: tuple[str, ...]
    recursive: bool = False

    def same_as(self, other: RebuildPlan) -> bool:
        """Whether both index the same pictures (the paths' order does not matter)."""
        return set(self.paths) == set(other.paths) and self.recursive == other.recursive

    def holds(self, path: str) -> bool:
        """Whether a run of this plan looks at `path` (and so removes it from the index when it is gone)."""
        for root in self.paths:
            inside = path.startswith(root.rstrip(os.sep) + os.sep)
            if path == root or (inside and (self.recursive or os.path.dirname(path) == root)):
                return True
        return False


def read_plan(aside: Path) -> RebuildPlan | None:
    """The plan recorded in the rebuild folder `aside`, or None when there is none or it is not one a rebuild
    wrote (a file on disk: damaged, edited, from an older version): its paths are then not known."""
    try:
        with open(aside / REBUILD_RECORD, "rb") as file:
            record = json.loads(file.read(_MOST_RECORD_BYTES + 1))
    except (OSError, ValueError):  # ValueError: not UTF-8 (UnicodeDecodeError), not JSON, cut short
        return None
    if not isinstance(record, dict):
        return None
    paths, recursive = record.get("paths"), record.get("recursive")
    if not isinstance(paths, list) or not paths or not isinstance(recursive, bool):
        return None
    if not all(isinstance(path, str) and os.path.isabs(path) and "\0" not in path for path in paths):
        return None
    return RebuildPlan(tuple(paths), recursive)


def write_plan(aside: Path, plan: RebuildPlan) -> None:
    """Record `plan` in the rebuild folder `aside`, whole or not at all."""
    write_atomically(aside / REBUILD_RECORD, json.dumps({"paths": list(plan.paths), "recursive": plan.recursive}))


def rebuild_command(checkpoint: str, plan: RebuildPlan | None, folder: Path) -> str:
    """`blip2-chat index PATH... [-r] --rebuild --model M [--index DIR]`, which goes on with a rebuild of `plan`
    (None: its paths are not known, and PATH... stands for them)."""
    words = ["PATH..."] if plan is None else [quoted(path) for path in plan.paths] + (["-r"] if plan.recursive else [])
    return f"blip2-chat index {' '.join(words)} --rebuild --model {quoted(checkpoint)}{index_flag(folder)}"


def going_on_words(checkpoint: str, plan: RebuildPlan | None, folder: Path, it: str = "it", *,
                   first: bool = False) -> str:
    """'to go on with it: blip2-chat index ...' (`it`: how the rebuild is named; `first`: capitalised), or, its
    paths not known, the same with PATH... and what to give for them."""
    command = rebuild_command(checkpoint, plan, folder)
    if plan is None:
        words = f"to go on with {it}, give the paths it was started with (they were not recorded): {command}"
    else:
        words = f"to go on with {it}: {command}"
    return _first_up(words) if first else words


def quoted(text: str) -> str:
    """`text` for a command line: shell-quoted, or repr()'d when it holds what a terminal must not show."""
    shown = visible(text)
    return shlex.quote(shown) if shown == text else repr(shown)


def open_rebuild(folder: Path, checkpoint: str, plan: RebuildPlan | None = None) -> IndexStore:
    """A fresh index made with `checkpoint` in `<folder>/rebuild-in-progress`, for `index --rebuild` of `plan`
    (recorded there; None: a caller that indexes nothing by paths, and records nothing).

    The index in `folder` is not touched, and stays searchable, until `swap_in` replaces it with this one:
    a model that fails to load, an error or Ctrl+C leave it as it was. A stopped rebuild with the same
    checkpoint is gone on with when it was started with the same paths and -r (or, those not recorded, when
    every picture it holds is one this run looks at); else PhotoIndexError names both ways forward, and nothing
    changes. One with another checkpoint is moved into `rebuild-in-progress/stopped-rebuild`
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
                try:
                    if plan is not None and made_by == checkpoint:
                        _check_going_on(folder, earlier, plan)
                finally:
                    earlier.close()
            if made_by is None:
                remove_index_files(aside)
            elif made_by != checkpoint:
                superseded = (made_by, recorded(aside)[1])
                kept.mkdir(exist_ok=True)
                if (aside / REBUILD_RECORD).exists():
                    (aside / REBUILD_RECORD).rename(kept / REBUILD_RECORD)
                for path in reversed(index_files(aside)):  # index.sqlite last: kept is whole once it is there
                    path.rename(kept / path.name)
        try:
            store = IndexStore.open(aside, checkpoint, create=True)
        except BaseException:
            if superseded is not None:
                put_back(kept, aside)
            raise
        if plan is not None:
            try:
                write_plan(aside, plan)
            except OSError as error:
                store.close()
                raise access_error(aside, error, "written") from None
    except BaseException:
        if folder_lock is not None:
            folder_lock.close()
        raise
    store.hold_lock(folder_lock)
    store.superseded = superseded
    return store


def _check_going_on(folder: Path, earlier: IndexStore, plan: RebuildPlan) -> None:
    """PhotoIndexError when the stopped rebuild `earlier` (of this checkpoint) indexes other pictures than `plan`:
    going on with it would mix the two. Its own plan decides; without one, the pictures it holds."""
    started = read_plan(earlier.folder)
    if started is not None and started.same_as(plan):
        return
    if started is None and all(plan.holds(path) for path in earlier.all_states()):
        return  # going on gives what a fresh rebuild of these paths gives: all it holds is looked at again
    pictures = earlier.count()
    why = ("it was started with other paths" if started is not None else
           "the paths it was started with were not recorded, and it holds pictures these paths do not")
    raise PhotoIndexError(
        f"A rebuild of this index with {visible(earlier.checkpoint)} was stopped before it was complete "
        f"({pictures} picture{'' if pictures == 1 else 's'} so far), and {why}, so going on with it here would "
        "mix the two.",
        f"{going_on_words(earlier.checkpoint, started, folder, first=True)}; or, to start afresh with these "
        f"paths, delete it first (rm -r -- {quoted(str(earlier.folder))}) and run this again.")


def _first_up(text: str) -> str:
    return text[:1].upper() + text[1:]
