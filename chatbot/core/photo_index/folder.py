"""The index folder and its life cycle: made, locked for one writer, set aside when damaged, rebuilt beside the
index it replaces, and put back when a rebuild is stopped.

An index is its own files in one folder (`index_files.py`); --index may name a folder that holds other things too,
so only those files are ever moved or deleted. One run writes at a time (an advisory lock on `writer.lock`). A
damaged index's files move into `<folder>/damaged-<n>/`, never half-used. A --rebuild makes its index in
`rebuild-in-progress/` while the old one stays searchable, and is swapped in when complete (`swap.py`); a stopped
rebuild of another checkpoint waits in `rebuild-in-progress/stopped-rebuild/` until the new one holds pictures, and
is put back if it never does. Files move with `index.sqlite` leaving first and arriving last, so a crash leaves an
index whole or none, never one's database with another's vectors. Only damage sets an index aside: a full disk,
missing permissions, an I/O error or a lock get one sentence saying which (`access_errors.IndexAccessError`), and
nothing moves. The open index itself is `store.IndexStore`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sqlite3
from pathlib import Path
from typing import IO

from chatbot.core.photo_index.index_files import (
    FILE_NAMES,
    REBUILD_RECORD,
    REBUILDING,
    SUPERSEDED,
    derived_files,
    has_index,
    index_files,
    recorded,
    remove_index_files,
    try_writer_lock,
)
from chatbot.core.photo_index.swap import SWAP_MARK, settle_swap
from chatbot.core.session_files import entry_kind
from chatbot.errors import PhotoIndexError
from chatbot.untrusted import visible


def check_index_folder(folder: Path) -> None:
    """An index lives in a folder: a file (or anything else) in its place gets one sentence. A rebuild being
    swapped in there is waited for, and one a crash cut short is finished first (`settle_swap`)."""
    if os.path.lexists(folder) and not folder.is_dir():
        what = entry_kind(folder) or "something else"  # a file, a device, a link to nothing, ...
        raise PhotoIndexError(f"{visible(folder)} is {what}, not a folder for the search index.",
                              "Give --index a folder (one that does not exist yet is made), e.g. "
                              "--index ~/photo-index.")
    if os.path.lexists(folder / SWAP_MARK):
        settled = settle_swap(folder)
        if settled:
            from chatbot.core.runtime import say

            say(settled)


def make_index_folder(folder: Path) -> None:
    """Make the index folder (and its parents) when missing; one sentence when that cannot be done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        there = folder
        while not os.path.lexists(there) and there != there.parent:
            there = there.parent  # the nearest part of the path that is there
        kind = entry_kind(there)
        if there != folder and kind not in (None, "a folder", "a link to a folder"):  # `afile/index`
            reason = f"{visible(there)} is {kind}, not a folder"
        elif error.errno == errno.ENOENT and there != folder:  # a folder that takes no new ones (/proc/self)
            reason = f"no folder can be made in {visible(there)}"
        else:
            reason = _cannot_write(error)
        raise PhotoIndexError(f"Could not make the index folder {visible(folder)}: {reason}.",
                              "Give --index a folder you can write to.") from None


def lock_for_writing(folder: Path) -> IO[bytes] | None:
    """One writer per index: an advisory lock on `writer.lock`, released when the process ends.

    Two runs appending at once would write the same matrix rows. Where locks do not exist (not POSIX)
    the run goes on unlocked."""
    try:
        free, handle = try_writer_lock(folder)
    except OSError as error:  # a folder no file can be made in: read-only, not yours, /proc
        raise PhotoIndexError(f"The search index cannot be kept in {visible(folder)}: {_cannot_write(error)}.",
                              "Give --index a folder you can write to (one that does not exist yet is made), e.g. "
                              "--index ~/photo-index.") from None
    if not free:
        raise PhotoIndexError(f"Another blip2-chat is indexing into {visible(folder)} right now.",
                              "Wait for it to finish, or stop it, then run this again.")
    return handle


def _cannot_write(error: OSError) -> str:
    """Why no file could be made in a folder, in words."""
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "you do not have permission to write there"
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "the disk is full"
    if error.errno == errno.ENOENT:  # the folder is there, yet it takes no new file (/proc/self)
        return "no file can be made there"
    return visible((error.strerror or "no file can be made there").lower())


