"""What a file that is not a regular file is (or a link to nothing), in words for a message: one wording
for sessions, images and the config file. Only its status is looked at (never opened: a named pipe would
wait for a writer)."""

from __future__ import annotations

import stat

LINK_TO_NOTHING = "a link to nothing"  # a symbolic link whose target is not there


def file_kind(mode: int) -> str:
    """'a folder', 'a named pipe', 'a device', 'a socket', else 'not a regular file' (for `st_mode` `mode`)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_regular_words(mode: int) -> str:
    """'a named pipe, not a regular file' (or just 'not a regular file' when the kind has no name)."""
    kind = file_kind(mode)
    return kind if kind == "not a regular file" else f"{kind}, not a regular file"
