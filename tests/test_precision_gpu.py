"""8-bit, 4-bit and the automatic choice on a CUDA GPU. Skipped without one."""

from __future__ import annotations

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import open_engine
from chatbot.engine.precision import free_memory_bytes
from chatbot.images import load_image
from tests.conftest import FAMILIES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
QUANTIZED_CLASS = {"8bit": "Linear8bitLt", "4bit": "Linear4bit", "int8": "Int8Linear"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bits", ["int8", "8bit", "4bit"])
def test_quantized_on_gpu_answers(checkpoints, pictures, family: str, bits: str) -> None:
    engine = open_engine(str(checkpoints[family]), device="cuda", quantize=bits)
    assert engine.info.device == "cuda:0" and engine.info.precision == bits
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16 if family == "opt" else torch.float32
    assert engine.dtype is expected  # the compute dtype, held by the unquantized projection
    model = engine.model
    assert type(model.vision_model.encoder.layers[0].mlp.fc1).__name__ == QUANTIZED_CLASS[bits]
    assert type(model.language_projection).__name__ == "Linear"
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=6))
    assert "".join(chat.ask("what is in the picture?")).strip()
    assert "".join(chat.ask("what colour is it?")).strip()
    print(f"{family} {bits}: decoding with {engine.decoding}")  # which quantized layers CUDA graphs can hold
    if bits == "int8":
        assert engine.decoding == "CUDA graphs"
    if bits == "8bit":
        assert engine.decoding.startswith("generate (bitsandbytes 8-bit layers")


@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize(("shape", "dtype"), [
    ((2560, 2560), torch.bfloat16), ((2560, 10240), torch.bfloat16), ((100, 300), torch.float16),
])
def test_int8_kernel_computes_the_rounded_linear_map(dtype, rows, shape) -> None:
    """Both kernels (one row: the autotuned matrix-vector one; 3 and 16 rows: the tensor-core one) against float64."""
    from chatbot.engine.int8_kernel import int8_weight_matmul
    from chatbot.engine.int8_weights import Int8Linear

    torch.manual_seed(rows)
    layer = Int8Linear.from_linear(torch.nn.Linear(shape[1], shape[0]), "cuda")
    x = torch.randn(rows, shape[1], device="cuda").to(dtype)
    expected = x.double() @ (layer.weight.double() * layer.scale.double()[:, None]).T + layer.bias.double()
    out = int8_weight_matmul(x, layer.weight, layer.scale, layer.bias)
    assert out.dtype is dtype and out.shape == (rows, shape[0])
    assert ((out.double() - expected).norm() / expected.norm()).item() < 1e-2
    assert torch.equal(out, int8_weight_matmul(x, layer.weight, layer.scale, layer.bias))  # deterministic


def test_auto_on_gpu_says_what_and_why(checkpoints) -> None:
    said: list[str] = []
    engine = open_engine(str(checkpoints["flan-t5"]), progress=said.append)
    assert engine.info.precision in ("bfloat16", "float32")  # never float16 for FlanT5
    assert said[0] == engine.info.precision_reason
    assert "is free on cuda:0" in said[0]


def test_free_gpu_memory_is_cudas_count() -> None:
    free, total = torch.cuda.mem_get_info(0)
    assert 0 < free_memory_bytes("cuda:0") <= total
