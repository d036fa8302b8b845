"""Int8 weight-only quantization: the rounding, the layer's product, loading through the real loader.

On the CPU every product takes the dequantizing path; the GPU kernel is checked against it in
tests/test_precision_gpu.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine
from chatbot.engine.int8_weights import Int8Linear
from chatbot.engine.loader import LoadedCheckpoint, load_checkpoint
from chatbot.engine.precision import Precision, estimate_memory
from chatbot.engine.shape import read_shape
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare


def test_each_row_is_rounded_to_127_steps_of_its_largest_weight() -> None:
    linear = nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.5, -1.27, 0.01, 0.0], [2.54, 1.0, -2.54, 0.02]]))
    layer = Int8Linear.from_linear(linear)
    assert layer.weight.dtype is torch.int8
    assert layer.scale.tolist() == pytest.approx([0.01, 0.02])  # max |w| / 127 per row
    assert layer.weight.tolist() == [[50, -127, 1, 0], [127, 50, -127, 1]]
    assert torch.equal(layer.bias, linear.bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_product_is_the_linear_map_of_the_rounded_weights(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    linear = nn.Linear(96, 40)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(5, 7, 96).to(dtype)
    rounded = layer.weight.double() * layer.scale.double()[:, None]
    expected = x.double() @ rounded.T + layer.bias.double()
    out = layer(x)
    assert out.shape == (5, 7, 40) and out.dtype is dtype
    tolerance = 1e-5 if dtype is torch.float32 else 2e-2
    assert ((out.double() - expected).norm() / expected.norm()).item() < tolerance
    unrounded = x.double() @ linear.weight.double().T + linear.bias.double()
    assert ((expected - unrounded).norm() / unrounded.norm()).item() < 0.01  # what rounding to 8 bits costs


@pytest.fixture(scope="module")
def int8_models(checkpoints: dict[str, Path]) -> dict[str, LoadedCheckpoint]:
    return {family: load_checkpoint(str(path), device="cpu", quantize="int8") for family, path in checkpoints.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loader_quantizes_the_vision_encoder_and_language_model_only(int8_models, checkpoints, family) -> None:
    loaded = int8_models[family]
    assert loaded.precision == "int8"
    assert loaded.precision_reason.startswith("Using int8 weight-only, as asked")
    model = loaded.model
    quantized = ["vision_model.encoder.layers.0.mlp.fc1", "language_model.model.decoder.layers.0.fc1" if family == "opt"
                 else "language_model.encoder.block.0.layer.1.DenseReluDense.wi_0"]
    kept = ["qformer.encoder.layer.0.attention.attention.query", "language_projection", "language_model.lm_head"]
    if family == "flan-t5":
        kept.append("language_model.decoder.block.0.layer.2.DenseReluDense.wo")
    assert [type(model.get_submodule(name)).__name__ for name in quantized] == ["Int8Linear"] * 2
    assert [type(model.get_submodule(name)).__name__ for name in kept] == ["Linear"] * len(kept)
    shape = read_shape(checkpoints[family])
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert sum(m.weight.numel() for m in layers) == shape.quantizable  # exactly what the estimates count
    full = load_checkpoint(str(checkpoints[family]), device="cpu", quantize="none").model.get_memory_footprint()
    # each weight goes from 4 bytes to 1, plus a float32 scale per row
    assert full - model.get_memory_footprint() == 3 * shape.quantizable - 4 * sum(m.out_features for m in layers)
    estimate = estimate_memory(shape, Precision("int8", "float32")).weights
    scales = 4 * sum(m.out_features for m in layers)  # left out of the estimate: 0.2% at OPT-2.7B's widths
    assert model.get_memory_footprint() == estimate + scales


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("static", [False, True], ids=["generate", "static"])
def test_an_int8_chat_matches_generate_on_the_same_model(int8_models, pictures, family, static) -> None:
    engine = Blip2Engine(int8_models[family], static_decoding=static)
    assert engine.info.precision == "int8"
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=8))
    converse_and_compare(chat, QUESTIONS[:3])


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_is_at_least_as_close_to_full_precision_as_bitsandbytes_8bit(
    int8_models, checkpoints, pictures, family,
) -> None:
    """Measured against an independent 8-bit quantizer on the same inputs (random weights have no outliers,
    where LLM.int8 would do better; what this guards is our rounding and product, not the method).

    The image tokens for both families; the logits for OPT only: the tiny random FlanT5 amplifies any
    rounding into logit errors of 0.2-0.7 for either quantizer, so which is closer there is chance.
    """
    models = {"full": load_checkpoint(str(checkpoints[family]), device="cpu", quantize="none").model,
              "bnb": load_checkpoint(str(checkpoints[family]), device="cpu", quantize="8bit").model,
              "ours": int8_models[family].model}
    inputs = dict(int8_models[family].processor(images=load_image(pictures["green"]).image,
                                                text="Question: what is it? Answer: a cat", return_tensors="pt"))
    if family == "flan-t5":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, -4:]
    with torch.inference_mode():
        image = {name: m.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
                 for name, m in models.items()}
        logits = {name: m(**inputs).logits for name, m in models.items()}
    assert 0 < relative_error(image["ours"], image["full"]) <= relative_error(image["bnb"], image["full"])
    if family == "opt":
        ours = relative_error(logits["ours"], logits["full"])
        assert ours <= relative_error(logits["bnb"], logits["full"]) and ours < 0.05
