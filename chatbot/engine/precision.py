"""Which precision a model runs in: what each one needs, what is free, and the choice with its reason.

Pure Python (torch is imported only inside `free_memory_bytes`, for a GPU), so the CLI's `models`
table and the loader share one policy:

- FlanT5 never runs in float16 (it overflows to inf/NaN); bfloat16, float32, 8-bit or 4-bit instead.
- `--quantize auto` tries the device's full-width dtype first (the one `--dtype auto` gives: float32 on
  CPU, bfloat16 on GPUs that have it), then, on CPU only, bfloat16, then 8-bit, then 4-bit, and takes
  the first whose estimate fits the free memory of the chosen device. On a GPU with Triton the 8-bit
  step is int8 weight-only (chatbot/engine/int8_weights.py), which decodes several times faster than
  bitsandbytes' 8-bit in the same memory (docs/benchmarks.md); bitsandbytes' stays for `--quantize 8bit`.
- An explicit `--quantize none|int8|8bit|4bit` that cannot fit fails before loading, with the memory
  needed, the memory free and the option that would fit.

An estimate is weights + the KV cache for the model's full context + working memory, or what loading
holds when that is more (see `estimate_memory`); it is for one answer at a time (beam search multiplies
the KV cache by the beams).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from chatbot.engine.shape import ModelShape
from chatbot.errors import OptionError, OutOfMemoryError

QUANTIZE_CHOICES = ("auto", "none", "int8", "8bit", "4bit")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_CHOICES = ("auto", *DTYPE_BYTES)  # --dtype, the config file's dtype
# Bytes per quantized weight. 8-bit and int8: one int8 (plus a float32 scale per output row, negligible).
# 4-bit NF4 with double quantization: half a byte, plus an 8-bit absmax per block of 64 weights and a
# float32 constant per 256 blocks (bitsandbytes' defaults): 0.5 + (1 + 4/256) / 64 = 0.516.
QUANTIZED_BYTES = {"int8": 1.0, "8bit": 1.0, "4bit": 0.5 + (1 + 4 / 256) / 64}
WORKSPACE_FIXED = 256 * 2**20  # allocator slack and library buffers (cuBLAS workspace, dequantization)
WORKSPACE_SHARE = 0.05  # fragmentation grows with the weights
# Quantizing on load on the CPU: the process held 3.9 GB above its weights and runtime after loading
# OPT-2.7B in 8-bit and in 4-bit, and 2.9-3.9 GB for FlanT5-XL (docs/benchmarks.md): 0.23-0.30 x the
# quantizable weights at 4 bytes. Not counted on GPUs, where transformers quantizes tensor by tensor there.
CPU_QUANTIZE_TRANSIENT = 0.30
MEMORY_LIMIT_ENV = "BLIP2_CHAT_MAX_MEMORY"  # e.g. "6GB": plan as if at most this much were free


@dataclass(frozen=True)
class Precision:
    """How the weights are held: unquantized in `dtype`, or 8/4-bit with `dtype` for everything else."""

    quantize: str  # "none", "int8" (weight-only, ours), "8bit" (bitsandbytes LLM.int8) or "4bit" (bitsandbytes NF4)
    dtype: str  # the weights' dtype; when quantized, the compute dtype and that of the unquantized modules

    @property
    def label(self) -> str:
        """What `ModelInfo.precision` shows: "int8", "8bit", "4bit", or the dtype."""
        return self.dtype if self.quantize == "none" else self.quantize

    @property
    def words(self) -> str:
        """The label for sentences: "int8 weight-only", "8-bit", "4-bit", or the dtype."""
        if self.quantize == "int8":
            return "int8 weight-only"
        return self.dtype if self.quantize == "none" else f"{self.quantize[0]}-bit"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one precision needs, by what needs them."""

    weights: int
    kv_cache: int  # keys and values for the full context, in the compute dtype
    activations: int  # the widest activations of a full-context prefill
    slack: int  # allocator fragmentation and library buffers
    loading: int = 0  # held only while quantizing on load (CPU), before any answer: max'ed with answering

    @property
    def total(self) -> int:
        return self.weights + self.slack + max(self.kv_cache + self.activations, self.loading)


def estimate_memory(shape: ModelShape, precision: Precision, on_gpu: bool = False) -> MemoryEstimate:
    """Memory `shape` needs in `precision`: weights, then the larger of answering (KV cache for the full
    context and working memory) and, when quantizing on a CPU, what loading holds."""
    size = DTYPE_BYTES[precision.dtype]
    quantized = QUANTIZED_BYTES.get(precision.quantize, size)
    qformer_size = 4 if precision.dtype == "float16" else size  # transformers keeps it float32 beside float16
    weights = int(shape.quantizable * quantized + (shape.kept + shape.other) * size + shape.qformer * qformer_size)
    context = shape.context_tokens
    kv_cache = shape.kv_values_per_token * context * size
    # The widest activations of a full-context prefill, one layer at a time: attention scores and the FFN.
    activations = (shape.attention_heads * context * context + 4 * context * shape.ffn) * size
    slack = int(WORKSPACE_SHARE * weights) + WORKSPACE_FIXED
    loading = 0 if on_gpu or precision.quantize == "none" else int(CPU_QUANTIZE_TRANSIENT * shape.quantizable * 4)
    return MemoryEstimate(weights, kv_cache, activations, slack, loading)


