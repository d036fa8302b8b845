"""Loading a saved session from the sessions folder, and setting a damaged file aside. Part of `SessionStore`
(`chatbot.core.store`), built on `SessionFolder`:

- **Only what the store can read is read.** An entry that is not a regular file (a link, a folder, a
  named pipe, a device) is never opened, and one that cannot be read (permission denied, an I/O error)
  is not damaged: both are left where they are, listing leaves them out and says so in `problems`, and
  loading one raises a SessionError that says why (`SessionFileUnreadable`).
- **Damaged files are set aside, never fatal.** A file that is not valid JSON, holds a field of the wrong
  type or range (`Session.from_dict`), is not UTF-8, or is larger than `MAX_SESSION_BYTES` (refused
  before it is parsed) is moved aside to `<id>.<time>.corrupt` and reported in `problems` with the
  reason (`SessionDamaged.why`, the words loading it gives); listing goes on (and a save never writes such a
  file: `chatbot.core.store`). A UTF-8 byte-order mark at the start of a file is allowed.
- **A file this version does not fully understand is never rewritten.** One in a newer format, or with
  fields this version does not know (`Session.not_understood`), is loaded as a copy under a new id,
  said in `problems` in one sentence; the file itself stays as it is, for the version that wrote it.
- **A bad saved option keeps the default and the rest of the session loads.** What `Session.from_dict`
  mended (an option that is no plain value, a `context_start` that is no turn index) and every saved
  option the settings schema refuses (`chatbot.core.settings`, the rule `/set` uses) are dropped and
  said in `problems`, one sentence each, when the session is loaded or claimed (an import is claimed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from chatbot.core.session import Session, SessionError
from chatbot.core.session_files import SessionDamaged, SessionFileUnreadable, read_session_file, shown
from chatbot.core.session_folder import SessionFolder
from chatbot.core.session_lock import LOCKS, remember_read
from chatbot.core.settings import checked_saved_options


class LoadingFolder(SessionFolder):
    """The sessions folder, read: a saved session loaded, a damaged file set aside, what loading mended said."""

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
