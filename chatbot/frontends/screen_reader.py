"""Whether output goes to a terminal, and whether the environment asks for plain, linear output there: one
rule each for the chat's mode, progress bars and describe's rows.

`TERM=dumb` (the terminal cannot move the cursor: Emacs shells and some screen-reader setups set it) or
`ACCESSIBLE` set to anything but 0 or empty (the variable some tools read to mean "a screen reader is in
use"). Either way nothing is redrawn in place: a redrawn line is garbage on a dumb terminal and is read out
again and again by a screen reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plain_output_asked(environ: Mapping[str, str]) -> bool:
    """True under TERM=dumb or ACCESSIBLE=1 (any value but 0 or empty)."""
    return (environ.get("TERM", "").strip().lower() == "dumb"
            or environ.get("ACCESSIBLE", "").strip() not in ("", "0"))


def config_wants_plain() -> bool:
    """`plain = true` in the config file (chatbot/core/config_file.py): the person uses a screen reader, so every
    command speaks in sentences (the chat in the screen-reader mode, progress without a redrawn bar)."""
    from chatbot.core.config_file import read_config

    return read_config().get("plain") is True


def is_terminal(stream: Any) -> bool:
    """True for a stream attached to a terminal; False for pipes, files, and a closed, missing or fake stream."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False
