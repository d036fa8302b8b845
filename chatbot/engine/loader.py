"""Load a BLIP-2 checkpoint: from a name to a model and its processor on their device, in a precision that fits.

`load_checkpoint` runs the steps in order: where the checkpoint is (`checkpoint_location`), its config.json
and files checked (`checkpoint_files`), the device and dtype (`device_and_dtype`), the precision that fits
(`precision`, `quantization`), then transformers' `from_pretrained` and the check that no weight is left
unset. The same path loads both kinds of checkpoint: chat (`Blip2ForConditionalGeneration`) and retrieval
(`Blip2ForImageTextRetrieval`, for search), and refuses one where the other is wanted.

Every failure is one user error, never the library's traceback nor a quiet wrong answer: running out of
memory, bitsandbytes unable to quantize here, or damaged files, each said in one sentence with what to do.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from chatbot.engine.checkpoint_files import check_weights_match, error_summary, processor_files_problem, read_config
from chatbot.engine.checkpoint_kind import check_folder, check_known_name
from chatbot.engine.checkpoint_location import Progress, ResolvedModel, cached_copy_error, resolve_model
from chatbot.engine.device_and_dtype import choose_device, choose_dtype
from chatbot.engine.precision import (
    PrecisionChoice,
    choose_precision,
    free_memory_bytes,
    gigabytes,
    is_capped,
    triton_installed,
)
from chatbot.engine.quantization import INSTALL_HINT, INT8_KEPT, bitsandbytes_config, is_bitsandbytes_failure
from chatbot.engine.shape import ModelShape, shape_from_config
from chatbot.errors import NotACheckpointError, OutOfMemoryError, QuantizationUnavailableError

# Retrieval heads kept out of 8-bit and 4-bit, as chat keeps its language projection: every query passes them.
RETRIEVAL_UNQUANTIZED = ["vision_projection", "text_projection", "itm_head"]


@dataclass
class LoadedCheckpoint:
    """A model on its device with its processor, ready for the engine."""

    model: Any  # Blip2ForConditionalGeneration, or Blip2ForImageTextRetrieval for kind "retrieval"
    processor: Any  # Blip2Processor (for retrieval its tokenizer is the Q-Former's)
    resolved: ResolvedModel
    family: str  # "opt", "flan-t5", or "retrieval"
    device: str
    precision: str  # "float32", "bfloat16", "float16", "int8", "8bit" or "4bit"
    seconds: float
    precision_reason: str = ""  # the sentence saying why this precision, e.g. "Using 8-bit: ..."


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU out-of-memory error, or the CPU allocator failing (a RuntimeError in torch)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def load_checkpoint(
    requested: str | ResolvedModel, *, device: str = "auto", dtype: str = "auto", quantize: str = "auto",
    progress: Progress | None = None, kind: str = "chat", dtype_from: str | None = None,
) -> LoadedCheckpoint:
    """Resolve and load a BLIP-2 checkpoint and its processor, in a precision that fits the device.

    Args:
        requested: hub id, registry alias, or local directory (or one already resolved).
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "auto", "float32", "bfloat16" or "float16".
        quantize: "auto" (the best precision that fits), "none", "int8", "8bit" or "4bit" (see precision.py).
        progress: called with short status sentences while loading, the precision and its reason among them.
        kind: "chat" (`Blip2ForConditionalGeneration`) or "retrieval" (`Blip2ForImageTextRetrieval`).
        dtype_from: where `dtype` was set (`Settings.source_of("dtype")`), named if FlanT5 refuses float16.

    Raises:
        NotACheckpointError: among others, a checkpoint of the other kind (says which kind to use where).
        OutOfMemoryError: the precision cannot fit (found before loading), or loading ran out of memory.
        QuantizationUnavailableError: 8-bit or 4-bit asked for, and bitsandbytes cannot do it here.
    """
    started = time.perf_counter()
    if isinstance(requested, str):
        check_known_name(requested, kind)  # before any download
    resolved = requested if isinstance(requested, ResolvedModel) else resolve_model(requested, progress, kind)
    name = resolved.hub_id or str(resolved.path)

    def kind_and_shape(config: dict[str, Any]) -> ModelShape:
        shape = shape_from_config(config)  # checks every value it reads (the architectures first)
        check_folder(resolved.path, kind, name)
        return shape

    shape = read_config(resolved.path, kind_and_shape)
    family = "retrieval" if kind == "retrieval" else shape.family
    target = choose_device(device)
    choose_dtype(dtype, target, family, dtype_from)  # refuses unknown dtypes and float16 for FlanT5
    auto_dtype = str(choose_dtype("auto", target, family)).removeprefix("torch.")
    free = free_memory_bytes(target)
    from chatbot.engine.int8_weights import quantize_linear_layers  # imports torch: only now

    choice = choose_precision(shape, device=target, free_bytes=free, quantize=quantize,
                              dtype=dtype, auto_dtype=auto_dtype, capped=is_capped(free), dtype_from=dtype_from,
                              int8_kernel=target.startswith("cuda") and triton_installed())  # as `models` says
    files_problem = processor_files_problem(resolved.path)  # else transformers builds an empty tokenizer
    if files_problem is not None:
        if resolved.source == "directory":
            raise NotACheckpointError(f"The folder {resolved.path} {files_problem.what}.", files_problem.hint)
        raise cached_copy_error(name, resolved.path, files_problem)
    if progress:
        progress(choice.reason)  # it names the device too: "... is free on cpu (RAM)."
    quiet_transformers()
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor

    model_class = Blip2ForImageTextRetrieval if kind == "retrieval" else Blip2ForConditionalGeneration
    torch_dtype = getattr(torch, choice.precision.dtype)
    extra: dict[str, Any] = {}
    int8 = choice.precision.quantize == "int8"
    if choice.precision.quantize in ("8bit", "4bit"):
        extra["quantization_config"] = bitsandbytes_config(choice.precision, torch_dtype, target)
        if kind == "retrieval":
            extra["quantization_config"].llm_int8_skip_modules += RETRIEVAL_UNQUANTIZED
    try:
        processor = Blip2Processor.from_pretrained(resolved.path)
        with_info: Any = model_class.from_pretrained(  # (model, loading info): typed as the model alone
            resolved.path, dtype=torch_dtype, device_map="cpu" if int8 else target, use_safetensors=True,
            trust_remote_code=False, output_loading_info=True, **extra,
        )
        model, loading = with_info
        check_weights_match(resolved.path, loading, model)  # else the missing layers answer with random weights
        if int8:  # quantized layer by layer on the device, so it never holds the full-width weights
            quantize_linear_layers(_Int8Parts(model), INT8_KEPT, target)
            model.to(target)  # type: ignore[arg-type] # transformers types its wrapped .to for a model argument
    except Exception as error:  # noqa: BLE001 - damaged files fail in many library-specific ways
        if isinstance(error, NotACheckpointError):
            raise
        _raise_load_error(error, resolved, choice)
        raise NotACheckpointError(
            f"The checkpoint at {resolved.path} could not be loaded: {error_summary(error)}.",
            "Check that the folder is a complete BLIP-2 checkpoint (config, processor files and safetensors weights).",
        ) from None
    model.eval()
    if target == "cpu" and choice.precision.quantize == "none" and torch_dtype == torch.float32:
        from chatbot.engine.cpu_kernels import pack_linear_layers

        pack_linear_layers(model)  # oneDNN's packed products: 2x faster follow-up prefills on a CPU
    return LoadedCheckpoint(model, processor, resolved, family, target, choice.precision.label,
                            time.perf_counter() - started, choice.reason)


class _Int8Parts:
    """What `quantize_linear_layers` quantizes: the vision encoder and the language model, which a
    retrieval model lacks (an empty module stands in, so only its ViT is quantized)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.vision_model = model.vision_model
        language_model = getattr(model, "language_model", None)
        self.language_model = torch.nn.Module() if language_model is None else language_model


