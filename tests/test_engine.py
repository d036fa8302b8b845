"""The engine against the reference: token-identical to Blip2ForConditionalGeneration.generate.

Every check runs on synthetic checkpoints of both families, loaded through the real loader.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import CancelToken, GenerationOptions
from chatbot.engine.blip2 import Blip2Engine, open_engine
from chatbot.images import LoadedImage, load_image
from tests.conftest import FAMILIES, make_image

QUESTIONS = ["What is in the picture?", "What colour is it?", "How many are there?", "Why is it there?"]


def reference_kwargs(options: GenerationOptions) -> dict[str, Any]:
    """`generate`'s decoding arguments written out from the options themselves.

    Not taken from the engine: a reference that shared the engine's mapping could not catch it
    dropping an option.
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens, "min_new_tokens": options.min_new_tokens,
        "num_beams": options.num_beams, "repetition_penalty": options.repetition_penalty,
        "do_sample": options.temperature > 0,
    }
    if options.temperature > 0:
        kwargs.update(temperature=options.temperature, top_p=options.top_p)
    if options.num_beams > 1:
        kwargs["length_penalty"] = options.length_penalty
    return kwargs


def reference_tokens(
    engine: Blip2Engine, image: LoadedImage, prompt: str, options: GenerationOptions, model: Any = None,
) -> list[int]:
    """New tokens from the plain Hugging Face path: processor + Blip2ForConditionalGeneration.generate.

    `model` is the engine's own model unless another one (e.g. an untouched from_pretrained) is given.
    """
    inputs = engine.processor(images=image.image, text=prompt, return_tensors="pt").to(engine.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    out = (model or engine.model).generate(**inputs, **reference_kwargs(options))[0].tolist()
    return out[1:] if engine.is_encoder_decoder else out[len(inputs["input_ids"][0]):]


def converse_and_compare(chat: Conversation, questions: list[str]) -> list[str]:
    """Ask each question through the chat; after each turn the tokens must equal the reference's."""
    engine = chat.engine
    assert isinstance(engine, Blip2Engine) and chat.image is not None
    answers = []
    for question in questions:
        prompt = chat.prepare(question).text
        answers.append("".join(chat.ask(question)))
        ours = engine.last_stats.token_ids
        assert ours, "the engine produced no tokens"
        assert ours == reference_tokens(engine, chat.image, prompt, chat.options), f"turn {question!r} differs"
    return answers


@pytest.fixture
def red(pictures: dict[str, Path]) -> LoadedImage:
    return load_image(pictures["red"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("options", [
    GenerationOptions(max_new_tokens=12),
    GenerationOptions(max_new_tokens=12, num_beams=3),
    GenerationOptions(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=5),
], ids=["greedy", "beam3", "sampling"])
def test_four_turns_match_reference_generate(engines, red, family, options) -> None:
    engine = engines[family]
    engine.forget()
    chat = Conversation.with_engine(engine, red, options)
    answers = converse_and_compare(chat, QUESTIONS)
    assert len(chat.session.turns) == 4
    assert "Question: What colour is it? Answer:" in chat.prepare("again?").text  # history really folded
    assert [t.answer for t in chat.session.turns] == [" ".join(a.split()) for a in answers]


def test_opt_reuses_the_previous_turns_kv_cache(engines, red) -> None:
    engine = engines["opt"]
    engine.forget()
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=8))
    converse_and_compare(chat, QUESTIONS[:1])
    assert engine.last_stats.reused_prefix_tokens == 0
    converse_and_compare(chat, QUESTIONS[1:2])
    # at least the image placeholders, BOS and the first question are not prefilled again
    assert engine.last_stats.reused_prefix_tokens >= engine.info.image_tokens + chat.engine.count_tokens(
        "Question: What is in the picture? Answer:"
    ) - 1


def test_flan_t5_reuses_only_the_image(engines, red) -> None:
    engine = engines["flan-t5"]
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=6))
    converse_and_compare(chat, QUESTIONS[:2])
    assert engine.last_stats.reused_prefix_tokens == 0 and not engine.last_stats.image_encoded


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_encoder_runs_once_per_image(checkpoints, tmp_path, family) -> None:
    engine = open_engine(str(checkpoints[family]), device="cpu")
    calls = []
    engine.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    first = load_image(make_image(tmp_path / "a.png", (10, 10, 250)))
    second = load_image(make_image(tmp_path / "b.png", (250, 250, 10)))
    chat = Conversation.with_engine(engine, first, GenerationOptions(max_new_tokens=4))
    for question in QUESTIONS:
        "".join(chat.ask(question))
    assert len(calls) == 1
    chat.set_image(second)
    "".join(chat.ask("And now?"))
    assert len(calls) == 2
    chat.set_image(first)  # back to an image already seen: its embedding is still cached
    "".join(chat.ask("Once more?"))
    assert len(calls) == 2


