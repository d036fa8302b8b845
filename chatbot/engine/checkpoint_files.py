"""Checks of a checkpoint's own files, made before and after loading, each failure one user error.

Before loading, a folder or cached copy is checked (`checkpoint_problem`, `processor_files_problem`):
config.json of a BLIP-2 model, safetensors weights (every shard), tokenizer files, image processor settings;
and every config value that is read is checked (`read_config`, with shape.py), so a damaged config.json is
never the library's traceback. After loading, weights that leave some of the model's weights unset are
refused (`check_weights_match`: transformers would fill them with random values). Weights the model does
not use (`unexpected_keys`) are let through: the hub checkpoints could not be checked for benign extras
here, and refusing them could refuse a real checkpoint. Pure Python (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.engine.shape import BadConfigValue, text_model_family
from chatbot.errors import NotACheckpointError


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
        return FolderProblem(f"has a config.json that cannot be read ({error_summary(error)})",
                             "Check the file's permissions, or save the checkpoint again.", missing=False)
    except ValueError as error:  # json.JSONDecodeError: says the line and column
        return FolderProblem(f"has a config.json that is not valid JSON ({error_summary(error)})",
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


def read_family(path: Path) -> str:
    """'opt' or 'flan-t5', read from a checkpoint's config.json.

    Raises:
        NotACheckpointError: config.json cannot be read, or its text_config is not what a checkpoint has.
    """
    return read_config(path, text_model_family)


def read_config(path: Path, read: Callable[[dict[str, Any]], Any]) -> Any:
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
            f"The config.json in {path} could not be read: {error_summary(error)}.",
            "Fix the file, or get the checkpoint again.",
        ) from None


def check_weights_match(path: Path, loading: dict[str, Any], model: Any) -> None:
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


def error_summary(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's text, cut at a word boundary with "…" when over `limit` characters."""
    text = str(error).strip().splitlines()
    line = (text[0].strip() if text else type(error).__name__).rstrip(".")
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,;:.") + "…"
