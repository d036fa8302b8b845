"""Decoding over a static KV cache (the GPU path, CUDA graphs aside) gives `generate`'s very tokens.

On a CPU the engine decodes with plain `generate` unless asked; here it is asked
(`static_decoding=True`), so the static cache and our decoding loop run step by step, eagerly: the
same code a GPU replays from a CUDA graph (tests/test_gpu.py checks the graphs themselves).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.conversation import Conversation
from chatbot.engine.base import CancelToken, GenerationOptions
from chatbot.engine.blip2 import Blip2Engine, open_engine
from chatbot.images import LoadedImage, load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare

DECODING_OPTIONS = {
    "greedy": GenerationOptions(max_new_tokens=10),
    "sampling": GenerationOptions(max_new_tokens=10, temperature=0.8, top_p=0.9, seed=11),
    "repetition": GenerationOptions(max_new_tokens=10, repetition_penalty=1.6),
    "longer": GenerationOptions(max_new_tokens=24, min_new_tokens=24),
}


def streamed_text(engine: Blip2Engine) -> str:
    """The last answer's tokens decoded as a whole (end token dropped), spaced as the stream yields them."""
    ids = [token for token in engine.last_stats.token_ids if token != engine.tokenizer.eos_token_id]
    text = engine.tokenizer.decode(ids, skip_special_tokens=True)
    shown = "".join(" " if c in "\t\n\r" else "" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    return shown.lstrip().rstrip("\ufffd")  # no control characters; a cut-off UTF-8 character is held back


@pytest.fixture(scope="module")
def static_engines(checkpoints: dict[str, Path]) -> dict[str, Blip2Engine]:
    return {family: open_engine(str(path), device="cpu", static_decoding=True) for family, path in checkpoints.items()}


@pytest.fixture
def red(pictures: dict[str, Path]) -> LoadedImage:
    return load_image(pictures["red"])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_says_how_it_decodes(engines, static_engines, family) -> None:
    assert static_engines[family].decoding == "static cache" and static_engines[family].static is not None
    assert engines[family].decoding == "generate" and engines[family].static is None  # a CPU's default


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DECODING_OPTIONS)
def test_four_turns_match_generate(static_engines, red, family, name) -> None:
    engine = static_engines[family]
    engine.forget()
    chat = Conversation.with_engine(engine, red, DECODING_OPTIONS[name])
    answers = converse_and_compare(chat, QUESTIONS)
    assert answers[-1] == streamed_text(engine)  # the text streamed, token by token, is the answer's
    if family == "opt":  # the conversation's cache was rewound and continued, not refilled
        assert engine.last_stats.reused_prefix_tokens > engine.info.image_tokens


def test_a_long_conversation_crosses_attention_windows_and_still_matches(static_engines, red) -> None:
    """Each decode step attends over the smallest window (256, 512, ... positions) that holds the sequence."""
    engine = static_engines["opt"]
    engine.forget()
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=12))
    long_question = " ".join(["What is the colour of the small red car next to the tree?"] * 9)
    assert engine.count_tokens(long_question) > 100
    for _ in range(4):
        converse_and_compare(chat, [long_question])
    assert engine.last_stats.prompt_tokens > 512  # the steps went through the 256- and 512-position windows, then 1024
    assert engine.last_stats.reused_prefix_tokens > 400  # and the conversation's cache was continued all along


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_takes_the_plain_path_and_still_matches(static_engines, red, family) -> None:
    engine = static_engines[family]
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=8, num_beams=3))
    converse_and_compare(chat, QUESTIONS[:2])
    assert engine.last_stats.reused_prefix_tokens == 0


def test_a_greedy_turn_after_beam_search_starts_clean(static_engines, red) -> None:
    engine = static_engines["opt"]
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=8, num_beams=2))
    converse_and_compare(chat, QUESTIONS[:1])
    chat.with_options(num_beams=1)
    converse_and_compare(chat, QUESTIONS[1:3])


@pytest.mark.parametrize("family", FAMILIES)
def test_thinking_ahead_fills_the_static_cache_and_answers_stay_the_same(static_engines, red, family) -> None:
    engine = static_engines[family]
    engine.forget()
    chat = Conversation.with_engine(engine, red, DECODING_OPTIONS["greedy"], think_ahead=True)
    engine.wait_until_prepared()
    for question in QUESTIONS[:3]:
        converse_and_compare(chat, [question])
        engine.wait_until_prepared()
    if family == "opt":
        assert engine.last_stats.reused_prefix_tokens > engine.info.image_tokens


def test_undo_and_an_image_switch_rewind_the_cache_correctly(static_engines, red, pictures) -> None:
    engine = static_engines["opt"]
    engine.forget()
    chat = Conversation.with_engine(engine, red, DECODING_OPTIONS["greedy"])
    converse_and_compare(chat, QUESTIONS[:3])
    chat.undo()
    chat.undo()
    converse_and_compare(chat, ["Something else?"])  # the cache holds turns the prompt no longer has
    chat.set_image(load_image(pictures["green"]))
    converse_and_compare(chat, ["And this one?"])
    assert engine.last_stats.reused_prefix_tokens == 0


class CancelledAfterChecks(CancelToken):
    """Cancels itself once it has been asked `checks` times: a cancel at a known step, with no timing."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    @property
    def cancelled(self) -> bool:
        self.checks -= 1
        if self.checks < 0:
            self.cancel()
        return super().cancelled


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_stops_at_the_next_token_and_the_next_turn_matches(static_engines, red, family) -> None:
    engine = static_engines[family]
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=200, min_new_tokens=200))
    # asked once before the turn and once after each token: the 6th question, after token 5, cancels
    "".join(chat.ask("Tell me everything.", CancelledAfterChecks(5)))
    assert engine.last_stats.cancelled and engine.last_stats.new_tokens == 5
    assert chat.session.turns[-1].stopped
    chat.with_options(max_new_tokens=8, min_new_tokens=0)
    converse_and_compare(chat, ["And then?"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("static", [True, False], ids=["static", "generate"])
def test_answers_that_end_on_the_end_token_match_generate(early_end_checkpoints, red, family, static) -> None:
    path, end = early_end_checkpoints[family]
    engine = open_engine(str(path), device="cpu", static_decoding=static)
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=12))
    converse_and_compare(chat, QUESTIONS[:1])  # the prompt the end token was picked with
    tokens = engine.last_stats.token_ids
    assert tokens[-1] == end and 4 <= len(tokens) < 12 and not chat.session.turns[0].stopped
    converse_and_compare(chat, QUESTIONS[1:])  # and the turns after an answer that ended early
