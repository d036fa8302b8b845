"""Faster float32 matrix products on the CPU: linear layers re-laid out once for oneDNN.

PyTorch's default CPU path for `nn.Linear` is MKL's sgemm, which runs products with a few rows
(2 to ~32: a follow-up question's prefill, a small batch) on one thread and far below the
machine's speed: on a 2-core EPYC, an 18x2560 by 2560x10240 product took 25 ms against 11 ms
through oneDNN with the weight packed in its blocked layout, and a one-row product (a decoded
token) 5.5 ms against 4.4 ms. `pack_linear_layers` swaps every plain float32 `nn.Linear` for a
`PackedLinear` that holds the packed weight; the dense weight is released, so memory stays the same.

oneDNN also gives every row the same result whatever the number of rows (MKL does not), so a
prefill that continues a KV cache computes what a full prefill computes. Set
`BLIP2_CHAT_ONEDNN=0` to keep PyTorch's default kernels.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from chatbot.errors import OptionError
from chatbot.untrusted import visible

ENV_SWITCH = "BLIP2_CHAT_ONEDNN"


class PackedLinear(torch.nn.Module):
    """`nn.Linear` with its weight packed for oneDNN (inference only; float32 on the CPU)."""

    packed_weight: torch.Tensor

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        # a buffer, so that memory accounting (get_memory_footprint) still counts it; never saved
        self.register_buffer("packed_weight", packed, persistent=False)
        self.bias = linear.bias

    @property
    def weight(self) -> torch.Tensor:
        """The packed weight: right dtype, device and shape for code that checks them (T5 casts to its dtype)."""
        return self.packed_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def onednn_usable() -> bool:
    """oneDNN is built in, not switched off, and its packed product agrees with `F.linear` here."""
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if switch in {"0", "false", "no", "off"}:
        return False
    if switch not in {"", "1", "true", "yes", "on"}:
        raise OptionError(f"{ENV_SWITCH} must be 1 or 0 (also true or false, yes or no, on or off), "
                          f"not '{visible(switch[:40])}'.",
                          f"Unset it, or set {ENV_SWITCH}=0 to keep PyTorch's kernels.")
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            layer = torch.nn.Linear(64, 48)
            x = torch.randn(3, 64)
            return bool(torch.allclose(PackedLinear(layer)(x), layer(x), rtol=1e-4, atol=1e-5))
    except (RuntimeError, AttributeError):  # an op missing from this build, or refusing this CPU
        return False


def pack_linear_layers(model: Any) -> int:
    """Swap each float32 CPU `nn.Linear` of `model` for a `PackedLinear`; returns how many were swapped.

    Skips quantized layers (their classes only derive from `nn.Linear`), layers whose weight
    another module shares (packing would copy it), and the LM head, whose `.weight` the Hugging Face
    code reads (OPT ties it to the token embeddings; it works on one row per token anyway).
    """
    if not onednn_usable():
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    swaps = []
    for module in model.modules():
        for child_name, child in module.named_children():
            if (type(child) is torch.nn.Linear and child is not head and child.weight.dtype == torch.float32
                    and child.weight.device.type == "cpu" and counts.get(id(child.weight), 0) == 1):
                swaps.append((module, child_name, child))
    count = len(swaps)
    while swaps:  # one layer at a time, the dense weight dropped as soon as its packed copy exists
        parent, child_name, child = swaps.pop()
        setattr(parent, child_name, PackedLinear(child))
        del child
    return count