def float16_refused(dtype_from: str | None = None) -> OptionError:
    """FlanT5's refusal of float16, naming where the float16 came from and the way forward.

    `dtype_from`: where the dtype was set, as `Settings.source_of` names it: a flag ("--dtype") or a file's
    value ("the config file's dtype"); None where the caller does not know (the sentence then names --dtype,
    which always wins). A checkpoint's own dtype is never the cause: `--dtype auto` never means float16 for
    FlanT5 (`device_and_dtype.choose_dtype`), whatever the checkpoint was saved in.
    """
    refused = "FlanT5 overflows in float16 and answers with garbage"
    if dtype_from is None:
        return OptionError(f"{refused}.", "Use --dtype bfloat16 or float32.")
    if dtype_from.startswith("--"):
        return OptionError(f"{refused}, and {dtype_from} asks for float16.", f"Use {dtype_from} bfloat16 or float32.")
    return OptionError(f"{refused}, and {dtype_from} is float16.",
                       f"Change {dtype_from} to bfloat16, float32 or auto, or give --dtype bfloat16 for this run.")


def candidates(
    family: str, *, quantize: str, dtype: str, auto_dtype: str, on_gpu: bool, int8_kernel: bool = False,
    dtype_from: str | None = None,
) -> list[Precision]:
    """The precisions to try, best first (`auto_dtype` is what `--dtype auto` means on this device).

    `int8_kernel`: the GPU can run int8 weight-only products (Triton is there); it then takes the
    8-bit step of the ladder, being the faster of the two 8-bit ways in the same memory.
    `dtype_from`: where `dtype` was set, named when FlanT5 refuses float16 (`float16_refused`).
    """
    if quantize not in QUANTIZE_CHOICES:
        raise OptionError(f"Unknown --quantize value '{quantize}'.", f"Use one of: {', '.join(QUANTIZE_CHOICES)}.")
    base = auto_dtype if dtype == "auto" else dtype
    if family == "flan-t5" and base == "float16":
        raise float16_refused(dtype_from)
    if quantize != "auto":
        return [Precision(quantize, base)]
    ladder = [Precision("none", base)]
    if dtype == "auto" and not on_gpu and base == "float32":  # on CPU, halving the weights beats quantizing
        ladder.append(Precision("none", "bfloat16"))
    eight = Precision("int8" if on_gpu and int8_kernel else "8bit", base)
    return [*ladder, eight, Precision("4bit", base)]


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to load with, and the sentence that says why."""

    precision: Precision
    needed: int  # bytes the estimate says it needs
    free: int  # bytes free on the device when we looked
    device: str
    reason: str


def gigabytes(count: float, beside: float | None = None) -> str:
    """Bytes as "15.5 GB" (decimal gigabytes, like the model cards).

    `beside`: another count said in the same sentence ("needs X but only Y is free"): when the two differ,
    as many decimals as it takes for them to read differently too (0.276 GB beside 0.275 GB, not 0.3 and 0.3).
    """
    decimals = 1
    if beside is not None and beside != count:
        while decimals < 9 and f"{count / 1e9:.{decimals}f}" == f"{beside / 1e9:.{decimals}f}":
            decimals += 1
    return f"{count / 1e9:.{decimals}f} GB"


def choose_precision(
    shape: ModelShape, *, device: str, free_bytes: int, quantize: str = "auto", dtype: str = "auto",
    auto_dtype: str = "float32", capped: bool = False, int8_kernel: bool = False, dtype_from: str | None = None,
) -> PrecisionChoice:
    """The best precision that fits `free_bytes` on `device`, with a sentence saying what and why.

    Args:
        shape: the checkpoint's parameter counts (`shape_from_config`).
        device: "cpu" or "cuda:N", named in the sentences.
        free_bytes: memory free on that device (GPU memory, or RAM on CPU).
        quantize: "auto", "none", "int8", "8bit" or "4bit" (explicit choices are checked, never changed).
        dtype: "auto" or a dtype name, as asked for.
        auto_dtype: what "auto" means on this device (float32 on CPU, bfloat16 or float16 on GPUs).
        capped: `free_bytes` is $BLIP2_CHAT_MAX_MEMORY rather than what the device has (the sentences say so).
        int8_kernel: int8 weight-only runs fast here (a GPU with Triton): auto prefers it to bitsandbytes 8-bit.
        dtype_from: where `dtype` was set ("--dtype", "the config file's dtype"), named if FlanT5 refuses it.

    Raises:
        OutOfMemoryError: nothing asked for fits; says what is needed, what is free and what would fit.
        OptionError: an unknown --quantize value, or float16 for FlanT5.
    """
    on_gpu = device.startswith("cuda")
    tried = candidates(shape.family, quantize=quantize, dtype=dtype, auto_dtype=auto_dtype, on_gpu=on_gpu,
                       int8_kernel=int8_kernel, dtype_from=dtype_from)
    needs = [(precision, estimate_memory(shape, precision, on_gpu).total) for precision in tried]
    notes = [*([] if on_gpu else ["RAM"]), *([f"capped by {MEMORY_LIMIT_ENV}"] if capped else [])]

    def where(needed: int) -> str:  # the free memory, with the digits that tell it from `needed`
        return f"{gigabytes(free_bytes, needed)} is free on {device}" + (f" ({'; '.join(notes)})" if notes else "")

    for index, (precision, needed) in enumerate(needs):
        if needed <= free_bytes:
            if quantize != "auto":
                reason = (f"Using {precision.words}, as asked: it needs {gigabytes(needed, free_bytes)} and "
                          f"{where(needed)}.")
            elif index == 0:
                reason = f"Using {precision.words}: it needs {gigabytes(needed, free_bytes)} and {where(needed)}."
            else:
                first, first_needed = needs[0]
                reason = (f"Using {precision.words}: {first.words} needs {gigabytes(first_needed, free_bytes)} but "
                          f"only {where(first_needed)}; {precision.words} needs {gigabytes(needed, free_bytes)}.")
                if precision.quantize == "int8":
                    reason += " It decodes faster than bitsandbytes 8-bit in the same memory."
            return PrecisionChoice(precision, needed, free_bytes, device, reason)
    raise _does_not_fit(shape, needs, free_bytes, where, dtype=dtype, auto_dtype=auto_dtype, device=device)


def _does_not_fit(
    shape: ModelShape, needs: list[tuple[Precision, int]], free_bytes: int, where: Callable[[int], str], *,
    dtype: str, auto_dtype: str, device: str,
) -> OutOfMemoryError:
    """The error for a choice that cannot fit, naming the option that would (if any). `where(needed)` says
    what is free, in digits that tell it from `needed`."""
    precision, needed = needs[-1]
    if len(needs) == 1:  # an explicit --quantize: say which other choice fits
        message = f"The model needs {gigabytes(needed, free_bytes)} in {precision.words} but only {where(needed)}."
        others = candidates(shape.family, quantize="auto", dtype=dtype, auto_dtype=auto_dtype,
                            on_gpu=device.startswith("cuda"))
        for other in others:
            other_needs = estimate_memory(shape, other, device.startswith("cuda")).total
            if other != precision and other_needs <= free_bytes:
                flags = " ".join([*([f"--quantize {other.quantize}"] if other.quantize != precision.quantize else []),
                                  *([f"--dtype {other.dtype}"] if other.dtype != precision.dtype else [])])
                return OutOfMemoryError(message, f"{flags} would fit (it needs {gigabytes(other_needs, free_bytes)}).")
    else:
        message = (f"The model does not fit: even {precision.words} needs {gigabytes(needed, free_bytes)} and only "
                   f"{where(needed)}.")
    hint = "Close other programs, or pick a smaller model (see `blip2-chat models`)"
    return OutOfMemoryError(message, hint + (", or try --device cpu." if device.startswith("cuda") else "."))


def triton_installed() -> bool:
    """Whether Triton is there for the int8 kernel (found, not imported: this module stays free of torch)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def parse_size(text: str) -> int:
    """"6GB", "512MB", "1.5 GiB" or a plain byte count -> bytes: a finite amount of at least one byte.

    Raises:
        OptionError: not a size ("lots"), or not one memory can be (inf, nan, 1e400, 0, -6GB), naming the variable.
    """
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    cleaned = text.strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGTIB")
    unit = cleaned[len(number):]
    try:
        amount = float(number) * units[unit]
    except (ValueError, KeyError):
        raise OptionError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size.", "Write it like 6GB or 512MB.") from None
    if not math.isfinite(amount) or amount < 1:
        raise OptionError(f"{MEMORY_LIMIT_ENV}={text!r} is not a usable size: it must be finite and above zero.",
                          f"Write it like 6GB or 512MB, or unset {MEMORY_LIMIT_ENV} to plan with what is free.")
    return int(amount)


def memory_limit() -> int | None:
    """The cap set by $BLIP2_CHAT_MAX_MEMORY (to leave room for other programs), if any."""
    value = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    return parse_size(value) if value else None


def is_capped(free_bytes: int) -> bool:
    """True when `free_memory_bytes` returned the $BLIP2_CHAT_MAX_MEMORY cap, not the device's own figure."""
    return memory_limit() == free_bytes


def free_memory_bytes(device: str) -> int:
    """Free memory on `device`: the GPU's (CUDA's own count), or available RAM on CPU; capped by the limit."""
    if device.startswith("cuda"):
        import torch

        free = int(torch.cuda.mem_get_info(torch.device(device))[0])
    else:
        free = available_ram_bytes()
    limit = memory_limit()
    return free if limit is None else min(free, limit)


def available_ram_bytes() -> int:
    """RAM the system can hand out without swapping (psutil's `available`, the kernel's MemAvailable on Linux)."""
    import psutil

    return int(psutil.virtual_memory().available)
