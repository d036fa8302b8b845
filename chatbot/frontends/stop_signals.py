"""Stopping a long run (`describe`, `index`) by a signal: the first one stops it, every later one is ignored.

The first signal lands as KeyboardInterrupt, Ctrl+C's own exception, so every `except KeyboardInterrupt` that
keeps what a run finished takes SIGTERM (a shutdown, `kill`, `timeout`) and SIGHUP (the terminal closed) too:
those land as `SignalStop`, a KeyboardInterrupt that carries the exit status the signal asks for (128 + its
number: 143, 129). It never lands in the middle of a step that must not be cut (a row written and counted, an
index swapped in): inside `held` it waits, and lands just after; inside `deferred` it is only noted. A signal
that comes while the run is stopping (closing files, saying how far it got, leaving) must not interrupt that:
Python's default handler raised a second Ctrl+C again, at exit too, where it broke the wait for the model
thread, and the process aborted with a traceback. Here it is ignored.

A Python-level handler rather than a blocked signal mask: the kernel gives a process's signal to any thread
that does not block it (the model thread, torch's threads), so blocking it on the main thread alone did not
hold it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTED = 130  # the exit status after Ctrl+C (128 + SIGINT)


class SignalStop(KeyboardInterrupt):
    """A run stopped by SIGTERM or SIGHUP, raised as Ctrl+C's KeyboardInterrupt; `status`: 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.status = 128 + signum


def stop_status(stop: KeyboardInterrupt) -> int:
    """The exit status a run stopped by `stop` ends with: 130 after Ctrl+C, 143 after SIGTERM, 129 after SIGHUP."""
    return stop.status if isinstance(stop, SignalStop) else INTERRUPTED


class StopSignals:
    """The run's handler of `signals` while `installed`; `pressed` once one has stopped the run (or was noted)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT,)) -> None:
        self.signals = signals
        self.pressed = False  # a signal arrived: the run stops (or has stopped); later ones are ignored
        self.signum: int | None = None  # the first signal that came
        self._holding = False  # a step that must not be cut is running
        self._deferring = False  # ... and a signal in it only is noted (`deferred`)
        self._waiting = False  # a signal arrived while holding: raised when the step is done

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals here (main thread only: Python runs handlers there). The previous handlers come back
        when the run ends, unless a signal stopped it: then later ones stay ignored until the process leaves."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in self.signals}
        try:
            yield self
        finally:
            if not self.pressed:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A signal that arrives inside waits until the block is done, then stops the run (only if the block ended
        normally: an error already on its way out wins)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._waiting:
            self._waiting = False
            raise self._stop()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal that arrives inside is noted (`pressed`, `signum`) and raises nothing: the block, and what
        follows it, is the end of the run already."""
        self._holding = self._deferring = True
        try:
            yield
        finally:
            self._holding = self._deferring = self._waiting = False

    def _stop(self) -> KeyboardInterrupt:
        return KeyboardInterrupt() if self.signum in (None, signal.SIGINT) else SignalStop(self.signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            return  # the run is stopping already: nothing may interrupt that
        self.pressed = True
        self.signum = signum
        if self._holding:
            self._waiting = not self._deferring
            return
        raise self._stop()
