"""8-bit and 4-bit through the real loader on the CPU (bitsandbytes 0.50), and the errors around them.

The tiny checkpoints have widths of 64, so bitsandbytes quantizes every Linear layer it is given.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine
from chatbot.engine.loader import LoadedCheckpoint, load_checkpoint
from chatbot.engine.precision import MEMORY_LIMIT_ENV, Precision, estimate_memory
from chatbot.engine.shape import read_shape
from chatbot.errors import OutOfMemoryError, QuantizationUnavailableError
from chatbot.images import load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare

QUANTIZED_CLASS = {"8bit": "Linear8bitLt", "4bit": "Linear4bit"}
BYTES_PER_WEIGHT = {"8bit": 1.0, "4bit": 0.5}  # what get_memory_footprint counts (4-bit's absmax lives elsewhere)
# The footprint ratio float32 / quantized, measured on the tiny checkpoints (see test_quantized_footprint):
# only Linear weights of the vision encoder and language model shrink, and in these tiny models the
# embeddings (vocab x 64) and the unquantized Q-Former are most of the bytes, so the ratio is modest.
# At OPT-2.7B's real dimensions 93% of the weights are quantized and the ratio is 3.3 (8-bit) and 5.5 (4-bit)
# (docs/benchmarks.md).
MEASURED_RATIO = {("opt", "8bit"): 1.31, ("opt", "4bit"): 1.38, ("flan-t5", "8bit"): 1.51, ("flan-t5", "4bit"): 1.65}


@pytest.fixture(scope="module")
def float32_footprints(checkpoints: dict[str, Path]) -> dict[str, int]:
    return {family: load_checkpoint(str(path), device="cpu", quantize="none").model.get_memory_footprint()
            for family, path in checkpoints.items()}


@pytest.fixture(scope="module")
def quantized(checkpoints: dict[str, Path]) -> dict[tuple[str, str], LoadedCheckpoint]:
    return {(family, bits): load_checkpoint(str(checkpoints[family]), device="cpu", quantize=bits)
            for family in FAMILIES for bits in ("8bit", "4bit")}


def module_class(model: torch.nn.Module, name: str) -> str:
    return type(model.get_submodule(name)).__name__


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_model_answers_as_generate_does(quantized, pictures, family: str, bits: str) -> None:
    loaded = quantized[(family, bits)]
    engine = Blip2Engine(loaded)
    assert loaded.precision == bits and engine.info.precision == bits
    assert engine.info.precision_reason.startswith(f"Using {bits[0]}-bit, as asked")
    assert engine.dtype is torch.float32  # the compute dtype on CPU, read from the unquantized projection
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=6))
    answers = converse_and_compare(chat, QUESTIONS[:3])  # tokens equal generate's on this quantized model
    assert [t.answer for t in chat.session.turns] == [" ".join(answer.split()) for answer in answers]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_which_modules_are_quantized(quantized, family: str, bits: str) -> None:
    model = quantized[(family, bits)].model
    first_lm_linear = "language_model.model.decoder.layers.0.fc1" if family == "opt" else \
        "language_model.encoder.block.0.layer.1.DenseReluDense.wi_0"
    for name in ("vision_model.encoder.layers.0.mlp.fc1", first_lm_linear):
        assert module_class(model, name) == QUANTIZED_CLASS[bits], name
    for name in ("qformer.encoder.layer.0.attention.attention.query", "language_projection", "language_model.lm_head"):
        assert module_class(model, name) == "Linear", name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_footprint(quantized, float32_footprints, checkpoints, family: str, bits: str) -> None:
    footprint = quantized[(family, bits)].model.get_memory_footprint()
    shape = read_shape(checkpoints[family])
    # Exactly the quantizable Linear weights shrink, from 4 bytes to 1 (8-bit) or 0.5 (4-bit): nothing else does.
    assert float32_footprints[family] - footprint == shape.quantizable * (4 - BYTES_PER_WEIGHT[bits])
    assert float32_footprints[family] / footprint >= MEASURED_RATIO[(family, bits)]
    weights = estimate_memory(shape, Precision(bits, "float32")).weights
    assert footprint <= weights <= footprint * 1.1  # the estimate also counts 4-bit's absmax constants


def test_auto_falls_back_when_float32_does_not_fit(checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = read_shape(checkpoints["opt"])
    float32 = estimate_memory(shape, Precision("none", "float32")).total
    bfloat16 = estimate_memory(shape, Precision("none", "bfloat16")).total
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str((float32 + bfloat16) // 2))
    said: list[str] = []
    loaded = load_checkpoint(str(checkpoints["opt"]), device="cpu", progress=said.append)
    assert loaded.precision == "bfloat16"
    assert next(iter(loaded.model.parameters())).dtype is torch.bfloat16
    assert said[0] == loaded.precision_reason
    assert loaded.precision_reason.startswith("Using bfloat16: float32 needs")


def test_explicit_choice_that_cannot_fit_fails_before_loading(checkpoints, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "broken"  # weights that would fail to load: the memory check must come first
    shutil.copytree(checkpoints["flan-t5"], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "100MB")
    with pytest.raises(OutOfMemoryError, match=r"needs 0\.\d GB in 8-bit but only 0\.1 GB is free on cpu"):
        load_checkpoint(str(broken), device="cpu", quantize="8bit")


def test_bitsandbytes_missing(checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails as if not installed
    with pytest.raises(QuantizationUnavailableError, match="needs the bitsandbytes package, which is not installed"):
        load_checkpoint(str(checkpoints["opt"]), device="cpu", quantize="4bit")


def test_bitsandbytes_unusable_on_this_device(checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})  # an older, CUDA-only build
    with pytest.raises(QuantizationUnavailableError, match=r"cannot run 8-bit on cpu\. Use --quantize none"):
        load_checkpoint(str(checkpoints["opt"]), device="cpu", quantize="8bit")


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")])
def test_out_of_memory_while_loading(checkpoints, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    from transformers import Blip2ForConditionalGeneration

    def run_out(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(Blip2ForConditionalGeneration, "from_pretrained", run_out)
    with pytest.raises(OutOfMemoryError, match=r"cpu ran out of memory loading .* in float32 \(estimated 0\.\d GB, "
                                               r"[\d.]+ GB was free\)\. .*--quantize 4bit"):
        load_checkpoint(str(checkpoints["opt"]), device="cpu", quantize="none")


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_memory_while_answering_keeps_the_chat(checkpoints, pictures, monkeypatch, family: str) -> None:
    engine = Blip2Engine(load_checkpoint(str(checkpoints[family]), device="cpu"))
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=5))
    first = "".join(chat.ask("what is it?"))
    language_model = engine.model.language_model

    def run_out(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(language_model, "generate", run_out)
    with pytest.raises(OutOfMemoryError, match="ran out of memory while answering; the conversation is kept"):
        "".join(chat.ask("what colour?"))
    assert [t.answer for t in chat.session.turns] == [first.strip()]  # no half turn recorded
    monkeypatch.undo()
    second = "".join(chat.ask("what colour?"))
    assert second.strip() and len(chat.session.turns) == 2


def test_out_of_memory_in_the_vision_encoder_is_the_same_clear_error(checkpoints, pictures, monkeypatch) -> None:
    engine = Blip2Engine(load_checkpoint(str(checkpoints["opt"]), device="cpu"))

    def run_out(*args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(engine.model, "get_image_features", run_out)
    chat = Conversation.with_engine(engine, load_image(pictures["green"]), GenerationOptions(max_new_tokens=5))
    with pytest.raises(OutOfMemoryError, match="cpu ran out of memory while answering"):
        "".join(chat.ask("what is it?"))
    assert chat.session.turns == []
