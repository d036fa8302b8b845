"""How many parameters of each kind a BLIP-2 checkpoint holds, read from its config.json alone.

Pure Python (no torch): `blip2-chat models` and the loader's memory check use it before anything
is loaded. Parameters are grouped by how precision treats them (see `precision.py`):

- quantizable: the Linear weights bitsandbytes converts (vision encoder, language model body);
- kept: Linear weights left unquantized (language projection, an untied LM head, T5's FFN output `wo`);
- qformer: the Q-Former and query tokens, which transformers keeps out of quantization and in
  float32 whenever the rest is float16 (`_keep_in_fp32_modules`);
- other: embeddings, norms, biases and the patch convolution, which bitsandbytes never converts.

The counts are exact for what transformers 5 instantiates (tests check them against the model built
on the meta device), so a FlanT5 with untied embeddings counts its three embedding copies.

A retrieval checkpoint (`Blip2ForImageTextRetrieval`) has no language model: its config.json still
carries transformers' default text_config, so `checkpoint_kind.checkpoint_kind` reads what it is from its
`architectures` first. Its shape counts the ViT, the Q-Former with its text path, the Q-Former's text
embeddings and the two projections and ITM head (kept unquantized, like the language projection).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Blip2VisionConfig / Blip2QFormerConfig defaults: the ViT-g/14 and Q-Former every hub checkpoint uses.
VISION_DEFAULTS = {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "image_size": 224,
                   "patch_size": 14, "qkv_bias": True, "num_attention_heads": 16}
QFORMER_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "cross_attention_frequency": 2, "encoder_hidden_size": 1408, "use_qformer_text_input": False,
                    "vocab_size": 30522, "max_position_embeddings": 512}
OPT_DEFAULTS = {"vocab_size": 50272, "hidden_size": 768, "num_hidden_layers": 12, "ffn_dim": 3072,
                "num_attention_heads": 12, "max_position_embeddings": 2048, "tie_word_embeddings": True}
T5_DEFAULTS = {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8,
               "relative_attention_num_buckets": 32, "feed_forward_proj": "relu", "tie_word_embeddings": True,
               "n_positions": 512}


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts by precision treatment, plus what the KV cache and activations scale with."""

    family: str  # "opt", "flan-t5", or "retrieval" (no language model)
    quantizable: int  # Linear weights bitsandbytes converts: vision encoder and language-model body
    kept: int  # Linear weights left in the compute dtype: language projection, untied LM head, T5's `wo`
    qformer: int  # Q-Former and query tokens (never quantized; float32 when the rest is float16)
    other: int  # embeddings, norms, biases, patch convolution (never quantized)
    kv_values_per_token: int  # keys and values cached per context token, all layers together
    context_tokens: int  # OPT: positions; FlanT5: input tokens (its decoder is budgeted as many)
    attention_heads: int  # language model's heads (prefill attention scores scale with them)
    ffn: int  # language model's feed-forward width (the widest activation per token)

    @property
    def params(self) -> int:
        return self.quantizable + self.kept + self.qformer + self.other


