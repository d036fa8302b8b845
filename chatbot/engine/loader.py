"""Find and load a BLIP-2 checkpoint: a local directory, the local hub cache, or the hub.

One module though over 300 lines: it is the one path from a name to a model on its device
(resolve_model, choose_device and choose_dtype, load_checkpoint), read top to bottom, whose steps
share the checkpoint's types and turn their failures into the same few user errors. The same path
loads both kinds of checkpoint: chat (`Blip2ForConditionalGeneration`) and retrieval
(`Blip2ForImageTextRetrieval`, for search), and refuses one where the other is wanted.

Offline-first: a directory or a cached copy is used without touching the network; only
a hub id missing from the cache (or the rest of an incomplete cached copy) is downloaded. Safetensors
only, never remote code.

Every failure is one user error, never the library's traceback nor a quiet wrong answer: a folder or cached
copy is checked before loading (config.json of a BLIP-2 model, safetensors weights, tokenizer files, image
processor settings), every config value the memory plan reads is checked (shape.py), and weights that leave
some of the model's weights unset are refused (transformers would fill them with random values). Weights
the model does not use (`unexpected_keys`) are let through: the hub checkpoints could not be checked for
benign extras here, and refusing them could refuse a real checkpoint.
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
    float16_refused,
    free_memory_bytes,
    gigabytes,
    is_capped,
    triton_installed,
)
from chatbot.engine.quantization import INSTALL_HINT, INT8_KEPT, bitsandbytes_config, is_bitsandbytes_failure
from chatbot.engine.registry import resolve_alias
from chatbot.engine.shape import BadConfigValue, ModelShape, shape_from_config, text_model_family
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


_OFFLINE_HINT = ("to try the app offline: blip2-chat demo, or --model demo with any command, a small model "
                 "trained here")
# Words in a download error that mean the network, not the name: said plainly instead of the library's chain.
_NO_NETWORK = ("ConnectError", "ConnectionError", "Name or service not known", "Temporary failure in name resolution",
               "Network is unreachable", "Connection refused", "nodename nor servname")


def _looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name`; anything rooted, relative or deeper is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


@dataclass(frozen=True)
class FolderProblem:
    """What keeps a folder from being a loadable BLIP-2 checkpoint.

    `what` is a sentence without its subject ("has no config.json"): "The folder F " or "The cached copy
    of ID " goes before it. `hint` is what to do with a folder of one's own. `missing`: files are missing
    (an interrupted download: fetching again helps), rather than present and wrong.
    """

    what: str
    hint: str
    missing: bool


# A tokenizer is tokenizer.json, or the vocabulary a slow tokenizer is converted from (OPT's GPT-2 BPE,
# FlanT5's SentencePiece, the Q-Former's BERT WordPiece), beside the settings in tokenizer_config.json.
# Without them transformers quietly builds an empty tokenizer that answers "" (or another one, from config.json).
VOCABULARIES = (("vocab.json", "merges.txt"), ("spiece.model",), ("tokenizer.model",), ("vocab.txt",))
_SAVED_WITH = "(the processor's save_pretrained writes them)"


def checkpoint_problem(path: Path) -> FolderProblem | None:
    """Why `path` is not a BLIP-2 checkpoint: no config.json, not BLIP-2, no safetensors weights (or a shard
    of them missing). None when it looks like one. Reads config.json only (no torch)."""
    config = path / "config.json"
    if not config.is_file():
        return FolderProblem("has no config.json", "It is not a BLIP-2 checkpoint: pass a folder saved with "
                             "save_pretrained, or a hub id such as Salesforce/blip2-opt-2.7b.", missing=True)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        return FolderProblem(f"has a config.json that cannot be read ({_short(error)})",
                             "Check the file's permissions, or save the checkpoint again.", missing=False)
    except ValueError as error:  # json.JSONDecodeError: says the line and column
        return FolderProblem(f"has a config.json that is not valid JSON ({_short(error)})",
                             "Fix the file, or save the checkpoint again with save_pretrained.", missing=False)
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != "blip-2":
        return FolderProblem(
            f"holds a model of type {visible_value(model_type)}, not BLIP-2" if isinstance(model_type, str)
            else "has a config.json that does not name a model type, so it is not BLIP-2",
            "Pass a BLIP-2 checkpoint folder or hub id (see `blip2-chat models`).", missing=False)
    return _weights_problem(path)


def _weights_problem(path: Path) -> FolderProblem | None:
    """No safetensors weights, or a shard that model.safetensors.index.json lists is not there."""
    if (path / "model.safetensors").is_file():
        return None
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        if any(path.glob("*.safetensors")):
            return FolderProblem("has .safetensors files but neither model.safetensors nor "
                                 "model.safetensors.index.json, which says what they hold",
                                 "Save the checkpoint again with save_pretrained.", missing=True)
        return FolderProblem("has no .safetensors weights (other weight formats are not loaded, for safety)",
                             "Convert the weights to safetensors, or use the hub checkpoint.", missing=True)
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        absent = [name for name in shards if not (path / name).is_file()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return FolderProblem("has a model.safetensors.index.json that cannot be read",
                             "Save the checkpoint again with save_pretrained.", missing=False)
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        return FolderProblem(f"lacks the weights file {absent[0]}{more} that model.safetensors.index.json lists",
                             "Copy the missing weights files into the folder, or save the checkpoint again.",
                             missing=True)
    return None


def processor_files_problem(path: Path) -> FolderProblem | None:
    """What the processor needs and the folder lacks: the tokenizer files, or the image processor's settings."""
    tokenizer = [*([] if (path / "tokenizer.json").is_file()
                   or any(all((path / name).is_file() for name in vocabulary) for vocabulary in VOCABULARIES)
                   else ["tokenizer.json"]),
                 *([] if (path / "tokenizer_config.json").is_file() else ["tokenizer_config.json"])]
    if tokenizer:
        files = " and ".join(tokenizer)
        return FolderProblem(f"lacks the tokenizer file{'s' if len(tokenizer) > 1 else ''} {files}",
                             f"Copy {'them' if len(tokenizer) > 1 else 'it'} from the checkpoint the folder was "
                             f"made from {_SAVED_WITH}, or pass a complete checkpoint.", missing=True)
    if not ((path / "preprocessor_config.json").is_file() or _has_image_processor(path / "processor_config.json")):
        return FolderProblem("lacks the image processor's settings (preprocessor_config.json, or processor_config.json "
                             "with an image_processor entry)",
                             f"Copy those files from the checkpoint the folder was made from {_SAVED_WITH}, or pass "
                             "a complete checkpoint.", missing=True)
    return None


