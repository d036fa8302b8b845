"""Sessions on disk: saved after every turn (atomic), listed, resumed, exported: `SessionStore`, the one object
front ends and the core use, built in one line of base classes, each with its share of the store's rules:
`session_folder.py` (ids that may name files, only the folder's own entries touched), `session_loading.py`
(what is read, damaged files set aside, a file this version does not fully understand never rewritten, a bad
saved option dropped), `session_listing.py` (`summaries`; `latest`, the newest chat with a question) and
`session_deleting.py` (`delete`). This module claims and saves:

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
- **The store never writes a session it would refuse to read back**: a chat past `MAX_SESSION_BYTES`, or with
  a question or answer past `MAX_TEXT_CHARS`, is not saved (`SessionTooLong`, `SessionError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatbot.core.session import MAX_TEXT_CHARS, Session, SessionError, valid_session_id
from chatbot.core.session_deleting import DeletingFolder
from chatbot.core.session_files import MAX_SESSION_BYTES, reason_words, session_json, shown, utf8_bytes, write_atomic
from chatbot.core.session_lock import LOCKS, changed_since_read, let_go, remember_read, take_lock


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
class Claimed:
    """What claiming a session did: the sentence to show when it became a copy (None when this process holds
    it as it was), and whether the session changed (a copy under a new id, a saved option dropped), so a save
    serializes it again."""

    note: str | None
    changed: bool


class SessionStore(DeletingFolder):
    """A folder of `<id>.json` session files (and `<id>.lock` files while a chat is open): claimed, saved, loaded,
    listed and deleted."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.last_saved_bytes = 0  # the size of the file the last save wrote (a chat nearing the limit is told)

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

    def release(self, session: Session) -> None:
        """Let other blip2-chat processes have `session` (the chat was closed); nothing when not held."""
        if valid_session_id(session.id):
            with LOCKS:
                let_go(self._lock_path(session.id))

    # -- saving ------------------------------------------------------------------------------------

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
