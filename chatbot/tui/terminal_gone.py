"""The app's terminal driver, for when the terminal goes away under it (its window closed, `tmux kill-session`).

Textual writes the screen from a thread of its own, and a write to a terminal that was hung up fails (EIO):
that thread then dies, its queue fills, and the next frame blocks the app for good, before it can handle
the SIGHUP that came with it, so the chat is never saved. Here a failed write is dropped instead (there is
nobody to show it to), the app goes on, and SIGHUP quits it as Ctrl+Q does (`AnsweringApp.quit_on_signals`).
A hang-up does not always come with a SIGHUP (the kernel sends it to the terminal's session leader, a shell
passes it on only when it is interactive): the first failed write tells the app too (`on_gone`), which then
quits as on SIGHUP.

The same driver reads pasted text safely: an escape character inside a paste stays text instead of turning the
rest of the paste into key presses (`chatbot.tui.paste_guard`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any


class DroppingOutput:
    """The terminal's stream, where a write or flush that fails (the terminal is gone) is dropped, not raised."""

    def __init__(self, stream: IO[str], on_gone: Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.on_gone = on_gone  # called once, in the writing thread, when the first write or flush fails
        self.gone = False  # a write failed: nothing is written from now on

    def _lost(self) -> None:
        if not self.gone:
            self.gone = True
            self.on_gone()

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):  # EIO after a hang-up; a closed stream
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._lost()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding...: the stream's own
        return getattr(self.stream, name)


def driver_class_for(chosen: type) -> type:
    """`chosen` (the driver Textual picked), outliving its terminal where it is Textual's POSIX driver; else as is.
    When its terminal is gone it calls its app's `terminal_gone()` (from the writing thread). Its pastes are
    guarded (`chatbot.tui.paste_guard`) where this Textual's parser is the one the guard knows; where it is not
    (a Textual that moved its private parser), the app still starts, reading as Textual does."""
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:  # Windows: no such driver
        return chosen
    try:
        from chatbot.tui.paste_guard import guarded_input_thread
    except ImportError:  # the guard reaches into Textual's private parser module: never a reason not to start
        guarded_input_thread = None  # type: ignore[assignment]
    if not (isinstance(chosen, type) and issubclass(chosen, LinuxDriver)):
        return chosen

    class OutlivingDriver(chosen):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            stream: Any = getattr(self, "_file", None)  # the terminal's stream (sys.__stderr__)
            if stream is not None:
                gone = getattr(self._app, "terminal_gone", None)
                self._file = DroppingOutput(stream, gone if callable(gone) else lambda: None)

    guarded = guarded_input_thread(chosen.run_input_thread) if guarded_input_thread is not None else None
    if guarded is not None:  # Textual's input loop, reading with the paste-guarded parser
        OutlivingDriver.run_input_thread = guarded  # type: ignore[method-assign]
    OutlivingDriver.__name__ = OutlivingDriver.__qualname__ = f"Outliving{chosen.__name__}"
    return OutlivingDriver
