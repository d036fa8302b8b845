"""Helpers for the chat app's thread workers: loading in a daemon thread (model errors are worded by chatbot.errors),
and streamed text gathered between repaints.

Textual thread workers run in asyncio's default executor, which the interpreter waits for at exit.
Loading a multi-gigabyte model cannot be interrupted, so the worker hands the load to a daemon
thread and only waits on it: quitting while the model loads then exits at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DaemonCall(Generic[T]):
    """Run `function` in a daemon thread; `wait` polls so the caller can give up when cancelled."""

    def __init__(self, function: Callable[[], T], name: str) -> None:
        self._function = function
        self._result: T | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the waiting thread
            self._error = error

    def wait(self, cancelled: Callable[[], bool], poll_seconds: float = 0.1) -> T | None:
        """The result (re-raising the function's error), or None as soon as `cancelled()` is true."""
        while self.thread.is_alive():
            if cancelled():
                return None
            self.thread.join(poll_seconds)
        if self._error is not None:
            raise self._error
        return self._result


class StreamBuffer:
    """Text a worker thread streams, gathered until the app takes it, so a batch of tokens costs one message.

    The worker `put`s every chunk and posts a message only when `put` says so: the first chunk since the
    app last `take`s. However fast the tokens come, the app then handles one message per repaint, not one
    per token (each message and each repaint holds the interpreter the model's thread decodes with).
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._told = False  # a message is on its way, or the app has yet to take what it was told of
        self._lock = threading.Lock()

    def put(self, text: str) -> bool:
        """Add `text`; True when the app has to be told (nothing told since it last took)."""
        with self._lock:
            self._parts.append(text)
            if self._told:
                return False
            self._told = True
            return True

    def take(self) -> str:
        """Everything put since the last take, joined ("" when nothing was)."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._told = False
            return text


class RepaintPace:
    """At most `per_second` repaints a second: the first at once, later ones when `wait()` says 0."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second
        self._clock = clock
        self._last: float | None = None

    def wait(self) -> float:
        """Seconds until the next repaint is due (0: now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - self._clock())

    def painted(self) -> None:
        self._last = self._clock()
