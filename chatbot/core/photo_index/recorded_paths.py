"""The paths an index records: which it can hold (`storable`), and which lie at or under a path (`UNDER`).

One rule for the open index (`IndexStore.paths_under`) and for a look that opens nothing (`recorded_under`, which
`index` uses to say that a missing PATH still has pictures recorded under it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

NOT_UTF8 = "its name is not valid UTF-8; rename it to index it."  # why a file `storable` refuses is not indexed
# a file recorded at `root`, or inside it as a folder: its path begins with `root/`. Compared exactly, not with
# LIKE, which ignores the case of ASCII letters: /p/Photos is not /p/photos on most file systems.
UNDER = "path = ? OR substr(path, 1, ?) = ?"



def storable(path: str) -> bool:
    """Whether the index can hold this path: SQLite text is UTF-8, and a file name that is not valid UTF-8
    comes from `os.fsdecode` with its bytes as lone surrogates, which have no UTF-8 form."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def under(root: str) -> tuple[str, int, str]:
    """The parameters of `UNDER` for `root` (SQLite's `substr` and `length` count characters, as Python does)."""
    prefix = root.rstrip("/\\") + "/"
    return root, len(prefix), prefix


def recorded_under(folder: Path, root: str) -> int:
    """How many files the index in `folder` records at or under `root` (an absolute path, as `index` records
    them), read as `index_files.recorded` reads: without writing, locking or setting aside anything (0 when it cannot
    be read)."""
    path = folder / "index.sqlite"
    if not storable(root) or not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, check_same_thread=False)) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM files WHERE {UNDER}", under(root)).fetchone()[0])
    except (sqlite3.Error, ValueError):
        return 0
