"""The terminal side of the screen-reader mode: when it is chosen, reading lines, Ctrl+C, SIGTERM and SIGHUP.

No cursor movement, no redraws, no colour: only whole lines, which screen readers read well.
Tab completes a /command's name and the path after `/image` through readline (the rule is
`core.completion`); several matches are listed on one plain line. Each line typed goes into the
line history file as it is entered (`chatbot.core.line_history`, shared with the app).

SIGTERM (a shutdown, `kill`) and SIGHUP (the terminal window closed) end the chat as Ctrl+D does, with
everything saved (`signals_end_the_chat`): an answer in progress is stopped and kept, as the first Ctrl+C
does, and the chat ends when it is; at the prompt the chat ends at once, readline giving the terminal back
its settings first. The exit status is then 128 + the signal's number (143, 129), as when a signal ends a
program.

Input is text in UTF-8: lines from a pipe or a file are decoded as UTF-8 whatever the locale or
PYTHONIOENCODING says (a file of questions is almost always UTF-8; an ASCII locale is almost always a
container nobody configured), and so are a terminal's when its encoding is ASCII (which UTF-8 extends); a
terminal in another encoding is read in it. Bytes that are not valid there come as lone surrogates, never as
U+FFFD: the line is then not text, and the chat refuses it in one sentence, as `ask` refuses such an argument
(`core.prompt_checks.check_text`), instead of asking and saving replacement characters.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from chatbot.core.line_history import HISTORY_LINES, LineHistory
from chatbot.core.runtime import ENDING_SIGNALS
from chatbot.engine.base import CancelToken
from chatbot.frontends.screen_reader import config_wants_plain, is_terminal, plain_output_asked
from chatbot.untrusted import visible

if TYPE_CHECKING:
    from chatbot.core.completion import Completion

_completions: list[Completion] = []  # the one completion readline is stepping through (its last Tab)


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
    set_input_decoding(sys.stdin)
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


def set_input_decoding(stream: TextIO) -> None:
    """Decode `stream` in `input_encoding`, a byte that is not valid in it becoming a lone surrogate (as in a
    file name or an argument) instead of failing: the line is refused then, the lines after it still read."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None:  # not a file's stream (a test's StringIO): its text is text already
        return
    try:
        reconfigure(encoding=input_encoding(stream), errors="surrogateescape")
    except (ValueError, OSError):  # something was read from it already: its encoding stays
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="surrogateescape")


def input_encoding(stream: TextIO) -> str:
    """UTF-8, except at a terminal that says another encoding than ASCII: that one (see the module's words)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    if not is_terminal(stream):
        return "utf-8"
    try:
        ascii_only = codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return "utf-8"
    return "utf-8" if ascii_only else encoding


def is_text(line: str) -> bool:
    """False for a line with bytes that were not valid in its encoding (lone surrogates, see `set_input_decoding`)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


CLEARED_LINE = "Line cleared; the Up arrow brings it back. Ctrl+C twice on an empty line ends the chat."
# A Ctrl+C meant to stop an answer that had just ended lands on the empty prompt: it only says how to leave
LEAVE_HINT = "To leave, press Ctrl+C again, or Ctrl+D; the chat is saved either way."