def _raise_load_error(error: Exception, resolved: ResolvedModel, choice: PrecisionChoice) -> None:
    """Turn a failed `from_pretrained` into one clear user error: memory, bitsandbytes, or damaged files."""
    if "ignore_mismatched_sizes" in str(error):  # transformers' refusal of weights of other sizes than the config's
        raise NotACheckpointError(
            f"The weights in {resolved.path} do not match its config.json (some of them have other sizes than it "
            "gives).",
            "Put the config.json and weights of one checkpoint together (save_pretrained writes both), or pass "
            "a complete checkpoint.",
        ) from None
    if is_out_of_memory(error):
        raise OutOfMemoryError(
            f"{choice.device} ran out of memory loading {resolved.requested} in {choice.precision.words} "
            f"(estimated {gigabytes(choice.needed, choice.free)}, {gigabytes(choice.free, choice.needed)} was free).",
            "Close other programs, try --quantize 4bit or a smaller model (see `blip2-chat models`), or --device cpu.",
        ) from None
    if choice.precision.quantize != "none" and is_bitsandbytes_failure(error):
        raise QuantizationUnavailableError(
            f"bitsandbytes could not load the model in {choice.precision.words} on {choice.device}: "
            f"{error_summary(error)}.",
            INSTALL_HINT,
        ) from None


def quiet_transformers() -> None:
    """Keep library chatter (progress bars, backend notes) off the user's terminal."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")
    import logging as std_logging

    std_logging.getLogger("bitsandbytes").setLevel(std_logging.ERROR)  # "inputs will be cast ...", per matmul
