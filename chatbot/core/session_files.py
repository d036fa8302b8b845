"""Session files: reading one safely (size checked before parsing, links refused where asked, never
opened unless it is a regular file), writing atomically (temporary file, fsync, rename) or only when the
name is free, and the JSON form.

Every problem reading one is a `SessionError` naming where it came from; a file that could not be read
at all (not a regular file, a link where links are not followed, permission denied, an I/O error) is a
`SessionFileUnreadable`, since nothing is known about its content, and one whose content is not a session
is a `SessionDamaged`, whose `why` says what is wrong: see `chatbot.core.store`.

A file in a format newer than `FORMAT_VERSION`, or with fields this version does not know, is read, and
what is not understood is named in `Session.not_understood`, so that such a file is never rewritten
without it (the store goes on in a copy).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
import tempfile
from json.encoder import encode_basestring as _json_string  # escapes as json.dumps(ensure_ascii=False)
from pathlib import Path
from typing import Any, Literal

from chatbot.core.session import ImageRef, Session, SessionError, Turn
from chatbot.errors import first_line
from chatbot.file_kinds import LINK_TO_NOTHING, file_kind, not_regular_words
from chatbot.untrusted import visible

FORMAT_VERSION = 1
MAX_SESSION_BYTES = 8_000_000  # a session file larger than this is refused before it is parsed
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a pipe put there after the check must not block the open
BINARY = getattr(os, "O_BINARY", 0)
TEMP_STEM_BYTES = 120  # of a file's name, at most, in the name of the temporary file it is written as
_DAMAGED_HINT = "It may be damaged; start a new chat."
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # a file name's bytes that are not UTF-8, as os.fsdecode keeps them


def shown(text: object, limit: int = 80) -> str:
    """`text` for a message: control characters made visible, cut to `limit` characters."""
    text = str(text)
    return visible(text if len(text) <= limit else text[:limit] + "…")


def entry_kind(path: Path) -> str | None:
    """What is at `path`, in words: 'a file', 'a folder', 'a named pipe', 'a device', 'a socket', 'a link to
    nothing' or 'a link to a file' (a folder, a device...); None when nothing is there. Nothing is opened."""
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
    except (OSError, ValueError):
        return None
    if not stat.S_ISLNK(mode):
        return "a file" if stat.S_ISREG(mode) else file_kind(mode)
    try:
        target = os.stat(path).st_mode
    except (OSError, ValueError):
        return LINK_TO_NOTHING
    return f"a link to {'a file' if stat.S_ISREG(target) else file_kind(target)}"


def reason_words(error: OSError) -> str:
    """What went wrong, as words inside a sentence ('no space left on device'), never the exception's name."""
    return (error.strerror or first_line(error) or "an error of the system").lower()


UnreadableCause = Literal["missing", "not regular", "denied", "other"]


class SessionFileUnreadable(SessionError):
    """A session file that could not be read at all (not a regular file, permission denied, an I/O error):
    its content is unknown, so it is not damaged and never set aside. `why` says why in a few words."""

    def __init__(self, message: str, hint: str, why: str, cause: UnreadableCause = "other") -> None:
        super().__init__(message, hint)
        self.why = why
        self.cause = cause


class SessionDamaged(SessionError):
    """What a session file holds is not a session (too large, not UTF-8, not JSON, a field of the wrong type):
    `why` says what is wrong in a few words, the same in every message about it."""

    def __init__(self, message: str, hint: str, why: str) -> None:
        super().__init__(message, hint)
        self.why = why


def _damaged(where: str, why: str) -> SessionDamaged:
    return SessionDamaged(f"{where} is not a readable blip2-chat session ({why}).", _DAMAGED_HINT, why)


def not_a_regular_file(where: str, mode: int, hint: str) -> SessionFileUnreadable:
    why = not_regular_words(mode)
    return SessionFileUnreadable(f"{where} is {why}, so it was not read.", hint, why, "not regular")


def _unreadable(where: str, error: OSError) -> SessionFileUnreadable:
    reason = (error.strerror or str(error) or type(error).__name__).lower()
    if error.errno in (errno.EACCES, errno.EPERM):
        return SessionFileUnreadable(f"{where} could not be read: {reason}.", "Check its permissions.", reason,
                                     "denied")
    cause: UnreadableCause = "missing" if error.errno == errno.ENOENT else "other"
    return SessionFileUnreadable(f"{where} could not be read: {reason}.", "Check the path.", reason, cause)


Stamp = tuple[int, int, int, int]


