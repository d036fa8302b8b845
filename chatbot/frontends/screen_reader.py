"""Whether the environment asks for plain, linear output: one rule for the chat's mode and for progress bars.

`TERM=dumb` (the terminal cannot move the cursor: Emacs shells and some screen-reader setups set it) or
`ACCESSIBLE` set to anything but 0 or empty (the variable some tools read to mean "a screen reader is in
use"). Either way nothing is redrawn in place: a redrawn line is garbage on a dumb terminal and is read out
again and again by a screen reader.
"""

from __future__ import annotations

from collections.abc import Mapping


def plain_output_asked(environ: Mapping[str, str]) -> bool:
    """True under TERM=dumb or ACCESSIBLE=1 (any value but 0 or empty)."""
    return (environ.get("TERM", "").strip().lower() == "dumb"
            or environ.get("ACCESSIBLE", "").strip() not in ("", "0"))
