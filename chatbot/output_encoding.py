"""What stdout and stderr do with characters their encoding cannot hold (a Latin-1 or ASCII terminal,
PYTHONIOENCODING=latin-1): write them as JSON's escapes, `\\u00e9` (a pair of them beyond the first 65,536),
never a UnicodeEncodeError. The text says what it held, and a --json line stays JSON that reads back as it was
meant (Python's own backslashreplace writes `\\xe9`, which JSON refuses).
"""

from __future__ import annotations

import codecs
import contextlib
import sys

ESCAPE_ERRORS = "blip2-chat-escape"


def _escape_unencodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    escapes = []
    for character in error.object[error.start:error.end]:
        code = ord(character)
        units = [code] if code <= 0xFFFF else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)]
        escapes += [f"\\u{unit:04x}" for unit in units]
    return "".join(escapes), error.end


def escape_what_the_output_cannot_hold() -> None:
    """Make stdout and stderr write what their encoding cannot hold as escapes (`ESCAPE_ERRORS`)."""
    codecs.register_error(ESCAPE_ERRORS, _escape_unencodable)  # the same handler again: no change
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):  # closed, or not a text file (a test's)
            stream.reconfigure(errors=ESCAPE_ERRORS)  # type: ignore[union-attr]
