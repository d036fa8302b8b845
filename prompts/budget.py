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

    Keeping fewer turns never makes the prompt longer, so the number kept is searched for from the
    newest turns outwards: the newest FIRST_LOOK turns, then twice as many while they fit, then a
    binary search between what fitted and what did not. Every text built and counted is then at most
    about twice what fits, however long the chat (a 20,000-turn chat once had its whole history built
    and tokenized, twice, for every question); a short chat that fits whole takes one call.

    Raises ``PromptTooLong`` when the question alone (no history) does not fit.
    """
    turns = list(history)
    n = len(turns)
    cache: dict[int, tuple[str, int]] = {}

    def measure(kept: int) -> tuple[str, int]:
        if kept not in cache:
            text = style.build(turns[n - kept:], question)
            cache[kept] = (text, count_tokens(text))
        return cache[kept]

    def fits(kept: int) -> bool:
        return measure(kept)[1] <= budget_tokens

    good, bad = 0, min(n, FIRST_LOOK)  # `good` kept turns fit (0: checked last), `bad` kept do not (or n: unknown)
    if fits(bad):
        good = bad
        while good < n:  # gallop outwards while the newest `good` turns fit
            bad = min(n, 2 * good)
            if not fits(bad):
                break
            good = bad
        else:
            return _result(measure(n), 0)
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    text, tokens = measure(good)
    if tokens > budget_tokens:  # good == 0: the question alone does not fit
        raise PromptTooLong(tokens, budget_tokens)
    return _result((text, tokens), n - good)


FIRST_LOOK = 16  # turns tried first: a whole short chat in one call


def _result(measured: tuple[str, int], dropped: int) -> FittedPrompt:
    text, tokens = measured
    return FittedPrompt(text=text, dropped_turns=dropped, prompt_tokens=tokens)
