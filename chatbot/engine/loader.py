"""Find and load a BLIP-2 checkpoint: a local directory, the local hub cache, or the hub.

One module though over 300 lines: it is the one path from a name to a model on its device
(resolve_model, choose_device and choose_dtype, load_checkpoint), read top to bottom, whose steps
share the checkpoint's types and turn their failures into the same few user errors. The same path
loads both kinds of checkpoint: chat (`Blip2ForConditionalGeneration`) and retrieval
(`Blip2ForImageTextRetrieval`, for search), and refuses one where the other is wanted.

Offline-first: a directory or a cached copy is used without touching the network; only
a hub id missing from the cache is downloaded. Safetensors only, never remote code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.engine.checkpoint_kind import check_folder, check_known_name
from chatbot.engine.precision import (
    DTYPE_CHOICES,
    PrecisionChoice,
    choose_precision,
    free_memory_bytes,
    gigabytes,
    is_capped,
    triton_installed,
)
from chatbot.engine.quantization import INSTALL_HINT, INT8_KEPT, bitsandbytes_config, is_bitsandbytes_failure
from chatbot.engine.registry import family_of, resolve_alias
from chatbot.engine.shape import read_shape
from chatbot.errors import (
    ModelNotFoundError,
    NotACheckpointError,
    OptionError,
    OutOfMemoryError,
    QuantizationUnavailableError,
)
from chatbot.locations import DEMO_MODEL, demo_model_dir

# Files a BLIP-2 checkpoint needs; weights in safetensors only (no pickles, no remote code).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]

Progress = Callable[[str], None]
# Retrieval heads kept out of 8-bit and 4-bit, as chat keeps its language projection: every query passes them.
RETRIEVAL_UNQUANTIZED = ["vision_projection", "text_projection", "itm_head"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a checkpoint lives on disk and how we found it."""

    requested: str  # what the user typed
    path: Path  # directory holding config.json, weights and processor files
    hub_id: str | None  # the hub id, when it came from the hub or its cache
    source: str  # "directory", "cache" or "download"


_OFFLINE_HINT = ("to try the app offline: blip2-chat demo, or --model demo with any command (a small model "
                 "trained here)")
# Words in a download error that mean the network, not the name: said plainly instead of the library's chain.
_NO_NETWORK = ("ConnectError", "ConnectionError", "Name or service not known", "Temporary failure in name resolution",
               "Network is unreachable", "Connection refused", "nodename nor servname")


