"""blip2-chat at a pseudo-terminal, for tests: start it, read what it writes as it comes, end it."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, int]:
    """`python -m chatbot ARGS` in a new pseudo-terminal with this environment; (process, our end, its end).

    Its end stays open here for the caller to read the terminal's settings after the process has gone, or to
    close at once so that reading our end ends when the process does."""
    import pty

    ours, theirs = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", *args], stdin=theirs, stdout=theirs, stderr=theirs, close_fds=True, env=env,
    )
    return process, ours, theirs


@contextlib.contextmanager
def ended(process: subprocess.Popen[bytes], *fds: int) -> Iterator[None]:
    """However the block ends, the process is killed if it still runs and these descriptors are closed."""
    try:
        yield
    finally:
        if process.poll() is None:
            process.kill()
        for fd in fds:
            os.close(fd)


class Screen:
    """What a process wrote to its pseudo-terminal, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def wait_for(self, done: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what} never happened: {self.data[-2000:]!r}"
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.data += os.read(self.fd, 65536)
                except OSError:
                    return

    def wait_for_text(self, text: bytes, count: int = 1) -> None:
        """Until `text` has been written `count` times in all (or the terminal closed)."""
        self.wait_for(lambda: self.data.count(text) >= count, f"{text!r} written {count} times")

    def drain(self, process: subprocess.Popen[bytes]) -> int:
        while process.poll() is None:
            self.wait_for(lambda: process.poll() is not None, "the exit", timeout=60)
        with contextlib.suppress(OSError):
            while select.select([self.fd], [], [], 0.2)[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.data += chunk
        return process.returncode
