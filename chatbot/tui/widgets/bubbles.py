"""The transcript's pieces of text: a question's or an answer's bubble, and the one-line notices between them.

An answer bubble grows as the answer streams, repainted at a fixed pace (`REPAINTS_PER_SECOND`) rather than
per token, so the app's screen work does not slow the model's thread down. `EarlierTurns` is the line at the top
of a long chat saying how many earlier turns are saved but not shown (`chatbot.tui.widgets.transcript`).
"""

from __future__ import annotations

from textual.content import Content
from textual.timer import Timer
from textual.widgets import Static

from chatbot.core.session import EMPTY_ANSWER
from chatbot.tui.workers import RepaintPace, StreamBuffer
from chatbot.untrusted import visible

PENDING_TEXT = "…"  # shown in an answer bubble until its first chunk arrives
# A streaming answer is laid out again, whole, each time it grows: at most this often, so that
# repainting never takes the interpreter from the model's thread for long (the tokens in between are
# shown together at the next repaint).
REPAINTS_PER_SECOND = 10


class MessageBubble(Static):
    """One question or answer, with its role as the border title; answers grow chunk by chunk."""

    def __init__(self, text: str, role: str, label: str) -> None:
        super().__init__(visible(text) or PENDING_TEXT, markup=False, classes=f"bubble {role}")
        self.role = role
        self.text = text
        self.border_title = Content(visible(label))  # a file name may hold "[": never read as markup
        self.set_class(not text and role == "answer", "-pending")
        self._pace = RepaintPace(REPAINTS_PER_SECOND)
        self._repaint: Timer | None = None

    def append(self, chunk: str) -> None:
        """Add streamed text (plain text: model output is never read as markup)."""
        self.set_text(self.text + chunk)

    def show_streamed(self, buffer: StreamBuffer) -> None:
        """More streamed text waits in `buffer`: show it now, or at the next repaint the pace allows."""
        if self._repaint is not None:  # a repaint is due already: it shows this too
            return
        delay = self._pace.wait()
        if delay > 0:
            self._repaint = self.set_timer(delay, lambda: self._repaint_due(buffer), name="repaint")
        else:
            self.flush(buffer)

    def _repaint_due(self, buffer: StreamBuffer) -> None:
        self._repaint = None  # this timer has fired: nothing to stop
        self.flush(buffer)

    def flush(self, buffer: StreamBuffer) -> None:
        """Show all that `buffer` holds now (when the stream ends, before the recorded text replaces it)."""
        self.stop_streaming()
        text = buffer.take()
        if text:
            self.append(text)
            self._pace.painted()

    def stop_streaming(self) -> None:
        """Drop the repaint still due, if any (the stream ended; what it would show is shown otherwise)."""
        if self._repaint is not None:
            self._repaint.stop()
            self._repaint = None

    def set_text(self, text: str) -> None:
        self.text = text
        self.remove_class("-pending")
        self.update(visible(text) or PENDING_TEXT)

    def mark(self, subtitle: str, css_class: str = "") -> None:
        """A small note under the bubble ("stopped", "12.5 tok/s"); `css_class` colours it."""
        self.border_subtitle = subtitle
        for name in ("-stopped", "-waiting", "-failed"):
            self.set_class(name == css_class, name)

    def show_answer(self, answer: str, stopped: bool) -> None:
        """A recorded answer, as stored: its text (the empty answer's sentence when it has none), "stopped" under it
        when it was stopped."""
        self.set_text(answer)
        if not answer:
            self.update(EMPTY_ANSWER)
            self.add_class("-pending")
        self.mark("stopped" if stopped else "", "-stopped" if stopped else "")


class Notice(Static):
    """A one-line notice in the transcript: image switches, left-out turns, errors."""

    ICONS = {"info": "ℹ", "warning": "⚠", "error": "✖"}

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(f"{self.ICONS.get(kind, 'ℹ')} {visible(text)}", markup=False, classes=f"notice -{kind}")
        self.text = text
        self.kind = kind


class EarlierTurns(Notice):
    """The first line of a long chat: how many earlier turns are saved but not shown, and how to read them."""

    def __init__(self, count: int) -> None:
        super().__init__(earlier_turns_text(count))
        self.count = count

    def set_count(self, count: int) -> None:
        self.count = count
        self.text = earlier_turns_text(count)
        self.update(f"{self.ICONS['info']} {self.text}")


def earlier_turns_text(count: int) -> str:
    turns = "turn is" if count == 1 else "turns are"
    return (f"{count} earlier {turns} saved but not shown here; /export md or /export html writes the whole chat "
            "to read.")