def _has_image_processor(file: Path) -> bool:
    """processor_config.json holds the image processor's settings (transformers 5 saves them there)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("image_processor"), dict)


def visible_value(value: Any) -> str:
    """A config value as a message shows it: JSON ('"64"', 'null', 'true'), cut to 60 characters."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _check_checkpoint_dir(path: Path) -> None:
    """Refuse a folder given by the user that is not a BLIP-2 checkpoint (its processor files come at load time)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise NotACheckpointError(f"The folder {path} {problem.what}.", problem.hint)


def cached_checkpoint(hub_id: str) -> tuple[Path | None, FolderProblem | None]:
    """The hub cache's snapshot of `hub_id` (None: not cached) and what is wrong with it (None: usable).

    Usable means complete: config.json of a BLIP-2 model, the safetensors weights (every shard), the tokenizer
    files and the image processor's settings. This never touches the network.
    """
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any miss in the cache means "not cached"
        partial = getattr(error, "snapshot_path", None)  # IncompleteSnapshotError: the download's listing says so
        if not partial:
            return None, None
        return Path(partial), FolderProblem("misses files that its download listed (an interrupted download?)", "",
                                            missing=True)
    return path, checkpoint_problem(path) or processor_files_problem(path)


def _cache_error(hub_id: str, path: Path, problem: FolderProblem, *, fetched: bool = False,
                 reason: str = "") -> NotACheckpointError:
    """The error for a cached copy that cannot be used, with how to fetch it again.

    `fetched`: a download just completed it and it still fails. `reason`: why downloading the rest failed.
    """
    if problem.missing:
        message = f"The cached copy of {hub_id} ({path}) is incomplete: it {problem.what}"
    else:
        message = f"The cached copy of {hub_id} ({path}) {problem.what}"
    message += f", and downloading the rest failed: {reason}." if reason else "."
    if problem.missing and not fetched:
        hint = (f"Fetch it again: run once with network access (HF_HUB_OFFLINE unset), or run "
                f"`hf download {hub_id}`; or pass --model with a local folder ({_OFFLINE_HINT}).")
    else:
        hint = (f"Fetch it again with `hf download {hub_id} --force-download`, or pass --model with a local folder "
                f"({_OFFLINE_HINT}).")
    return NotACheckpointError(message, hint)


def find_locally(requested: str, kind: str = "chat") -> ResolvedModel | str:
    """What `resolve_model` can tell at once, without the network or the cache: the checkpoint folder `requested`
    names (or the demo model), else the hub id it names (an alias resolved) for the cache or a download.

    Raises:
        ModelNotFoundError: a path that leads nowhere, or a name that is neither a folder nor a hub id.
        NotACheckpointError: a file, or a directory that is not a BLIP-2 checkpoint.
    """
    name = requested.strip()
    if name.lower() == DEMO_MODEL and not Path(name).is_dir():  # the shipped demo model (chatbot/demo)
        return ResolvedModel(requested, demo_model_dir(kind), None, "directory")
    local = Path(name).expanduser()
    if local.is_dir():
        _check_checkpoint_dir(local)
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
    return hub_id


def resolve_model(requested: str, progress: Progress | None = None, kind: str = "chat") -> ResolvedModel:
    """Locate a checkpoint: directory first, then the local cache, then a download.

    `kind` ("chat" or "retrieval") only chooses which shipped demo model the name `demo` means.

    Raises:
        ModelNotFoundError: nowhere to be found (names the fix).
        NotACheckpointError: a directory that is not a BLIP-2 checkpoint.
    """
    found = find_locally(requested, kind)
    if isinstance(found, ResolvedModel):
        return found
    hub_id = found
    from huggingface_hub import snapshot_download

    cached, problem = cached_checkpoint(hub_id)
    if cached is not None and problem is None:
        return ResolvedModel(requested, cached, hub_id, "cache")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if cached is not None and problem is not None and (offline or not problem.missing):
        raise _cache_error(hub_id, cached, problem)  # fetching again would not change it, or cannot now
    if offline:
        raise ModelNotFoundError(
            f"The model {hub_id} is not in the local cache and downloads are off (HF_HUB_OFFLINE is set).",
            "Run once with network access and HF_HUB_OFFLINE unset, or pass --model with a local checkpoint folder "
            f"({_OFFLINE_HINT}).",
        )
    if progress:
        progress(f"Downloading {hub_id} (first use only)" if cached is None
                 else f"Downloading the rest of {hub_id} (the cached copy is incomplete)")
    try:
        path = Path(snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES))
    except Exception as error:  # noqa: BLE001 - network, auth and not-found all end the same way
        reason = _short(error)
        if any(words in f"{type(error).__name__}: {error}" for words in _NO_NETWORK):
            reason = "the Hugging Face hub could not be reached (no network connection?)"
        if cached is not None and problem is not None:
            raise _cache_error(hub_id, cached, problem, reason=reason) from None
        raise ModelNotFoundError(
            f"Could not download {hub_id}: {reason}.",
            "Check the name (see `blip2-chat models`) and your network, or pass --model with a local folder "
            f"({_OFFLINE_HINT}).",
        ) from None
    problem = checkpoint_problem(path) or processor_files_problem(path)
    if problem is not None:
        raise _cache_error(hub_id, path, problem, fetched=True)
    return ResolvedModel(requested, path, hub_id, "download")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def names_hub_checkpoint(name: str) -> bool:
    """Whether `resolve_model` looks `name` up on the hub (an `owner/name` id or an alias of one) when no folder
    of that name is here: the loader's rule, for checks made before it runs (`chatbot.cluster.model_check`)."""
    name = name.strip()
    return not _looks_like_path(name) and _is_hub_id(resolve_alias(name))


