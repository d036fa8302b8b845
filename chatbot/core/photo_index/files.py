"""The image files to index, with the size and mtime that tell whether each changed.

The files are found by `chatbot.image_files.find_images`, describe's rules (a file named outright counts
whatever its suffix; inside folders only image suffixes, hidden entries left out, symlinked folders not
followed, each file once); one `stat` each then tells an unchanged file without opening it. The linked
folders left out (those `find_images` does not name: links are not followed) are counted, so `index` can
say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.image_files import Unreadable, find_images, no_images_found
from chatbot.images import IMAGE_SUFFIXES


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
    linked_folders: list[str] = field(default_factory=list)  # links to folders in the folders walked: not followed


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
    if recursive:  # without -r no sub-folder is looked in, linked or not (the nothing-found hint says -r)
        for root in found.roots:
            found.linked_folders += linked_folders(Path(root))
    return found


def linked_folders(folder: Path) -> list[str]:
    """The symbolic links to folders in `folder` and its sub-folders (walked as `find_images` walks them:
    hidden entries left out, links not followed), by path. One named like an image (`album.jpg`) is left out
    here: `find_images` names it already, as an entry it could not read."""
    links: list[str] = []
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return links  # find_images names a folder it cannot read
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                links += linked_folders(Path(entry.path))
            elif entry.is_symlink() and entry.is_dir() and Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                links.append(entry.path)
        except OSError:  # a loop of links: find_images names it when it is named like an image; not a folder
            continue
    return links


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
