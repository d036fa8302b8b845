"""The screen-reader mode in tests: its chat on a scripted engine, in-process, writing to streams read back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image


class FakeStream(io.StringIO):
    """A stdin or stdout that says whether it is a terminal, and (`fail_after`) one whose reader left."""

    def __init__(self, terminal: bool = False, fail_after: int | None = None) -> None:
        super().__init__()
        self.terminal = terminal
        self.fail_after = fail_after  # lines written before the reader leaves (BrokenPipeError)

    def isatty(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed file")  # as a real closed stream does
        return self.terminal

    def write(self, text: str) -> int:
        if self.fail_after is not None and self.getvalue().count("\n") >= self.fail_after:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def plain_chat(engine: ScriptedEngine, picture: Path, sessions: Path | None = None, *, max_new_tokens: int = 50,
               out: FakeStream | None = None, **kwargs: Any) -> tuple[PlainChat, FakeStream, FakeStream]:
    """The screen-reader chat about `picture` on `engine`, saving to `sessions` (None: the home's folder);
    (the chat, its out stream, its notes stream). `kwargs` go to PlainChat (echo, json_records, keys)."""
    out = out if out is not None else FakeStream()
    notes = FakeStream()
    conversation = Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=max_new_tokens)),
                                None, SessionStore(sessions), load_image(picture), engine=engine)
    return PlainChat(conversation, out=out, notes=notes, **kwargs), out, notes