def _looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name`; anything rooted, relative or deeper is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_checkpoint_dir(path: Path, requested: str) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise NotACheckpointError(
            f"The folder {path} is not a BLIP-2 checkpoint (it has no config.json).",
            "Pass a folder saved with save_pretrained, or a hub id such as Salesforce/blip2-opt-2.7b.",
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "blip-2":
        raise NotACheckpointError(
            f"The folder {path} holds a model of type '{model_type}', not BLIP-2." if isinstance(model_type, str)
            else f"The folder {path} has a config.json that does not name a model type, so it is not BLIP-2.",
            "Pass a BLIP-2 checkpoint folder or hub id (see `blip2-chat models`).",
        )
    if not any(path.glob("*.safetensors")):
        raise NotACheckpointError(
            f"The folder {path} has no .safetensors weights (other weight formats are not loaded, for safety).",
            "Convert the weights to safetensors, or use the hub checkpoint.",
        )


def resolve_model(requested: str, progress: Progress | None = None, kind: str = "chat") -> ResolvedModel:
    """Locate a checkpoint: directory first, then the local cache, then a download.

    `kind` ("chat" or "retrieval") only chooses which shipped demo model the name `demo` means.

    Raises:
        ModelNotFoundError: nowhere to be found (names the fix).
        NotACheckpointError: a directory that is not a BLIP-2 checkpoint.
    """
    name = requested.strip()
    if name.lower() == DEMO_MODEL and not Path(name).is_dir():  # the shipped demo model (chatbot/demo)
        return ResolvedModel(requested, demo_model_dir(kind), None, "directory")
    local = Path(name).expanduser()
    if local.is_dir():
        _check_checkpoint_dir(local, requested)
        return ResolvedModel(requested, local.resolve(), None, "directory")
    if local.exists():
        raise NotACheckpointError(
            f"{local} is a file, not a checkpoint folder.", "Pass the folder that holds config.json and the weights."
        )
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"No checkpoint folder at {local}.", "Check the path, or pass a hub id such as Salesforce/blip2-opt-2.7b."
        )
    hub_id = resolve_alias(name)
    if not _is_hub_id(hub_id):
        raise ModelNotFoundError(
            f"'{requested}' is neither a folder nor a hub id.",
            "Use a hub id like Salesforce/blip2-opt-2.7b, an alias from `blip2-chat models`, or a folder path.",
        )
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES, local_files_only=True)
        return ResolvedModel(requested, Path(path), hub_id, "cache")
    except Exception:  # noqa: BLE001 - any miss in the cache means "not cached"
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ModelNotFoundError(
            f"The model {hub_id} is not in the local cache and downloads are off (HF_HUB_OFFLINE is set).",
            "Run once with network access and HF_HUB_OFFLINE unset, or pass --model with a local checkpoint folder "
            f"({_OFFLINE_HINT}).",
        )
    if progress:
        progress(f"Downloading {hub_id} (first use only)")
    try:
        path = snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES)
    except Exception as error:  # noqa: BLE001 - network, auth and not-found all end the same way
        reason = _short(error)
        if any(words in f"{type(error).__name__}: {error}" for words in _NO_NETWORK):
            reason = "the Hugging Face hub could not be reached (no network connection?)"
        raise ModelNotFoundError(
            f"Could not download {hub_id}: {reason}.",
            "Check the name (see `blip2-chat models`) and your network, or pass --model with a local folder "
            f"({_OFFLINE_HINT}).",
        ) from None
    _check_checkpoint_dir(Path(path), requested)
    return ResolvedModel(requested, Path(path), hub_id, "download")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__).rstrip(".")[:200]


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


def choose_dtype(dtype: str, device: str, family: str) -> Any:
    """The torch dtype: float32 on CPU; bfloat16 (or float16 for OPT) on GPUs. FlanT5 never float16."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise OptionError(f"Unknown dtype '{dtype}'.", f"Use one of: {', '.join(DTYPE_CHOICES)}.")
    if dtype == "float16" and family == "flan-t5":
        raise OptionError(
            "FlanT5 overflows in float16 and answers with garbage.", "Use --dtype bfloat16 or float32."
        )
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cpu":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if family in ("opt", "retrieval") else torch.float32


def read_family(path: Path) -> str:
    """'opt' or 'flan-t5', read from a checkpoint's config.json."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return family_of(config.get("text_config", {}).get("model_type", "opt"))


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
    progress: Progress | None = None, kind: str = "chat",
) -> LoadedCheckpoint:
    """Resolve and load a BLIP-2 checkpoint and its processor, in a precision that fits the device.

    Args:
        requested: hub id, registry alias, or local directory (or one already resolved).
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "auto", "float32", "bfloat16" or "float16".
        quantize: "auto" (the best precision that fits), "none", "int8", "8bit" or "4bit" (see precision.py).
        progress: called with short status sentences while loading, the precision and its reason among them.
        kind: "chat" (`Blip2ForConditionalGeneration`) or "retrieval" (`Blip2ForImageTextRetrieval`).

    Raises:
        NotACheckpointError: among others, a checkpoint of the other kind (says which kind to use where).
        OutOfMemoryError: the precision cannot fit (found before loading), or loading ran out of memory.
        QuantizationUnavailableError: 8-bit or 4-bit asked for, and bitsandbytes cannot do it here.
    """
    started = time.perf_counter()
    if isinstance(requested, str):
        check_known_name(requested, kind)  # before any download
    resolved = requested if isinstance(requested, ResolvedModel) else resolve_model(requested, progress, kind)
    check_folder(resolved.path, kind, resolved.hub_id or str(resolved.path))
    family = "retrieval" if kind == "retrieval" else read_family(resolved.path)
    target = choose_device(device)
    choose_dtype(dtype, target, family)  # refuses unknown dtypes and float16 for FlanT5
    auto_dtype = str(choose_dtype("auto", target, family)).removeprefix("torch.")
    free = free_memory_bytes(target)
    from chatbot.engine.int8_weights import quantize_linear_layers  # imports torch: only now

    choice = choose_precision(read_shape(resolved.path), device=target, free_bytes=free, quantize=quantize,
                              dtype=dtype, auto_dtype=auto_dtype, capped=is_capped(free),
                              int8_kernel=target.startswith("cuda") and triton_installed())  # as `models` says
    if progress:
        progress(choice.reason)
        progress(f"Loading {resolved.hub_id or resolved.path} on {target}")
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
        model = model_class.from_pretrained(
            resolved.path, dtype=torch_dtype, device_map="cpu" if int8 else target, use_safetensors=True,
            trust_remote_code=False, **extra,
        )
        if int8:  # quantized layer by layer on the device, so it never holds the full-width weights
            quantize_linear_layers(_Int8Parts(model), INT8_KEPT, target)
            model.to(target)  # type: ignore[arg-type] # transformers types its wrapped .to for a model argument
    except Exception as error:  # noqa: BLE001 - damaged files fail in many library-specific ways
        _raise_load_error(error, resolved, choice)
        raise NotACheckpointError(
            f"The checkpoint at {resolved.path} could not be loaded: {_short(error)}.",
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
    if is_out_of_memory(error):
        raise OutOfMemoryError(
            f"{choice.device} ran out of memory loading {resolved.requested} in {choice.precision.words} "
            f"(estimated {gigabytes(choice.needed)}, {gigabytes(choice.free)} was free).",
            "Close other programs, try --quantize 4bit or a smaller model (see `blip2-chat models`), or --device cpu.",
        ) from None
    if choice.precision.quantize != "none" and is_bitsandbytes_failure(error):
        raise QuantizationUnavailableError(
            f"bitsandbytes could not load the model in {choice.precision.words} on {choice.device}: {_short(error)}.",
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