def _short(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's text, cut at a word boundary with "…" when over `limit` characters."""
    text = str(error).strip().splitlines()
    line = (text[0].strip() if text else type(error).__name__).rstrip(".")
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,;:.") + "…"


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


def read_family(path: Path) -> str:
    """'opt' or 'flan-t5', read from a checkpoint's config.json.

    Raises:
        NotACheckpointError: config.json cannot be read, or its text_config is not what a checkpoint has.
    """
    return _read_config(path, text_model_family)


def _read_config(path: Path, read: Callable[[dict[str, Any]], Any]) -> Any:
    """`read(config)` on the folder's config.json, any failure of it one NotACheckpointError naming the file
    and, for a bad value, its key: a damaged config.json is never a ZeroDivisionError or TypeError."""
    file = path / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise BadConfigValue("the whole file", config, "a group of settings in braces")
        return read(config)
    except BadConfigValue as error:
        raise NotACheckpointError(
            f"The config.json in {path} has a bad value for {error.key} ({visible_value(error.value)}).",
            f"It should be {error.expected}: fix the file, or get the checkpoint again.",
        ) from None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError, ArithmeticError,
            RecursionError) as error:
        raise NotACheckpointError(
            f"The config.json in {path} could not be read: {_short(error)}.",
            "Fix the file, or get the checkpoint again.",
        ) from None


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

    shape = _read_config(resolved.path, kind_and_shape)
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
        raise _cache_error(name, resolved.path, files_problem)
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
        _check_weights_match(resolved.path, loading, model)  # else the missing layers answer with random weights
        if int8:  # quantized layer by layer on the device, so it never holds the full-width weights
            quantize_linear_layers(_Int8Parts(model), INT8_KEPT, target)
            model.to(target)  # type: ignore[arg-type] # transformers types its wrapped .to for a model argument
    except Exception as error:  # noqa: BLE001 - damaged files fail in many library-specific ways
        if isinstance(error, NotACheckpointError):
            raise
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


