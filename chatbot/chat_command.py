"""`blip2-chat chat` (and `blip2-chat IMAGE`, `--continue`, `--resume`) and `blip2-chat sessions`.

Picks the front end: the chat app when stdin and stdout are a terminal, line mode otherwise or
with --plain. Finds the session to resume. Imports neither torch nor Textual until one is needed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from chatbot.config import Settings
from chatbot.errors import UserError
from chatbot.images import LoadedImage, load_image
from chatbot.plain_io import plain_mode_forced
from chatbot.session import Session
from chatbot.store import SessionError, SessionStore, SessionSummary, session_from_json


def run_chat_command(
    settings: Settings, image_source: str | None, *, plain: bool = False, continue_last: bool = False,
    resume: str | None = None,
) -> int:
    """Open a chat on `image_source`, or go on with a saved session (--continue, --resume ID|FILE)."""
    resuming = continue_last or resume is not None
    if resuming and image_source:
        raise UserError("Give either an image or --continue/--resume, not both.",
                        "A resumed chat reopens its own image; switch later with /image PATH.")
    if not resuming and not image_source:
        raise UserError("The chat needs an image.", "e.g. blip2-chat photo.jpg, or blip2-chat --continue.")
    store = SessionStore()
    session: Session | None = None
    if resuming:
        session = session_to_resume(store, continue_last, resume)
    if plain or plain_mode_forced():  # not a terminal, TERM=dumb, or `plain = true` in the config
        from chatbot.plain import run_plain_chat

        return run_plain_chat(settings, image_source or "", session=session)
    image: LoadedImage | None = None
    if not resuming:
        image = load_image(image_source or "")  # a bad path fails here, before any window opens
    from chatbot.tui.app import run_tui

    return run_tui(settings, image=image, session=session, problems=store.problems)


def session_to_resume(store: SessionStore, continue_last: bool, resume: str | None) -> Session:
    """The latest session, the one with id `resume`, or an exported JSON file named by `resume`."""
    try:
        if continue_last:
            session = store.latest()
            if session is None:
                raise SessionError("There is no saved session to continue.", "Start one with blip2-chat IMAGE.")
            return session
        assert resume is not None
        path = Path(resume).expanduser()
        if path.suffix == ".json" and path.is_file():
            return imported_session(store, path)
        return store.load(resume)
    except SessionError as error:
        if store.problems:  # say where a damaged file went
            raise SessionError(error.message, " ".join([error.hint, *store.problems]).strip()) from None
        raise


def imported_session(store: SessionStore, path: Path) -> Session:
    """A session from an exported JSON file; a copy with a new id when the store has that id (never overwrite it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SessionError(f"Could not read {path}: {error.strerror or error}.", "Check the path.") from None
    session = session_from_json(text, str(path))
    if store.path_for(session.id).exists():
        session.id = Session(model=session.model).id
    return session


def _clip(text: str, width: int, from_left: bool = False) -> str:
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):] if from_left else text[: width - 1] + "…"


def session_rows(summaries: list[SessionSummary]) -> list[str]:
    """The `sessions` table: id, updated, turns, first question, image; newest first."""
    rows = [("ID", "UPDATED", "TURNS", "FIRST QUESTION", "IMAGE")]
    for summary in summaries:
        rows.append((
            summary.id, time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.updated)), str(summary.turns),
            _clip(summary.first_question, 40), _clip(summary.image, 50, from_left=True),
        ))
    width = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        f"{ident:<{width[0]}}  {updated:<{width[1]}}  {turns:>{width[2]}}  {question:<{width[3]}}  {image}".rstrip()
        for ident, updated, turns, question, image in rows
    ]


def run_sessions() -> int:
    """Print the saved sessions; damaged files are set aside and reported on stderr."""
    store = SessionStore()
    summaries = store.summaries()
    for problem in store.problems:
        print(f"blip2-chat: {problem}", file=sys.stderr)
    if not summaries:
        print(f"No saved sessions yet (they are kept in {store.root}).")
        return 0
    print("\n".join(session_rows(summaries)))
    print("\nResume one with `blip2-chat --resume ID`, the latest with `blip2-chat --continue`.", file=sys.stderr)
    return 0