def _say(sentence: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # the terminal may be gone
        print(visible(sentence), file=sys.stderr, flush=True)


def _readline_lines(prompt: str, history_file: Path | None) -> Iterator[str]:
    """Lines typed with readline; each goes into `history_file` as it is entered (a chat ended by a signal or a
    closed terminal loses none), and none earlier is written back."""
    history = LineHistory(history_file, _say) if history_file is not None else None
    readline = _readline(history, prompt)
    leaving = False  # Ctrl+C came on the empty line just before: another one ends the chat
    while True:
        try:
            line = input(prompt)
        except EOFError:  # Ctrl+D: end the prompt's line, so what is said next starts on its own
            with contextlib.suppress(OSError, ValueError):  # not when the terminal is gone
                print(flush=True)
            return
        except KeyboardInterrupt:  # on a half-typed line Ctrl+C clears it, as shells do; twice on an empty one it ends
            typed = readline.get_line_buffer() if readline is not None else ""
            if not typed.strip():
                if leaving:
                    raise
                leaving = True
                with contextlib.suppress(OSError, ValueError):
                    print(flush=True)
                _say(LEAVE_HINT)
                continue
            leaving = False
            readline.add_history(typed)
            if history is not None:
                history.add([typed])
            print(flush=True)
            print(CLEARED_LINE, file=sys.stderr, flush=True)
            continue
        except ChatEnded as ended:  # SIGTERM or SIGHUP at the prompt: a half-typed line is kept, as the app keeps it
            ended.draft = readline.get_line_buffer() if readline is not None else ""
            if ended.draft.strip() and history is not None:
                history.add([ended.draft])
            raise
        leaving = False
        if history is not None and readline is not None and is_text(line):  # a line not text is refused, not kept
            history.add([line])  # before it is answered: a chat that ends meanwhile keeps it
        yield line


def _keep_history(readline: Any, history_file: Path, added: int) -> None:
    """Append readline's last `added` lines to `history_file` (never through a link). Only these are written:
    lines removed from the file meanwhile (`sessions --delete`) are not written back."""
    length = readline.get_current_history_length()
    first = max(1, length - added + 1)
    LineHistory(history_file, _say).add(readline.get_history_item(number) or "" for number in range(first, length + 1))


def _readline(history: LineHistory | None, prompt: str = ""):  # type: ignore[no-untyped-def]
    """The readline module set up for plain lines and Tab completion, with `history`'s earlier lines for the Up
    arrow (None where Python has no readline)."""
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
    if history is not None:
        for line in history.read():  # read here, never by readline: it would follow a link at that path
            readline.add_history(line)
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




class ChatEnded(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP ends the chat where nothing can be stopped gently (at the
    prompt, in a command, or a second time during an answer). Not an Exception: no "a command failed" handler
    takes it; the chat saves what it has and leaves with `status`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.status = 128 + signum  # as when the signal ends a program: 143 for SIGTERM, 129 for SIGHUP
        self.draft = ""  # the line half typed at the prompt when it came (kept as the session's draft)


class Ending:
    """What SIGTERM and SIGHUP do now: stop the answer `answering` (the first time), else raise ChatEnded; nothing
    once the chat is `leaving` (saving on its way out) or ChatEnded was raised (it is ending already)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first of them that came
        self.answering: CancelToken | None = None  # the answer in progress, which the first one stops
        self.leaving = False  # the chat is on its way out: no signal cuts its saving short
        self.ended = False  # ChatEnded was raised: the chat is ending, a signal after it changes nothing

    @property
    def status(self) -> int | None:
        """The exit status the signal that came asks for (None while none came)."""
        return None if self.signum is None else 128 + self.signum

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self.leaving or self.ended:
            return
        if first and self.answering is not None and not self.answering.cancelled:
            self.answering.cancel()  # as the first Ctrl+C: what came is kept, marked stopped; then the chat ends
            return
        self.ended = True
        raise ChatEnded(self.signum or signum)


_ending: Ending | None = None  # while signals_end_the_chat is in force


@contextlib.contextmanager
def signals_end_the_chat() -> Iterator[Ending]:
    """While inside, SIGTERM and SIGHUP end the chat with everything kept (see the module's words). The `Ending`
    yielded says which came (the chat loop ends after the answer it stopped); set its `leaving` before saving on
    the way out. Outside the main thread signals cannot be caught, and nothing changes."""
    global _ending
    ending = Ending()
    if threading.current_thread() is not threading.main_thread():
        yield ending
        return
    _ending = ending
    previous = {signum: signal.signal(signum, ending.on_signal) for signum in ENDING_SIGNALS}
    try:
        with _main_thread_woken(ending):
            yield ending
    finally:
        _ending = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


NUDGE_SECONDS = 0.05  # how often the main thread is signalled again while a signal's handler has not run


@contextlib.contextmanager
def _main_thread_woken(ending: Ending) -> Iterator[None]:
    """While inside, a SIGTERM or SIGHUP whose handler has not run is sent again to the main thread, until it has.

    Python runs a signal's handler in the main thread, when it next runs Python code or a system call of its
    is interrupted. At the readline prompt it runs neither: readline waits in select() for a key, and looks
    for signals only when that wait is interrupted (and pressing a key does not run them either). A signal
    that came just before that wait began (readline echoing the last key typed, the CPU busy elsewhere) or
    that the kernel gave to another thread (the model's) would wait for the next Enter: the chat never ended.
    So the signal's number, which Python writes to its wakeup fd from any thread, wakes a thread here that
    sends the signal to the main thread itself (`signal.pthread_kill`), which interrupts the wait; again
    until the handler has run (`ending.signum`). A send that lands after the handler ran is a second signal
    to `Ending`, which changes nothing once the chat is ending.
    """
    pthread_kill = getattr(signal, "pthread_kill", None)
    if pthread_kill is None:  # Windows: no such signals to catch anyway
        yield
        return
    main = threading.main_thread().ident
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # a signal handler never waits on a full pipe
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):  # cannot watch: the signals still work wherever the main thread runs
        os.close(read_end)
        os.close(write_end)
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                numbers = os.read(read_end, 64)
            except OSError:
                return
            if not numbers:  # the write end closed: the chat is over
                return
            if not any(number in ENDING_SIGNALS for number in numbers):
                continue
            while ending.signum is None and not stop.is_set():
                with contextlib.suppress(OSError, ValueError):  # the main thread is gone: nothing to wake
                    pthread_kill(main, next(number for number in numbers if number in ENDING_SIGNALS))
                stop.wait(NUDGE_SECONDS)

    watcher = threading.Thread(target=watch, name="blip2-signal-waker", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher reads the end of the pipe and returns
        watcher.join()
        os.close(read_end)


@contextlib.contextmanager
def ctrl_c_stops(cancel: CancelToken) -> Iterator[None]:
    """While inside, the first Ctrl+C stops the answer (via `cancel`); a second one raises KeyboardInterrupt.
    So does SIGTERM or SIGHUP, within `signals_end_the_chat` (a second one raises ChatEnded).

    Outside the main thread signals cannot be caught, and Ctrl+C keeps its usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    ending = _ending
    if ending is not None:
        if ending.signum is not None and not cancel.cancelled:  # one came before this answer began: stop it too
            cancel.cancel()
        ending.answering = cancel
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if ending is not None:
            ending.answering = None
