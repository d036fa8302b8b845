"""One rule for text that came from outside (a file name, a session file, a URL, stdin, the model) on its
way to a terminal or a widget: control characters are shown, never emitted.

Every place that writes such text to a terminal, in every front end and on both streams, passes it
through `visible` first, so an escape sequence hidden in a file name or a saved question cannot set
the window title, clear the screen or write the clipboard: it is printed as `\\x1b]0;...` instead.

`json_line` is the same rule for JSON written for people and scripts (`--json`, JSON Lines): every such
character is a `\\u` escape, so the line is valid UTF-8, safe on a terminal, and reads back exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# The characters (the inside of a regex class): C0 controls, DEL, C1 controls, the bidirectional overrides
# that reorder what a reader sees, the invisible characters that make two names look alike (zero-width space,
# word joiner and its kin, the byte order mark; not the zero-width joiners, which emoji and scripts need),
# the line and paragraph separators (a line break to some terminals), and lone surrogates: a file name that
# is not valid UTF-8 holds its bytes as U+DC80..U+DCFF (os.fsdecode), which a stream with
# errors="surrogateescape" would emit raw (b"\x9b" is the one-byte CSI) and a strict one cannot.
_CONTROLS = ("\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069"
             "\ufeff\ud800-\udfff")
_UNSAFE = re.compile(f"[{_CONTROLS}]")
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


# What `json.dumps(..., ensure_ascii=False)` leaves raw that a JSON line may not hold: the characters `visible`
# shows (JSON escapes C0 itself, so these are DEL, C1, the bidi overrides, the invisible characters, the line
# and paragraph separators, which `str.splitlines` and JavaScript take for the end of a line, and lone
# surrogates).
_JSON_UNSAFE = _UNSAFE


def json_line(record: Mapping[str, Any]) -> str:
    """`record` as one line of JSON (no line break at its end), the one way every `--json` and JSON Lines
    output writes a record.

    Every control character, DEL, C1, bidi override, line or paragraph separator and lone surrogate (the
    undecodable bytes of a file name that is not UTF-8) is written as a `\\u` escape; other characters
    are written as they are. So the line is valid UTF-8, holds nothing a terminal acts on, and `json.loads`
    gives back `record`. (One exception JSON cannot avoid: a high surrogate directly followed by a low one,
    which no file name decodes to, reads back as the one character the pair encodes.)
    """
    text = json.dumps(record, ensure_ascii=False)  # C0 controls, quotes and backslashes escaped by JSON
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
