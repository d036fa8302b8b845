"""Sessions on disk: saved after every turn (atomic), listed, resumed, exported.

The rules the store keeps, whatever a session file or a command line says:

- **Ids name files, so only safe ids are used.** A session id matches `valid_session_id` (the app's
  `YYYYMMDD-HHMMSS-xxxxxx`, or any 1-64 letters, digits, `-` and `_`). `path_for` refuses every other
  id, so no path is ever built from one; an imported session with another id gets a fresh one
  (`chatbot.core.resume.imported_session`).
- **The store touches only its own folder.** It reads, writes and renames only entries directly in the
  sessions folder and never follows a link there: a linked `<id>.json` (whether or not it leads
  anywhere) is not read through and not renamed, and a save never replaces a file it did not read.
- **Only what the store can read is read.** An entry that is not a regular file (a link, a folder, a
  named pipe, a device) is never opened, and one that cannot be read (permission denied, an I/O error)
  is not damaged: both are left where they are, listing leaves them out and says so in `problems`, and
  loading one raises a SessionError that says why (`SessionFileUnreadable`).
- **Damaged files are set aside, never fatal.** A file that is not valid JSON, holds a field of the wrong
  type or range (`Session.from_dict`), is not UTF-8, or is larger than `MAX_SESSION_BYTES` (refused
  before it is parsed) is moved aside to `<id>.<time>.corrupt` and reported in `problems` with the
  reason (`SessionDamaged.why`, the words loading it gives); listing goes on. The store never writes a
  session it would refuse to read back. A UTF-8 byte-order mark at the start of a file is allowed.
- **A file this version does not fully understand is never rewritten.** One in a newer format, or with
  fields this version does not know (`Session.not_understood`), is loaded as a copy under a new id,
  said in `problems` in one sentence; the file itself stays as it is, for the version that wrote it.
- **`latest` is the newest chat with a question.** A saved chat whose turns were all undone is listed
  (0 turns) and opens by its id, but `--continue` never lands on it. `opened_by_continue` tells a chat that
  ends whether `--continue` opens it, or `--resume ID` is the way back.
- **A bad saved option keeps the default and the rest of the session loads.** What `Session.from_dict`
  mended (an option that is no plain value, a `context_start` that is no turn index) and every saved
  option the settings schema refuses (`chatbot.core.settings`, the rule `/set` uses) are dropped and
  said in `problems`, one sentence each, when the session is loaded or claimed (an import is claimed).
- **One chat, one writer.** A process holds a session while it has it open: an advisory lock on
  `<id>.lock` next to the session file (`fcntl.flock` on POSIX, released by the system when the process
  ends; elsewhere an `O_CREAT|O_EXCL` file holding the pid, taken over when that process is gone).
  `claim(session)` takes it; when another live blip2-chat holds it, or the file changed since this
  session was read from it, `session` becomes a copy under a new id (every turn kept, the other
  chat's file untouched) and `claim` returns the sentence that says so. `save` claims first, so a
  session file another process holds is never overwritten: a save that had to fork raises
  `SessionForked` after writing the copy. `release(session)` lets go (exit does too). A new chat is claimed
  as it starts (`Conversation`), before it has a file, so that `every_saved_chat` counts it as open (it may
  show a pasted picture it has not saved yet). On a filesystem without working locks the save goes on
  unlocked; the changed-since-read check stays.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.session import MAX_TEXT_CHARS, Session, SessionError, new_session_id, valid_session_id
from chatbot.core.session_files import (
    MAX_SESSION_BYTES,
    SessionDamaged,
    SessionFileUnreadable,
    entry_kind,
    read_session_file,
    reason_words,
    session_json,
    shown,
    utf8_bytes,
    write_atomic,
)
from chatbot.core.session_lock import (
    LOCKS,
    changed_since_read,
    forget_read,
    let_go,
    remember_read,
    take_lock,
)
from chatbot.core.settings import checked_saved_options
from chatbot.file_kinds import LINK_TO_NOTHING
from chatbot.locations import sessions_dir

_ID_RULE = "session ids look like 20250101-120000-abcdef (letters, digits, - and _)"


class SessionForked(SessionError):
    """The session was saved, but as a copy under a new id (`path`): another blip2-chat has the chat open,
    or changed its file since this one read it. `message` is the sentence to show."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class SessionTooLong(SessionError):
    """The chat has grown past what a session file may hold (MAX_SESSION_BYTES): the save was refused, and the
    chat in memory holds what the file does not (an export still has it all)."""


NEARLY_FULL = 0.9  # a saved file this share of MAX_SESSION_BYTES: said once, before answers stop being saved


