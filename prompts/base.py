"""Prompt-style base class, style registry and text normalisation helpers.

Kept free of torch/transformers so prompt building can be unit-tested (and reused by the
CLI) without loading a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

__all__ = [
    "PromptStyle",
    "PromptTooLong",
    "fold_answer",
    "get_style",
    "normalize_answer",
    "spaced_stream",
    "normalize_question",
    "register",
    "style_for",
    "style_names",
]

_SENTENCE_END = (".", "!", "?")


class PromptStyle:
    """How one model family turns a conversation into the text prompt given to the LLM.

    Subclasses set ``name`` (registry key), ``family`` ("opt", "flan-t5" or "any") and
    ``task`` ("chat" or "caption"), and implement ``build`` and ``format_turn``.
    """

    name: str = ""
    family: str = "any"
    task: str = "chat"

    def build(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """Return the full prompt for ``question`` after the finished turns in ``history``."""
        raise NotImplementedError

    def format_turn(self, question: str, answer: str) -> str:
        """Return one finished (question, answer) turn as it appears in the prompt."""
        raise NotImplementedError

    def opening(self, history: Sequence[tuple[str, str]]) -> str:
        """The text every prompt after ``history`` starts with, whatever the question ("" if none).

        ``build(history, q).startswith(opening(history))`` holds for every question ``q``; an
        engine can prepare this part while the question is still being typed.
        """
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r}, task={self.task!r})"


_S = TypeVar("_S", bound=type[PromptStyle])

_REGISTRY: dict[str, type[PromptStyle]] = {}


def register(cls: _S) -> _S:
    """Class decorator: add a style to the registry under ``cls.name``.

    Raises ``ValueError`` for an empty name or a name already taken by another class.
    """
    name = cls.name
    if not name:
        raise ValueError(f"{cls.__name__} has no style name")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"prompt style {name!r} is already registered by {existing.__name__}")
    _REGISTRY[name] = cls
    return cls


def style_names() -> list[str]:
    """Return the names of all registered styles, sorted."""
    return sorted(_REGISTRY)


def get_style(name: str) -> PromptStyle:
    """Return a new instance of the style registered as ``name``.

    Raises ``KeyError`` naming the known styles when ``name`` is unknown.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        known = ", ".join(style_names()) or "(none)"
        raise KeyError(f"unknown prompt style {name!r}; known styles: {known}") from None
    return cls()


def style_for(family: str, task: str = "chat") -> PromptStyle:
    """Return the style for a model ``family`` ("opt" or "flan-t5") and ``task``.

    A style registered for family "any" (the caption style) serves every family. Raises
    ``KeyError`` when no style matches.
    """
    exact = [cls for cls in _REGISTRY.values() if cls.task == task and cls.family == family]
    generic = [cls for cls in _REGISTRY.values() if cls.task == task and cls.family == "any"]
    for candidates in (exact, generic):
        if candidates:
            return min(candidates, key=lambda c: c.name)()
    known = ", ".join(f"{c.family}/{c.task}" for c in sorted(_REGISTRY.values(), key=lambda c: c.name))
    raise KeyError(f"no prompt style for family {family!r} and task {task!r}; known: {known or '(none)'}")


def normalize_question(text: str) -> str:
    """Strip ``text`` and collapse every whitespace run (newlines, tabs too) into one space."""
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """Return the decoded answer as stored: stripped, whitespace runs collapsed to one space.

    Newlines must go too: OPT's EOS is the newline token, so stray ones would break folding.
    """
    return " ".join(text.split())


def spaced_stream(chunks: Iterable[str]) -> Iterator[str]:
    """A streamed answer's chunks as `normalize_answer` leaves the whole: white space at either end dropped, each run
    of it one space. A run is held back until a word follows it, so where the chunks were cut changes nothing, and
    what is printed as it streams is the answer as stored."""
    started = pending = False  # a word was written; white space came after the last word
    for chunk in chunks:
        out: list[str] = []
        for word in _WORDS_AND_SPACES.findall(chunk):
            if word.isspace():
                pending = started
                continue
            if pending:
                out.append(" ")
            out.append(word)
            started, pending = True, False
        if out:
            yield "".join(out)


_WORDS_AND_SPACES = re.compile(r"\s+|\S+")  # `str.split`'s white space (re's \s is Unicode's, as str.isspace)


def fold_answer(answer: str) -> str:
    """Return ``answer`` as it appears in the folded history.

    Normalised, with a ``.`` appended unless it already ends in ``.``, ``!`` or ``?``
    (so an empty answer folds as ``.``), matching the BLIP-2 paper / LAVIS demo format.
    """
    text = normalize_answer(answer)
    return text if text.endswith(_SENTENCE_END) else text + "."


class PromptTooLong(ValueError):
    """Raised when even the current question alone does not fit the model's token budget."""

    def __init__(self, question_tokens: int, budget_tokens: int) -> None:
        self.question_tokens = question_tokens
        self.budget_tokens = budget_tokens
        super().__init__(
            f"The question needs {question_tokens} tokens but the model has room for {budget_tokens}."
        )

    def __reduce__(self) -> tuple[type[PromptTooLong], tuple[int, int]]:
        return (type(self), (self.question_tokens, self.budget_tokens))
