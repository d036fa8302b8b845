"""Tests for the torch-free ``prompts`` package: folding, registry and token budgeting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import prompts
from prompts import (
    Caption,
    FittedPrompt,
    FlanT5Chat,
    OptChat,
    PromptStyle,
    PromptTooLong,
    fit_prompt,
    fold_answer,
    get_style,
    normalize_answer,
    normalize_question,
    style_for,
    style_names,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAT_FAMILIES = ["opt", "flan-t5"]

FIVE_TURNS = [
    ("What is in the picture?", "a cat"),
    ("What colour is it?", "orange."),
    ("Is it\nasleep?", " yes!\n"),
    ("Where   is it lying?", "on a red\tsofa"),
    ("Why?", "why not?"),
]


def count_words(text: str) -> int:
    return len(text.split())


class CallCounter:
    """Wraps a token counter and records how many times it was called."""

    def __init__(self, fn: Callable[[str], int]) -> None:
        self.fn = fn
        self.calls = 0
        self.counted = 0  # tokens counted in all: the work a real tokenizer does

    def __call__(self, text: str) -> int:
        self.calls += 1
        tokens = self.fn(text)
        self.counted += tokens
        return tokens


# --- folding -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_prompt_one_turn(family: str) -> None:
    style = style_for(family)
    assert style.build([], "What is in the picture?") == "Question: What is in the picture? Answer:"


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_prompt_two_turns(family: str) -> None:
    style = style_for(family)
    text = style.build(FIVE_TURNS[:1], "What colour is it?")
    assert text == "Question: What is in the picture? Answer: a cat. Question: What colour is it? Answer:"


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_prompt_five_turns(family: str) -> None:
    style = style_for(family)
    text = style.build(FIVE_TURNS[:4], "Why?")
    assert text == (
        "Question: What is in the picture? Answer: a cat. "
        "Question: What colour is it? Answer: orange. "
        "Question: Is it asleep? Answer: yes! "
        "Question: Where is it lying? Answer: on a red sofa. "
        "Question: Why? Answer:"
    )
    assert not text.endswith(" ")


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_prompt_normalizes_current_question(family: str) -> None:
    assert style_for(family).build([], "  how\n many\tcats?  ") == "Question: how many cats? Answer:"


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_format_turn(family: str) -> None:
    assert style_for(family).format_turn("what?\n", "two") == "Question: what? Answer: two."


def test_chat_styles_share_implementation() -> None:
    history = FIVE_TURNS[:3]
    assert OptChat().build(history, "q") == FlanT5Chat().build(history, "q")
    assert OptChat.build is FlanT5Chat.build


@pytest.mark.parametrize(
    ("answer", "folded"),
    [
        ("two", "two."),
        ("yes!", "yes!"),
        ("what?", "what?"),
        ("a cat.", "a cat."),
        ("  two \n", "two."),
        ("", "."),
        ("a\n\nblack   cat", "a black cat."),
    ],
)
def test_fold_answer(answer: str, folded: str) -> None:
    assert fold_answer(answer) == folded


def test_normalize_question() -> None:
    assert normalize_question("  what\nis\t\tthis   thing? \n") == "what is this thing?"
    assert normalize_question("\n\t ") == ""


def test_normalize_answer() -> None:
    assert normalize_answer(" a cat\nsitting  on\ta mat \n") == "a cat sitting on a mat"
    assert normalize_answer("\n") == ""


# --- caption -------------------------------------------------------------------------------


def test_caption_ignores_history_and_question() -> None:
    assert Caption().build(FIVE_TURNS, "What is it?") == ""
    assert Caption(prefix="a photo of").build(FIVE_TURNS, "What is it?") == "a photo of"
    assert Caption(prefix="a photo of").build([], "") == "a photo of"


# --- registry ------------------------------------------------------------------------------


def test_style_names() -> None:
    assert set(style_names()) == {"opt-chat", "flan-t5-chat", "caption"}


@pytest.mark.parametrize("name", style_names())
def test_get_style_by_every_name(name: str) -> None:
    style = get_style(name)
    assert isinstance(style, PromptStyle)
    assert style.name == name


def test_style_for() -> None:
    assert isinstance(style_for("opt"), OptChat)
    assert isinstance(style_for("flan-t5"), FlanT5Chat)
    assert isinstance(style_for("opt", "chat"), OptChat)
    assert isinstance(style_for("opt", "caption"), Caption)
    assert isinstance(style_for("flan-t5", "caption"), Caption)


def test_style_attributes() -> None:
    assert (OptChat.name, OptChat.family, OptChat.task) == ("opt-chat", "opt", "chat")
    assert (FlanT5Chat.name, FlanT5Chat.family, FlanT5Chat.task) == ("flan-t5-chat", "flan-t5", "chat")
    assert (Caption.name, Caption.family, Caption.task) == ("caption", "any", "caption")


def test_get_style_unknown_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        get_style("llama-chat")
    message = str(info.value)
    assert "llama-chat" in message
    for name in style_names():
        assert name in message


def test_style_for_unknown_family_raises() -> None:
    with pytest.raises(KeyError):
        style_for("llama")


# --- budget --------------------------------------------------------------------------------

HISTORY = [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]  # each folded turn is 4 words


def test_fit_prompt_fits_whole_history() -> None:
    fitted = fit_prompt(OptChat(), HISTORY, "q4", count_words, budget_tokens=15)
    assert fitted == FittedPrompt(
        text=(
            "Question: q1 Answer: a1. Question: q2 Answer: a2. "
            "Question: q3 Answer: a3. Question: q4 Answer:"
        ),
        dropped_turns=0,
        prompt_tokens=15,
    )


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_fit_prompt_drops_oldest_turns(family: str) -> None:
    fitted = fit_prompt(style_for(family), HISTORY, "q4", count_words, budget_tokens=14)
    assert fitted.text == "Question: q2 Answer: a2. Question: q3 Answer: a3. Question: q4 Answer:"
    assert fitted.dropped_turns == 1
    assert fitted.prompt_tokens == 11

    fitted = fit_prompt(style_for(family), HISTORY, "q4", count_words, budget_tokens=8)
    assert fitted.text == "Question: q3 Answer: a3. Question: q4 Answer:"
    assert fitted.dropped_turns == 2

    fitted = fit_prompt(style_for(family), HISTORY, "q4", count_words, budget_tokens=3)
    assert fitted.text == "Question: q4 Answer:"
    assert (fitted.dropped_turns, fitted.prompt_tokens) == (3, 3)


def test_fit_prompt_question_alone_too_long() -> None:
    question = " ".join(["word"] * 700)
    with pytest.raises(PromptTooLong) as info:
        fit_prompt(OptChat(), HISTORY, question, count_words, budget_tokens=450)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.question_tokens == 702
    assert error.budget_tokens == 450
    assert str(error) == "The question needs 702 tokens but the model has room for 450."


def test_fit_prompt_too_long_without_history() -> None:
    with pytest.raises(PromptTooLong) as info:
        fit_prompt(FlanT5Chat(), [], "q", count_words, budget_tokens=2)
    assert (info.value.question_tokens, info.value.budget_tokens) == (3, 2)


def test_prompt_too_long_message() -> None:
    assert str(PromptTooLong(700, 450)) == "The question needs 700 tokens but the model has room for 450."


@pytest.mark.parametrize("budget", range(40))
def test_fit_prompt_matches_linear_search(budget: int) -> None:
    history = [(f"question {i}", "yes " * (i % 3)) for i in range(7)]
    style = OptChat()
    expected = next(
        (d for d in range(len(history) + 1) if count_words(style.build(history[d:], "now?")) <= budget),
        None,
    )
    if expected is None:
        with pytest.raises(PromptTooLong):
            fit_prompt(style, history, "now?", count_words, budget)
        return
    fitted = fit_prompt(style, history, "now?", count_words, budget)
    assert fitted.dropped_turns == expected
    assert fitted.text == style.build(history[expected:], "now?")
    assert fitted.prompt_tokens == count_words(fitted.text) <= budget


@pytest.mark.parametrize("budget", [3, 7, 403, 1001, 1999, 2003])
def test_fit_prompt_long_history_few_calls(budget: int) -> None:
    history = [(f"q{i}", f"a{i}") for i in range(500)]  # 4 words per turn, 2003 in all
    counter = CallCounter(count_words)
    fitted = fit_prompt(OptChat(), history, "now?", counter, budget)
    assert counter.calls <= 2 * 9 + 2  # galloping out, then a binary search: about 2 log2(turns kept)
    assert fitted.dropped_turns == 500 - (budget - 3) // 4
    assert fitted.prompt_tokens == count_words(fitted.text) <= budget


@pytest.mark.parametrize("turns", [100, 2_000, 20_000])
def test_fit_prompt_work_is_bounded_by_the_budget_not_the_chat(turns: int) -> None:
    """A 20,000-turn chat whose model sees its last 25 turns: only texts about the size of what fits are built and
    counted, so a question costs the same at turn 100 and at turn 20,000 (the whole history once was, twice)."""
    history = [(f"q{i}", f"a{i}") for i in range(turns)]  # 4 words per turn
    counter = CallCounter(count_words)
    fitted = fit_prompt(OptChat(), history, "now?", counter, budget_tokens=103)
    assert fitted.dropped_turns == turns - 25
    assert counter.counted <= 12 * 103 and counter.calls <= 12


def test_a_short_chat_that_fits_takes_one_call() -> None:
    counter = CallCounter(count_words)
    fitted = fit_prompt(OptChat(), HISTORY, "now?", counter, budget_tokens=10_000)
    assert fitted.dropped_turns == 0 and counter.calls == 1


def test_fit_prompt_long_history_too_long_few_calls() -> None:
    history = [(f"q{i}", f"a{i}") for i in range(500)]
    counter = CallCounter(count_words)
    with pytest.raises(PromptTooLong):
        fit_prompt(OptChat(), history, "now?", counter, budget_tokens=2)
    assert counter.calls <= 12


def test_fit_prompt_caption() -> None:
    fitted = fit_prompt(Caption(prefix="a photo of"), HISTORY, "q", count_words, budget_tokens=3)
    assert fitted == FittedPrompt(text="a photo of", dropped_turns=0, prompt_tokens=3)


# --- import hygiene ------------------------------------------------------------------------


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import prompts\n"
        "assert prompts.style_names()\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert 'transformers' not in sys.modules, 'transformers'\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "bad = sorted(new - set(sys.stdlib_module_names) - {'prompts'})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_public_api() -> None:
    assert set(prompts.__all__) == {
        "PromptStyle", "register", "get_style", "style_for", "style_names", "normalize_question",
        "normalize_answer", "spaced_stream", "fold_answer", "PromptTooLong", "FittedPrompt", "fit_prompt",
        "OptChat", "FlanT5Chat", "Caption",
    }
    for name in prompts.__all__:
        assert hasattr(prompts, name)
