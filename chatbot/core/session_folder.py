"""The sessions folder itself: which ids may name its files, what it is on disk, which entries are its own, and
a fresh id for a copy. The base of `SessionStore` (`chatbot.core.store`), which the rest of the store builds on:

- **Ids name files, so only safe ids are used.** A session id matches `valid_session_id` (the app's
  `YYYYMMDD-HHMMSS-xxxxxx`, or any 1-64 letters, digits, `-` and `_`). `path_for` refuses every other
  id, so no path is ever built from one; an imported session with another id gets a fresh one
  (`chatbot.core.resume.imported_session`).
- **The store touches only its own folder.** It reads, writes and renames only entries directly in the
  sessions folder (`_inside`) and never follows a link there: a linked `<id>.json` (whether or not it leads
  anywhere) is not read through and not renamed, and a save never replaces a file it did not read.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from chatbot.core.session import Session, SessionError, new_session_id, valid_session_id
from chatbot.core.session_files import entry_kind, shown
from chatbot.core.session_lock import forget_read, take_lock
from chatbot.file_kinds import LINK_TO_NOTHING
from chatbot.locations import sessions_dir

ID_RULE = "session ids look like 20250101-120000-abcdef (letters, digits, - and _)"


class SessionFolder:
    """A folder of `<id>.json` session files (and `<id>.lock` files while a chat is open): its paths and entries."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or sessions_dir()
        self.problems: list[str] = []  # damaged files set aside, forks, renamed imports: for the UI to report

    def path_for(self, session_id: str) -> Path:
        """The file of session `session_id`; SessionError for an id that could not safely name one."""
        if not valid_session_id(session_id):
            raise SessionError(f"'{shown(session_id)}' is not a session id: {ID_RULE}.",
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

    def _fork(self, session: Session) -> str:
        """Give `session` a fresh id that no file has and this process holds (the caller holds `LOCKS`)."""
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
