"""A rebuild swapped in, and a swap a crash cut short: the complete index in `rebuild-in-progress/` takes the place
of the index folder's own.

`rebuild-swap.json` names both indexes' files before anything moves and goes last. The old index's files all leave
(into `replaced-by-rebuild/`, `index.sqlite` first) before the first new one arrives, and the new `index.sqlite`
arrives last, so a crash leaves an index whole or none, never one's database with another's vectors, and where each
file is says how far the swap got: the next open finishes it, or puts the old index back when the new one is not
whole (`settle_swap`). A run swapping holds the folder's writer lock; an open meanwhile waits for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.photo_index.access_errors import IndexAccessError, access_words
from chatbot.core.photo_index.index_files import (
    FILE_NAMES,
    REBUILD_RECORD,
    REBUILDING,
    index_files,
    recorded,
    remove_index_files,
    try_writer_lock,
    write_atomically,
)
from chatbot.untrusted import visible

REPLACED = "replaced-by-rebuild"  # the old index's files while a rebuild is swapped in
SWAP_MARK = "rebuild-swap.json"  # in the index folder while a rebuild is swapped in: the new index's file names
SWAP_WAIT_SECONDS = 10.0  # how long an open waits for a swap another run is making (it takes milliseconds)


def swap_rebuild_in(folder: Path) -> None:
    """Put the complete index in `folder/rebuild-in-progress` in place of `folder`'s own (closed, both of them;
    the caller holds `folder`'s writer lock). `rebuild-swap.json` names both indexes' files before anything
    moves, and goes last, so a swap a crash cuts short is finished by the next open (`settle_swap`)."""
    swap = Swap([path.name for path in index_files(folder / REBUILDING)], [path.name for path in index_files(folder)])
    write_atomically(folder / SWAP_MARK, json.dumps({"incoming": swap.incoming, "outgoing": swap.outgoing}))
    _finish_swap(folder, swap)


def settle_swap(folder: Path) -> str | None:
    """Wait for a rebuild another run is swapping into `folder` (it holds the writer lock), or finish (or, when
    the new index is not whole, undo) one a crash cut short; the sentence saying which, or None when there was
    nothing to do or the wait ran out (SWAP_WAIT_SECONDS). IndexAccessError when it cannot be done now."""
    deadline = time.monotonic() + SWAP_WAIT_SECONDS
    while os.path.lexists(folder / SWAP_MARK):
        try:
            free, lock = try_writer_lock(folder)
        except OSError as error:  # a folder this user may not write to
            raise _unsettled(folder, error) from None
        if not free:  # a run is swapping right now: it takes milliseconds
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        try:
            if not os.path.lexists(folder / SWAP_MARK):
                return None  # that run finished it
            swap = _recorded_swap(folder)
            if swap is None:  # not written by us: nothing can be known from it
                (folder / SWAP_MARK).unlink()
                return None
            finished = _finish_swap(folder, swap)
        except OSError as error:
            raise _unsettled(folder, error) from None
        finally:
            if lock is not None:
                lock.close()
        held = recorded(folder)[1]
        if finished:
            return (f"A rebuild of the search index at {visible(folder)} was cut short while it put the new index "
                    f"in place; that is finished now, and the rebuilt index ({held} pictures) is in place.")
        return (f"A rebuild of the search index at {visible(folder)} was cut short while it put the new index in "
                f"place, and the new index was not whole, so the old one ({held} pictures) is back in place.")
    return None


@dataclass(frozen=True)
class Swap:
    """A rebuild being swapped in: its index's file names (`incoming`, in the order they move: `index.sqlite`
    last) and those of the index it replaces (`outgoing`, `index.sqlite` first)."""

    incoming: list[str]
    outgoing: list[str]

    def __post_init__(self) -> None:
        self.incoming.sort(key=lambda name: name == "index.sqlite")


def _recorded_swap(folder: Path) -> Swap | None:
    """The swap `rebuild-swap.json` records, or None when it is not one we wrote (a file on disk: untrusted)."""
    try:
        with open(folder / SWAP_MARK, "rb") as file:
            record = json.loads(file.read(1 << 16))
        incoming, outgoing = record["incoming"], record["outgoing"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(incoming, list) or not isinstance(outgoing, list) or "index.sqlite" not in incoming:
        return None
    if not all(isinstance(name, str)
               and (name in FILE_NAMES or re.fullmatch(r"(lists-\w+\.u16|inverted-\w+\.npy)", name))
               for name in [*incoming, *outgoing]):
        return None
    return Swap(incoming, outgoing)


def _finish_swap(folder: Path, swap: Swap) -> bool:
    """Go on with `swap` from wherever it stands: True when the new index is in place, False when it was not whole
    (a file of it neither beside the index nor moved in) and the old one went back instead.

    The old files all leave (into `replaced-by-rebuild/`) before the first new one arrives, and the new database
    arrives last, so where each file is says how far the swap got, even where both indexes have a file's name."""
    aside, replaced = folder / REBUILDING, folder / REPLACED
    waiting = [name for name in swap.incoming if (aside / name).exists()]
    old_out = all((replaced / name).exists() for name in swap.outgoing)  # new files may have arrived
    if "index.sqlite" in waiting:
        arrived = [name for name in swap.incoming if name not in waiting] if old_out else []
        whole = all((folder / name).exists() for name in arrived) and len(arrived) + len(waiting) == len(swap.incoming)
    else:  # the new database arrived (last of all), or is lost
        arrived = [name for name in swap.incoming if name not in waiting and name != "index.sqlite"] if old_out else []
        whole = not waiting and (folder / "index.sqlite").exists()
    if not whole:
        _swap_back(folder, swap, [name for name in arrived if (folder / name).exists()])
        return False
    if "index.sqlite" in waiting:
        replaced.mkdir(exist_ok=True)
        for name in swap.outgoing:  # index.sqlite first: never the old database with new vectors
            if (folder / name).exists() and not (replaced / name).exists():
                os.replace(folder / name, replaced / name)
        for name in waiting:  # index.sqlite last
            os.replace(aside / name, folder / name)
    remove_index_files(replaced)  # the new index is whole here: the old one goes, then the mark
    for name in ("writer.lock", REBUILD_RECORD):
        (aside / name).unlink(missing_ok=True)
    (folder / SWAP_MARK).unlink(missing_ok=True)
    for emptied in (replaced, aside):  # each is left when it holds something else (a damaged rebuild)
        with contextlib.suppress(OSError):
            emptied.rmdir()
    return True


def _swap_back(folder: Path, swap: Swap, arrived: list[str]) -> None:
    """Undo a swap whose new index is not whole: what of it arrived goes back beside the index, and the old one's
    files come back (index.sqlite last)."""
    aside, replaced = folder / REBUILDING, folder / REPLACED
    for name in arrived:
        os.replace(folder / name, aside / name)
    for name in reversed(swap.outgoing):
        if (replaced / name).exists():
            os.replace(replaced / name, folder / name)
    (folder / SWAP_MARK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        replaced.rmdir()


def _unsettled(folder: Path, error: OSError) -> IndexAccessError:
    reason, way = access_words(folder, error)
    return IndexAccessError(f"A rebuild of the search index at {visible(folder)} was cut short while it put the "
                            f"new index in place, and that cannot be finished now: {reason}.",
                            f"{way} (both indexes are kept as they are).")

