"""Which file `describe --out` is, and who may write it: checked before the model loads (`check_out`), then held
by one run alone (`held_alone`): a second `describe` into the same file, started while the first runs, is refused
in one sentence. A Parquet run writes NAME.partial (`partial_name`) and names it NAME only whole (parquet_output.py).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatbot.core.session_files import NOFOLLOW, NONBLOCK, still_names
from chatbot.frontends.describe.output import ALL_FORMATS, OutputError
from chatbot.untrusted import visible

try:
    import fcntl
except ImportError:  # not POSIX: no lock (two runs into one file are the user's to avoid)
    fcntl = None  # type: ignore[assignment]


def check_out(out: Path, fmt: str) -> None:
    """Refuse an --out that cannot be written, before the model loads: a folder, a path under a file, a file or
    folder this user may not write. A missing folder is fine (it is made when the first row is written).
    A named pipe or a device is left to the writer (opening a pipe would wait for its reader).

    Raises:
        OutputError: what is wrong, and what to pass instead.
    """
    if os.path.islink(out):  # a link planted at the path would have the rows written wherever it points
        raise OutputError(f"--out {visible(out)} is a symbolic link (to {visible(os.readlink(out))}), and describe "
                          "writes only to a file itself, never through a link.",
                          "Give --out the file's own path, or another name.")
    if out.is_dir():
        raise OutputError(f"--out {visible(out)} is a folder, not a file.",
                          f"Name a file in it, e.g. --out {visible(out / ('alt.' + fmt))}.")
    folder = out.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent  # folders that do not exist yet are made: the nearest one that does decides
    problem = ""
    if not folder.is_dir():
        problem = f"{visible(folder)} is not a folder"
    elif out.exists() and fmt != "parquet":
        problem = "" if os.access(out, os.W_OK) else "permission denied"
    elif not os.access(folder, os.W_OK | os.X_OK):  # a new file there (parquet: NAME.partial beside NAME)
        problem = f"permission denied in {visible(folder)}"
    if problem:
        raise OutputError(f"Cannot write {visible(out)}: {problem}.", "Choose another --out.")


def partial_name(out: Path) -> Path:
    """Where a Parquet run writes until it ends (`NAME.partial`): its rows appear under NAME only whole."""
    return out.with_name(out.name + ".partial")


@contextmanager
def held_alone(out: Path | None, fmt: str) -> Iterator[int | None]:
    """Hold --out for this run alone: a second `describe` into the same file is refused in one sentence (both
    would describe every image and append its rows twice, or one Parquet file would take the other's place).
    The text formats lock NAME itself, made now if it is new (and removed again if the run leaves it empty);
    Parquet locks NAME.partial, the file it writes until the end (removed again if left empty), and yields
    its descriptor for the writer. Each also refuses when the other kind of run holds its file. The lock goes
    with the process.

    Raises:
        OutputError: another run holds the file, or it cannot be opened (a link made there since check_out).
    """
    if out is None or fmt not in ALL_FORMATS or fcntl is None:
        yield None
        return
    mine, theirs = (partial_name(out), out) if fmt == "parquet" else (out, partial_name(out))
    existed = os.path.lexists(mine)
    fd = _open_locked(mine, fmt)
    try:
        if fd is None or _held_by_another(theirs):
            resumable = fd is None and fmt != "parquet"  # the other run appends to this same text file
            raise OutputError(f"Another blip2-chat describe is writing to {visible(out)}.",
                              "Wait for it to finish (then --resume goes on from its rows), or choose another --out."
                              if resumable else "Wait for it to finish, or choose another --out.")
        yield fd if fmt == "parquet" else None
    finally:
        if fd is not None:
            if fmt == "parquet" or not existed:
                drop_if_empty(mine, fd)
            os.close(fd)


def drop_if_empty(path: Path, fd: int) -> None:
    """Remove `path`, the file `fd` holds, if nothing was written to it: no empty file is left behind."""
    if os.fstat(fd).st_size == 0 and still_names(path, fd):
        with contextlib.suppress(OSError):
            path.unlink()


def _open_locked(path: Path, fmt: str) -> int | None:
    """`path` opened (made if new) and locked for this run; None when another run holds it. A run that ends
    removes its file while it holds it; one opened just before that is let go, and the one there now taken."""
    for _ in range(10):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, (os.O_RDWR if fmt == "parquet" else os.O_RDONLY) | os.O_CREAT | NOFOLLOW | NONBLOCK,
                         0o644)
        except OSError as error:
            raise OutputError(f"Cannot write {visible(path)}: {error.strerror or error}.", "Choose another --out.") \
                from None
        if not _lock(fd, exclusive=True):
            os.close(fd)
            return None
        if still_names(path, fd) or not stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    return None


def _lock(fd: int, *, exclusive: bool) -> bool:
    """Lock the file `fd` opened (no wait); False when another process holds it. A device (/dev/null) or a pipe
    is no file to share, and a file system without locks (some network ones) is gone on without, as the session
    lock does."""
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def _held_by_another(path: Path) -> bool:
    """Whether another `describe` holds `path` (a Parquet run's NAME.partial, a text run's NAME)."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK)
    except OSError:
        return False  # not there (or no file to share): nobody writes it
    try:
        return not _lock(fd, exclusive=False)
    finally:
        os.close(fd)
