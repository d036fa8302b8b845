"""Ctrl+C (SIGINT) during `describe`: the first one stops the run, every later one is ignored.

The first lands as KeyboardInterrupt, but never in the middle of a row: while a row is written and
counted (`held`) it waits, and lands just after, so the count said at the stop is the rows saved. A
second Ctrl+C, pressed while the run is stopping (closing the file, saying how far it got, leaving), must
not interrupt that: Python's default handler raised it again, at exit too, where it broke the wait for the
model thread, and the process aborted with a traceback. Here it is ignored; the run leaves as soon as
everything is saved (`chatbot.core.runtime.exit_now`), so there is nothing to wait for.

A Python-level handler rather than a blocked signal mask: the kernel gives a process's SIGINT to any
thread that does not block it (the model thread, torch's threads), so blocking it on the main thread
alone did not hold it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class CtrlC:
    """The run's SIGINT handler while `installed`; `pressed` once a real Ctrl+C has stopped the run."""

    def __init__(self) -> None:
        self.pressed = False  # a Ctrl+C arrived: the run stops (or has stopped); later ones are ignored
        self._holding = False  # a row is being written and counted
        self._waiting = False  # a Ctrl+C arrived while holding: raised when the row is done

    @contextmanager
    def installed(self) -> Iterator[CtrlC]:
        """Handle SIGINT here (main thread only: Python runs handlers there). The previous handler comes back
        when the run ends, unless a Ctrl+C stopped it: then later ones stay ignored until the process leaves."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            if not self.pressed:
                signal.signal(signal.SIGINT, previous)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A Ctrl+C that arrives inside waits until the block is done, then stops the run (only if the block ended
        normally: an error already on its way out wins)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._waiting:
            self._waiting = False
            raise KeyboardInterrupt

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            return  # the run is stopping already: nothing may interrupt that
        self.pressed = True
        if self._holding:
            self._waiting = True
            return
        raise KeyboardInterrupt
