"""Asking and answering in the chat app: questions in line, the streaming worker, Esc, quitting mid-answer.

The base of `ChatApp`: everything about one answer's life, from the question bubble to the saved turn.
The worker only posts messages (`chatbot.tui.messages`); widgets change when the app handles them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from copy import copy
from dataclasses import dataclass

from textual import work
from textual.app import App
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from chatbot.core.commands import Retry, after_saving, typed_line
from chatbot.core.conversation import Conversation, left_out_text, still_answering
from chatbot.engine.base import CancelToken
from chatbot.errors import UserError, model_error_text
from chatbot.tui import messages as msg
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import BubblePair, MessageBubble, Transcript
from chatbot.untrusted import visible

QUIT_WAIT_SECONDS = 5.0  # how long quitting waits for a cancelled answer to stop and be recorded


@dataclass
class ActiveAnswer:
    """The answer streaming now: how to stop it and where it is shown."""

    id: int
    cancel: CancelToken
    pair: BubblePair
    turns_before: int  # len(session.turns) when it started: a new turn means it was recorded
    retry_of: object | None  # the turn a /retry replaces (kept if nothing new comes)
    worker: Worker[None] | None = None


class AnsweringApp(App[None]):
    """Questions, streamed answers, stopping them; needs a Transcript, a ChatInput and a StatusBar on screen."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self.conversation = conversation
        self.answer: ActiveAnswer | None = None
        self.pending: list[tuple[str, MessageBubble]] = []  # questions typed before the model was ready
        self.model_error: str | None = None
        self.quitting = False  # set by action_quit: widgets are no longer changed
        self._answers_started = 0

    def notice(self, text: str, kind: str = "info") -> None:
        """One line in the transcript: what happened, or what went wrong and what to do."""
        self.query_one(Transcript).add_notice(text, kind)

    def streaming(self) -> bool:
        """An answer is still coming (subclasses add theirs: a comparison)."""
        return self.answer is not None

    def refused_while_streaming(self, waiting: str) -> bool:
        """True, and the core's one refusal said (`still_answering`), while an answer is still coming."""
        if not self.streaming():
            return False
        self.notice(str(still_answering(waiting)), "warning")
        return True

    def _set_ready_activity(self) -> None:
        if self.answer is not None:
            return
        status = self.query_one(StatusBar)
        if self.conversation.engine is not None:
            status.set_activity("Ready")
        elif self.model_error:
            status.set_activity("No model")
        else:
            status.set_activity(f"Loading model {self.conversation.settings.model}…", busy=True)

    @work(thread=True, exclusive=True, group="answer", exit_on_error=False)
    def _stream_answer(self, answer_id: int, chunks: Iterator[str], dropped_turns: int, cancel: CancelToken) -> None:
        started = False
        try:
            for chunk in chunks:
                if not started:
                    started = True
                    self.post_message(msg.AnswerStarted(answer_id, dropped_turns))
                self.post_message(msg.AnswerChunk(answer_id, chunk))
        except Exception as error:  # noqa: BLE001 - a model error is a notice, never a crash
            self.post_message(msg.AnswerFailed(answer_id, model_error_text(error)))
            return
        if not started:
            self.post_message(msg.AnswerStarted(answer_id, dropped_turns))
        engine = self.conversation.require_engine()
        self.post_message(msg.AnswerFinished(answer_id, cancel.cancelled, copy(engine.last_stats)))

    def ask(self, question: str) -> bool:
        """Send a question; while the model loads it waits in line. False when it was refused (input kept)."""
        if self.refused_while_streaming("your question"):
            return False
        if self.conversation.engine is None:
            if self.model_error:
                self.notice(f"No model is loaded: {self.model_error}", "error")
                return False
            try:  # what can be refused now is refused now, not after the model has loaded
                self.conversation.check_question(question, image_coming=self.image_coming())
            except UserError as error:
                self.notice(str(error), "error")
                return False
            bubble = self.query_one(Transcript).add_question(question)
            bubble.mark("waiting for the model…", "-waiting")
            self.pending.append((question, bubble))
            return True
        try:
            self.conversation.prepare(question)
        except UserError as error:
            self.notice(str(error), "error")
            return False
        self._begin_answer(self.query_one(Transcript).add_question(question), question)
        return True

    def image_coming(self) -> bool:
        """An image is being opened (the app knows)."""
        return False

    def _answer_next_pending(self) -> None:
        while self.pending and self.conversation.engine is not None and self.answer is None:
            question, bubble = self.pending.pop(0)
            bubble.mark("")
            try:
                self._begin_answer(bubble, question)
            except UserError as error:
                bubble.mark("not answered", "-failed")
                self.notice(str(error), "error")

    def _begin_answer(self, question_bubble: MessageBubble, question: str) -> None:
        """Ask `question` (its bubble is on screen); a question that cannot be asked raises UserError."""
        cancel = CancelToken()
        chunks = self.conversation.ask(question, cancel)
        transcript = self.query_one(Transcript)
        transcript.add_answer(question_bubble)
        turns = len(self.conversation.session.turns)
        self._start(ActiveAnswer(self._next_id(), cancel, transcript.pairs[-1], turns, None), chunks)

    def stream_retry(self, retry: Retry) -> None:
        """/retry: the last question answered again, streaming into its bubble."""
        transcript = self.query_one(Transcript)
        pair = transcript.pairs[-1]
        pair.answer.set_text("")
        pair.answer.mark("")
        pair.answer.add_class("-pending")
        turns = self.conversation.session.turns
        replaced = turns[-1] if turns else None  # the old turn is put back when nothing new comes
        self._start(ActiveAnswer(self._next_id(), retry.cancel, pair, len(turns), replaced), retry.chunks)

    def _next_id(self) -> int:
        self._answers_started += 1
        return self._answers_started

    def _start(self, answer: ActiveAnswer, chunks: Iterator[str]) -> None:
        self.answer = answer
        self.query_one(StatusBar).set_activity("Answering… (Esc stops)", busy=True)
        self.refresh_bindings()
        fitted = self.conversation.last_fit
        answer.worker = self._stream_answer(answer.id, chunks, fitted.dropped_turns if fitted else 0, answer.cancel)

    def _current(self, answer_id: int) -> ActiveAnswer | None:
        return self.answer if self.answer is not None and self.answer.id == answer_id else None

    def on_answer_started(self, message: msg.AnswerStarted) -> None:
        answer = self._current(message.answer_id)
        if answer is not None and message.dropped_turns:
            self.query_one(Transcript).add_notice(left_out_text(message.dropped_turns), "warning",
                                                  before=answer.pair.question)

    def on_answer_chunk(self, message: msg.AnswerChunk) -> None:
        answer = self._current(message.answer_id)
        if answer is not None:
            answer.pair.answer.append(message.text)

    def on_answer_finished(self, message: msg.AnswerFinished) -> None:
        if self._current(message.answer_id) is not None:
            self.query_one(StatusBar).set_stats(message.stats)
            self._finish_answer(message.stats.tokens_per_second)

    def on_answer_failed(self, message: msg.AnswerFailed) -> None:
        if self._current(message.answer_id) is not None:
            self.notice(message.text, "error")
            self._finish_answer(None)

    def _finish_answer(self, rate: float | None) -> None:
        """Show the turn as recorded (or take back what was not), save, then answer the next in line."""
        answer, self.answer = self.answer, None
        assert answer is not None
        transcript = self.query_one(Transcript)
        turns = self.conversation.session.turns
        recorded = bool(turns) and (turns[-1] is not answer.retry_of if answer.retry_of is not None
                                    else len(turns) > answer.turns_before)
        if recorded or answer.retry_of is not None:
            transcript.show_turn(turns[-1], answer.pair)
            if recorded and not turns[-1].stopped and rate:
                answer.pair.answer.mark(f"{rate:.1f} tok/s")
        else:  # stopped before the first word: nothing was recorded, give the question back, as typed
            transcript.remove_pair(answer.pair)
            field = self.query_one(ChatInput)
            if not field.value:
                field.put(typed_line(answer.pair.question.text))
        self.refresh_bindings()
        self._set_ready_activity()
        self._save()
        self.after_answer()
        self._answer_next_pending()

    def after_answer(self) -> None:
        """Called when an answer has ended and the screen shows the recorded turn (subclasses add to it)."""

    def _save(self) -> None:
        for notice in after_saving(self.conversation).notices:
            self.notice(notice.text, notice.kind)
        self.sub_title = f"session {visible(self.conversation.session.id)}"  # a save may have forked it

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_answer":
            return self.answer is not None or None  # greyed out in the footer when nothing streams
        return True

    def action_cancel_answer(self) -> None:
        if self.answer is not None:
            self.answer.cancel.cancel()
            self.query_one(StatusBar).set_activity("Stopping…", busy=True)

    async def action_quit(self) -> None:
        """Quit cleanly, also mid-answer: stop it, let the partial answer be recorded, save, exit.

        Questions still waiting for the model are kept in the session as unanswered turns, and a question
        typed but not sent as its draft (nothing the person typed is lost); nothing is mounted once quitting
        has begun.
        """
        if self.quitting:
            return
        self.quitting = True
        for question, _ in self.pending:
            self.conversation.keep_unanswered(question)
        self.pending.clear()
        self.conversation.session.draft = self.query_one(ChatInput).value.strip()  # typed, not sent: kept
        answer = self.answer
        if answer is not None:
            answer.cancel.cancel()
            if answer.worker is not None:
                with contextlib.suppress(asyncio.TimeoutError, WorkerCancelled, WorkerFailed):
                    await asyncio.wait_for(answer.worker.wait(), QUIT_WAIT_SECONDS)
        self._save()
        self.exit()

