"""One conversation with an engine: fold the history into the prompt, stream, record the turn.

Front ends (CLI, plain mode, TUI) all drive a `Chat`; it imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from chatbot.engine.base import CancelToken, Engine, GenerationOptions
from chatbot.errors import OptionError, QuestionError
from chatbot.images import LoadedImage
from chatbot.session import ImageRef, Session, Turn
from prompts import FittedPrompt, PromptTooLong, fit_prompt, normalize_answer, normalize_question, style_for


def prompt_budget(engine: Engine, options: GenerationOptions) -> int:
    """Prompt tokens the model has room for, image tokens and (for OPT) the answer set aside."""
    info = engine.info
    room = info.context_tokens - info.image_tokens
    if not info.is_encoder_decoder:  # OPT's positions hold the prompt and the answer
        room -= options.max_new_tokens
    if room <= 0:
        raise OptionError(
            f"max_new_tokens={options.max_new_tokens} leaves no room for a question in this model's "
            f"{info.context_tokens} positions.",
            f"Use a value below {info.context_tokens - info.image_tokens - 16}.",
        )
    return room


class Chat:
    """A conversation about one image at a time; switching image starts a fresh context."""

    def __init__(
        self, engine: Engine, image: LoadedImage | None = None, options: GenerationOptions | None = None,
        session: Session | None = None, think_ahead: bool = False,
    ) -> None:
        """`think_ahead`: while the person reads and types, let the engine prepare the next prompt's
        opening (image encoded, history prefilled); interactive front ends turn it on."""
        self.engine = engine
        self.options = options or GenerationOptions()
        self.session = session or Session(model=engine.info.model_id)
        self.style = style_for(engine.info.family, "chat")
        self.image: LoadedImage | None = None
        self.last_fit: FittedPrompt | None = None
        self.think_ahead = think_ahead
        if image is not None:
            self.set_image(image)

    def set_image(self, image: LoadedImage) -> None:
        """Talk about `image` from now on; a different image starts a fresh context (turns stay saved)."""
        previous = self.session.image
        self.image = image
        self.session.image = ImageRef(image.source, image.sha256)
        if previous is None or previous.sha256 != image.sha256:
            self.session.context_start = len(self.session.turns)
        self.prepare_ahead()

    def prepare_ahead(self) -> None:
        """With think_ahead on, hand the engine the opening the next question's prompt will have."""
        if not self.think_ahead or self.image is None:
            return
        history = self.history()
        try:  # as much history as fits with a short question: what the next prompt most likely keeps
            dropped = fit_prompt(self.style, history, "?", self.engine.count_tokens,
                                 prompt_budget(self.engine, self.options)).dropped_turns
        except (PromptTooLong, OptionError):
            return
        self.engine.prepare_ahead(self.image, self.style.opening(history[dropped:]))

    def history(self) -> list[tuple[str, str]]:
        """The turns since the last image switch or /clear, oldest first: what the prompt folds in."""
        return [(t.question, t.answer) for t in self.session.turns[self.session.context_start:]]

    def prepare(self, question: str) -> FittedPrompt:
        """The prompt for `question`, with as much history as fits; bad questions raise QuestionError."""
        text = normalize_question(question)
        if not text:
            raise QuestionError("The question is empty.", "Type a question about the image, e.g. What is in it?")
        budget = prompt_budget(self.engine, self.options)
        try:
            return fit_prompt(self.style, self.history(), text, self.engine.count_tokens, budget)
        except PromptTooLong as error:
            raise QuestionError(
                f"The question is too long for this model: it needs {error.question_tokens} tokens "
                f"and there is room for {error.budget_tokens}.",
                "Shorten the question (or lower --max-new-tokens).",
            ) from None

    def ask(self, question: str, cancel: CancelToken | None = None) -> Iterator[str]:
        """Stream the answer; the turn is recorded when the stream ends, also when cancelled."""
        if self.image is None:
            raise QuestionError("No image is open.", "Open one first, e.g. /image photo.jpg.")
        fitted = self.last_fit = self.prepare(question)
        cancel = cancel or CancelToken()
        parts: list[str] = []
        finished = False  # False after a model error or an early close: then only a partial answer is kept
        try:
            for chunk in self.engine.stream(self.image, fitted.text, self.options, cancel):
                parts.append(chunk)
                yield chunk
            finished = True
        finally:
            if parts or (finished and not cancel.cancelled):
                self.session.turns.append(Turn(
                    question=normalize_question(question), answer=normalize_answer("".join(parts)),
                    image=self.session.image, stopped=cancel.cancelled or not finished,
                ))
            if finished or cancel.cancelled:
                self.prepare_ahead()

    def clear(self) -> None:
        """Forget the conversation's context: the next question starts fresh (turns stay saved)."""
        self.session.context_start = len(self.session.turns)
        self.prepare_ahead()

    def undo(self) -> Turn | None:
        """Drop the last turn (from the session and the context)."""
        if not self.session.turns:
            return None
        turn = self.session.turns.pop()
        self.session.context_start = min(self.session.context_start, len(self.session.turns))
        self.prepare_ahead()
        return turn

    def retry(self, cancel: CancelToken | None = None) -> Iterator[str]:
        """Answer the last question again (the old answer is replaced when the new one is recorded)."""
        if not self.session.turns or self.session.context_start >= len(self.session.turns):
            raise QuestionError("There is no question to answer again.", "Ask one first.")
        return self._retry(cancel)

    def _retry(self, cancel: CancelToken | None) -> Iterator[str]:
        old = self.session.turns.pop()
        recorded = len(self.session.turns)
        try:
            yield from self.ask(old.question, cancel)
        finally:
            if len(self.session.turns) == recorded:  # nothing new came (error or instant cancel): keep the old
                self.session.turns.append(old)

    def with_options(self, **changes: object) -> None:
        self.options = replace(self.options, **changes)  # type: ignore[arg-type]


def caption(engine: Engine, image: LoadedImage, options: GenerationOptions, prefix: str = "") -> str:
    """A caption for `image`: the caption style's prompt, no history."""
    prompt = style_for(engine.info.family, "caption").build([], "")
    return normalize_answer(engine.answer(image, prefix or prompt, options))
