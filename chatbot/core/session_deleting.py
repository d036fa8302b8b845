"""Deleting a saved chat from the sessions folder: its file and the damaged copies of it set aside earlier, never
one open in another blip2-chat, never an entry that is not a regular file of the folder. Part of `SessionStore`
(`chatbot.core.store`), built on `ListingFolder`; `chatbot.core.forget` removes the rest of a chat
(`sessions --delete`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.session import Session, SessionError
from chatbot.core.session_files import SessionFileUnreadable, reason_words, shown
from chatbot.core.session_listing import ListingFolder
from chatbot.core.session_lock import LOCKS, let_go, take_lock


@dataclass(frozen=True)
class Deleted:
    """A chat `SessionStore.delete` removed: its turns (None when its file was damaged, or only damaged copies
    of it were left) and how many damaged copies of it went too."""

    id: str
    session: Session | None
    damaged_copies: int


class DeletingFolder(ListingFolder):
    """The sessions folder, with a saved chat deleted on request."""

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
