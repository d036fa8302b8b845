"""Pasted text stays text: an escape character inside a terminal's bracketed paste no longer becomes key presses.

A terminal sends a paste between two markers, ESC[200~ and ESC[201~. Textual's parser (8.x, `XTermParser.parse`)
takes any ESC inside a paste for the start of an escape sequence: what follows it is left out of the paste and,
when it is no sequence the parser knows, sent on as key presses. So a paste of "look ESC x Ctrl+Q" (from a web
page, a chat file) quit the app, Ctrl+O opened the file picker, Enter sent a question.

Here the text read from the terminal is filtered before the parser sees it: inside a paste, an ESC that does not
begin the paste's end marker is shown as "␛" (U+241B), which the paste then holds like any other character. An
ESC at the end of one read that may begin the end marker is held back until the next read says. Whether a paste
is under way is the parser's own state (one rule, not a second copy of it). The other control characters of a
paste (Ctrl+Q, Enter) were already text in Textual's Paste event; the input box shows them visibly.

The parser is swapped in for the driver's input thread only (`guarded_input_thread`), not for all of Textual.
This is a bug in Textual itself, worth reporting upstream; the guard can go when Textual fixes it.

What no program can tell apart is pasted text that holds the end marker itself: the paste ends there, for Textual
as for any other. Keeping that out is the terminal's work (tmux 3.3a's `paste-buffer -p` passes it on as it is).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import FunctionType
from typing import Any

from textual._xterm_parser import BRACKETED_PASTE_END, XTermParser
from textual.message import Message

ESC = "\x1b"
SHOWN_ESC = "\u241b"  # "␛", SYMBOL FOR ESCAPE: what a pasted ESC becomes
_BEFORE_ESC = re.compile(f"(?={ESC})")  # splits text before each ESC


class PasteGuardedParser(XTermParser):
    """Textual's terminal-input parser, where an ESC inside a bracketed paste is text, not the start of keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = ""  # the end of the last read, inside a paste: an ESC that may begin the paste's end marker

    def in_paste(self) -> bool:
        """True while the parser is inside a bracketed paste (its `parse` generator's own flag)."""
        frame = getattr(self._gen, "gi_frame", None)  # None once the generator has ended
        return frame is not None and bool(frame.f_locals.get("bracketed_paste", False))

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # the end of input: what was held back is pasted text after all
            held, self._held = self._held, ""
            if held:
                yield from super().feed(SHOWN_ESC + held[1:])
            yield from super().feed(data)
            return
        pieces = _BEFORE_ESC.split(self._held + data)  # each piece but the first starts with ESC
        self._held = ""
        for number, piece in enumerate(pieces, 1):
            # the parser's state is read after the pieces before this one were fed
            if piece.startswith(ESC) and self.in_paste():
                if number == len(pieces) and BRACKETED_PASTE_END.startswith(piece) and piece != BRACKETED_PASTE_END:
                    self._held = piece  # the end marker may be split across reads: wait for the next one
                    return
                if not piece.startswith(BRACKETED_PASTE_END):
                    piece = SHOWN_ESC + piece[1:]
            if piece:
                yield from super().feed(piece)


def guarded_input_thread(run_input_thread: Any) -> FunctionType | None:
    """A driver's `run_input_thread` (the function, from the class) with `PasteGuardedParser` as its `XTermParser`.

    The same code, run with a copy of its module's names where that one name is ours, so Textual's module and
    its other drivers are left as they are. None when the function builds no `XTermParser` (another Textual).
    """
    if not isinstance(run_input_thread, FunctionType) or "XTermParser" not in run_input_thread.__code__.co_names:
        return None
    names = {**run_input_thread.__globals__, "XTermParser": PasteGuardedParser}
    guarded = FunctionType(run_input_thread.__code__, names, run_input_thread.__name__,
                           run_input_thread.__defaults__, run_input_thread.__closure__)
    guarded.__kwdefaults__ = run_input_thread.__kwdefaults__
    guarded.__qualname__ = run_input_thread.__qualname__
    guarded.__doc__ = run_input_thread.__doc__
    return guarded