def _vision(config: dict[str, Any]) -> tuple[int, int]:
    """(Linear weights, other parameters) of the ViT."""
    c = {**VISION_DEFAULTS, **config}
    h, i, layers, patch = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["patch_size"]
    positions = (c["image_size"] // patch) ** 2 + 1  # patches plus the class token
    linear = layers * (4 * h * h + 2 * h * i)  # qkv (3h*h), projection, fc1, fc2
    per_layer_other = (3 * h if c["qkv_bias"] else 0) + h + i + h + 4 * h  # qkv, proj, fc1, fc2 biases; 2 norms
    other = layers * per_layer_other + h + 3 * patch * patch * h + h + positions * h + 2 * h
    return linear, other


def _qformer(config: dict[str, Any], queries: int) -> int:
    c = {**QFORMER_DEFAULTS, **config}
    h, i, layers, encoder = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["encoder_hidden_size"]
    ffn = 2 * h * i + i + h + 2 * h  # one feed-forward block and its norm
    per_layer = 4 * h * h + 4 * h + 2 * h + ffn * (2 if c["use_qformer_text_input"] else 1)  # + text FFN
    cross_layers = len(range(0, layers, c["cross_attention_frequency"]))
    cross = 2 * h * h + 2 * encoder * h + 4 * h + 2 * h  # q, out from h; k, v from the vision width; norm
    return layers * per_layer + cross_layers * cross + 2 * h + queries * h


def _opt(config: dict[str, Any]) -> dict[str, int]:
    c = {**OPT_DEFAULTS, **config}
    v, h, layers, f = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["ffn_dim"]
    words = c.get("word_embed_proj_dim") or h
    linear = layers * (4 * h * h + 2 * h * f) + (2 * words * h if words != h else 0)  # + project_in/out
    other = layers * (9 * h + f) + v * words + (c["max_position_embeddings"] + 2) * h + 2 * h
    return {"linear": linear, "head": 0 if c["tie_word_embeddings"] else v * words, "other": other,
            "kv": 2 * layers * h, "context": c["max_position_embeddings"], "heads": c["num_attention_heads"],
            "ffn": f, "width": h}


def _t5(config: dict[str, Any]) -> dict[str, int]:
    c = {**T5_DEFAULTS, **config}
    v, d, f, heads = c["vocab_size"], c["d_model"], c["d_ff"], c["num_heads"]
    enc_layers = c["num_layers"]
    dec_layers = c.get("num_decoder_layers") or enc_layers
    inner = heads * c["d_kv"]
    ffn_in = (2 if str(c["feed_forward_proj"]).startswith("gated") else 1) * d * f  # wi (wi_0 and wi_1 when gated)
    linear = enc_layers * (4 * d * inner + ffn_in) + dec_layers * (8 * d * inner + ffn_in)
    # T5's FFN output `wo` is in its `_keep_in_fp32_modules`, so bitsandbytes leaves it unquantized too
    wo = (enc_layers + dec_layers) * f * d
    tied = c["tie_word_embeddings"]
    buckets = 2 * c["relative_attention_num_buckets"] * heads  # first encoder and decoder layer each
    other = enc_layers * 2 * d + dec_layers * 3 * d + 2 * d + buckets + v * d * (1 if tied else 3)
    return {"linear": linear, "head": wo + (0 if tied else v * d), "other": other,
            "kv": 2 * 2 * dec_layers * inner,  # self- and cross-attention keys and values
            "context": c["n_positions"], "heads": heads, "ffn": f, "width": d}


def _retrieval_shape(config: dict[str, Any]) -> ModelShape:
    """A retrieval checkpoint: ViT, Q-Former with its text path and embeddings, two projections, ITM head."""
    vision = {**VISION_DEFAULTS, **(config.get("vision_config") or {})}
    qformer = {**QFORMER_DEFAULTS, **(config.get("qformer_config") or {})}
    queries = int(config.get("num_query_tokens", 32))
    h, e = qformer["hidden_size"], int(config.get("image_text_hidden_size", 256))
    vision_linear, vision_other = _vision(vision)
    embeddings = (qformer["vocab_size"] + qformer["max_position_embeddings"]) * h
    return ModelShape(
        family="retrieval", quantizable=vision_linear,
        kept=2 * h * e + 2 * h,  # vision_projection, text_projection, itm_head (768 -> 2)
        qformer=_qformer(qformer, queries), other=vision_other + embeddings + 2 * e + 2,
        kv_values_per_token=0,  # no cache: one forward per batch
        context_tokens=(vision["image_size"] // vision["patch_size"]) ** 2 + 1,  # the widest sequence: the ViT's
        attention_heads=vision["num_attention_heads"], ffn=vision["intermediate_size"],
    )


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """The shape of a BLIP-2 checkpoint from its config.json (a dict); missing keys take HF defaults."""
    from chatbot.engine.checkpoint_kind import checkpoint_kind
    from chatbot.engine.registry import family_of

    if checkpoint_kind(config) == "retrieval":
        return _retrieval_shape(config)
    text = config.get("text_config") or {}
    family = family_of(text.get("model_type", "opt"))
    queries = int(config.get("num_query_tokens", 32))
    vision_linear, vision_other = _vision(config.get("vision_config") or {})
    qformer_config = {**QFORMER_DEFAULTS, **(config.get("qformer_config") or {})}
    lm = _t5(text) if family == "flan-t5" else _opt(text)
    projection = qformer_config["hidden_size"] * lm["width"]
    return ModelShape(
        family=family,
        quantizable=vision_linear + lm["linear"],
        kept=projection + lm["head"],
        qformer=_qformer(qformer_config, queries),
        other=vision_other + lm["other"] + lm["width"],  # + the projection's bias
        kv_values_per_token=lm["kv"], context_tokens=lm["context"], attention_heads=lm["heads"], ffn=lm["ffn"],
    )


def read_shape(checkpoint: Path) -> ModelShape:
    """The shape of the checkpoint in a folder (its config.json)."""
    return shape_from_config(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")))
