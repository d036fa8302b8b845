"""The chat app's state without any widgets: session, image, engine once loaded, saving and exporting.

The Textual app drives one `Conversation`; keeping this free of Textual makes every rule here
(what resumes, what is saved when, where an export goes) testable without a screen.
"""

from __future__ import annotations

from pathlib import Path

from chatbot.chat import Chat
from chatbot.commands import apply_setting, describe_options
from chatbot.config import Settings
from chatbot.engine.base import Engine, GenerationOptions
from chatbot.errors import QuestionError, UserError
from chatbot.images import LoadedImage
from chatbot.locations import exports_dir
from chatbot.resume import options_for
from chatbot.session import ImageRef, Session
from chatbot.store import SessionStore, export_session, session_json

EXPORT_FORMATS = ("md", "json")


class Conversation:
    """One chat session as the app sees it; the `Chat` exists once the engine has loaded."""

    def __init__(
        self, settings: Settings, session: Session, store: SessionStore, image: LoadedImage | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.store = store
        self.image = image
        self._options = options_for(session, settings.options)
        self.engine: Engine | None = None
        self.chat: Chat | None = None
        self._saved_text = session_json(session) if session.turns else ""  # unchanged sessions are not rewritten

    @property
    def options(self) -> GenerationOptions:
        return self.chat.options if self.chat else self._options

    def attach(self, engine: Engine) -> Chat:
        """Start the `Chat` on a loaded engine, with the image chosen so far and any resumed turns."""
        self.engine = engine
        self.session.model = engine.info.model_id
        self.chat = Chat(engine, self.image, self._options, session=self.session, think_ahead=True)
        return self.chat

    def require_chat(self) -> Chat:
        """The chat, or a QuestionError saying the model is not there yet."""
        if self.chat is None:
            raise QuestionError("The model is still loading.", "Wait a moment and try again.")
        return self.chat

    def set_image(self, image: LoadedImage) -> bool:
        """Talk about `image` from now on; True when it differs from the current one (a fresh context)."""
        changed = self.session.image is None or self.session.image.sha256 != image.sha256
        self.image = image
        if self.chat is not None:
            self.chat.set_image(image)
        else:  # the same bookkeeping Chat.set_image does, for images chosen while the model loads
            if changed:
                self.session.context_start = len(self.session.turns)
            self.session.image = ImageRef(image.source, image.sha256)
        return changed

    def apply_setting(self, argument: str) -> str:
        """`/set KEY VALUE` (or `/set` alone): change an option; returns what the options are now."""
        if argument.strip():
            options = apply_setting(self.options, argument)
            if self.chat is not None:
                self.chat.options = options
            self._options = options
        return describe_options(self.options)

    def undo(self) -> bool:
        """Drop the last turn; False when there was none."""
        if self.chat is not None:
            return self.chat.undo() is not None
        if not self.session.turns:
            return False
        self.session.turns.pop()
        self.session.context_start = min(self.session.context_start, len(self.session.turns))
        return True

    def clear(self) -> None:
        """Forget the context: the next question starts fresh; the turns stay in the session."""
        self.session.context_start = len(self.session.turns)

    def save(self, force: bool = False) -> Path | None:
        """Write the session to the store if it changed (always when `force`, i.e. `/save`).

        An empty session is written only when forced, so opening an image and quitting leaves no file;
        an unchanged one is not rewritten, so `blip2-chat sessions` shows when a chat really changed.
        """
        if not self.session.turns and not force:
            return None
        self.session.options = self.options.to_dict()
        text = session_json(self.session)
        if text == self._saved_text and not force:
            return None
        path = self.store.save(self.session)
        self._saved_text = text
        return path

    def export(self, argument: str) -> Path:
        """`/export md|json [PATH]`: write the chat; the default path is ./blip2-chat-<session id>.<ext>."""
        fmt, _, rest = argument.strip().partition(" ")
        fmt = fmt.lower().lstrip(".")
        if fmt not in EXPORT_FORMATS:
            raise UserError(f"/export needs a format, md or json{f', not {fmt!r}' if fmt else ''}.",
                            "e.g. /export md, or /export json ~/chat.json.")
        self.session.options = self.options.to_dict()
        target = Path(rest.strip().strip("'\"")).expanduser() if rest.strip() else \
            exports_dir() / f"blip2-chat-{self.session.id}.{fmt}"
        if target.is_dir():
            target = target / f"blip2-chat-{self.session.id}.{fmt}"
        return export_session(self.session, fmt, target.resolve())