def _check_weights_match(path: Path, loading: dict[str, Any], model: Any) -> None:
    """Refuse weights that leave some of the model's weights unset (transformers fills them with random values):
    weights saved from another model (a retrieval checkpoint's in a chat folder), or a config.json naming another
    language model. Weights the model does not use are let through (see the module's docstring).

    A key reported missing whose tensor is shared with a weight that was loaded (tied: an LM head tied to the
    embeddings, T5's encoder and decoder embeddings tied to `shared`) is no gap: checkpoints may store it once.
    Only parameters count; buffers (position ids) are made by the model itself."""
    storage = {name: param.data_ptr() for name, param in model.named_parameters(remove_duplicate=False)}
    reported = set(loading.get("missing_keys") or ())
    loaded_storage = {ptr for name, ptr in storage.items() if name not in reported}
    missing = sorted(key for key in reported if key in storage and storage[key] not in loaded_storage)
    if missing:
        are = "is" if len(missing) == 1 else "are"
        raise NotACheckpointError(
            f"The weights in {path} do not match its config.json ({len(missing)} of the model's weights {are} "
            f"missing, e.g. {missing[0]}).",
            "Put the config.json and weights of one checkpoint together (save_pretrained writes both), or pass "
            "a complete checkpoint.",
        )


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