def test_image_switch_starts_a_fresh_context(engines, red, pictures) -> None:
    chat = Conversation.with_engine(engines["opt"], red, GenerationOptions(max_new_tokens=6))
    converse_and_compare(chat, QUESTIONS[:2])
    chat.set_image(load_image(pictures["green"]))
    assert chat.prepare("What now?").text == "Question: What now? Answer:"
    converse_and_compare(chat, ["What now?"])
    assert chat.engine.last_stats.reused_prefix_tokens == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_from_another_thread_stops_within_a_token(engines, red, family) -> None:
    engine = engines[family]
    options = GenerationOptions(max_new_tokens=200, min_new_tokens=200)
    cancel = CancelToken()
    produced_at_cancel = None
    for count, _chunk in enumerate(engine.stream(red, "Question: Tell me everything. Answer:", options, cancel)):
        if count == 3:
            canceller = threading.Thread(target=cancel.cancel)
            canceller.start()
            canceller.join()
            produced_at_cancel = engine.last_stats.new_tokens  # counts up live while generating
    stats = engine.last_stats
    assert stats.cancelled and produced_at_cancel is not None
    assert stats.new_tokens < 200  # far fewer than the forced 200
    assert stats.new_tokens - produced_at_cancel <= 2  # the step in flight may finish, no more
    assert not engine.generating  # the model thread stopped working on it


def test_closing_the_stream_early_stops_generation(engines, red) -> None:
    engine = engines["opt"]
    stream = engine.stream(red, "Question: Go on. Answer:", GenerationOptions(max_new_tokens=200, min_new_tokens=200))
    next(stream)
    stream.close()
    assert not engine.generating  # the model thread stopped working on it
    assert engine.last_stats.new_tokens < 200


def test_every_turn_runs_on_one_long_lived_model_thread(engines, red) -> None:
    engine = engines["opt"]
    names = set()
    hook = engine.model.language_model.register_forward_hook(lambda *args: names.add(threading.current_thread().name))
    try:
        for question in QUESTIONS[:2]:
            list(engine.stream(red, f"Question: {question} Answer:", GenerationOptions(max_new_tokens=3)))
    finally:
        hook.remove()
    assert len(names) == 1 and next(iter(names)).startswith("blip2-model")


def test_turn_after_a_cancel_still_matches_reference(engines, red) -> None:
    engine = engines["opt"]
    engine.forget()
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=10))
    cancel = CancelToken()
    for i, _ in enumerate(chat.ask("Describe it slowly.", cancel)):
        if i == 2:
            cancel.cancel()
    assert chat.session.turns[-1].stopped
    converse_and_compare(chat, ["And then?"])


def test_undo_retry_and_clear_keep_answers_identical_to_reference(engines, red) -> None:
    engine = engines["opt"]
    engine.forget()
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=8))
    converse_and_compare(chat, QUESTIONS[:3])
    chat.undo()  # the cache holds a turn the prompt no longer has
    converse_and_compare(chat, [QUESTIONS[2]])  # retry: the same question again
    chat.undo()
    converse_and_compare(chat, ["Something else?"])
    chat.clear()
    assert chat.prepare("Fresh?").text == "Question: Fresh? Answer:"
    converse_and_compare(chat, ["Fresh?"])


@pytest.mark.parametrize("family", FAMILIES)
def test_budget_folding_drops_oldest_turns_and_stays_identical(engines, red, family, tmp_path) -> None:
    """A checkpoint built with a context that holds about two turns: the chat folds the oldest out."""
    from chatbot.engine.synthetic import build_checkpoint, scaled

    question = "Question: Question number 0 about the picture? Answer:"
    budget = 4 * engines[family].count_tokens(question)  # about two turns of prompt
    image_tokens = engines[family].info.image_tokens
    arch = (scaled("tiny-opt", max_positions=image_tokens + budget + 6) if family == "opt"  # + a 6-token answer
            else scaled("tiny-flan-t5", t5_positions=image_tokens + budget))
    engine = open_engine(str(build_checkpoint(arch, tmp_path / family)), device="cpu")
    assert engine.info.context_tokens == image_tokens + budget + (6 if family == "opt" else 0)
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=6))
    converse_and_compare(chat, [f"Question number {n} about the picture?" for n in range(6)])
    fitted = chat.prepare("Last one?")
    assert fitted.dropped_turns > 0
    assert fitted.prompt_tokens <= budget
    assert "Question number 0" not in fitted.text and "Question number 5" in fitted.text


def test_answers_hold_no_control_characters(engines, red) -> None:
    chat = Conversation.with_engine(engines["opt"], red, GenerationOptions(max_new_tokens=30))
    for question in QUESTIONS:
        answer = "".join(chat.ask(question))
        assert not [c for c in answer if ord(c) < 32 or 0x7F <= ord(c) < 0xA0], repr(answer)
