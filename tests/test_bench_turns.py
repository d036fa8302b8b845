"""bench_turns' whole-word restriction: the same answers as suppressing every other token, on both paths.

The benchmark restricts answers with a precomputed mask (`WholeWordsOnly`) rather than the language
model's `suppress_tokens` list, which `generate` deep-copies on every call (benchmarks/bench_generate_setup.py).
The restriction must stay the same restriction: transformers' own `suppress_tokens` is the reference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_turns import answer_in_whole_words, naive_turn
from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import open_engine
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import reference_kwargs

OPTIONS = GenerationOptions(max_new_tokens=8, min_new_tokens=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_words_only_equals_suppressing_every_other_token(checkpoints: dict[str, Path],
                                                               pictures: dict[str, Path], family: str) -> None:
    # static decoding (our own decoding loop, as on a GPU) for OPT; plain generate for FlanT5
    engine = open_engine(str(checkpoints[family]), device="cpu", static_decoding=family == "opt")
    allowed_count = answer_in_whole_words(engine)
    pieces = engine.tokenizer.convert_ids_to_tokens(list(range(len(engine.tokenizer))))
    allowed = {i for i, piece in enumerate(pieces)
               if piece[0] in "Ġ▁" and piece[1:].isalpha() and piece[1:].isascii() and len(piece) > 2}
    assert allowed_count == len(allowed) > 0
    vocab = engine.model.language_model.get_output_embeddings().weight.shape[0]
    suppressed = [i for i in range(vocab) if i not in allowed]

    chat = Conversation.with_engine(engine, load_image(pictures["red"]), OPTIONS)
    for question in ("What is it?", "What colour is it?"):
        prompt = chat.prepare(question).text
        "".join(chat.ask(question))
        ours = engine.last_stats.token_ids
        naive = naive_turn(engine, chat.image, prompt, OPTIONS)["tokens"]

        inputs = engine.processor(images=chat.image.image, text=prompt, return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
        out = engine.model.generate(**inputs, **reference_kwargs(OPTIONS), suppress_tokens=suppressed)[0].tolist()
        reference = out[1:] if engine.is_encoder_decoder else out[len(inputs["input_ids"][0]):]

        assert len(reference) == OPTIONS.max_new_tokens and set(reference) <= allowed
        assert ours == naive == reference, question
