"""A turn's question asked about other images too (`/compare`): the open image's answer beside another image's.

Shown below the turn's answer in the transcript, each column headed by its image's name. While the other image's
answer streams, the app's worker posts `ComparisonView.Chunk`s to the view; `Finished` goes up to the app
(`chatbot.tui.comparing`).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message

from chatbot.core.session import ComparedAnswer, Turn
from chatbot.tui.widgets.bubbles import MessageBubble
from chatbot.tui.workers import StreamBuffer


class ComparisonView(Horizontal):
    """One turn's question about two images: the open image's answer (left) beside another image's (right).

    The app streams the right column by posting `Chunk`s to the view; `Finished` then goes up to the app.
    """

    class Chunk(Message, bubble=False):
        """More of the other image's answer waits in `buffer` (posted by the app's worker)."""

        def __init__(self, buffer: StreamBuffer) -> None:
            super().__init__()
            self.buffer = buffer

    class Finished(Message):
        """The other image's answer ended (or failed: `error` is the notice to show)."""

        def __init__(self, view: ComparisonView, error: str | None = None) -> None:
            super().__init__()
            self.view = view
            self.error = error

    def __init__(self, labels: tuple[str, str], sha256: str) -> None:
        super().__init__(classes="comparison")
        self.labels = labels  # as given (text from outside); the bubbles show them made visible
        self.sha256 = sha256  # the other image's: which `Turn.compared` entry this view shows
        self.first = MessageBubble("", "answer", labels[0])
        self.second = MessageBubble("", "answer", labels[1])

    def compose(self) -> ComposeResult:
        yield self.first
        yield self.second

    def on_comparison_view_chunk(self, message: Chunk) -> None:
        self.second.show_streamed(message.buffer)

    def show(self, turn: Turn, compared: ComparedAnswer | None) -> None:
        """Both answers as the turn recorded them (`compared` None: the right one is still to come)."""
        self.first.show_answer(turn.answer, turn.stopped)
        if compared is None:
            self.second.set_text("")
            self.second.mark("")
            self.second.add_class("-pending")
        else:
            self.second.show_answer(compared.answer, compared.stopped)

