"""Fit a conversation into the model's token budget by dropping the oldest turns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prompts.base import PromptStyle, PromptTooLong

__all__ = ["FittedPrompt", "fit_prompt"]


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt that fits: its text, how many oldest turns were left out, and its token count."""

    text: str
    dropped_turns: int
    prompt_tokens: int


def fit_prompt(
    style: PromptStyle,
    history: Sequence[tuple[str, str]],
    question: str,
    count_tokens: Callable[[str], int],
    budget_tokens: int,
) -> FittedPrompt:
    """Build the prompt with as much of ``history`` as fits in ``budget_tokens``.

    Whole oldest turns are left out first; the current question is never dropped.
    ``count_tokens`` is applied to the whole prompt text. ``budget_tokens`` is the caller's
    room for the prompt, e.g. OPT: 2048 positions - 32 image query tokens - max_new_tokens;
    FlanT5: 512 encoder positions - 32 image query tokens.

    Dropping turns never makes the prompt longer, so the number of dropped turns is found by
    binary search: one call when everything fits, about log2(len(history)) + 1 otherwise.

    Raises ``PromptTooLong`` when the question alone (no history) does not fit.
    """
    turns = list(history)
    n = len(turns)
    cache: dict[int, tuple[str, int]] = {}

    def measure(dropped: int) -> tuple[str, int]:
        if dropped not in cache:
            text = style.build(turns[dropped:], question)
            cache[dropped] = (text, count_tokens(text))
        return cache[dropped]

    def result(dropped: int) -> FittedPrompt:
        text, tokens = measure(dropped)
        return FittedPrompt(text=text, dropped_turns=dropped, prompt_tokens=tokens)

    if measure(0)[1] <= budget_tokens:
        return result(0)
    # Invariant: dropping ``low`` turns does not fit; dropping ``high`` fits, except that
    # ``high == n`` (the question alone) is only checked at the end, saving one call.
    low, high = 0, n
    while high - low > 1:
        mid = (low + high) // 2
        if measure(mid)[1] <= budget_tokens:
            high = mid
        else:
            low = mid
    tokens = measure(high)[1]
    if tokens > budget_tokens:
        raise PromptTooLong(tokens, budget_tokens)
    return result(high)
