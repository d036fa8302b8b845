"""`/compare` in the chat app: the other image's answer streaming beside the open one's, stopped by Esc.

Between `AnsweringApp` (one answer's life) and `FindingApp` (/find): while a comparison streams
it is the answer in progress, so questions wait, Esc stops it, and quitting records what came first.
What a comparison means (which question, which context, where it is saved) is decided in
`chatbot.core.comparison`; this only shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from textual import work
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from chatbot.core.comparison import Comparison, due_comparison
from chatbot.errors import UserError, model_error_text
from chatbot.tui.answering import QUIT_WAIT_SECONDS, AnsweringApp
from chatbot.tui.widgets.comparison_view import ComparisonView
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import BubblePair, Transcript
from chatbot.tui.workers import StreamBuffer
from chatbot.untrusted import visible


@dataclass
class ActiveComparison:
    """The comparison streaming now: how to stop it and where it is shown."""

    comparison: Comparison
    pair: BubblePair  # the compared turn's bubbles
    view: ComparisonView
    worker: Worker[None] | None = None
    buffer: StreamBuffer = field(default_factory=StreamBuffer)  # streamed text the view has yet to show


class ComparingApp(AnsweringApp):
    """Streams comparisons (`Outcome.comparison`, or one `/compare` armed for the question just answered)."""

    comparing: ActiveComparison | None = None
    _scrolled_up_to_comparison = False  # the transcript left the bottom to show one: the next question goes back

    def stream_comparison(self, comparison: Comparison) -> None:
        """Show the open image's answer and stream the other image's beside it, below the compared turn.

        That turn may be higher up (notices came after it, as /undo's): the view is then scrolled into sight
        and a notice at the bottom says where the answers went."""
        transcript = self.query_one(Transcript)
        turn = self.conversation.session.turns[-1]
        pair = transcript.pairs[-1] if transcript.pairs else transcript.show_turn(turn)
        view = transcript.comparison(pair, turn, comparison.image.source, comparison.image.sha256)
        view.show(turn, None)
        if transcript.children[-1] is not view:
            self.notice(f"Comparing with {comparison.labels[1]}: the answers are side by side under the question "
                        f"“{comparison.question}”, above.")
            self.call_after_refresh(self._scroll_to_comparison, view)
        self.comparing = ActiveComparison(comparison, pair, view)
        self.query_one(StatusBar).set_activity(
            f"Answering about {visible(comparison.labels[1])}… ({self.stop_key()} stops)", busy=True)
        self.refresh_bindings()
        self.comparing.worker = self._stream_comparison(view, comparison.chunks, self.comparing.buffer)

    def _scroll_to_comparison(self, view: ComparisonView, tries: int = 20) -> None:
        """Bring `view` into sight (its top, as it grows downwards); this lets go of the bottom, as scrolling up
        by hand does, so the view stays in sight while it streams. A view not laid out yet is tried again after
        the next refresh (a few times at most)."""
        if not view.is_attached:
            return
        if not view.virtual_region:
            if tries:
                self.call_after_refresh(self._scroll_to_comparison, view, tries - 1)
            return
        if self.query_one(Transcript).scroll_to_widget(view, animate=False, immediate=True):
            self._scrolled_up_to_comparison = True

    def ask(self, question: str) -> bool:
        """A question asked after a comparison was scrolled into sight: the transcript follows the end again."""
        if self._scrolled_up_to_comparison:
            self._scrolled_up_to_comparison = False
            self.query_one(Transcript).anchor()  # back to the bottom, where the question is shown
        return super().ask(question)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _stream_comparison(self, view: ComparisonView, chunks: Iterator[str], buffer: StreamBuffer) -> None:
        try:
            for chunk in chunks:
                if buffer.put(chunk):  # the first chunk since the view last took them: tell it
                    view.post_message(ComparisonView.Chunk(buffer))
        except Exception as error:  # noqa: BLE001 - a model error is a notice, never a crash
            view.post_message(ComparisonView.Finished(view, model_error_text(error)))
            return
        view.post_message(ComparisonView.Finished(view))

    def on_comparison_view_finished(self, message: ComparisonView.Finished) -> None:
        active = self.comparing
        if active is None or message.view is not active.view:
            return
        self.comparing = None
        if self.quitting:  # the screen is going away: change nothing on it (quitting saves)
            active.view.second.stop_streaming()
            return
        active.view.second.flush(active.buffer)  # nothing left to repaint later over the recorded text
        if message.error:
            self.notice(message.error, "error")
        self.query_one(Transcript).show_turn(self.conversation.session.turns[-1], active.pair)  # as recorded
        self.refresh_bindings()
        self._set_ready_activity()
        self._save()
        self.after_comparison()
        self._answer_next_pending()

    def after_comparison(self) -> None:
        """Called when a comparison has ended (subclasses apply what waited for it)."""

    def after_answer(self) -> None:
        """An answer ended: the comparison `/compare` armed for it streams now."""
        try:
            comparison = due_comparison(self.conversation)
        except UserError as error:
            self.notice(str(error), "error")
            return
        if comparison is not None:
            self.stream_comparison(comparison)

    # -- while it streams, it is the answer in progress -----------------------------------------------

    def streaming(self) -> bool:
        return self.comparing is not None or super().streaming()

    def _answer_next_pending(self) -> None:
        if self.comparing is None:  # one stream at a time: questions typed while the model loaded wait
            super()._answer_next_pending()

    def _set_ready_activity(self) -> None:
        if self.comparing is None:
            super()._set_ready_activity()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_answer" and self.comparing is not None:
            return True
        return super().check_action(action, parameters)

    def action_cancel_answer(self) -> None:
        if self.comparing is not None:
            self.comparing.comparison.cancel.cancel()
            self.query_one(StatusBar).set_activity("Stopping…", busy=True)
            return
        super().action_cancel_answer()

    async def stop_streaming(self) -> None:
        """Quitting mid-comparison stops it and lets what came be recorded, then quits as always."""
        active = self.comparing
        if active is not None:
            active.comparison.cancel.cancel()
            if active.worker is not None:
                with contextlib.suppress(asyncio.TimeoutError, WorkerCancelled, WorkerFailed):
                    await asyncio.wait_for(active.worker.wait(), QUIT_WAIT_SECONDS)
        await super().stop_streaming()