def file_stamp(status: os.stat_result) -> Stamp:
    """Which file this is and which version of it: device, inode, size, modification time."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def still_names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file `fd` opened: not replaced (renamed over, as `write_atomic` does) nor
    removed meanwhile. Never through a link."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def write_atomic(path: Path, text: str | bytes, *, private: bool = True) -> os.stat_result:
    """Write via a temporary file, fsync, rename: a crash leaves the old file or the new one, never half.

    The folder must exist (nothing else is created); an existing entry at `path` is replaced (a link
    itself, never the file it points to). `private`: readable by its owner only (sessions); else the
    usual mode, 0666 less the umask (an export, made to be shared). `text` is written as UTF-8 (`utf8_bytes`),
    bytes as they are. Returns the written file's status.
    """
    data = text if isinstance(text, bytes) else utf8_bytes(text)
    temp = _write_temp(path, data, private)
    try:
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return os.stat(path, follow_symlinks=False)


def write_new(path: Path, text: str, *, private: bool = True) -> os.stat_result:
    """Like `write_atomic`, but FileExistsError when `path` exists, even as a link to nothing: nothing is
    ever replaced, and nothing is written through a link."""
    temp = _write_temp(path, utf8_bytes(text), private)
    try:
        try:
            os.link(temp, path)  # atomic, and fails when the name is taken
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: check, then rename
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
            os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return os.stat(path, follow_symlinks=False)


def utf8_bytes(text: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (typed bytes that were not UTF-8) becomes "?"."""
    return text.encode("utf-8", "replace")


def _write_temp(path: Path, data: bytes, private: bool) -> str:
    """A new file beside `path` holding `data`, fsynced: mode 0600 (`private`), else 0666 less the umask."""
    if private:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{_temp_stem(path)}.", suffix=".tmp")
    else:
        fd, temp = _shared_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return temp


def _temp_stem(path: Path) -> str:
    """`path`'s name, cut to TEMP_STEM_BYTES, for its temporary file's name: a name near the file system's
    limit (255 bytes) must not be refused as too long only because the temporary one adds to it."""
    stem = path.name
    while len(os.fsencode(stem)) > TEMP_STEM_BYTES:
        stem = stem[:-1]
    return stem


