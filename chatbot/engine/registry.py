"""The BLIP-2 checkpoints we know, with the facts the loader and `models` table need.

Pure data (no torch), so the CLI can list models and resolve aliases without loading anything.
Parameter counts and memory figures come from the model cards and FACTS.md. Chat checkpoints
(`KNOWN_CHECKPOINTS`, what `models` lists and chat's `--model` takes) and retrieval checkpoints
(`KNOWN_RETRIEVAL_CHECKPOINTS`, for `index` and `search`) are kept apart: neither can do the other's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
DEFAULT_SEARCH_MODEL = "Salesforce/blip2-itm-vit-g"

# The language-model part of each hub checkpoint's config.json (the vision encoder and Q-Former are
# the same in all, and Blip2Config's defaults): enough for `shape.py` to size a model never downloaded.
HUB_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "opt-2.7b": {"model_type": "opt", "vocab_size": 50304, "hidden_size": 2560, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "ffn_dim": 10240, "max_position_embeddings": 2048},
    "opt-6.7b": {"model_type": "opt", "vocab_size": 50304, "hidden_size": 4096, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "ffn_dim": 16384, "max_position_embeddings": 2048},
    "flan-t5-xl": {"model_type": "t5", "vocab_size": 32128, "d_model": 2048, "d_kv": 64, "d_ff": 5120,
                   "num_layers": 24, "num_heads": 32, "feed_forward_proj": "gated-gelu",
                   "tie_word_embeddings": False},
    "flan-t5-xxl": {"model_type": "t5", "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240,
                    "num_layers": 24, "num_heads": 64, "feed_forward_proj": "gated-gelu",
                    "tie_word_embeddings": False},
}


@dataclass(frozen=True)
class KnownCheckpoint:
    """One hub checkpoint: what it is and roughly what it needs."""

    hub_id: str
    alias: str  # short name accepted by --model
    family: str  # "opt" or "flan-t5"
    params_billions: float
    context_tokens: int  # OPT: positions for image + prompt + answer; FlanT5: trained input length
    weights_gb: dict[str, float]  # approximate weight memory per precision: float16, 8bit, 4bit
    captions: bool = False  # -coco: fine-tuned for captions

    @property
    def is_encoder_decoder(self) -> bool:
        return self.family == "flan-t5"

    @property
    def config(self) -> dict[str, Any]:
        """The parts of the hub config.json that memory estimates need (see `shape.shape_from_config`)."""
        return {"num_query_tokens": 32, "text_config": HUB_TEXT_CONFIGS[self.alias.removesuffix("-coco")]}


def _checkpoint(
    family: str, size: str, params: float, gb: tuple[float, float, float], coco: bool = False
) -> KnownCheckpoint:
    """One hub checkpoint; the family fixes the name prefix and the context length."""
    name = f"{family}-{size}{'-coco' if coco else ''}"
    return KnownCheckpoint(
        hub_id=f"Salesforce/blip2-{name}", alias=name, family=family,
        params_billions=params, context_tokens=2048 if family == "opt" else 512,
        weights_gb={"float16": gb[0], "8bit": gb[1], "4bit": gb[2]}, captions=coco,
    )


KNOWN_CHECKPOINTS: tuple[KnownCheckpoint, ...] = (
    _checkpoint("opt", "2.7b", 3.74, (7.2, 3.6, 1.8)),
    _checkpoint("opt", "6.7b", 7.75, (15.5, 7.8, 4.3)),
    _checkpoint("flan-t5", "xl", 3.94, (7.9, 3.9, 2.2)),
    _checkpoint("flan-t5", "xxl", 12.2, (24.4, 12.2, 6.7)),
    _checkpoint("opt", "2.7b", 3.74, (7.2, 3.6, 1.8), coco=True),
    _checkpoint("opt", "6.7b", 7.75, (15.5, 7.8, 4.3), coco=True),
    _checkpoint("flan-t5", "xl", 3.94, (7.9, 3.9, 2.2), coco=True),
)


@dataclass(frozen=True)
class KnownRetrievalCheckpoint:
    """One hub checkpoint of `Blip2ForImageTextRetrieval`: ViT-g and a Q-Former with ITC and ITM heads."""

    hub_id: str
    alias: str  # short name accepted by `index`/`search --model`
    image_size: int  # pixels a side the vision encoder was trained at
    params_billions: float  # ViT-g (0.99 B), Q-Former with its text path (0.16 B), text embeddings, heads
    weights_gb: dict[str, float]  # approximate weight memory per precision: float16, 8bit, 4bit
    family: str = "retrieval"

    @property
    def config(self) -> dict[str, Any]:
        """The parts of the hub config.json that memory estimates need (see `shape.shape_from_config`)."""
        return {"architectures": ["Blip2ForImageTextRetrieval"], "num_query_tokens": 32,
                "vision_config": {"image_size": self.image_size},
                "qformer_config": {"use_qformer_text_input": True, "vocab_size": 30523}}


KNOWN_RETRIEVAL_CHECKPOINTS: tuple[KnownRetrievalCheckpoint, ...] = (
    # weights: 2 bytes a parameter; 8-bit and 4-bit shrink only the ViT's 0.98 B Linear weights (shape.py)
    KnownRetrievalCheckpoint("Salesforce/blip2-itm-vit-g", "itm-vit-g", 224, 1.17,
                             {"float16": 2.3, "8bit": 1.4, "4bit": 0.9}),
    KnownRetrievalCheckpoint("Salesforce/blip2-itm-vit-g-coco", "itm-vit-g-coco", 364, 1.17,
                             {"float16": 2.3, "8bit": 1.4, "4bit": 0.9}),
)


def _names(hub_id: str, alias: str) -> tuple[str, str, str]:
    return hub_id.lower(), alias.lower(), hub_id.split("/")[1].lower()


def find_checkpoint(name: str) -> KnownCheckpoint | None:
    """The known chat checkpoint named by hub id or alias (case-insensitive), else None."""
    wanted = name.strip().lower()
    return next((known for known in KNOWN_CHECKPOINTS if wanted in _names(known.hub_id, known.alias)), None)


def find_retrieval_checkpoint(name: str) -> KnownRetrievalCheckpoint | None:
    """The known retrieval checkpoint named by hub id or alias (case-insensitive), else None."""
    wanted = name.strip().lower()
    return next((known for known in KNOWN_RETRIEVAL_CHECKPOINTS if wanted in _names(known.hub_id, known.alias)),
                None)


def resolve_alias(name: str) -> str:
    """A hub id for an alias of either kind; anything unknown is returned unchanged (a directory or other hub id)."""
    known = find_checkpoint(name) or find_retrieval_checkpoint(name)
    return known.hub_id if known else name


def family_of(model_type: str) -> str:
    """Our family name for a transformers text-model type ("opt", "t5", ...)."""
    return "flan-t5" if model_type in ("t5", "mt5", "umt5") else "opt"
