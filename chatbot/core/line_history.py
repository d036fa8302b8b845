"""The line history file (`plain-history` in the data folder): the Up arrow's earlier lines, in the screen-reader
mode and in the chat app alike (one file, so `sessions --delete` forgets a chat's lines for both).

Each line is added to the file as it is entered, so a chat ended by anything (SIGTERM, SIGHUP, a closed
terminal window, `tmux kill-session`) loses none of them; only the lines of this chat are added, so lines
removed meanwhile (`sessions --delete`) are not written back. The file is never opened through a symbolic
link (O_NOFOLLOW), nor when it is not a regular file: then the history is not kept, said once, and the chat
goes on. It is kept to its last HISTORY_LINES lines, trimmed when a chat starts.

Two chats (the app and the screen-reader mode, two terminals) share the file, so adding and trimming hold an
exclusive `fcntl.flock` on it: a trim (read, then an atomic replace) cannot drop a line added meanwhile, and no
one reads half a line. A chat that waited for the lock while the file was replaced opens the new one. Where
there is no fcntl (Windows) the file is used without the lock, as before.

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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType

from chatbot.core.session_files import NOFOLLOW, NONBLOCK, still_names, write_atomic
from chatbot.file_kinds import not_regular_words
from chatbot.image_download import without_logins
from chatbot.untrusted import visible

try:
    import fcntl as _fcntl_module

    _fcntl: ModuleType | None = _fcntl_module
except ImportError:  # Windows: the file is used without a lock
    _fcntl = None

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
        with self._locked(os.O_RDONLY) as fd:
            if fd is None:
                return []
            with os.fdopen(os.dup(fd), "rb") as file:
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
                with contextlib.suppress(OSError):  # replaces the file itself (still locked): never through a link
                    write_atomic(self.path, "".join(f"{line}\n" for line in self._with_header(stored)))
        return [_spoken(line, self.libedit) for line in stored]

    def remove(self, unwanted: Callable[[str], bool]) -> int:
        """Take out of the file the lines for which `unwanted` (given a line as it was typed) is true, under the
        lock, so that no line another chat adds meanwhile is lost (`sessions --delete`); how many went."""
        with self._locked(os.O_RDONLY) as fd:
            if fd is None:
                return 0
            with os.fdopen(os.dup(fd), "rb") as file:
                lines = file.read().decode("utf-8", "replace").splitlines()
            libedit = bool(lines) and lines[0] == LIBEDIT_HEADER
            kept = [line for number, line in enumerate(lines)
                    if (libedit and number == 0) or not unwanted(_spoken(line, libedit))]
            if len(kept) < len(lines):
                try:  # replaces the file itself (still locked): never written through a link
                    write_atomic(self.path, "".join(f"{line}\n" for line in kept))
                except OSError:
                    return 0
        return len(lines) - len(kept)

    def add(self, lines: Iterable[str]) -> None:
        """Append `lines` to the file now (made with owner-only permissions if it is not there), a password in an
        address masked (`/image https://bob:***@host/a.png`): the file outlives the chat."""
        lines = [without_logins(line) for line in lines if line and len(line) <= MAX_LINE_CHARS]  # no pasted book
        if not lines or not self.kept:
            return
        if self.libedit:
            lines = [_ESCAPED.sub(lambda match: f"\\{ord(match.group()):03o}", line) for line in lines]
        data = "".join(f"{' '.join(line.splitlines())}\n" for line in lines).encode("utf-8", "replace")
        with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            if fd is None:
                return
            with contextlib.suppress(OSError):  # a full disk: the chat goes on, as before
                while data:
                    data = data[os.write(fd, data):]

    @contextlib.contextmanager
    def _locked(self, flags: int) -> Iterator[int | None]:
        """The file opened with `flags` (see `_open`; None when it cannot be) and held under an exclusive lock
        until the block ends; opened again if another chat replaced it (a trim) while this one waited. (Each time
        round, another chat has finished a trim, so this ends when they stop trimming: one trim per chat start.)"""
        fd = self._open(flags)
        while fd is not None and _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX)
            except OSError:  # a file system without locks: used unlocked, as before
                break
            if still_names(self.path, fd):
                break
            os.close(fd)  # replaced (trimmed) while this chat waited: written there, a line would be lost
            fd = self._open(flags)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)  # closing releases the lock

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


def _spoken(line: str, libedit: bool) -> str:
    """A stored line as it was typed: libedit's octal escapes (`\\040` for a space) turned back."""
    return _OCTAL.sub(lambda match: chr(int(match.group(1), 8)), line) if libedit else line
