"""Helpers for the chat app's thread workers: loading in a daemon thread (model errors are worded by chatbot.errors).

Textual thread workers run in asyncio's default executor, which the interpreter waits for at exit.
Loading a multi-gigabyte model cannot be interrupted, so the worker hands the load to a daemon
thread and only waits on it: quitting while the model loads then exits at once.
"""

from __future__ import annotations

import threading
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
