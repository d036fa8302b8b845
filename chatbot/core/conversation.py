"""One conversation, for every front end: its session, the image, folding, answering, saving, exporting.

`Conversation` is the only object that changes a chat. The chat app, the screen-reader mode and the
one-shot `ask` all drive one; the slash commands (`chatbot.core.commands`) act on it and return
what happened as data, which each front end renders. It works before an engine is attached (the
app opens at once and loads the model behind it) and imports neither torch nor Textual.

One module though over 300 lines: it is one object, and its parts (asking, retrying, undoing,
saving, exporting) share the session's state and its rules; split, each would reach into the others.
What it says about its answers is worded in `answer_wording`; the checks a question passes before the model
sees it (UTF-8, room in the context) are `prompt_checks`, shared with the one-shot `captioning`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from chatbot.core.answer_wording import ALL_FIT_AGAIN, UNREADABLE, left_out_text, same_again_text
from chatbot.core.export import ExportResult, export_session, missing_folder
from chatbot.core.export_log import ExportLog
from chatbot.core.export_pages import FORMAT_SUFFIXES, FORMATS
from chatbot.core.photo_search import Found
from chatbot.core.prompt_checks import check_text, prompt_budget
from chatbot.core.resume import options_for
from chatbot.core.session import ImageRef, Session, SessionError, Turn, valid_session_id
from chatbot.core.session_files import session_json, shown
from chatbot.core.settings import Settings
from chatbot.core.store import SessionForked, SessionStore
from chatbot.engine.base import CancelToken, Engine, GenerationOptions, free_unused_memory
from chatbot.errors import OptionError, QuestionError, UserError
from chatbot.images import LoadedImage
from chatbot.locations import exports_dir
from prompts import (
    FittedPrompt,
    PromptStyle,
    PromptTooLong,
    fit_prompt,
    normalize_answer,
    normalize_question,
    style_for,
)

EXPORT_FORMATS = FORMATS  # what /export writes (chatbot.core.export)


def release_engine(engine: Engine | None) -> None:
    """Let go of a detached model and the memory it holds, before another loads (two may not fit a GPU): its
    background work ends (waiting for a step in progress), then its memory is given back."""
    if engine is not None:
        engine.close()
        del engine
        free_unused_memory()


class Conversation:
    """A chat about one image at a time; switching image starts a fresh context (the turns stay saved).

    Args:
        settings: the model and decoding options the chat starts with (a resumed session's own
            `/set` changes win over them).
        session: a saved session to go on with; a new one when None.
        store: where the session is saved; None for a chat that is never saved (`ask`).
        image: the image to talk about first.
        engine: the model, if already loaded; otherwise `attach` it when it is.
        think_ahead: while the person reads and types, let the engine prepare the next prompt's
            opening (image encoded, history prefilled); interactive front ends turn it on.
    """

    def __init__(
        self, settings: Settings, session: Session | None = None, store: SessionStore | None = None,
        image: LoadedImage | None = None, *, engine: Engine | None = None, think_ahead: bool = False,
    ) -> None:
        self.settings = settings
        self.session = session or Session(model=settings.model)
        self.store = store
        self.options = options_for(self.session, settings.options) if session else settings.options
        self.think_ahead = think_ahead
        self.engine: Engine | None = None
        self.image: LoadedImage | None = None
        self.last_fit: FittedPrompt | None = None
        self.left_out = ""  # what to say before the last answer about turns left out of its prompt ("": nothing)
        self.unreadable = ""  # ... and about a question the model reads mostly as unknown tokens
        self._kept_said: int | None = None  # the fewest earlier turns said to be kept (None: all fit, as last said)
        self._kept_context = 0  # the context (its start) `_kept_said` is about: a fresh one starts with nothing said
        self._model_changed = False  # attached another model since: the next prompt's fit is said as it is
        self.model_error = ""  # why the last model load failed ("": one is loaded, or being loaded)
        self.same_again = ""  # /retry: the sentence saying its answer can only be the one it replaces ("": none)
        self._last_answered: tuple[str, str, GenerationOptions] | None = None  # model, prompt, options of the last
        self.question = ""  # the last question asked, as it is recorded (normalised once, here)
        self.answering = False  # an answer is streaming: commands that change the turns wait
        self.exports = ExportLog()  # the files this conversation exported: the only ones /export may replace
        self.last_export_updated = False  # the last export replaced this conversation's earlier one
        self.compare_next: LoadedImage | None = None  # /compare before a question: the next answer is compared
        self.found: list[Found] = []  # the last /find's results, numbered from 1 for /open N
        self.compare_due: LoadedImage | None = None  # ... and it was just recorded: compare it now (core.comparison)
        self._saved_text = session_json(self.session) if self.session.turns else ""  # unchanged: not rewritten
        if store is not None and session is None:
            self._hold_new_session(store)
        if image is not None:
            self.set_image(image)
        if engine is not None:
            self.attach(engine)

    @classmethod
    def with_engine(
        cls, engine: Engine, image: LoadedImage | None = None, options: GenerationOptions | None = None, *,
        session: Session | None = None, think_ahead: bool = False,
    ) -> Conversation:
        """A conversation on a loaded engine with these options, never saved (benchmarks and tests)."""
        settings = Settings(model=engine.info.model_id, options=options or GenerationOptions())
        return cls(settings, session, None, image, engine=engine, think_ahead=think_ahead)

    # -- the model and the image --------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Answer with `engine` from now on (the app attaches it when loading ends)."""
        self.engine = engine
        self.session.model = engine.info.model_id
        self.model_error = ""
        self._model_changed = True  # another model, another context: say what it sees, or that all fit again
        self.prepare_ahead()

    def room_problem(self) -> str:
        """The sentence for options that leave the attached model no room for a question (a max_new_tokens /set for
        a roomier model, then /model), for the front ends to say as soon as the model is there rather than at
        the next question; "" when there is room, or no model."""
        if self.engine is None:
            return ""
        try:
            prompt_budget(self.engine, self.options)
        except OptionError as error:
            return str(error)
        return ""

    def detach(self) -> Engine | None:
        """Stop answering with the model (before /model loads another); until `attach`, a question is refused as
        while the model loads. Returns it for `release_engine`, which a front end may run off its input loop."""
        engine, self.engine = self.engine, None
        self.model_error = ""  # another is being loaded
        return engine

    def load_failed(self, reason: str) -> None:
        """The model being loaded could not be (`reason`: the sentence said about it): no model answers until
        /model loads one, and every question, /retry and /model alone say so (`require_engine`)."""
        self.engine = None
        self.model_error = reason or "The model could not be loaded."

    @property
    def style(self) -> PromptStyle:
        """How the attached model's family folds a chat into a prompt."""
        return style_for(self.require_engine().info.family, "chat")

    def require_engine(self) -> Engine:
        """The engine, or a QuestionError saying the model is not there: still loading, or (after a failed load)
        none is loaded, and /model NAME loads one (the one sentence of every front end)."""
        if self.engine is None:
            if self.model_error:
                raise QuestionError(f"No model is loaded: {self.model_error}", "/model NAME loads one.")
            raise QuestionError("The model is still loading.", "Wait a moment and try again.")
        return self.engine

    def set_image(self, image: LoadedImage) -> bool:
        """Talk about `image` from now on; True when it differs from the last one (a fresh context)."""
        changed = self.session.image is None or self.session.image.sha256 != image.sha256
        self.image = image
        self.session.image = ImageRef(image.source, image.sha256)
        if changed:
            self.session.context_start = len(self.session.turns)
            self.compare_next = None  # armed against the image it replaces (switch_image says so)
        self.prepare_ahead()
        return changed

    def prepare_ahead(self) -> None:
        """With think_ahead on, hand the engine the opening the next question's prompt will have."""
        if not self.think_ahead or self.image is None or self.engine is None:
            return
        engine = self.engine
        history = self.history()
        style = self.style
        try:  # as much history as fits with a short question: what the next prompt most likely keeps
            dropped = fit_prompt(style, history, "?", engine.count_tokens,
                                 prompt_budget(engine, self.options)).dropped_turns
        except (PromptTooLong, OptionError):
            return
        engine.prepare_ahead(self.image, style.opening(history[dropped:]))

    # -- asking -----------------------------------------------------------------------------------

    def history(self) -> list[tuple[str, str]]:
        """The turns since the last image switch or /clear, oldest first: what the prompt folds in."""
        return [(t.question, t.answer) for t in self.session.turns[self.session.context_start:]]

    def check_question(self, question: str, *, image_coming: bool = False) -> str:
        """The checks that need no model: `question` is not empty, and an image is open (or, with
        `image_coming`, being opened). Returns the question as it will be asked; raises QuestionError."""
        text = normalize_question(check_text(question))  # not UTF-8 (a saved question /retry asks again)
        if not text:
            raise QuestionError("The question is empty.", "Type a question about the image, e.g. What is in it?")
        if self.image is None and not image_coming:
            raise QuestionError("No image is open.", "Open one first with /image PATH.")
        return text

    def prepare(self, question: str) -> FittedPrompt:
        """The prompt for `question`, with as much history as fits; a question that cannot be asked now
        (no image, no model yet, empty, too long) raises QuestionError."""
        text = self.check_question(question)
        engine = self.require_engine()
        budget = prompt_budget(engine, self.options)
        try:
            return fit_prompt(self.style, self.history(), text, engine.count_tokens, budget)
        except PromptTooLong as error:
            # OPT's answer shares the prompt's positions; FlanT5's encoder room is the same whatever it answers
            lower = "" if engine.info.is_encoder_decoder else " (or lower max_new_tokens: /set max_new_tokens N)"
            raise QuestionError(
                f"The question is too long for this model: it needs {error.question_tokens} tokens "
                f"and there is room for {error.budget_tokens}.",
                f"Shorten the question{lower}.",
            ) from None

    def ask(self, question: str, cancel: CancelToken | None = None) -> Iterator[str]:
        """Stream the answer; the turn is recorded when the stream ends, also when cancelled.

        Every check happens here, before the first chunk is asked for; while the stream runs,
        `answering` is True.
        """
        fitted = self.last_fit = self.prepare(question)
        self._note_left_out(fitted)
        self.question = normalize_question(question)
        self._note_unreadable(self.question)
        self.answering = True
        return self._stream(self.question, fitted, cancel or CancelToken())

    def _note_unreadable(self, question: str) -> None:
        """Set `unreadable`: said before an answer to a question the model reads mostly as unknown tokens (FlanT5
        and Chinese, Hindi, Arabic; the demo model and words outside its world), whose answer may mean nothing."""
        unknown, total = self.require_engine().unknown_tokens(question)
        self.unreadable = UNREADABLE if unknown * 2 > total else ""

    def notes_before_answer(self) -> list[str]:
        """What the front ends say before the last question's answer, in this order: turns left out of its prompt,
        a question the model cannot read."""
        return [note for note in (self.left_out, self.unreadable) if note]

    def _note_left_out(self, fitted: FittedPrompt) -> None:
        """Set `left_out`: said when turns start being left out of the prompt, then only when the model sees fewer
        earlier turns than it was last said to (a chat whose turns differ in length swings between keeping 10 and 9:
        said once, at 9, not every few turns), and once when all fit again (after /model to a roomier model, a lower
        max_new_tokens, /undo). After /model what the new model sees is said once, whatever it is; a fresh context
        (/clear, another image) starts with nothing said."""
        if self.session.context_start != self._kept_context:  # a fresh context: nothing said about it yet
            self._kept_context, self._kept_said = self.session.context_start, None
        changed, self._model_changed = self._model_changed, False
        if not fitted.dropped_turns:
            self.left_out = ALL_FIT_AGAIN if self._kept_said is not None else ""
            self._kept_said = None
            return
        kept = len(self.history()) - fitted.dropped_turns
        if self._kept_said is not None and kept >= self._kept_said and not (changed and kept != self._kept_said):
            self.left_out = ""
            return
        self._kept_said = kept
        engine = self.require_engine()
        raised = not engine.info.is_encoder_decoder and self.options.max_new_tokens > GenerationOptions().max_new_tokens
        self.left_out = left_out_text(kept, self.options.max_new_tokens if raised else 0)

    def _stream(self, question: str, fitted: FittedPrompt, cancel: CancelToken) -> Iterator[str]:
        assert self.image is not None  # prepare() checked it

        def record(answer: str, stopped: bool) -> None:
            self.session.add_turn(question, answer, stopped=stopped)
            if not stopped and self.compare_next is not None:  # armed by /compare: its turn has come
                self.compare_due, self.compare_next = self.compare_next, None

        answered = (self.require_engine().info.model_id, fitted.text, self.options)

        def record_answered(answer: str, stopped: bool) -> None:
            record(answer, stopped)
            self._last_answered = None if stopped else answered  # a whole answer: /retry would make it again

        return self.stream_recorded(self.image, fitted.text, cancel, record_answered)

    def stream_recorded(
        self, image: LoadedImage, prompt: str, cancel: CancelToken, record: Callable[[str, bool], None],
    ) -> Iterator[str]:
        """Stream the answer to `prompt` about `image`; when the stream ends (finished, stopped, failed or
        closed early), `record(answer, stopped)` keeps what came: nothing when it was stopped before a
        word, else the (partial) answer, stopped unless it finished. Then the next prompt is prepared ahead.
        The one rule for an answer's end, for the chat's own answers and /compare's."""
        parts: list[str] = []
        finished = False  # False after a model error or an early close: then only a partial answer is kept
        try:
            for chunk in self.require_engine().stream(image, prompt, self.options, cancel):
                parts.append(chunk)
                yield chunk
            finished = True
        finally:
            self.answering = False
            if parts or (finished and not cancel.cancelled):
                record(normalize_answer("".join(parts)), cancel.cancelled or not finished)
            if finished or cancel.cancelled:
                self.prepare_ahead()

    def last_question(self) -> str | None:
        """The question /retry would answer again (None when the context has none)."""
        turns = self.session.turns
        return turns[-1].question if turns and self.session.context_start < len(turns) else None

    def retry(self, cancel: CancelToken | None = None) -> Iterator[str]:
        """Answer the last question again; the old answer is replaced when the new one is recorded.

        Every check happens here (the prompt leaves the old answer out); the old turn stays in the
        session until the stream starts, and comes back if nothing new is recorded.
        """
        question = self.last_question()
        if question is None:
            raise QuestionError("There is no question to answer again.", "Ask one first.")
        old = self.session.turns.pop()
        try:
            fitted = self.last_fit = self.prepare(question)
            self._note_left_out(fitted)
            self._note_unreadable(question)
        finally:
            self.session.turns.append(old)
        again = (self.require_engine().info.model_id, fitted.text, self.options)
        self.same_again = same_again_text(self.options) if again == self._last_answered else ""
        self.question = question
        self.answering = True
        return self._replace(old, self._stream(question, fitted, cancel or CancelToken()))

    def _replace(self, old: Turn, stream: Iterator[str]) -> Iterator[str]:
        if self.session.turns and self.session.turns[-1] is old:
            self.session.turns.pop()
        recorded = len(self.session.turns)
        try:
            yield from stream
        finally:
            if len(self.session.turns) == recorded:  # nothing new came (error or instant cancel): keep the old
                self.session.turns.append(old)
            else:  # the other images' answers to the same question still hold
                self.session.turns[-1].compared = list(old.compared)
            self.answering = False

    def keep_unanswered(self, question: str) -> None:
        """Record `question` as a turn that was never answered (asked while the model loaded, then quit):
        it is saved, shown as stopped, and /retry answers it later."""
        text = normalize_question(question)
        if text:
            self.session.add_turn(text, "", stopped=True)

    # -- changing the conversation ------------------------------------------------------------------

    def clear(self) -> None:
        """Forget the conversation's context: the next question starts fresh (turns stay saved)."""
        self.session.context_start = len(self.session.turns)
        self.prepare_ahead()

    def undo(self) -> Turn | None:
        """Drop the last turn (from the session and the context); None when there was none."""
        if not self.session.turns:
            return None
        turn = self.session.turns.pop()
        self.session.context_start = min(self.session.context_start, len(self.session.turns))
        self.prepare_ahead()
        return turn

    def set_options(self, options: GenerationOptions) -> None:
        """Decode with `options` from now on (each value already checked on its own: see
        chatbot.core.settings); with the model loaded, OptionError when they leave no room for a question."""
        if self.engine is not None:
            prompt_budget(self.engine, options)
        self.options = options
        self.prepare_ahead()  # max_new_tokens changes OPT's room for history

    def with_options(self, **changes: object) -> None:
        """Change some options (tests and benchmarks; people use /set, which checks the values)."""
        self.set_options(replace(self.options, **changes))  # type: ignore[arg-type]

    # -- saving and exporting ---------------------------------------------------------------------------

    def _hold_new_session(self, store: SessionStore) -> None:
        """A new chat holds its session from its start (`SessionStore.claim`: `<id>.lock`, let go when the process
        ends), not from its first save: `blip2-chat sessions --delete` in another terminal then sees it open, and
        keeps the pictures pasted into it and the questions typed in it. It has no file until its first turn, so
        a chat that never had one leaves nothing. Where no lock can be made, its first save says so."""
        with contextlib.suppress(SessionError):
            store.claim(self.session)  # a fresh id: no other chat's file, no other holder (else: a fresh copy)

    def save(self, force: bool = False) -> Path | None:
        """Write the session to the store if it changed (also when unchanged with `force`, i.e. /save).

        A session that never had a turn is never written, so opening an image and quitting leaves no
        file (and `--continue` never lands on an empty chat); one whose turns were all undone is
        written, so its file never shows a turn the chat no longer has; an unchanged one is not rewritten, so
        `blip2-chat sessions` shows when a chat really changed. None when nothing was written.

        A session file another blip2-chat holds is never overwritten (`SessionStore.claim`): when this
        chat is open in another process, or its file changed since it was read, the session goes on as
        a copy under a new id, and `SessionForked` (a SessionError, raised after the copy is written)
        says so in one sentence.
        """
        if self.store is None or not (self.session.turns or self._saved_text):  # never saved and empty
            return None
        self.session.options = self.options.to_dict()
        text = session_json(self.session)
        if text == self._saved_text and not force:
            return None
        try:
            path = self.store.save(self.session, text)  # made once: the store writes it as it is
        except SessionForked:  # written, as a copy under a new id: later saves go to the copy
            self._saved_text = session_json(self.session)
            raise
        self._saved_text = text
        return path

    @property
    def saved(self) -> bool:
        """True when the store holds the session as it is now."""
        return self.store is not None and bool(self.session.turns) and self._saved_text == session_json(
            replace(self.session, options=self.options.to_dict()))

    def export(self, fmt: str, where: str = "", *, embed: bool = False) -> ExportResult:
        """Write the chat as Markdown, HTML or JSON to `where` (a file or a folder; default
        ./blip2-chat-<id>.<fmt>).

        Markdown copies its pictures into `NAME_files/` beside `NAME.md` (`embed`: holds them inside as
        `data:` URIs instead); HTML holds them inside. No other folder is created: one that does not exist
        is refused. An existing file (or `NAME_files/`) is replaced only when it is this conversation's own
        earlier export to that path, unchanged since (so `/export md` twice updates the first); any other is
        refused, naming it and suggesting another name. Afterwards `last_export_updated` is True when an
        earlier export was replaced, False when the file is new.
        """
        fmt = fmt.lower().lstrip(".")
        if fmt not in EXPORT_FORMATS:
            given = f", not '{shown(fmt)}'" if fmt else ""
            raise UserError(f"/export needs a format, md, html or json{given}.",
                            "e.g. /export md, or /export json ~/chat.json.")
        self.session.options = self.options.to_dict()
        name = f"blip2-chat-{self.session.id if valid_session_id(self.session.id) else 'chat'}.{fmt}"
        target = Path(where).expanduser() if where else exports_dir() / name
        if where.endswith(("/", os.sep)) and not target.is_dir():  # meant as a folder
            raise missing_folder(target.resolve())
        named_file = target.is_symlink() and target.suffix.lower() in FORMAT_SUFFIXES and not where.endswith(
            ("/", os.sep))  # a link named like an export (chat.md -> a folder) is a file name taken: refused
        if target.is_dir() and not named_file:
            target = target / name
        # the folder made absolute, the name left as it is: a link there is refused, never followed to its target
        target = target.parent.resolve() / target.name
        # kept only for a chat saved among your own: not a chat file from outside, not one never saved (its id would
        # be free for an imported chat to take, and with it what its export may replace)
        store = None if self.session.from_elsewhere or not self._saved_text else self.store
        self.exports.follow(store.export_log_path(self.session.id) if store is not None else None)
        try:
            result = export_session(self.session, fmt, target, self.exports, embed=embed)
        finally:  # kept also after a failure: copies it wrote before it are its own
            self.exports.keep()
        self.last_export_updated = result.updated
        return result
