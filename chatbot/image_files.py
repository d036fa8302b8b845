"""Finding the image files a list of paths names: folders walked (optionally recursively), each file once.

Shared by `describe` and `index`: both take files and folders as typed, leave out hidden entries and
whatever cannot be looked at (saying so), and hash files the way `LoadedImage.sha256` does.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from chatbot.errors import UserError
from chatbot.file_kinds import LINK_TO_NOTHING, not_regular_words
from chatbot.image_download import address_scheme, is_url, public_url
from chatbot.images import IMAGE_SUFFIXES
from chatbot.untrusted import visible


class Unreadable(NamedTuple):
    """Something in a folder that could not be looked at, so it was left out."""

    path: str
    reason: str  # 'a loop of symbolic links', 'permission denied', ...


def find_images(
    paths: Sequence[str], recursive: bool = False, *, unreadable: list[Unreadable] | None = None,
    require_any: bool = True,
) -> list[str]:
    """Absolute paths of the images PATHS name, in order, each file once (by its real path).

    A file named outright is tried whatever its suffix; inside folders only image suffixes
    count and hidden files and folders are left out. Symlinked folders are not followed.
    An entry that cannot be looked at (a symlink loop, a folder without permission), or one named
    like an image that is no file to read (a link to nothing, a named pipe), is left out and
    appended to `unreadable`, and the search goes on.

    Raises:
        UserError: a path that does not exist, a URL, or (with `require_any`) nothing found at all.
    """
    found: list[str] = []
    seen: set[str] = set()
    folders_below = False
    unreadable = [] if unreadable is None else unreadable
    for raw in paths:
        if is_url(raw):
            raise UserError(f"describe works on files and folders, not links ({visible(public_url(raw))}).",
                            "Download the images first, or use `blip2-chat caption URL` for one link.")
        refuse_other_schemes(raw, "describe", ray_reads_storage=True)
        path = Path(os.path.abspath(os.path.expanduser(raw)))
        if _is_folder(path):
            candidates, below = _images_in(path, recursive, unreadable)
            folders_below = folders_below or below
        elif os.path.lexists(path):
            candidates = [path]  # tried as a file: an unreadable one becomes a row saying why
        else:
            raise UserError(f"No file or folder at {visible(path)}.", "Check the path.")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                found.append(str(candidate))
    if not found and require_any:
        raise no_images_found(paths, "describe", suggest_recursive=folders_below and not recursive)
    return found


def no_images_found(paths: Sequence[str], command: str, *, suggest_recursive: bool) -> UserError:
    """'No images found in PATHS.', with --recursive suggested when there are sub-folders to look in, else the
    kinds of file `command` reads: one wording for describe and index."""
    hint = "Add --recursive to look in its sub-folders." if suggest_recursive else \
        f"{command} reads {', '.join(sorted(IMAGE_SUFFIXES))} files."
    return UserError(f"No images found in {visible(', '.join(paths))}.", hint)


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. no permission to look: not a folder we can search
        return False


def _images_in(folder: Path, recursive: bool, unreadable: list[Unreadable]) -> tuple[list[Path], bool]:
    """Image files in `folder` (sorted by name) and whether it has sub-folders; what it cannot read: `unreadable`."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        unreadable.append(Unreadable(str(folder), _reason(error)))  # left out rather than ending the run
        return [], False
    images: list[Path] = []
    subfolders: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                if entry.is_file():  # follows a symlink
                    images.append(Path(entry.path))
                else:  # named like an image but nothing to read: said, never opened (a pipe would block)
                    unreadable.append(Unreadable(entry.path, _not_a_file(entry)))
        except OSError as error:  # a symlink loop (a -> b -> a), a target we may not look at
            unreadable.append(Unreadable(entry.path, _reason(error)))
    if recursive:
        for sub in subfolders:
            images += _images_in(sub, True, unreadable)[0]
    return images, bool(subfolders)


def _not_a_file(entry: os.DirEntry[str]) -> str:
    """Why an entry that `is_file()` said no to is left out: 'a link to nothing', 'a named pipe, not a regular file'.

    Only looked at (stat), never opened: opening a named pipe waits for a writer that may never come.
    """
    try:
        mode = entry.stat().st_mode  # follows a symlink
    except FileNotFoundError:
        return LINK_TO_NOTHING
    if stat.S_ISDIR(mode):
        return "a link to a folder (not followed)"
    return not_regular_words(mode)


_REASONS = {errno.ELOOP: "a loop of symbolic links", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno or 0) or visible(error.strerror or error).lower()


def unreadable_sentence(unreadable: Sequence[Unreadable], most: int = 10) -> str:
    """'Left out 1 entry that could not be read: /p/a.png (a loop of symbolic links).' Names are `visible`."""
    named = [f"{visible(entry.path)} ({entry.reason})" for entry in unreadable[:most]]
    if len(unreadable) > most:
        named.append(f"and {len(unreadable) - most} more")
    entries = "1 entry" if len(unreadable) == 1 else f"{len(unreadable)} entries"
    return f"Left out {entries} that could not be read: {', '.join(named)}."


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes, "" when it cannot be read or is not a regular file (matches LoadedImage.sha256)."""
    digest = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a named pipe would block the open; a device never ends
            return ""
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")  # what `describe --ray` reads (pyarrow)


def is_storage_uri(path: str) -> bool:
    """Whether `path` names object storage (`s3://`, `gs://`, ...) rather than a file on this machine."""
    return address_scheme(path) in STORAGE_SCHEMES


def refuse_other_schemes(raw: str, command: str, *, ray_reads_storage: bool) -> None:
    """A `scheme://` path that is not a web link (callers word those themselves) and that `command` will not
    read here: said in one sentence rather than "no file at /cwd/s3:/bucket". With `ray_reads_storage`,
    object storage is named as what --ray reads; any other scheme (`ftp://`) is no path of this machine."""
    scheme = address_scheme(raw)  # the one rule of what an address is (a one-letter "scheme" is a drive: C://)
    if scheme is None or is_url(raw):
        return
    if ray_reads_storage and is_storage_uri(raw):
        raise UserError(f"{command} reads {visible(scheme)}:// paths only with --ray ({visible(public_url(raw))}).",
                        "Add --ray (the cluster extra: pip install -e '.[cluster]'), or copy the images to a folder.")
    raise UserError(f"{command} works on files and folders on this machine, not {visible(public_url(raw))}.",
                    "Copy the images to a folder first.")
