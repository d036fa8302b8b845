"""The engine on a CUDA GPU: same tokens as the reference path. Skipped without a GPU.

In float32 every turn matches, KV-prefix reuse included. In bfloat16 a prefill that continues a
cache runs matrix products of other shapes than a full prefill, so logits can differ in the last
bit and a near-tie can flip; there the image cache alone is checked to be exact (reuse off).
"""

from __future__ import annotations

import pytest
import torch

from chatbot.chat import Chat
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import open_engine
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_four_turns_on_gpu_float32_match_reference(checkpoints, pictures, family) -> None:
    engine = open_engine(str(checkpoints[family]), device="cuda", dtype="float32")
    assert engine.info.device == "cuda:0" and engine.info.precision == "float32"
    chat = Chat(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
    converse_and_compare(chat, QUESTIONS)
    assert engine.image_encodings == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_image_cache_is_exact_in_bfloat16(checkpoints, pictures, family) -> None:
    engine = open_engine(str(checkpoints[family]), device="cuda", dtype="bfloat16")
    engine.reuse_prefix = False
    chat = Chat(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=12))
    converse_and_compare(chat, QUESTIONS)
    assert engine.image_encodings == 1


def test_auto_device_picks_the_gpu(checkpoints) -> None:
    engine = open_engine(str(checkpoints["opt"]))
    assert engine.info.device.startswith("cuda") and engine.info.precision in ("bfloat16", "float16")
