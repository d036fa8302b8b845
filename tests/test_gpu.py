"""The engine on a CUDA GPU: same tokens as the reference path, CUDA graphs included. Skipped without a GPU.

In float32 every turn matches `generate`, KV-prefix reuse and graph replays included. In bfloat16 a
prefill that continues a cache, or attends over the static cache's full length, runs products of
other shapes than `generate`'s, so logits can differ in the last bit and a near-tie can flip; there
the graphs are checked against the same static decoding run eagerly (the same kernels, so the same
bits), and the image cache against `generate` with the plain path.
"""

from __future__ import annotations

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import open_engine
from chatbot.engine.static import GRAPHS_ENV
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare
from tests.test_static_decoding import DECODING_OPTIONS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DECODING_OPTIONS)
def test_four_turns_on_gpu_float32_match_reference(checkpoints, pictures, family, name) -> None:
    engine = open_engine(str(checkpoints[family]), device="cuda", dtype="float32")
    assert engine.info.device == "cuda:0" and engine.info.precision == "float32"
    assert engine.decoding == "CUDA graphs"
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), DECODING_OPTIONS[name])
    converse_and_compare(chat, QUESTIONS)
    assert engine.image_encodings == 1


def test_graphs_of_every_attention_window_match_reference(checkpoints, pictures) -> None:
    """A conversation long enough for the decode steps to replay the 256-, 512- and 1024-position graphs, and
    with turns of more new tokens than the largest prefill bucket (prefilled by generate) and fewer."""
    engine = open_engine(str(checkpoints["opt"]), device="cuda", dtype="float32")
    assert sorted(engine.static.graphs) == [256, 512, 1024, 2048]
    assert len(engine.static.prefill_graphs) == 16  # buckets of 16, 32, 64 and 128 new tokens, in each window
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
    long_question = " ".join(["What is the colour of the small red car next to the tree?"] * 9)
    for _ in range(4):
        converse_and_compare(chat, [long_question])
    assert engine.last_stats.prompt_tokens > 512


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_replays_equal_the_same_steps_run_eagerly_in_bfloat16(checkpoints, pictures, family, monkeypatch) -> None:
    graphs = open_engine(str(checkpoints[family]), device="cuda", dtype="bfloat16")
    monkeypatch.setenv(GRAPHS_ENV, "0")
    eager = open_engine(str(checkpoints[family]), device="cuda", dtype="bfloat16", static_decoding=True)
    assert (graphs.decoding, eager.decoding) == ("CUDA graphs", "static cache")
    answers = []
    for engine in (graphs, eager):
        chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
        answers.append([("".join(chat.ask(q)), list(engine.last_stats.token_ids)) for q in QUESTIONS])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_image_cache_is_exact_in_bfloat16(checkpoints, pictures, family, monkeypatch) -> None:
    monkeypatch.setenv(GRAPHS_ENV, "0")  # the plain path: generate with a DynamicCache, like the reference
    engine = open_engine(str(checkpoints[family]), device="cuda", dtype="bfloat16")
    assert engine.decoding == "generate"
    engine.reuse_prefix = False
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
    converse_and_compare(chat, QUESTIONS)
    assert engine.image_encodings == 1


def test_auto_device_picks_the_gpu(checkpoints) -> None:
    engine = open_engine(str(checkpoints["opt"]))
    assert engine.info.device.startswith("cuda") and engine.info.precision in ("bfloat16", "float16")

