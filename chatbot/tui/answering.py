"""Asking and answering in the chat app: questions in line, the streaming worker, Esc, quitting mid-answer.

The base of `ChatApp`: everything about one answer's life, from the question bubble to the saved turn.
The worker only posts messages (`chatbot.tui.messages`); widgets change when the app handles them.
Streamed tokens gather in a `StreamBuffer` and the answer bubble shows them at its repaint pace, so the
app's screen work does not slow the model's thread down (one message and one repaint per batch).
A question sent while the model loads, while an answer is still coming, or while an image opens, waits in
line (`pending`) and is asked when the model is ready, nothing streams and the image it waits for is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from copy import copy
from dataclasses import dataclass, field

from textual import work
from textual.app import App
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from chatbot.core.answer_wording import cut_short_mark, still_answering
from chatbot.core.commands import Retry, after_saving, typed_line
from chatbot.core.conversation import Conversation
from chatbot.core.key_names import action_key_label
from chatbot.core.runtime import ENDING_SIGNALS
from chatbot.engine.base import CancelToken
from chatbot.errors import QuestionError, UserError, model_error_text
from chatbot.tui import messages as msg
from chatbot.tui.widgets.bubbles import MessageBubble
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import BubblePair, Transcript
from chatbot.tui.workers import StreamBuffer
from chatbot.untrusted import visible

QUIT_WAIT_SECONDS = 5.0  # how long quitting waits for a cancelled answer to stop and be recorded
# Said when a question is sent while an answer is still coming: it waits and is asked next. (The core's
# `still_answering` is the refusal of what cannot wait, and says "Let it finish, or stop it".)
QUESTION_WAITS_FOR = ("An answer is still coming: your question is asked next, as soon as it ends ({key} stops it "
                      "sooner).")
QUESTION_WAITS = QUESTION_WAITS_FOR.format(key="Esc")  # with the default stop key
# Said when a question is sent while an image opens: it is asked about that image once it is open.
QUESTION_WAITS_FOR_IMAGE = ("An image is still opening: your question is asked about it once it is open ({key} stops "
                            "the opening and gives the question back).")
WAITING_FOR_MODEL = "waiting for the model…"  # under a question sent while the model loads
WAITING_FOR_ANSWER = "waiting its turn…"  # under a question sent while an answer streams
WAITING_FOR_IMAGE = "waiting for the image…"  # under a question sent while an image opens
NOT_ASKED = "not asked"  # under a question that waited for an image that did not open


@dataclass
class ActiveAnswer:
    """The answer streaming now: how to stop it and where it is shown."""

    id: int
    cancel: CancelToken
    pair: BubblePair
    turns_before: int  # len(session.turns) when it started: a new turn means it was recorded
    retry_of: object | None  # the turn a /retry replaces (kept if nothing new comes)
    question: str = ""  # what was asked (for a /retry: the question answered again)
    worker: Worker[None] | None = None
    buffer: StreamBuffer = field(default_factory=StreamBuffer)  # streamed text the bubble has yet to show


@dataclass
class WaitingQuestion:
    """A question sent before it could be asked, shown in its bubble (marked waiting)."""

    question: str
    bubble: MessageBubble
    for_image: bool = False  # sent while an image opened: asked about it once open, not asked if it does not open


class AnsweringApp(App[None]):
    """Questions, streamed answers, stopping them; needs a Transcript, a ChatInput and a StatusBar on screen."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self.conversation = conversation
        self.answer: ActiveAnswer | None = None
        # questions sent before the model was ready, while an answer was coming or an image opening, oldest first
        self.pending: list[WaitingQuestion] = []
        self.model_error: str | None = None
        self.quitting = False  # set by action_quit: widgets are no longer changed
        self.ended_by_signal: int | None = None  # the signal (SIGTERM, SIGHUP) that made the app quit, if one did
        self._signal_loop: asyncio.AbstractEventLoop | None = None  # where signals are handled (quit_on_signals)
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
        self.notice(str(still_answering(waiting, self.conversation.settings.keys)), "warning")
        return True

    def stop_key(self) -> str:
        """The key bound to `stop` (the config file's [keys]), as the status line and notices name it."""
        return action_key_label(self.conversation.settings.keys, "stop")  # `escape` reads "Esc", as help says

    def open_key(self) -> str:
        """The key bound to `open_image` (the config file's [keys]), as notices and the empty preview name it."""
        return action_key_label(self.conversation.settings.keys, "open_image")

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
    def _stream_answer(self, answer_id: int, chunks: Iterator[str], dropped_turns: int, cancel: CancelToken,
                       buffer: StreamBuffer) -> None:
        started = False
        try:
            for chunk in chunks:
                if not started:
                    started = True
                    self.post_message(msg.AnswerStarted(answer_id, dropped_turns))
                if buffer.put(chunk):  # the first chunk since the app last took them: tell it
                    self.post_message(msg.AnswerChunk(answer_id))
        except Exception as error:  # noqa: BLE001 - a model error is a notice, never a crash
            self.post_message(msg.AnswerFailed(answer_id, model_error_text(error)))
            return
        if not started:
            self.post_message(msg.AnswerStarted(answer_id, dropped_turns))
        engine = self.conversation.require_engine()
        self.post_message(msg.AnswerFinished(answer_id, cancel.cancelled, copy(engine.last_stats)))

    def ask(self, question: str) -> bool:
        """Send a question; while the model loads, while an answer is still coming, or while an image opens, it
        waits in line and is asked as soon as it can be (about the image being opened). False when it was refused
        (input kept)."""
        loading, opening = self.conversation.engine is None, self.image_coming()
        if loading or opening or self.streaming():
            if loading and self.model_error:
                try:  # no model after a failed load: the core's one sentence for it
                    self.conversation.require_engine()
                except QuestionError as error:
                    self.notice(str(error), "error")
                    return False
            try:  # what can be refused now is refused now, not when its turn comes
                self.conversation.check_question(question, image_coming=opening)
            except UserError as error:
                self.notice(str(error), "error")
                return False
            bubble = self.query_one(Transcript).add_question(question)
            bubble.mark(WAITING_FOR_IMAGE if opening else WAITING_FOR_MODEL if loading else WAITING_FOR_ANSWER,
                        "-waiting")
            self.pending.append(WaitingQuestion(question, bubble, for_image=opening))
            if opening:
                self.notice(QUESTION_WAITS_FOR_IMAGE.format(key=self.stop_key()))
            elif not loading:
                self.notice(QUESTION_WAITS_FOR.format(key=self.stop_key()))
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
        while self.pending and self.conversation.engine is not None and self.answer is None \
                and not self.pending[0].for_image:  # one sent while an image opens waits for it
            waiting = self.pending.pop(0)
            waiting.bubble.mark("")
            try:
                self._begin_answer(waiting.bubble, waiting.question)
            except UserError as error:
                waiting.bubble.mark("not answered", "-failed")
                self.notice(str(error), "error")

    def image_opened_for_questions(self) -> None:
        """The image being opened is open (or the one to /compare with loaded): the questions sent meanwhile are
        asked now, in turn (about it), or wait for what they still wait for. They move below what opening it said
        ("Now talking about ..."), where the transcript reads in the order things happened."""
        transcript, moving = self.query_one(Transcript), False
        for waiting in self.pending:  # from the first that waited for the image on, in the order they were sent
            if waiting.for_image:
                waiting.for_image, moving = False, True
                waiting.bubble.mark(WAITING_FOR_MODEL if self.conversation.engine is None else WAITING_FOR_ANSWER,
                                    "-waiting")
            if moving and waiting.bubble is not transcript.children[-1]:
                transcript.move_child(waiting.bubble, after=transcript.children[-1])
        self._answer_next_pending()

    def image_not_opened_for_questions(self, stopped: bool = False) -> None:
        """The image being opened did not open (it failed, or was `stopped` with the stop key): the questions sent
        meanwhile were about it, so they are not asked. One sentence says so, as information after the user's own
        stop, as a warning after a failure; the first is back in the input (when nothing else is typed there), all
        of them a press of Up away. The questions sent before it go on."""
        dropped = [waiting for waiting in self.pending if waiting.for_image]
        if not dropped:
            return
        self.pending = [waiting for waiting in self.pending if not waiting.for_image]
        for waiting in dropped:
            waiting.bubble.mark(NOT_ASKED, "-failed")
        field = self.query_one(ChatInput)
        back = not field.value
        if back:
            field.put(typed_line(dropped[0].question))
        kind = "info" if stopped else "warning"
        if len(dropped) == 1:
            where = "it is back in the input" if back else "Up recalls it"
            self.notice(f"The question that waited for the image was not asked; {where}.", kind)
        else:
            where = "the first is back in the input, Up recalls the others" if back else "Up recalls them"
            self.notice(f"The {len(dropped)} questions that waited for the image were not asked; {where}.", kind)
        self._answer_next_pending()

    def _begin_answer(self, question_bubble: MessageBubble, question: str) -> None:
        """Ask `question` (its bubble is on screen); a question that cannot be asked raises UserError."""
        cancel = CancelToken()
        chunks = self.conversation.ask(question, cancel)
        transcript = self.query_one(Transcript)
        transcript.add_answer(question_bubble)
        turns = len(self.conversation.session.turns)
        self._start(ActiveAnswer(self._next_id(), cancel, transcript.pairs[-1], turns, None, question), chunks)

    def stream_retry(self, retry: Retry) -> None:
        """/retry: the last question answered again, streaming into its bubble."""
        transcript = self.query_one(Transcript)
        pair = transcript.pairs[-1]
        pair.answer.set_text("")
        pair.answer.mark("")
        pair.answer.add_class("-pending")
        turns = self.conversation.session.turns
        replaced = turns[-1] if turns else None  # the old turn is put back when nothing new comes
        self._start(ActiveAnswer(self._next_id(), retry.cancel, pair, len(turns), replaced, retry.question),
                    retry.chunks)

    def _next_id(self) -> int:
        self._answers_started += 1
        return self._answers_started

    def _start(self, answer: ActiveAnswer, chunks: Iterator[str]) -> None:
        self.answer = answer
        self.query_one(StatusBar).set_activity(f"Answering… ({self.stop_key()} stops)", busy=True)
        self.refresh_bindings()
        fitted = self.conversation.last_fit
        answer.worker = self._stream_answer(answer.id, chunks, fitted.dropped_turns if fitted else 0, answer.cancel,
                                            answer.buffer)

    def _current(self, answer_id: int) -> ActiveAnswer | None:
        return self.answer if self.answer is not None and self.answer.id == answer_id else None

    def on_answer_started(self, message: msg.AnswerStarted) -> None:
        answer = self._current(message.answer_id)
        if answer is not None:  # the core says when (all turns fitting again too)
            for note in self.conversation.notes_before_answer():
                self.query_one(Transcript).add_notice(note, "warning", before=answer.pair.question)

    def on_answer_chunk(self, message: msg.AnswerChunk) -> None:
        answer = self._current(message.answer_id)
        if answer is not None:
            answer.pair.answer.show_streamed(answer.buffer)

    def on_answer_finished(self, message: msg.AnswerFinished) -> None:
        if self._current(message.answer_id) is not None:
            self.query_one(StatusBar).set_stats(message.stats)
            self._finish_answer(message.stats.tokens_per_second, cut_short=message.stats.cut_short)

    def on_answer_failed(self, message: msg.AnswerFailed) -> None:
        if self._current(message.answer_id) is not None:
            self.notice(message.text, "error")
            self._finish_answer(None)

    def _finish_answer(self, rate: float | None, cut_short: bool = False) -> None:
        """Show the turn as recorded (or take back what was not), save, then answer the next in line. An answer
        `cut_short` by max_new_tokens is marked so, with how to let it go on (the core's sentence, shortened)."""
        answer, self.answer = self.answer, None
        assert answer is not None
        answer.pair.answer.flush(answer.buffer)  # nothing left to repaint later over the recorded text
        transcript = self.query_one(Transcript)
        turns = self.conversation.session.turns
        recorded = bool(turns) and (turns[-1] is not answer.retry_of if answer.retry_of is not None
                                    else len(turns) > answer.turns_before)
        if recorded or answer.retry_of is not None:
            transcript.show_turn(turns[-1], answer.pair)
            if recorded and not turns[-1].stopped and cut_short:
                answer.pair.answer.mark(cut_short_mark(self.conversation.options.max_new_tokens), "-cut-short")
            elif recorded and not turns[-1].stopped and rate:
                answer.pair.answer.mark(f"{rate:.1f} tok/s")
            transcript.keep_bounded()  # a chat grown long here lets its oldest bubbles go (saved all the same)
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

    async def stop_streaming(self) -> None:
        """Quitting: stop the answer in progress and wait (a few seconds at most) until it is recorded."""
        answer = self.answer
        if answer is not None:
            answer.cancel.cancel()
            if answer.worker is not None:
                with contextlib.suppress(asyncio.TimeoutError, WorkerCancelled, WorkerFailed):
                    await asyncio.wait_for(answer.worker.wait(), QUIT_WAIT_SECONDS)

    def action_cancel_answer(self) -> None:
        if self.answer is not None:
            self.answer.cancel.cancel()
            self.query_one(StatusBar).set_activity("Stopping…", busy=True)

    def quit_on_signals(self) -> None:
        """From now on SIGTERM and SIGHUP quit as Ctrl+Q does: the answer in progress stopped and kept, questions
        waiting and the line typed but not sent saved, the terminal given back. Without this they end the process
        on the spot (the chat since the last answer lost, the terminal left raw). Call it with the app running, on
        the main thread (elsewhere signals cannot be caught and nothing changes); the handlers go with the app's
        event loop."""
        loop = self._signal_loop = asyncio.get_running_loop()
        for signum in ENDING_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread, Windows
                loop.add_signal_handler(signum, self.end_by_signal, signum)

    def terminal_gone(self) -> None:
        """The terminal went away (a write to it failed), with or without a SIGHUP: quit as on SIGHUP. Any thread
        may call it (the screen's writer does); it only asks the app's loop, and never waits."""
        loop, hangup = self._signal_loop, getattr(signal, "SIGHUP", None)
        if loop is not None and hangup is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the app has ended already
                loop.call_soon_threadsafe(self.end_by_signal, hangup)

    def end_by_signal(self, signum: int) -> None:
        """Quit because of `signum` (recorded in `ended_by_signal`: the exit status says it); a second signal while
        quitting changes nothing."""
        if self.ended_by_signal is None:
            self.ended_by_signal = signum
        if not self.quitting:
            self.run_worker(self.action_quit(), group="quit")

    async def action_quit(self) -> None:
        """Quit cleanly, also mid-answer: stop it, let the partial answer be recorded, save, exit.

        Questions still waiting (for the model, or for the answer) are kept in the session as unanswered turns,
        after the stopped answer's, and a question typed but not sent as its draft (nothing the person typed is
        lost); so is the question being answered when it was stopped before its first word. A question waiting
        for an image still opening is no turn: the image is not open, and a turn would say it was about the one
        before. The first of them is the draft when nothing else was typed (the others, sent, are Up's lines).
        Nothing is mounted once quitting has begun.
        """
        if self.quitting:
            return
        self.quitting = True
        waiting = [waiting.question for waiting in self.pending if not waiting.for_image]
        for_image = [waiting.question for waiting in self.pending if waiting.for_image]
        self.pending.clear()  # none of them is asked when the stopped answer ends
        typed = self.query_one(ChatInput).value.strip()  # typed, not sent: kept
        self.conversation.session.draft = typed or (typed_line(for_image[0]) if for_image else "")
        answer = self.answer
        await self.stop_streaming()
        if answer is not None and self._unrecorded(answer):  # stopped before a word: the question is kept
            self.conversation.keep_unanswered(answer.question)
        for question in waiting:  # after the answer they waited for: the session keeps the order they were sent
            self.conversation.keep_unanswered(question)
        self._save()
        self.exit()

    def _unrecorded(self, answer: ActiveAnswer) -> bool:
        """A question's answer that has ended (its worker is done) without a turn: stopped before its first word.
        (A /retry keeps its old turn then; one still running may yet record one.)"""
        done = answer.worker is None or answer.worker.is_finished
        return done and answer.retry_of is None and len(self.conversation.session.turns) == answer.turns_before
