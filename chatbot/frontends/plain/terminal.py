"""The terminal side of the screen-reader mode: when it is chosen, reading lines, Ctrl+C.

No cursor movement, no redraws, no colour: only whole lines, which screen readers read well.
Tab completes a /command's name and the path after `/image` through readline (the rule is
`core.completion`); several matches are listed on one plain line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from chatbot.engine.base import CancelToken
from chatbot.frontends.screen_reader import is_terminal, plain_output_asked
from chatbot.untrusted import visible

if TYPE_CHECKING:
    from chatbot.core.completion import Completion

HISTORY_LINES = 1000
_completions: list[Completion] = []  # the one completion readline is stepping through (its last Tab)


def config_wants_plain() -> bool:
    """`plain = true` in the config file (chatbot/config_file.py); False when there is no such setting."""
    try:
        from chatbot.core.config_file import read_config
    except ImportError:
        return False
    return read_config().get("plain") is True


def plain_mode_forced(
    stdin: TextIO | None = None, stdout: TextIO | None = None, environ: Mapping[str, str] | None = None,
    config: Callable[[], bool] = config_wants_plain,
) -> bool:
    """True when `chat` must use the screen-reader mode, even without --plain.

    That is when the full-screen app cannot work or is not wanted: stdin or stdout is not a
    terminal (a pipe, a file), the terminal says it cannot move the cursor (`TERM=dumb`, as
    Emacs shells and some screen-reader setups set it), `ACCESSIBLE` is set to anything but 0 or
    empty (the variable some tools read to mean "a screen reader is in use"), or the config file
    says `plain = true`.
    """
    environ = os.environ if environ is None else environ
    if not (is_terminal(stdin or sys.stdin) and is_terminal(stdout or sys.stdout)):
        return True
    if plain_output_asked(environ):
        return True
    return config()


def read_lines(prompt: str, history_file: Path | None = None) -> Generator[str, None, None]:
    """Lines the user types, without their line ends, until end of input.

    In a terminal (stdin and stdout both) lines are read with `readline`: the up and down arrows
    bring back earlier lines, also from earlier chats (kept in `history_file`). Otherwise lines
    are read plainly from stdin and the prompt, if any terminal can show it, goes to stderr.
    Ctrl+C while waiting raises KeyboardInterrupt to the caller.
    """
    if sys.stdin is None:
        return
    tolerate_bytes_that_are_not_text(sys.stdin)
    if is_terminal(sys.stdin) and is_terminal(sys.stdout):
        yield from _readline_lines(prompt, history_file)
        return
    show_prompt = is_terminal(sys.stdin) and is_terminal(sys.stderr)
    while True:
        if show_prompt:
            sys.stderr.write(prompt)
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            if show_prompt:
                sys.stderr.write("\n")
            return
        yield line.rstrip("\r\n")


def tolerate_bytes_that_are_not_text(stream: TextIO) -> None:
    """Read bytes that are not valid in the stream's encoding as U+FFFD instead of failing: a question
    with one bad byte is still asked, and the questions after it are not lost."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="replace")


CLEARED_LINE = "Line cleared; the Up arrow brings it back. Ctrl+C on an empty line ends the chat."


def _readline_lines(prompt: str, history_file: Path | None) -> Iterator[str]:
    readline = _readline(history_file, prompt)
    earlier = readline.get_current_history_length() if readline is not None else 0
    try:
        while True:
            try:
                yield input(prompt)
            except EOFError:  # Ctrl+D: end the prompt's line, so what is said next starts on its own
                print(flush=True)
                return
            except KeyboardInterrupt:  # on a half-typed line Ctrl+C clears it, as shells do; on an empty one it ends
                typed = readline.get_line_buffer() if readline is not None else ""
                if not typed.strip():
                    raise
                readline.add_history(typed)
                print(flush=True)
                print(CLEARED_LINE, file=sys.stderr, flush=True)
    finally:
        if readline is not None and history_file is not None:
            _keep_history(readline, history_file, readline.get_current_history_length() - earlier)


def _keep_history(readline: Any, history_file: Path, added: int) -> None:
    """Add this chat's `added` new lines to `history_file` (kept to its last HISTORY_LINES lines). Only these are
    written: lines removed from the file meanwhile (`sessions --delete`) are not written back."""
    if added <= 0:
        return
    with contextlib.suppress(OSError):
        if history_file.is_file():
            readline.append_history_file(added, str(history_file))
        else:
            history_file.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(str(history_file))
            history_file.chmod(0o600)  # the questions asked: yours alone, as the chats are


def _readline(history_file: Path | None, prompt: str = ""):  # type: ignore[no-untyped-def]
    """The readline module set up for plain lines and Tab completion (None where Python has none)."""
    try:
        import readline
    except ImportError:
        return None
    readline.set_history_length(HISTORY_LINES)
    with contextlib.suppress(Exception):  # not every readline build knows every setting
        readline.parse_and_bind("set enable-bracketed-paste off")  # no escape codes around each prompt
        readline.parse_and_bind("set bell-style none")  # no ^G on an ambiguous Tab: the matches are said in words
    with contextlib.suppress(Exception):
        _set_up_completion(readline, prompt)
    if history_file is not None and history_file.is_file():
        with contextlib.suppress(OSError):
            readline.read_history_file(str(history_file))
    return readline


def _set_up_completion(readline: Any, prompt: str) -> None:
    """Tab completes the whole line so far (no word breaks: a path may hold spaces) with `readline_completer`."""
    readline.set_completer(readline_completer)
    readline.set_completer_delims("")
    if "libedit" in (readline.__doc__ or "") or getattr(readline, "backend", "") == "editline":  # macOS
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
        readline.set_completion_display_matches_hook(
            lambda substitution, matches, longest: readline_list_matches(prompt, readline.get_line_buffer()))


def readline_completer(text: str, state: int) -> str | None:
    """readline's completer: the `state`-th whole line `text` (the line up to the cursor) completes to.

    readline asks for state 0, 1, 2, ... until None, then fills in what the lines have in common.
    """
    try:
        from chatbot.core.completion import completion

        if state == 0:
            _completions[:] = [completion(text)]
        candidates = _completions[0].candidates if _completions else ()
        return candidates[state].line if state < len(candidates) else None
    except Exception:  # readline swallows a completer's errors; never leave one to it
        return None


def readline_list_matches(prompt: str, line: str, out: TextIO | None = None) -> None:
    """Several matches on a second Tab: their names on one plain line, then the prompt and the line again."""
    from chatbot.core.completion import listing

    out = out or sys.stdout
    candidates = _completions[0].candidates if _completions else ()
    out.write(f"\n{len(candidates)} matches: {visible(listing(candidates))}\n{prompt}{visible(line)}")
    out.flush()


@contextlib.contextmanager
def ctrl_c_stops(cancel: CancelToken) -> Iterator[None]:
    """While inside, the first Ctrl+C stops the answer (via `cancel`); a second one raises KeyboardInterrupt.

    Outside the main thread signals cannot be caught, and Ctrl+C keeps its usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
