"""Int8 weight-only quantization: int8 weights with one scale per output row, activations left as they are.

bitsandbytes' 8-bit layers (LLM.int8) quantize the activations too and split outlier columns off on
the host for every product: at batch size 1 on a GPU they decode slower than bfloat16 and cannot be
captured in a CUDA graph. Here only the weights are quantized (w = q * s, q an int8 in [-127, 127],
s = max |w| of the row / 127, as torchao's int8 weight-only does), which halves the bytes a decode
step reads. Products of a few rows (decoding: 1 to 16) run a Triton kernel that reads the int8
weights and converts them in registers; larger ones (a prefill, the vision encoder) dequantize the
layer into a temporary and use the usual matrix product. Without a GPU (or Triton) every product
takes the second way: slow, but the same function, which is what the CPU tests check.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SMALL_ROWS = 16  # products with at most this many rows use the kernel (its tile is 16 rows)


class Int8Linear(nn.Module):
    """A Linear layer whose weight is int8 with a per-row scale; same inputs and outputs as the original."""

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, quantized: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = quantized.shape
        self.register_buffer("weight", quantized)  # int8 [out, in]: named `weight` so readers of .weight.dtype see int8
        self.register_buffer("scale", scale)  # float32 [out]
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, device: torch.device | str | None = None) -> Int8Linear:
        """Quantize `linear` (moved to `device` first, where the rounding then runs)."""
        weight = linear.weight.detach().to(device or linear.weight.device, torch.float32)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().to(quantized.device)
        return cls(quantized, scale, bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as `dtype` (computed in float32, rounded once)."""
        return (self.weight.to(torch.float32) * self.scale[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if x.is_cuda and rows <= SMALL_ROWS and x.dtype in (torch.bfloat16, torch.float16) and kernel_available():
            from chatbot.engine.int8_kernel import int8_weight_matmul

            out = int8_weight_matmul(x.reshape(rows, x.shape[-1]), self.weight, self.scale, self.bias)
            return out.reshape(*x.shape[:-1], self.out_features)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


@functools.cache
def kernel_available() -> bool:
    """Whether Triton imports (it comes with PyTorch's CUDA builds); if it does not, products dequantize."""
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: the dequantizing path still works
        return False
    return True


def quantize_linear_layers(model: Any, keep: set[str], device: torch.device | str) -> int:
    """Swap the model's Linear layers for Int8Linear, on `device`, except those named in `keep`.

    Only the vision encoder and the language model are touched (the Q-Former and the language
    projection stay, as with bitsandbytes); returns how many layers were quantized.
    """
    count = 0
    for part in (model.vision_model, model.language_model):
        for module in list(part.modules()):
            for name, child in list(module.named_children()):
                if type(child) is nn.Linear and name not in keep:
                    setattr(module, name, Int8Linear.from_linear(child, device))
                    count += 1
    return count
