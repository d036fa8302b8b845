"""Which process holds which chat: one advisory lock per open session, and which file version each
session object was read from.

`fcntl.flock` on `<id>.lock` on POSIX (the system releases it when the process ends); elsewhere an
`O_CREAT|O_EXCL` file holding the pid, taken over when that process is gone. `chatbot.core.store`
uses these to keep its rule "one chat, one writer" (see its docstring). `LOCKS` guards the tables.
"""

from __future__ import annotations

import atexit
import errno
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from chatbot.core.session import Session
from chatbot.core.session_files import BINARY, NOFOLLOW, Stamp, file_stamp

try:
    import fcntl as _fcntl_module

    _fcntl: ModuleType | None = _fcntl_module
except ImportError:  # Windows: lock files made with O_EXCL instead
    _fcntl = None



@dataclass
class _Held:
    fd: int
    flock: bool  # True: an fcntl lock (unlink, then close); False: an O_EXCL file (close, then unlink)


@dataclass
class _Read:
    session: weakref.ReferenceType[Session]
    stamp: Stamp


LOCKS = threading.RLock()
_HELD: dict[str, _Held] = {}  # lock file path (absolute) -> the lock this process holds
_READ: dict[int, _Read] = {}  # id(session) -> the file version it was last read from or written as


def remember_read(session: Session, status: os.stat_result) -> None:
    """`session` was just read from, or written as, the file whose status is `status`."""
    key = id(session)

    def forget(_: object) -> None:  # the session is gone: its id() may name another one later
        _READ.pop(key, None)

    _READ[key] = _Read(weakref.ref(session, forget), file_stamp(status))


def changed_since_read(session: Session, path: Path) -> bool:
    """True when there is a file at `path` that is not the version `session` was read from or written as."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        return False  # no file there: nothing to lose (a save that cannot write says so itself)
    seen = _READ.get(id(session))
    return seen is None or seen.session() is not session or seen.stamp != file_stamp(status)


def _pid_in(fd: int) -> int:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else 0


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())


def pid_alive(pid: int) -> bool:
    """True when a process `pid` exists (on Windows asked without signalling it: os.kill would end it)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - Windows
        import ctypes

        kernel32: Any = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009 - Windows only
        kernel32.OpenProcess.restype = ctypes.c_void_p
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return bool(getattr(ctypes, "get_last_error")() == 5)  # noqa: B009 - access denied: it exists
        code = ctypes.c_ulong()
        try:
            return bool(kernel32.GetExitCodeProcess(ctypes.c_void_p(handle), ctypes.byref(code))) and \
                code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(ctypes.c_void_p(handle))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def take_lock(path: Path) -> tuple[str, int]:
    """("held", 0): this process already held `path`; ("taken", 0): now it does; ("busy", pid): another
    process does (pid 0 when it cannot be told); ("unlocked", 0): this filesystem cannot lock."""
    if str(path) in _HELD:
        return "held", 0
    if _fcntl is not None:
        return _take_flock(path, _fcntl)
    return _take_exclusive(path)


def _take_flock(path: Path, fcntl: ModuleType) -> tuple[str, int]:
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            pid = _pid_in(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return "busy", pid
            return "unlocked", 0  # e.g. a network filesystem without flock: go on without
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except OSError:
            same = False
        if not same:  # its holder let go and removed it between our open and our lock: lock the new one
            os.close(fd)
            continue
        try:
            _write_pid(fd)
        except OSError:
            pass  # the lock holds; only the pid in the message is missing
        _HELD[str(path)] = _Held(fd, flock=True)
        return "taken", 0
    raise OSError(errno.EAGAIN, "the lock file kept changing")


def _take_exclusive(path: Path) -> tuple[str, int]:
    """The portable lock: create `path` only if absent, with our pid; a lock whose process is gone is stale."""
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | BINARY, 0o644)
        except FileExistsError:
            try:
                holder = os.open(path, os.O_RDONLY | NOFOLLOW | BINARY)
            except FileNotFoundError:
                continue  # let go just now
            try:
                pid = _pid_in(holder)
                age = time.time() - os.fstat(holder).st_mtime
            finally:
                os.close(holder)
            if pid and pid != os.getpid() and pid_alive(pid):
                return "busy", pid
            if not pid and age < 10:  # being written just now
                return "busy", 0
            try:  # stale: its process is gone (or it was ours from an earlier run with our pid)
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                return "busy", pid  # Windows: its holder still has it open
            continue
        try:
            _write_pid(fd)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        _HELD[str(path)] = _Held(fd, flock=False)
        return "taken", 0
    raise OSError(errno.EAGAIN, "the lock file kept changing")


def let_go(path: Path) -> None:
    """Let go of the lock on `path` this process holds, and remove the lock file, but only while it is still
    the file this process locked: one that replaced it (ours was deleted, and another process made and
    holds a new one) is another process's lock and stays. Nothing when this process does not hold `path`."""
    held = _HELD.pop(str(path), None)
    if held is None:
        return
    try:
        ours = os.path.samestat(os.fstat(held.fd), os.stat(path, follow_symlinks=False))
    except OSError:
        ours = False  # gone already, or it cannot be told: leave the name alone
    if held.flock:  # remove it while still holding it (a waiting process rechecks the name), then unlock
        try:
            if ours:
                Path(path).unlink(missing_ok=True)
        finally:
            os.close(held.fd)
    else:
        os.close(held.fd)  # first (Windows cannot remove an open file); ours is never taken over meanwhile:
        if ours:  # our pid is in it and we are alive
            try:
                Path(path).unlink(missing_ok=True)
            except OSError:
                pass


@atexit.register
def let_go_of_everything() -> None:
    """Let go of every lock this process holds and remove their files (at exit; `os._exit` skips atexit, so
    a front end that ends that way must call this first, or the `<id>.lock` files stay until the next
    listing sweeps them: harmless, as no process holds them, but untidy)."""
    with LOCKS:
        for key in list(_HELD):
            try:
                let_go(Path(key))
            except OSError:
                pass


def forget_read(session: Session) -> None:
    """`session` no longer stands for the file it was read from (it became a copy under a new id)."""
    _READ.pop(id(session), None)