def _shared_temp(path: Path) -> tuple[int, str]:
    """Like mkstemp (a new name, never a link followed), with the mode every new file gets."""
    for _ in range(100):
        temp = str(path.parent / f".{_temp_stem(path)}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | BINARY, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "No free temporary name", str(path.parent))


def session_json(session: Session) -> str:
    """The text of `session`'s file: `{"format": 1, **session.to_dict()}` as `json.dumps(..., ensure_ascii=False,
    indent=1)` writes it, character for character, but for an image source's undecodable bytes (U+DC80..U+DCFF,
    see `chatbot.core.session._text`), written as `\\udcXX` escapes so that the path comes back intact.

    Written here rather than by `json.dumps`, whose indenting encoder is pure Python: a save is made after every
    turn and writes every turn, so its cost grows with the chat (benchmarks/bench_session_save.py). Any other
    lone surrogate stays as it is (and becomes "?" when the text is written as UTF-8, as before).
    """
    parts = [
        '{\n "format": ', _json(FORMAT_VERSION, 1), ',\n "model": ', _json(session.model, 1),
        ',\n "id": ', _json(session.id, 1), ',\n "created": ', _json(session.created, 1), ',\n "turns": ',
    ]
    if session.turns:
        parts += ["[\n", ",\n".join([_turn_json(turn) for turn in session.turns]), "\n ]"]
    else:
        parts.append("[]")
    parts += [',\n "image": ', _image_json(session.image, 1), ',\n "context_start": ', _json(session.context_start, 1),
              ',\n "options": ', _json(session.options, 1)]
    if session.draft:
        parts += [',\n "draft": ', _json(session.draft, 1)]
    parts.append("\n}")
    return "".join(parts)


def _json(value: object, level: int) -> str:
    """`value` as `json.dumps(..., ensure_ascii=False, indent=1)` writes it nested `level` deep."""
    if type(value) is str:
        return _json_string(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)  # what json writes for a float
    if type(value) is bool:
        return "true" if value else "false"
    # JSON strings hold no line break (it is escaped), so every one in the text is indentation
    return json.dumps(value, ensure_ascii=False, indent=1).replace("\n", "\n" + " " * level)


def _source_json(source: object) -> str:
    """An image's source as a JSON string: its undecodable bytes (lone surrogates U+DC80..U+DCFF) as escapes."""
    text = _json(source, 4)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _UNDECODABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text


def _image_json(image: ImageRef | None, level: int) -> str:
    if image is None:
        return "null"
    inner = " " * (level + 1)
    return (f'{{\n{inner}"source": {_source_json(image.source)},\n{inner}"sha256": {_json(image.sha256, level + 1)}'
            f'\n{" " * level}}}')


def _turn_json(turn: Turn) -> str:
    """One turn of the "turns" list, indented as json.dumps(indent=1) does (the list is 1 deep, the turn 2)."""
    text = (f'  {{\n   "question": {_json(turn.question, 3)},\n   "answer": {_json(turn.answer, 3)},\n   "image": '
            f'{_image_json(turn.image, 3)},\n   "stopped": {_json(turn.stopped, 3)},\n   "created": '
            f'{_json(turn.created, 3)}')
    if turn.compared:
        answers = [f'    {{\n     "image": {_image_json(other.image, 5)},\n     "answer": {_json(other.answer, 5)},'
                   f'\n     "stopped": {_json(other.stopped, 5)}\n    }}' for other in turn.compared]
        text += ',\n   "compared": [\n' + ",\n".join(answers) + "\n   ]"
    if turn.fresh:
        text += ',\n   "fresh": true'
    return text + "\n  }"


def session_from_json(text: str, origin: str) -> Session:
    """Parse a saved or exported session; anything malformed is a SessionError naming `origin`, and only that."""
    where = shown(origin, 400)
    if not isinstance(text, str):
        raise _damaged(where, "it is not text")
    if len(text) > MAX_SESSION_BYTES:
        raise _too_large(where, len(text))
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write: not part of the JSON
    try:
        data: Any = json.loads(text)
    except (ValueError, TypeError, RecursionError) as error:
        raise _damaged(where, f"it is not JSON: {type(error).__name__}") from None
    newer = ""
    if isinstance(data, dict) and "format" in data:
        newer = _format_words(data.pop("format"))
    try:
        session = Session.from_dict(data)
    except SessionError as error:
        raise _damaged(where, error.message) from None
    session.not_understood = "; ".join(words for words in (newer, session.not_understood) if words)
    return session


def _format_words(value: object) -> str:
    """'' for the format this version writes, else what it is, for `Session.not_understood`."""
    if type(value) is int and value == FORMAT_VERSION:
        return ""
    if type(value) is int and value > FORMAT_VERSION:
        number = value if value < 10**9 else "over 10^9"
        return f"format {number}, newer than the format {FORMAT_VERSION} this one reads"
    named = "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else json.dumps(value)
    return f"format {shown(named, 20)}, which this one does not know: it reads format {FORMAT_VERSION}"


def _too_large(where: str, size: int) -> SessionDamaged:
    why = f"{size / 1e6:.1f} MB, more than the {MAX_SESSION_BYTES / 1e6:.0f} MB a session file may have"
    return SessionDamaged(f"{where} is {why}, so it was not read.", _DAMAGED_HINT, f"it is {why}")


def read_session_file(path: Path, origin: str, *, follow_links: bool = True) -> tuple[Session, os.stat_result]:
    """The session in the file at `path` and the status of the file it was read from.

    Only a regular file is opened (a named pipe or a device would block or answer forever), and the size
    is checked before anything is parsed. Every problem is a SessionError naming `origin`: a
    `SessionFileUnreadable` when the file could not be read at all (missing, permission denied, not a
    regular file, a link when `follow_links` is False: never followed, whether or not it leads anywhere),
    a `SessionDamaged` when what it holds is not a session (too large, not UTF-8, not JSON, a field of the
    wrong type). A UTF-8 byte-order mark at the start is allowed and dropped.
    """
    where = shown(origin, 400)
    try:
        before = os.stat(path, follow_symlinks=follow_links)
    except OSError as error:
        raise _unreadable(where, error) from None
    if not follow_links and stat.S_ISLNK(before.st_mode):
        raise _link_refused(where, path)
    if not stat.S_ISREG(before.st_mode):
        raise not_a_regular_file(where, before.st_mode, "Give a session file.")
    flags = os.O_RDONLY | BINARY | NONBLOCK | (0 if follow_links else NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_links:  # it became a link since the check
            raise _link_refused(where, path) from None
        raise _unreadable(where, error) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):  # it was swapped for something else since the check
            raise not_a_regular_file(where, status.st_mode, "Give a session file.")
        if status.st_size > MAX_SESSION_BYTES:
            raise _too_large(where, status.st_size)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SESSION_BYTES:  # never more than the limit and one byte, whatever it grew to
            chunk = os.read(fd, MAX_SESSION_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as error:
        raise _unreadable(where, error) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SESSION_BYTES:  # it grew while we looked
        raise _too_large(where, len(data))
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark (some editors write one) is dropped
    except UnicodeDecodeError:
        raise _damaged(where, "it is not UTF-8 text") from None
    return session_from_json(text, origin), status


def _link_refused(where: str, path: Path) -> SessionFileUnreadable:
    """A link where links are not followed: like anything that is not a regular file, it is never opened and
    never set aside (the link itself is someone's, and what it leads to is not the store's)."""
    try:
        leads_somewhere = os.path.exists(path)  # looked at, never opened
    except (OSError, ValueError):
        leads_somewhere = False
    why = "a link, not a regular file" if leads_somewhere else f"{LINK_TO_NOTHING}, not a regular file"
    return SessionFileUnreadable(f"{where} is a link, and the sessions folder's links are never followed.",
                                 "Move the session file itself into the folder.", why, "not regular")
