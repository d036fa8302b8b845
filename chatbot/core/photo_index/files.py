"""The image files to index, with the size and mtime that tell whether each changed.

The files are found by `chatbot.image_files.find_images`, describe's rules (a file named outright counts
whatever its suffix; inside folders only image suffixes, hidden entries left out, symlinked folders not
followed, each file once); one `stat` each then tells an unchanged file without opening it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatbot.image_files import Unreadable, find_images, no_images_found


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute
    size: int
    mtime_ns: int


@dataclass
class Found:
    files: list[FoundFile]
    unreadable: list[tuple[str, str]]  # (path, reason): entries that could not be looked at
    roots: list[str]  # the absolute roots, for finding what was deleted under them


def find_image_files(roots: list[Path], recursive: bool) -> Found:
    """Every image file under `roots` (each once), with its stat. Raises UserError for a missing root."""
    unreadable: list[Unreadable] = []
    paths = find_images([str(root) for root in roots], recursive, unreadable=unreadable, require_any=False)
    found = Found([], [(entry.path, entry.reason) for entry in unreadable],
                  [os.path.abspath(os.path.expanduser(root)) for root in roots])
    for path in paths:
        try:
            info = os.stat(path)
        except OSError as error:
            found.unreadable.append((path, (error.strerror or str(error)).lower()))
            continue
        found.files.append(FoundFile(path, info.st_size, info.st_mtime_ns))
    return found


def nothing_found_words(paths: list[str], roots: list[Path], recursive: bool) -> tuple[str, str]:
    """(sentence, hint) when `roots` hold no image file at all: describe's wording, for index.

    --recursive is suggested only when a folder has sub-folders to look in."""
    below = not recursive and any(_has_subfolders(root) for root in roots)
    error = no_images_found(paths, "index", suggest_recursive=below)
    return error.message, error.hint


def _has_subfolders(root: Path) -> bool:
    """Whether folder `root` holds a folder that is not hidden (as `find_images` would walk with --recursive)."""
    try:
        with os.scandir(root) as entries:
            return any(not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False) for entry in entries)
    except OSError:  # not a folder, or one that cannot be read
        return False
