"""The input box: questions and /commands; a pasted or dropped image path switches the image.

Terminals "drop" a file by pasting its path, often quoted or with escaped spaces, sometimes as a
file:// URI; `image_path_in` undoes all three. Up and Down recall earlier lines, as in a shell.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input

from chatbot.images import IMAGE_SUFFIXES


def image_path_in(text: str) -> Path | None:
    """The image file `text` names when it is nothing but a path (quoted, escaped or file://), else None."""
    text = text.strip()
    if not text or "\n" in text:
        return None
    if text.startswith("file://"):
        return _image_file(unquote(urlparse(text).path))
    literal = _image_file(text)  # some terminals paste a path with spaces as it is
    if literal is not None:
        return literal
    try:
        words = shlex.split(text)  # 'My Photo.jpg', "a b.png", My\ Photo.jpg
    except ValueError:
        return None
    return _image_file(words[0]) if len(words) == 1 else None


def _image_file(candidate: str) -> Path | None:
    path = Path(candidate).expanduser()
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    try:
        return path.resolve() if path.is_file() else None
    except OSError:
        return None


class ChatInput(Input):
    """Enter sends; a pasted image path becomes an image switch instead of text."""

    BINDINGS = [
        Binding("up", "recall(-1)", "Previous line", show=False),
        Binding("down", "recall(1)", "Next line", show=False),
    ]

    @dataclass
    class ImageDropped(Message):
        """A path to an image file was pasted (or dropped) into the empty input."""

        path: Path

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="Ask about the image, or type /help", id=id)
        self.history: list[str] = []
        self._recall_index = 0

    def remember(self, line: str) -> None:
        """Keep a sent line for Up/Down recall (no immediate repeats)."""
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self._recall_index = len(self.history)

    def action_recall(self, step: int) -> None:
        if not self.history:
            return
        self._recall_index = max(0, min(len(self.history), self._recall_index + step))
        self.value = self.history[self._recall_index] if self._recall_index < len(self.history) else ""
        self.cursor_position = len(self.value)

    def _on_paste(self, event: events.Paste) -> None:
        # Textual calls every class's handler in turn: returning leaves the paste to Input's own.
        path = image_path_in(event.text) if not self.value.strip() else None
        if path is None:
            return
        event.prevent_default()
        event.stop()
        self.post_message(self.ImageDropped(path))
