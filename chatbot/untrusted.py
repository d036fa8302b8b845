"""One rule for text that came from outside (a file name, a session file, a URL, stdin, the model) on its
way to a terminal or a widget: control characters are shown, never emitted.

Every place that writes such text to a terminal, in every front end and on both streams, passes it
through `visible` first, so an escape sequence hidden in a file name or a saved question cannot set
the window title, clear the screen or write the clipboard: it is printed as `\\x1b]0;...` instead.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, the bidirectional overrides that reorder what a reader sees, and lone
# surrogates: a file name that is not valid UTF-8 holds its bytes as U+DC80..U+DCFF (os.fsdecode), which a
# stream with errors="surrogateescape" would emit raw (b"\x9b" is the one-byte CSI) and a strict one cannot.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name: shown as that byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """`text` (anything: it is made a string) with every control character shown as a visible escape."""
    return _UNSAFE.sub(_escape, str(text))


def has_controls(text: str) -> bool:
    """True when `visible` would change `text`."""
    return _UNSAFE.search(text) is not None
