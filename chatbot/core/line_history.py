"""The line history file (`plain-history` in the data folder): the Up arrow's earlier lines, in the screen-reader
mode and in the chat app alike (one file, so `sessions --delete` forgets a chat's lines for both).

Each line is added to the file as it is entered, so a chat ended by anything (SIGTERM, SIGHUP, a closed
terminal window, `tmux kill-session`) loses none of them; only the lines of this chat are added, so lines
removed meanwhile (`sessions --delete`) are not written back. The file is never opened through a symbolic
link (O_NOFOLLOW), nor when it is not a regular file: then the history is not kept, said once, and the chat
goes on. It is kept to its last HISTORY_LINES lines, trimmed when a chat starts.

The format is readline's: one line each, UTF-8. A file that macOS's readline (libedit) wrote starts with its
header line, and a space, a backslash and other white space in it are written as octal escapes (`\\040`);
such a file is read and added to in that form.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from chatbot.core.session_files import NOFOLLOW, NONBLOCK, write_atomic
from chatbot.file_kinds import not_regular_words
from chatbot.image_download import without_logins
from chatbot.untrusted import visible

HISTORY_LINES = 1000
MAX_LINE_CHARS = 4_000  # a longer line (a pasted page) is not kept: the file stays a list of lines to recall
MAX_HISTORY_BYTES = 4_000_000  # read no more than this of the file: the last lines are what is kept
LIBEDIT_HEADER = "_HiStOrY_V2_"  # macOS's readline starts its history file with this line
_OCTAL = re.compile(r"\\([0-7]{3})")
_ESCAPED = re.compile(r"[\\\s]")  # what libedit writes as an octal escape


class LineHistory:
    """The history file at `path`; `say` receives the one sentence said when it cannot be kept."""

    def __init__(self, path: Path, say: Callable[[str], None]) -> None:
        self.path = path
        self.say = say
        self.kept = True  # False once it is known that the file cannot be kept (said once)
        self.libedit = False  # the file is in libedit's form

    def read(self) -> list[str]:
        """The earlier lines, oldest first (at most HISTORY_LINES); the file is trimmed to them if it was longer."""
        fd = self._open(os.O_RDONLY)
        if fd is None:
            return []
        with os.fdopen(fd, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            self.libedit = file.readline(len(LIBEDIT_HEADER) + 2).rstrip(b"\r\n") == LIBEDIT_HEADER.encode()
            if not self.libedit:
                file.seek(0)
            if size > MAX_HISTORY_BYTES:
                file.seek(size - MAX_HISTORY_BYTES)
            stored = file.read(MAX_HISTORY_BYTES).decode("utf-8", "replace").splitlines()
        if size > MAX_HISTORY_BYTES and stored:
            stored = stored[1:]  # the first may be the end of a line cut in two
        if len(stored) > HISTORY_LINES or size > MAX_HISTORY_BYTES:
            stored = stored[-HISTORY_LINES:]
            with contextlib.suppress(OSError):  # replaces the file itself: never written through a link
                write_atomic(self.path, "".join(f"{line}\n" for line in self._with_header(stored)))
        return [_OCTAL.sub(lambda match: chr(int(match.group(1), 8)), line) if self.libedit else line
                for line in stored]

    def add(self, lines: Iterable[str]) -> None:
        """Append `lines` to the file now (made with owner-only permissions if it is not there), a password in an
        address masked (`/image https://bob:***@host/a.png`): the file outlives the chat."""
        lines = [without_logins(line) for line in lines if line and len(line) <= MAX_LINE_CHARS]  # no pasted book
        if not lines or not self.kept:
            return
        fd = self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        if fd is None:
            return
        try:
            if self.libedit:
                lines = [_ESCAPED.sub(lambda match: f"\\{ord(match.group()):03o}", line) for line in lines]
            data = "".join(f"{' '.join(line.splitlines())}\n" for line in lines).encode("utf-8", "replace")
            os.write(fd, data)
        except OSError:  # a full disk: the chat goes on, as before
            pass
        finally:
            os.close(fd)

    def _with_header(self, lines: list[str]) -> list[str]:
        return [LIBEDIT_HEADER, *lines] if self.libedit else lines

    def _open(self, flags: int) -> int | None:
        """The file opened with `flags`, never through a link, and only when it is a regular file; None (said
        once, where it is a link or not a file) when it cannot be."""
        if not self.kept:
            return None
        try:
            if flags & os.O_CREAT:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags | NOFOLLOW | NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            return None  # nothing kept yet
        except OSError as error:
            if error.errno == errno.ELOOP or (error.errno is not None and os.path.islink(self.path)):
                self._not_kept("is a symbolic link, which blip2-chat does not follow")
            return None  # otherwise (permissions, a full disk) not kept, as before, without a word
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            self._not_kept(f"is {not_regular_words(mode)}")
            return None
        return fd

    def _not_kept(self, why: str) -> None:
        self.kept = False
        self.say(f"blip2-chat: The Up arrow's earlier lines are not kept across chats: {visible(str(self.path))} "
                 f"{why} (remove it, and the next chat makes the file).")
