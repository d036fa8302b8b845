"""The device a model runs on and the torch dtype it is loaded in, from the --device and --dtype options.

torch is imported inside each function: `blip2-chat models` and the front ends import this module without it.
"""

from __future__ import annotations

from typing import Any

from chatbot.engine.precision import DTYPE_CHOICES, float16_refused
from chatbot.errors import OptionError


def choose_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; explicit choices are checked."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device} was asked for but no CUDA GPU is usable here.", "Use --device cpu.")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise OptionError(
                f"There is no GPU {index}; this machine has {torch.cuda.device_count()}.", "Use --device cuda:0."
            )
        return f"cuda:{index}"
    if device != "cpu":
        raise OptionError(f"Unknown device '{device}'.", "Use auto, cpu, cuda or cuda:N.")
    return device


def choose_dtype(dtype: str, device: str, family: str, dtype_from: str | None = None) -> Any:
    """The torch dtype: float32 on CPU; bfloat16 (or float16 for OPT) on GPUs. FlanT5 never float16: asked for
    (from `dtype_from`: "--dtype", "the config file's dtype"), refused; for `auto`, never chosen."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise OptionError(f"Unknown dtype '{dtype}'.", f"Use one of: {', '.join(DTYPE_CHOICES)}.")
    if dtype == "float16" and family == "flan-t5":
        raise float16_refused(dtype_from)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cpu":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if family in ("opt", "retrieval") else torch.float32
