"""Which kind of BLIP-2 checkpoint a name or folder holds: chat or retrieval, and the refusal of the wrong one.

Both kinds are `model_type: blip-2` with the same vision encoder and Q-Former, but only a chat checkpoint
(`Blip2ForConditionalGeneration`) has a language model, and only a retrieval one
(`Blip2ForImageTextRetrieval`) has the Q-Former's text path, the projections and the ITM head. A
retrieval config.json still carries transformers' default text_config, so the kind is read from its
`architectures`. Pure Python (no torch): the loader asks before loading, and before downloading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatbot.engine.registry import find_checkpoint, find_retrieval_checkpoint
from chatbot.errors import NotACheckpointError

KINDS = ("chat", "retrieval")
RETRIEVAL_CLASS = "Blip2ForImageTextRetrieval"


def checkpoint_kind(config: dict[str, Any]) -> str:
    """"retrieval" for a `Blip2ForImageTextRetrieval` checkpoint, else "chat" (from its config.json).

    The saved `architectures` says it; without them, a Q-Former with a text input is a retrieval model.
    """
    architectures = config.get("architectures") or []
    if architectures:
        return "retrieval" if RETRIEVAL_CLASS in architectures else "chat"
    return "retrieval" if (config.get("qformer_config") or {}).get("use_qformer_text_input") else "chat"


def wrong_kind(name: str, found: str) -> NotACheckpointError:
    """The error for a checkpoint of kind `found` given where the other kind is wanted."""
    if found == "retrieval":
        return NotACheckpointError(
            f"{name} is a BLIP-2 retrieval checkpoint (image-text matching), which can search images but not chat.",
            "Use it with `blip2-chat index` and `search`, and pass a chat model to --model (see `blip2-chat models`).",
        )
    return NotACheckpointError(
        f"{name} is a BLIP-2 chat checkpoint, which has no image-text retrieval heads to search with.",
        "Use a retrieval checkpoint such as Salesforce/blip2-itm-vit-g (alias itm-vit-g) for indexing and search.",
    )


def check_known_name(name: str, kind: str) -> None:
    """Refuse a registry name (hub id or alias) of the other kind, before anything is downloaded."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    other = find_retrieval_checkpoint(name) if kind == "chat" else find_checkpoint(name)
    if other is not None:
        raise wrong_kind(other.hub_id, "retrieval" if kind == "chat" else "chat")


def check_folder(path: Path, kind: str, name: str) -> None:
    """Refuse a checkpoint folder (already checked to be BLIP-2) whose config.json is of the other kind."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    found = checkpoint_kind(config)
    if found != kind:
        raise wrong_kind(name, found)
    if kind == "retrieval" and not (config.get("qformer_config") or {}).get("use_qformer_text_input"):
        raise NotACheckpointError(  # transformers would build it without the text path and drop those weights
            f"The retrieval checkpoint {name} has no Q-Former text input (qformer_config.use_qformer_text_input "
            "is not true), so it cannot read a query.",
            "Set it to true in its config.json if the weights hold the text path, or use Salesforce/blip2-itm-vit-g.",
        )
