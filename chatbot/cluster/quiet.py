"""Ray, kept quiet while a run uses it: our sentences say what happens, Ray's log lines do not.

Without this, every `--ray` run's stderr carries Ray's notices (token authentication, progress bars
disabled, "execution finished"), error-level lines of its C++ core about actor restarts, warnings about
idle actors, and, on stdout (where describe may be writing rows), the raylet's notes about failed tasks.
What goes wrong still reaches the user: as our own sentences (chatbot/cluster/pipelines.py), and Ray's
full logs stay in its session folder (`/tmp/ray/session_latest/logs` on each node).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BACKEND_LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"  # Ray's C++ core; ours unless the user set it
_WORKER_DIED = ("worker died", "was killed")  # the raylet's note when an actor's process ends unexpectedly
_stopped = threading.Event()  # a worker process stopped during this run (its batch is retried)


def worker_stopped() -> bool:
    """Whether the raylet said, during this run, that a worker process stopped (killed, out of memory)."""
    return _stopped.is_set()


def heard(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    """Takes the place of Ray's `print_to_stdstream` for the driver's error messages, which Ray prints to stdout
    (into describe's rows): a worker that stopped is remembered, to be said in our words; the rest is in Ray's logs."""
    if any(words in str(line) for line in data.get("lines", ()) for words in _WORKER_DIED):
        _stopped.set()


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray's Python loggers, Ray Data's console handler, Ray's warnings and the raylet's messages off, while
    the block runs; as they were after it. Ray Data's own log file keeps everything."""
    ray_logger, data_logger = logging.getLogger("ray"), logging.getLogger("ray.data")
    level = ray_logger.level
    consoles = [(handler, handler.level) for handler in data_logger.handlers
                if not isinstance(handler, logging.FileHandler) and "File" not in type(handler).__name__]
    ray_worker: Any = sys.modules.get("ray._private.worker")  # prints the raylet's messages, from a thread
    printer = getattr(ray_worker, "print_to_stdstream", None)  # (another Ray layout: they stay as they are)
    with warnings.catch_warnings():  # Ray Data warns from its executor's thread too: the filter is process-wide
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # idle actors, deprecated settings
        try:
            ray_logger.setLevel(logging.CRITICAL)
            for handler, _ in consoles:
                handler.setLevel(logging.CRITICAL + 1)
            if printer is not None:
                ray_worker.print_to_stdstream = heard
            _stopped.clear()
            yield
        finally:
            if printer is not None:
                ray_worker.print_to_stdstream = printer
            for handler, handler_level in consoles:
                handler.setLevel(handler_level)
            ray_logger.setLevel(level)


@contextmanager
def quiet_init() -> Iterator[None]:
    """Around `ray.init`: the C++ core's lines below fatal off for this driver (they would come on every actor
    start), and stderr set aside while Ray starts or joins (it notes its log level, and retries a refused
    connection with a warning a second); a failure is said by the caller, from the exception."""
    own_level = BACKEND_LOG_LEVEL not in os.environ
    if own_level:
        os.environ[BACKEND_LOG_LEVEL] = "fatal"
    try:
        with _stderr_set_aside():
            yield
    finally:
        if own_level:
            os.environ.pop(BACKEND_LOG_LEVEL, None)


@contextmanager
def _stderr_set_aside() -> Iterator[None]:
    """File descriptor 2 pointed at a temporary file, then back (what Ray's C++ core writes bypasses sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to set aside
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
    finally:
        os.close(saved)
