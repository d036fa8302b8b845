"""Listing the sessions folder: the summaries `blip2-chat sessions` shows, every saved chat, `latest` and
`opened_by_continue`. Part of `SessionStore` (`chatbot.core.store`), built on `LoadingFolder`:

- **`latest` is the newest chat with a question.** A saved chat whose turns were all undone is listed
  (0 turns) and opens by its id, but `--continue` never lands on it. `opened_by_continue` tells a chat that
  ends whether `--continue` opens it, or `--resume ID` is the way back.
- Listing sets damaged files aside and leaves out, saying why in `problems`, what it cannot read; it also
  sweeps the lock files no process holds any more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.session import Session, SessionError, valid_session_id
from chatbot.core.session_files import SessionFileUnreadable, shown
from chatbot.core.session_folder import ID_RULE
from chatbot.core.session_loading import LoadingFolder
from chatbot.core.session_lock import LOCKS, let_go, take_lock


@dataclass(frozen=True)
class SessionSummary:
    """What `blip2-chat sessions` lists."""

    id: str
    updated: float
    turns: int
    model: str
    image: str  # the current image's source, or ""
    first_question: str


class ListingFolder(LoadingFolder):
    """The sessions folder, listed: summaries newest first, every saved chat, the one `--continue` opens."""

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
                note = (f"{shown(path.name)} in the sessions folder is not named like a session ({ID_RULE}), "
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
