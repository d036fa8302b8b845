"""Sessions on disk: saved after every turn (atomic), listed, resumed, exported.

A damaged session file is moved aside (`*.corrupt`) and reported; it never stops the app.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.core.session import Session
from chatbot.errors import UserError
from chatbot.locations import sessions_dir

FORMAT_VERSION = 1


class SessionError(UserError):
    """A session cannot be found, read or written."""


@dataclass(frozen=True)
class SessionSummary:
    """What `blip2-chat sessions` lists."""

    id: str
    updated: float
    turns: int
    model: str
    image: str  # the current image's source, or ""
    first_question: str


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, fsync, rename: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def session_json(session: Session) -> str:
    return json.dumps({"format": FORMAT_VERSION, **session.to_dict()}, ensure_ascii=False, indent=1)


def session_from_json(text: str, origin: str) -> Session:
    """Parse a saved or exported session; anything malformed is a SessionError naming `origin`."""
    try:
        data: Any = json.loads(text)
        data.pop("format", None)
        return Session.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise SessionError(f"{origin} is not a readable blip2-chat session ({type(error).__name__}).",
                           "It may be damaged; start a new chat.") from None


class SessionStore:
    """A folder of `<id>.json` session files."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or sessions_dir()
        self.problems: list[str] = []  # damaged files set aside while listing, for the UI to report

    def path_for(self, session_id: str) -> Path:
        return self.root / f"{session_id}.json"

    def save(self, session: Session) -> Path:
        path = self.path_for(session.id)
        try:
            write_atomic(path, session_json(session))
        except OSError as error:
            raise SessionError(f"Could not save the session to {path}: {error.strerror or error}.",
                               "Check that the folder is writable and the disk is not full.") from None
        return path

    def load(self, session_id: str) -> Session:
        path = self.path_for(session_id)
        if not path.is_file():
            raise SessionError(f"There is no saved session {session_id}.", "List them with `blip2-chat sessions`.")
        try:
            return session_from_json(path.read_text(encoding="utf-8"), f"The session file {path}")
        except SessionError:
            self._set_aside(path)
            raise

    def _set_aside(self, path: Path) -> Path:
        aside = path.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.corrupt")
        try:
            path.rename(aside)
        except OSError:
            return path
        self.problems.append(f"The damaged session file {path.name} was moved aside to {aside.name}.")
        return aside

    def summaries(self) -> list[SessionSummary]:
        """Every readable session, newest first; damaged files are set aside and noted in `problems`."""
        found = []
        for path in self.root.glob("*.json") if self.root.is_dir() else []:
            try:
                session = session_from_json(path.read_text(encoding="utf-8"), f"The session file {path}")
            except (SessionError, OSError):
                self._set_aside(path)
                continue
            first = next((t.question for t in session.turns if t.question), "")
            found.append(SessionSummary(
                id=session.id, updated=path.stat().st_mtime, turns=len(session.turns), model=session.model,
                image=session.image.source if session.image else "", first_question=first,
            ))
        return sorted(found, key=lambda s: s.updated, reverse=True)

    def latest(self) -> Session | None:
        summaries = self.summaries()
        return self.load(summaries[0].id) if summaries else None


def export_markdown(session: Session) -> str:
    """A readable transcript that names each image by path and sha256."""
    lines = [f"# blip2-chat session {session.id}", "", f"Model: `{session.model}`", ""]
    current = None
    for turn in session.turns:
        if turn.image and turn.image != current:
            current = turn.image
            lines += [f"## Image: `{turn.image.source}`", "", f"sha256: `{turn.image.sha256}`", ""]
            if not turn.image.source.startswith(("http://", "https://")):
                lines += [f"![image]({Path(turn.image.source).as_uri()})", ""]
        answer = turn.answer + (" *(stopped)*" if turn.stopped else "")
        lines += [f"**You:** {turn.question}", "", f"**Assistant:** {answer}", ""]
    return "\n".join(lines)


def export_session(session: Session, fmt: str, path: Path) -> Path:
    """Write the session as Markdown (`md`) or JSON (`json`, which imports back) to `path`."""
    if fmt not in ("md", "json"):
        raise UserError(f"Unknown export format '{fmt}'.", "Use /export md or /export json.")
    text = export_markdown(session) if fmt == "md" else session_json(session)
    try:
        write_atomic(path, text)
    except OSError as error:
        raise UserError(f"Could not write {path}: {error.strerror or error}.", "Choose another path.") from None
    return path
