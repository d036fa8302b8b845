"""Deleting saved chats, and what else blip2-chat kept of them (`blip2-chat sessions --delete ID...`).

A chat leaves more than its session file, and a person who deletes a chat wants all of it gone:

- **its session file**, and the damaged copies of it set aside earlier (`<id>.<time>.corrupt`), removed by
  the store (`SessionStore.delete`), which never deletes a chat open in another blip2-chat;
- **the pictures pasted into it** (`/paste`, kept in the data folder's `pasted/` by their sha256), unless a
  chat that is still saved uses the same picture. When that cannot be told (a saved chat cannot be read, or
  another chat is open now, which may be using one and not have saved it yet), they are kept, and said so;
- **its questions in the Up arrow's line history** (the earlier lines of the app and the screen-reader mode, kept
  across chats): the lines that are exactly one of its questions are removed. A chat open now adds each line
  as it is entered, only its own, so it does not bring them back.

Pictures the chat was about that are your own files (or web addresses) are never touched.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.core.line_history import LineHistory
from chatbot.core.session import Session, SessionError
from chatbot.core.session_deleting import Deleted
from chatbot.core.store import SessionStore
from chatbot.locations import line_history_file, pasted_dir

_PASTED_NAME = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,5}")  # what `save_pasted` names a picture


@dataclass
class Forgotten:
    """What `forget_chats` removed and what it could not."""

    deleted: list[Deleted] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence per chat that was not deleted, and why
    pictures_removed: int = 0
    pictures_kept: int = 0  # pasted pictures of the deleted chats that stay
    pictures_kept_why: str = ""  # what keeps them, before "it" or "them": "another saved chat uses"
    history_lines_removed: int = 0
    history_kept: bool = False  # its questions stay in the line history: another chat may have asked them too


def forget_chats(ids: list[str], store: SessionStore | None = None, *, pasted: Path | None = None,
                 history: Path | None = None) -> Forgotten:
    """Delete the saved chats `ids` (each on its own: one that cannot be deleted is a sentence in `problems`,
    the others are deleted), then the pasted pictures only they used and their questions' history lines."""
    store = store or SessionStore()
    done = Forgotten()
    for session_id in dict.fromkeys(ids):  # each once, in the order given
        try:
            done.deleted.append(store.delete(session_id))
        except SessionError as error:
            done.problems.append(str(error))
    sessions = [deleted.session for deleted in done.deleted if deleted.session is not None]
    others = store.every_saved_chat()  # read once: the pictures and the history lines they still use
    _forget_pasted(sessions, others, pasted if pasted is not None else pasted_dir(), done)
    if others is None:  # cannot tell which questions another chat asked too: the line history stays as it is
        done.history_kept = any(turn.question.strip() for session in sessions for turn in session.turns)
    else:
        done.history_lines_removed = _forget_history(
            sessions, history if history is not None else line_history_file(), others=others)
    return done


def _pasted_pictures(sources: set[str], folder: Path) -> set[Path]:
    """Of `sources`, the pictures blip2-chat itself kept in `folder` (by name and place, links never followed)."""
    try:
        kept_in = folder.resolve()
    except OSError:
        return set()
    found = set()
    for source in sources:
        path = Path(source)
        if _PASTED_NAME.fullmatch(path.name) and path.parent == kept_in:
            found.add(kept_in / path.name)
    return found


def _forget_pasted(sessions: list[Session], others: list[Session] | None, folder: Path, done: Forgotten) -> None:
    """Delete the pictures pasted into `sessions` that none of `others` (the saved chats left; None: cannot be
    told) uses."""
    pictures = _pasted_pictures(set().union(*(session.image_sources() for session in sessions)), folder)
    if not pictures:
        return
    if others is None:
        done.pictures_kept = len(pictures)
        done.pictures_kept_why = "another chat is open, or a saved one could not be read, and it may use"
        return
    used = _pasted_pictures(set().union(*(session.image_sources() for session in others)), folder)
    for picture in sorted(pictures):
        if picture in used:
            done.pictures_kept += 1
            done.pictures_kept_why = "another saved chat uses"
            continue
        try:
            if not stat.S_ISREG(os.lstat(picture).st_mode):  # never through a link, never a folder
                continue
            os.unlink(picture)
        except FileNotFoundError:
            continue
        except OSError as error:
            done.problems.append(f"The pasted picture {picture.name} could not be deleted: "
                                 f"{error.strerror or error}.")
            continue
        done.pictures_removed += 1


def _forget_history(sessions: list[Session], history: Path, *, others: list[Session]) -> int:
    """Remove from the line history file the lines that are one of `sessions`' questions and none of the
    `others`' (the saved chats left: readline keeps a line asked twice once, so the Up arrow's line may be
    another chat's too); how many."""
    asked_elsewhere = {turn.question.strip() for session in others for turn in session.turns}
    questions = {turn.question.strip() for session in sessions for turn in session.turns
                 if turn.question.strip() and turn.question.strip() not in asked_elsewhere}
    if not questions:
        return 0
    return LineHistory(history, say=lambda _: None).remove(lambda line: line.strip() in questions)
