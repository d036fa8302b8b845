"""The registered prompt styles: BLIP-2 chat folding for OPT and FlanT5, and captioning."""

from __future__ import annotations

from collections.abc import Sequence

from prompts.base import PromptStyle, fold_answer, normalize_question, register

__all__ = ["Caption", "FlanT5Chat", "OptChat", "QuestionAnswerChat"]


class QuestionAnswerChat(PromptStyle):
    """Shared BLIP-2 chat folding, as in the paper, LAVIS and the official demo.

    ``Question: {q1} Answer: {a1}. Question: {q2} Answer:`` -- earlier turns joined by one
    space, answers folded with ``fold_answer``, no trailing space after the final ``Answer:``.
    """

    task = "chat"

    def format_turn(self, question: str, answer: str) -> str:
        """Return ``Question: {q} Answer: {folded a}`` for one finished turn."""
        return f"Question: {normalize_question(question)} Answer: {fold_answer(answer)}"

    def build(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """Return the folded history followed by ``Question: {question} Answer:``."""
        parts = [self.format_turn(q, a) for q, a in history]
        parts.append(f"Question: {normalize_question(question)} Answer:")
        return " ".join(parts)

    def opening(self, history: Sequence[tuple[str, str]]) -> str:
        """Return the folded history followed by ``Question:``."""
        return " ".join([*(self.format_turn(q, a) for q, a in history), "Question:"])


@register
class OptChat(QuestionAnswerChat):
    """Chat style for the OPT checkpoints (decoder-only: prompt and answer share positions)."""

    name = "opt-chat"
    family = "opt"


@register
class FlanT5Chat(QuestionAnswerChat):
    """Chat style for the FlanT5 checkpoints (the prompt goes to the encoder)."""

    name = "flan-t5-chat"
    family = "flan-t5"


@register
class Caption(PromptStyle):
    """Captioning: a fixed prefix, no conversation.

    The BLIP-2 paper prompts the -coco checkpoints with "a photo of"; the default is empty.
    """

    name = "caption"
    family = "any"
    task = "caption"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def format_turn(self, question: str, answer: str) -> str:
        """Captions have no turns; always returns the empty string."""
        return ""

    def build(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """Return the prefix; ``history`` and ``question`` are ignored for captions."""
        return self.prefix

    def __repr__(self) -> str:
        return f"Caption(prefix={self.prefix!r})"