@dataclass(frozen=True)
class SessionSummary:
    """What `blip2-chat sessions` lists."""

    id: str
    updated: float
    turns: int
    model: str
    image: str  # the current image's source, or ""
    first_question: str


@dataclass(frozen=True)
class Deleted:
    """A chat `SessionStore.delete` removed: its turns (None when its file was damaged, or only damaged copies
    of it were left) and how many damaged copies of it went too."""

    id: str
    session: Session | None
    damaged_copies: int


@dataclass(frozen=True)
class Claimed:
    """What claiming a session did: the sentence to show when it became a copy (None when this process holds
    it as it was), and whether the session changed (a copy under a new id, a saved option dropped), so a save
    serializes it again."""

    note: str | None
    changed: bool


# -- the store ---------------------------------------------------------------------------------------------


class SessionStore:
    """A folder of `<id>.json` session files (and `<id>.lock` files while a chat is open)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or sessions_dir()
        self.problems: list[str] = []  # damaged files set aside, forks, renamed imports: for the UI to report
        self.last_saved_bytes = 0  # the size of the file the last save wrote (a chat nearing the limit is told)

    def path_for(self, session_id: str) -> Path:
        """The file of session `session_id`; SessionError for an id that could not safely name one."""
        if not valid_session_id(session_id):
            raise SessionError(f"'{shown(session_id)}' is not a session id: {_ID_RULE}.",
                               "List the saved sessions with `blip2-chat sessions`.")
        return self.root / f"{session_id}.json"

    def folder_problem(self) -> SessionError | None:
        """The sentence for a sessions folder that is something else (a file, a link to nothing, a device), or
        whose path goes through something that is not a folder; None when it is a folder or can be made."""
        there = self.root
        while not os.path.lexists(there) and there != there.parent:
            there = there.parent  # the nearest part of the path that is there decides
        kind = entry_kind(there)
        if kind is None or kind in ("a folder", "a link to a folder"):
            return None
        hint = "Move it away; blip2-chat then makes the folder itself."
        if kind == LINK_TO_NOTHING:
            with contextlib.suppress(OSError, ValueError):
                hint = (f"Make the folder it leads to ({shown(os.readlink(there), 400)}), or move the link away; "
                        "blip2-chat then makes the folder itself.")
        if there == self.root:
            return SessionError(f"{shown(there, 400)}, where blip2-chat keeps its chats, is {kind}, not a folder, so "
                                "no chat can be saved or listed there.", hint)
        return SessionError(f"{shown(there, 400)} is {kind}, not a folder, so blip2-chat cannot keep its chats in "
                            f"{shown(self.root, 400)}.", hint)

    def _check_folder(self) -> None:
        problem = self.folder_problem()
        if problem is not None:
            raise problem

    def export_log_path(self, session_id: str) -> Path | None:
        """Where the files chat `session_id` exported are recorded (`chatbot.core.export_log`): `exports/<id>.json`
        in the sessions folder; None for an id that could not safely name a file."""
        return self.root / "exports" / f"{session_id}.json" if valid_session_id(session_id) else None

    def _lock_path(self, session_id: str) -> Path:
        self.path_for(session_id)  # the same rule
        return self.root.resolve() / f"{session_id}.lock"

    def _inside(self, path: Path) -> bool:
        """True for an entry directly in the sessions folder (the entry itself: a link is not followed)."""
        try:
            return path.parent.resolve() == self.root.resolve() and path.name not in ("", ".", "..")
        except OSError:
            return False

    # -- claiming -------------------------------------------------------------------------------------

    def claim(self, session: Session) -> str | None:
        """Hold `session` for this process, until `release` or exit, so no other blip2-chat writes it.

        None when this process holds it now. When another live blip2-chat holds it, or its file changed
        since `session` was read from it, `session` becomes a copy under a new id (held by this process;
        the other file is left alone) and the sentence to show is returned.

        Raises:
            SessionError: an id that is not a session id, or a folder where no lock can be made.
        """
        return self._claim(session).note

    def _claim(self, session: Session) -> Claimed:
        """`claim`, saying too whether it changed `session` (see `Claimed`)."""
        path = self.path_for(session.id)
        mended = self._say_what_was_mended(session)
        self._check_folder()
        with LOCKS:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                state, pid = take_lock(self._lock_path(session.id))
            except OSError as error:
                raise SessionError(f"Could not lock the session file {shown(path, 400)}: {reason_words(error)}.",
                                   "Check that the folder is writable.") from None
            if state != "busy":
                if not changed_since_read(session, path):
                    return Claimed(None, mended)
                if state == "taken":  # it is not ours to write: let it go
                    let_go(self._lock_path(session.id))
                reason = (f"The saved chat {session.id} was changed by another blip2-chat since this one read "
                          "it")
            else:
                reason = f"This chat is open in another blip2-chat{f' (pid {pid})' if pid else ''}"
            new_id = self._fork(session)
            return Claimed(f"{reason}; continuing in a copy, session {new_id}.", True)

    def _fork(self, session: Session) -> str:
        """Give `session` a fresh id that no file has and this process holds."""
        for _ in range(100):
            new_id = new_session_id()
            if os.path.lexists(self.path_for(new_id)):
                continue
            try:
                state, _ = take_lock(self._lock_path(new_id))
            except OSError:
                continue
            if state != "busy":
                session.id = new_id
                forget_read(session)  # it was read from the other file, not this one
                return new_id
        raise SessionError("Could not find a free id for a copy of this chat.", "Try again.")

    def release(self, session: Session) -> None:
        """Let other blip2-chat processes have `session` (the chat was closed); nothing when not held."""
        if valid_session_id(session.id):
            with LOCKS:
                let_go(self._lock_path(session.id))

    # -- saving and loading ---------------------------------------------------------------------------

    def save(self, session: Session, text: str | None = None) -> Path:
        """Write `session` to its file (claiming it first, see `claim`) and return the path.

        `text` is `session_json(session)` when the caller has just made it (`Conversation.save` compares it
        with what it saved last), so that a save serializes the chat once: it is made here when None, and
        again when the claim changed the session (a copy under a new id, a saved option dropped).

        Raises:
            SessionForked: it was written, but as a copy under a new id (the message says why).
            SessionError: it could not be written, or it is too large to be read back.
        """
        claimed = self._claim(session)
        path = self.path_for(session.id)
        for turn in session.turns:
            if len(turn.question) > MAX_TEXT_CHARS or len(turn.answer) > MAX_TEXT_CHARS:
                raise SessionError(f"A question or an answer in this chat is longer than {MAX_TEXT_CHARS} characters, "
                                   "more than a saved session may hold, so it was not saved.",
                                   "Remove it with /undo, or start a new chat.")
        if text is None or claimed.changed:
            text = session_json(session)
        data = utf8_bytes(text)  # encoded once: measured, then written
        if len(data) > MAX_SESSION_BYTES:
            raise SessionTooLong(f"This chat is too long to save: a session file may have at most "
                                 f"{MAX_SESSION_BYTES / 1e6:.0f} MB, so its last change was not saved.",
                                 "/export md keeps all of it in a file; start a new chat to go on saving.")
        try:
            status = write_atomic(path, data)
        except OSError as error:
            raise SessionError(f"Could not save the session to {shown(path, 400)}: {reason_words(error)}.",
                               "Check that the folder is writable and the disk is not full.") from None
        remember_read(session, status)
        self.last_saved_bytes = len(data)
        if claimed.note:
            raise SessionForked(claimed.note, path)
        return path

    def load(self, session_id: str) -> Session:
        """The saved session `session_id`; a damaged file is set aside (see `problems`) and SessionError raised."""
        path = self.path_for(session_id)
        if not os.path.lexists(path):
            self._check_folder()
            raise SessionError(f"There is no saved session {session_id}.", "List them with `blip2-chat sessions`.")
        try:
            session, status = self._read(path)
        except SessionFileUnreadable as error:  # nothing known about its content: left where it is
            if error.cause == "missing":  # gone since
                raise SessionError(f"There is no saved session {session_id}.",
                                   "List them with `blip2-chat sessions`.") from None
            if error.cause == "not regular":
                raise SessionFileUnreadable(error.message, "Move it out of the sessions folder; `blip2-chat "
                                            "sessions` lists the saved ones.", error.why, error.cause) from None
            raise
        except SessionError as error:
            self._set_aside(path, error)
            raise
        session.id = session_id  # in the store, a session's file name is its id
        if session.not_understood:  # never rewritten by this version: go on in a copy
            with LOCKS:
                new_id = self._fork(session)
            self.problems.append(
                f"The session file {shown(path.name)} holds what this blip2-chat does not know "
                f"({session.not_understood}), so it is kept as it is and this chat goes on in a copy, session "
                f"{new_id}; a newer blip2-chat can open the file itself.")
        else:
            remember_read(session, status)
        self._say_what_was_mended(session)
        return session

    def _say_what_was_mended(self, session: Session) -> bool:
        """Drop the saved options the settings schema refuses and say, once, in `problems`, each of those and
        what loading `session` mended (`Session.load_notes`): the defaults are used, the rest goes on. True when
        an option was dropped (the session changed)."""
        notes, session.load_notes = session.load_notes, []
        refused = checked_saved_options(session.options)[1]
        for key, error in refused.items():
            del session.options[key]
            notes.append(f"The saved option {error.message.rstrip('.')}, so its default is used.")
        self.problems.extend(note for note in notes if note not in self.problems)
        return bool(refused)

    def _read(self, path: Path) -> tuple[Session, os.stat_result]:
        if not self._inside(path):
            raise SessionError(f"{shown(path, 400)} is not in the sessions folder.", "")
        return read_session_file(path, f"The session file {path}", follow_links=False)

    def _set_aside(self, path: Path, error: SessionError) -> Path:
        """Rename a damaged entry of the folder to `<name>.<time>.corrupt` (never overwriting one) and report it,
        with the reason `error` gives (`SessionDamaged.why`)."""
        if not self._inside(path):
            return path
        when = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.stem}.{when}.corrupt")
        for number in range(2, 1000):
            if not os.path.lexists(aside):
                break
            aside = path.with_name(f"{path.stem}.{when}-{number}.corrupt")
        try:
            os.rename(path, aside)  # the entry itself: a link is renamed, its target never touched
        except OSError:
            return path
        why = f" ({error.why})" if isinstance(error, SessionDamaged) else ""
        self.problems.append(f"The damaged session file {shown(path.name)} was moved aside to {shown(aside.name)}"
                             f"{why}.")
        return aside

    def summaries(self) -> list[SessionSummary]:
        """Every readable session, newest first; damaged files are set aside and noted in `problems`.

        Raises:
            SessionError: the sessions folder is something else (a file, a link to nothing): see `folder_problem`.
        """
        self._check_folder()
        found = []
        try:
            paths = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        except OSError:
            paths = []
        for path in paths:
            if not valid_session_id(path.stem):
                note = (f"{shown(path.name)} in the sessions folder is not named like a session ({_ID_RULE}), "
                        "so it was left out.")
                if note not in self.problems:
                    self.problems.append(note)
                continue
            try:
                session, status = self._read(path)
            except SessionFileUnreadable as error:
                self._note_unreadable(path, error)
                continue
            except SessionError as error:
                self._set_aside(path, error)
                continue
            first = next((t.question for t in session.turns if t.question), "")
            found.append(SessionSummary(
                id=path.stem, updated=status.st_mtime, turns=len(session.turns), model=session.model,
                image=session.image.source if session.image else "", first_question=first,
            ))
        self._sweep_locks()
        return sorted(found, key=lambda s: s.updated, reverse=True)

    def _note_unreadable(self, path: Path, error: SessionFileUnreadable) -> None:
        """Say in `problems` (once) that listing left out an entry it could not read; it stays where it is."""
        name = shown(path.name)
        if error.cause == "missing":  # removed since the folder was listed: nothing to say
            return
        if error.cause == "not regular":
            note = f"{name} in the sessions folder is {error.why}, so it was left out; move it out of the folder."
        elif error.cause == "denied":
            note = (f"The session file {name} could not be read ({error.why}), so it was left out; "
                    "check its permissions.")
        else:
            note = (f"The session file {name} could not be read ({error.why}), so it was left out; "
                    "try again, or check the disk.")
        if note not in self.problems:
            self.problems.append(note)

    def _sweep_locks(self) -> None:
        """Remove the lock files no process holds any more (a process that ends at once leaves its own)."""
        try:
            locks = list(self.root.glob("*.lock"))
        except OSError:
            return
        with LOCKS:
            for lock in locks:
                if not valid_session_id(lock.stem) or not self._inside(lock):
                    continue
                try:
                    path = self._lock_path(lock.stem)
                    if take_lock(path)[0] == "taken":  # nobody had it: let go, which removes it
                        let_go(path)
                except (OSError, SessionError):
                    continue

    # -- deleting -------------------------------------------------------------------------------------

    def delete(self, session_id: str) -> Deleted:
        """Remove the saved chat `session_id`: its file and the damaged copies of it set aside earlier.

        Its lock is taken first, so a chat open in another blip2-chat is never deleted under it. A damaged
        file is deleted too (the user asked for it gone): its turns are then unknown (`session` None).

        Raises:
            SessionError: no such chat, an id that is not one, a chat open in another blip2-chat, an entry
                that is no regular file (a link, a folder: left where it is), or a file that cannot be removed.
        """
        path = self.path_for(session_id)
        copies = self._damaged_copies(session_id)
        if not os.path.lexists(path) and not copies:
            self._check_folder()
            raise SessionError(f"There is no saved session {session_id}.", "List them with `blip2-chat sessions`.")
        with LOCKS:
            try:
                state, pid = take_lock(self._lock_path(session_id))
            except OSError as error:
                raise SessionError(f"Could not lock the session file {shown(path, 400)}: "
                                   f"{reason_words(error)}.", "Check that the folder is writable.") from None
            try:
                if state == "busy":
                    raise SessionError(f"The chat {session_id} is open in another blip2-chat"
                                       f"{f' (pid {pid})' if pid else ''}, so it was not deleted.",
                                       "Close it there (/quit), then delete it.")
                session = self._read_to_delete(path)
                with contextlib.suppress(OSError, TypeError):  # what its exports were: no use without the chat
                    os.unlink(self.export_log_path(session_id))  # type: ignore[arg-type]  # valid: path_for checked
                for entry in ([path] if os.path.lexists(path) else []) + copies:
                    try:
                        os.unlink(entry)  # the entry itself: checked to be a regular file in the folder
                    except FileNotFoundError:
                        continue
                    except OSError as error:
                        raise SessionError(f"Could not delete {shown(entry, 400)}: {reason_words(error)}.",
                                           "Check the sessions folder's permissions.") from None
            finally:
                if state == "taken":
                    let_go(self._lock_path(session_id))
        return Deleted(session_id, session, len(copies))

    def _damaged_copies(self, session_id: str) -> list[Path]:
        """The regular files `<id>.<time>.corrupt` that `_set_aside` made of this chat's file."""
        try:
            found = sorted(self.root.glob(f"{session_id}.*.corrupt")) if self.root.is_dir() else []
        except OSError:
            return []
        return [path for path in found if self._inside(path) and path.is_file() and not path.is_symlink()]

    def _read_to_delete(self, path: Path) -> Session | None:
        """The chat about to be deleted (None when there is no file, or a damaged one); SessionError for an entry
        the store never removes: one that is not a regular file, or cannot be read."""
        if not os.path.lexists(path):
            return None
        try:
            return self._read(path)[0]
        except SessionFileUnreadable as error:
            if error.cause == "missing":
                return None
            if error.cause == "not regular":
                raise SessionError(f"{shown(path.name)} in the sessions folder is {error.why}, so it was left "
                                   "where it is.",
                                   "Remove it yourself if you want it gone.") from None
            raise
        except SessionError:  # damaged: deleted all the same, its content unknown
            return None

    def every_saved_chat(self) -> list[Session] | None:
        """Every saved chat; None when that cannot be told: a session file that cannot be read, or a chat open in
        another blip2-chat now (it may hold what it has not saved yet: a new chat holds its lock from its start,
        before it has a file, with a picture pasted and no question asked yet)."""
        try:
            paths = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
            locks = sorted(self.root.glob("*.lock")) if self.root.is_dir() else []
        except OSError:
            return None
        with LOCKS:
            for lock in locks:
                if not valid_session_id(lock.stem):
                    continue
                try:
                    state, _ = take_lock(self._lock_path(lock.stem))
                except OSError:
                    return None
                if state == "taken":
                    let_go(self._lock_path(lock.stem))
                elif state == "busy":
                    return None
        sessions = []
        for path in paths:
            try:
                sessions.append(self._read(path)[0])
            except SessionError:
                return None
        return sessions

    def latest(self) -> Session | None:
        """The newest saved chat with at least one question (one whose turns were all undone is passed over)."""
        newest = next((summary for summary in self.summaries() if summary.turns), None)
        return self.load(newest.id) if newest else None

    def opened_by_continue(self, session_id: str) -> bool:
        """Whether `blip2-chat --continue` would open the saved chat `session_id` now: it is `latest`, the newest
        saved chat with a question (not when another chat was saved since, nor for a chat that is a copy whose
        original was saved later). False when that cannot be told, or it has no file: `--resume ID` is then the
        way back to it.

        `summaries` orders the chats as `latest` does, reading every file; this reads them in that order, newest
        first, only until the first one with a question, so a chat that ends says it at once however many are saved.
        """
        try:
            paths = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        except OSError:
            return False
        dated = []
        for path in paths:
            if not valid_session_id(path.stem):
                continue
            try:
                updated = os.stat(path, follow_symlinks=False).st_mtime
            except OSError:
                continue
            dated.append((updated, path))
        for _, path in sorted(dated, key=lambda item: item[0], reverse=True):  # stable: as `summaries` sorts
            try:
                session = self._read(path)[0]
            except SessionError:  # left out of `summaries` (or set aside by it): --continue passes over it too
                continue
            if session.turns:
                return path.stem == session_id
        return False