def index_flag(folder: Path) -> str:
    """' --index DIR' for a command suggested about the index in `folder`, unless it is the default one."""
    from chatbot.locations import index_dir

    with contextlib.suppress(OSError, RuntimeError):
        if os.path.realpath(folder) == os.path.realpath(index_dir()):
            return ""
    shown = visible(str(folder))
    return f" --index {shlex.quote(shown) if shown == str(folder) else repr(shown)}"


def remove_index_folder(folder: Path) -> None:
    """Delete an index's own files (a rebuild's record too) and then its folder, when nothing else is left in it."""
    remove_index_files(folder)
    (folder / REBUILD_RECORD).unlink(missing_ok=True)
    (folder / "writer.lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def set_aside(folder: Path, made_by: str | None = None) -> PhotoIndexError:
    """Move a damaged index's own files (nothing else the folder holds: --index may name any folder) into a
    new `damaged-<n>` folder inside it; the error that says so and how to rebuild (with the model that made
    it, when that could still be read: without --model a new index takes the default one)."""
    n = 1
    while (folder / f"damaged-{n}").exists():
        n += 1
    aside = folder / f"damaged-{n}"
    moved: list[Path] = []
    try:
        aside.mkdir()
        for path in [*(folder / name for name in FILE_NAMES), *derived_files(folder)]:
            if path.exists():
                path.rename(aside / path.name)
                moved.append(path)
    except OSError as error:  # a folder you may not write to: the files stay, all of them
        for path in reversed(moved):
            with contextlib.suppress(OSError):
                (aside / path.name).rename(path)
        with contextlib.suppress(OSError):
            aside.rmdir()
        return damaged_in_place(folder, made_by, _cannot_write(error))
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged; its files were moved to "
                           f"{visible(aside)}.",
                           f"Build it again with `blip2-chat index PATH{_model_flag(made_by)}{index_flag(folder)}` "
                           "(PATH: your photos folder).")


def damaged_in_place(folder: Path, made_by: str | None, reason: str) -> PhotoIndexError:
    """The error for a damaged index whose files could not be set aside (`reason`: why, in words)."""
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged, and its files could not be moved "
                           f"aside: {reason}.",
                           "Build a new one in a folder you can write to: "
                           f"`blip2-chat index PATH{_model_flag(made_by)} --index DIR` (PATH: your photos folder), "
                           "or fix the permissions and run this again.")


def damaged_while_open(folder: Path, made_by: str | None, error: sqlite3.Error) -> PhotoIndexError:
    """The error for damage found in an index already open (a search, an indexing run): not set aside then (it
    is in use), so the way forward is a rebuild, which replaces it whole."""
    return PhotoIndexError(f"The search index at {visible(folder)} is damaged (SQLite said {visible(str(error))!r}).",
                           f"Build it again with `blip2-chat index PATH --rebuild{_model_flag(made_by)}"
                           f"{index_flag(folder)}` (PATH: your photos folder).")


def _model_flag(made_by: str | None) -> str:
    if not made_by:
        return ""
    shown = visible(made_by)
    return f" --model {shlex.quote(shown) if shown == made_by else repr(shown)}"


def waiting_rebuild(folder: Path) -> tuple[str, int] | None:
    """(checkpoint, pictures) of a stopped rebuild waiting in `folder/rebuild-in-progress`, or None."""
    aside = folder / REBUILDING
    if not has_index(aside):
        return None
    made_by, pictures = recorded(aside)
    return None if made_by is None else (made_by, pictures)


def restore_superseded(folder: Path) -> tuple[str | None, int] | None:
    """Put back the stopped rebuild that a rebuild in `folder` (the index folder) moved aside, when that
    rebuild made nothing (its index already removed); (its checkpoint, pictures), or None when none waited."""
    aside = folder / REBUILDING
    kept = aside / SUPERSEDED
    if not has_index(kept):
        return None
    put_back(kept, aside)
    return recorded(aside)


def put_back(kept: Path, aside: Path) -> None:
    """Move a stopped rebuild kept in `kept` back into `aside` (its record too), in place of whatever index is
    there."""
    remove_index_files(aside)
    (aside / REBUILD_RECORD).unlink(missing_ok=True)
    if (kept / REBUILD_RECORD).exists():
        (kept / REBUILD_RECORD).rename(aside / REBUILD_RECORD)
    for path in reversed(index_files(kept)):  # index.sqlite last: never its database with other vectors
        path.rename(aside / path.name)
    with contextlib.suppress(OSError):
        kept.rmdir()
