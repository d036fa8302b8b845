"""oneDNN-packed linear layers on the CPU: same tokens as the stock model, the switch, what is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Blip2ForConditionalGeneration

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine, open_engine
from chatbot.engine.cpu_kernels import ENV_SWITCH, PackedLinear, pack_linear_layers
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import reference_tokens

QUESTIONS = ["What is in the picture?", "What colour is it?", "How many are there?", "Why is it there?"]

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def packed_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(m, PackedLinear) for m in model.modules())


@pytest.mark.parametrize("rows", [1, 3, 18])
def test_a_packed_layer_computes_what_the_linear_layer_computes(rows) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 40)
    x = torch.randn(2, rows, 96)
    with torch.inference_mode():
        assert torch.allclose(PackedLinear(layer)(x), layer(x), rtol=1e-5, atol=1e-6)


def test_cpu_float32_models_are_packed_all_but_the_lm_head(engines) -> None:
    for family in FAMILIES:
        model = engines[family].model
        assert packed_layers(model) > 0, family
        assert [m for m in model.modules() if type(m) is torch.nn.Linear] == [model.get_output_embeddings()], family
    opt = engines["opt"].model.language_model
    assert opt.lm_head.weight is opt.get_input_embeddings().weight  # still tied: packing it would copy it


def test_packing_releases_the_dense_weights() -> None:
    import weakref

    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    dense = weakref.ref(model[0].weight)
    assert pack_linear_layers(model) == 2
    assert dense() is None


def test_the_switch_keeps_the_stock_kernels(checkpoints, monkeypatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    engine = open_engine(str(checkpoints["opt"]), device="cpu")
    assert packed_layers(engine.model) == 0


def test_a_switch_value_it_does_not_know_is_one_sentence(monkeypatch) -> None:
    # a probe: BLIP2_CHAT_ONEDNN=maybe was taken for "on" without a word
    from chatbot.errors import OptionError

    monkeypatch.setenv(ENV_SWITCH, "maybe")
    with pytest.raises(OptionError) as refused:
        pack_linear_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    assert str(refused.value) == ("BLIP2_CHAT_ONEDNN must be 1 or 0 (also true or false, yes or no, on or off), not "
                                  "'maybe'. Unset it, or set BLIP2_CHAT_ONEDNN=0 to keep PyTorch's kernels.")


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_engine_gives_the_stock_models_tokens(checkpoints: dict[str, Path], engines, pictures, family) -> None:
    """Our engine (packed layers, image cache, KV reuse) against an untouched from_pretrained model."""
    engine: Blip2Engine = engines[family]
    engine.forget()
    stock = Blip2ForConditionalGeneration.from_pretrained(checkpoints[family], dtype=torch.float32).eval()
    assert packed_layers(stock) == 0
    image = load_image(pictures["red"])
    options = GenerationOptions(max_new_tokens=12)
    chat = Conversation.with_engine(engine, image, options)
    for question in QUESTIONS:
        prompt = chat.prepare(question).text
        "".join(chat.ask(question))
        assert engine.last_stats.token_ids == reference_tokens(engine, image, prompt, options, model=stock), question
