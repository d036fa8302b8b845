"""Going on with a saved chat: which session (--continue, --resume ID or FILE), its options, its image.

Shared by the chat app and the screen-reader mode; no Textual, no torch.
"""

from __future__ import annotations

from pathlib import Path

from chatbot.core.session import ImageRef, Session
from chatbot.core.settings import saved_options
from chatbot.core.store import SessionError, SessionStore, session_from_json
from chatbot.engine.base import GenerationOptions
from chatbot.errors import ImageError
from chatbot.images import LoadedImage, load_image


def options_for(session: Session, fallback: GenerationOptions) -> GenerationOptions:
    """The decoding options a resumed session was using (its `/set` changes) over `fallback`; a saved
    value that is not allowed (a damaged or hand-edited file) keeps the fallback's."""
    return saved_options(session.options, fallback)[0]


def reopen_image(ref: ImageRef, how_to_open: str = "/image PATH or Ctrl+O") -> tuple[LoadedImage | None, str | None]:
    """Load a saved session's image again: (image, None), or (None, why it cannot be shown).

    `how_to_open` names the way this front end opens another image, for the message.
    """
    try:
        image = load_image(ref.source)
    except ImageError as error:
        return None, (f"The image of this chat could not be opened again: {error.message} "
                      f"It may have been moved or deleted; open it again with {how_to_open}.")
    if image.sha256 != ref.sha256:
        return None, (f"{ref.source} has changed since this chat was saved (its contents differ), so it was not "
                      f"reopened. Open an image with {how_to_open} to go on.")
    return image, None


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
