"""On a CUDA GPU, the decode step compiled by TorchInductor (BLIP2_CHAT_COMPILE=1) and then captured as CUDA
graphs gives `generate`'s very tokens in float32, in every attention window. Skipped without a GPU.

Apart from tests/test_gpu.py so that benchmarks/gpu_checks.sh runs it last: compiling is the slow part.
"""

from __future__ import annotations

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import open_engine
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare
from tests.test_static_decoding import DECODING_OPTIONS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def compiled_engines(checkpoints) -> dict[str, object]:
    """Float32 engines whose decode step Inductor compiled before the CUDA graphs captured it (BLIP2_CHAT_COMPILE=1)."""
    return {family: open_engine(str(path), device="cuda", dtype="float32", compile_step=True)
            for family, path in checkpoints.items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["greedy", "sampling"])
def test_graphs_of_a_compiled_step_match_reference_in_float32(compiled_engines, pictures, family, name) -> None:
    engine = compiled_engines[family]
    assert engine.decoding == "CUDA graphs, compiled", engine.decoding
    engine.forget()
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), DECODING_OPTIONS[name])
    converse_and_compare(chat, QUESTIONS)


def test_graphs_of_a_compiled_step_in_every_attention_window_match_reference(compiled_engines, pictures) -> None:
    engine = compiled_engines["opt"]
    assert sorted(engine.static.graphs) == [512, 2048]  # a compiled step's windows: one compile each
    engine.forget()
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
    long_question = " ".join(["What is the colour of the small red car next to the tree?"] * 9)
    for _ in range(4):
        converse_and_compare(chat, [long_question])
    assert engine.last_stats.prompt_tokens > 512
