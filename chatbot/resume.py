"""Going on with a saved session: its image opened again (if unchanged) and its own options.

Shared by the chat app and the screen-reader mode; no Textual, no torch.
"""

from __future__ import annotations

from dataclasses import fields, replace

from chatbot.config import check_options
from chatbot.engine.base import GenerationOptions
from chatbot.errors import ImageError, OptionError
from chatbot.images import LoadedImage, load_image
from chatbot.session import ImageRef, Session


def options_for(session: Session, fallback: GenerationOptions) -> GenerationOptions:
    """The decoding options a resumed session was using (its `/set` changes), else `fallback`."""
    known = {f.name for f in fields(GenerationOptions)}
    saved = {key: value for key, value in session.options.items() if key in known}
    if not saved:
        return fallback
    try:
        return check_options(replace(fallback, **saved), as_flags=False)
    except (OptionError, TypeError):
        return fallback


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
