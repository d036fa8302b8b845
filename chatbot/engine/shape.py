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

Every value the counts read is checked first (`BadConfigValue`, naming its key): a damaged config.json
(a patch size of 0, a width written as text, a section that is not a group of settings) is one error the
loader can say, never a ZeroDivisionError or TypeError from the arithmetic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LARGEST_SIZE = 2**31 - 1  # far above any real width, count or length; keeps the estimates' floats finite


class BadConfigValue(ValueError):
    """A value in config.json that no BLIP-2 checkpoint can have: `key` is its dotted path
    ("vision_config.patch_size"), `expected` what it should be, in words."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key} is {value!r}; it should be {expected}")
        self.key = key
        self.value = value
        self.expected = expected


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested part of the config (vision_config, ...): absent or null means the defaults."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadConfigValue(key, value, "a group of settings in braces")
    return value


def _checked(
    section: str, values: dict[str, Any], counts: tuple[str, ...], switches: tuple[str, ...] = (),
    optional_counts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`values` (defaults merged in), once every count is a whole number from 1 to LARGEST_SIZE (or null,
    for `optional_counts`) and every switch is true or false."""
    for key in (*counts, *optional_counts):
        value = values.get(key)
        if value is None and key in optional_counts:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LARGEST_SIZE:
            raise BadConfigValue(f"{section}.{key}" if section else key, value,
                                 f"a whole number from 1 to {LARGEST_SIZE}")
    for key in switches:
        if not isinstance(values[key], bool):
            raise BadConfigValue(f"{section}.{key}" if section else key, values[key], "true or false")
    return values


def _top_counts(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The top-level counts `keys` (num_query_tokens, ...), checked, with transformers' defaults."""
    defaults = {"num_query_tokens": 32, "image_text_hidden_size": 256}
    return _checked("", {key: config.get(key, defaults[key]) for key in keys}, keys)


def text_model_family(config: dict[str, Any]) -> str:
    """'opt' or 'flan-t5': the family of a chat checkpoint's language model, from text_config.model_type."""
    from chatbot.engine.registry import family_of

    model_type = _section(config, "text_config").get("model_type", "opt")
    if not isinstance(model_type, str):
        raise BadConfigValue("text_config.model_type", model_type, 'a model type such as "opt" or "t5"')
    return family_of(model_type)


def check_architectures(config: dict[str, Any]) -> None:
    """`architectures`, which says a checkpoint's kind (`checkpoint_kind`): absent, or a list of class names."""
    value = config.get("architectures")
    if value is not None and not (isinstance(value, list) and all(isinstance(name, str) for name in value)):
        raise BadConfigValue("architectures", value, 'a list of class names such as ["Blip2ForConditionalGeneration"]')


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
    c = _checked("vision_config", {**VISION_DEFAULTS, **config},
                 ("hidden_size", "intermediate_size", "num_hidden_layers", "image_size", "patch_size",
                  "num_attention_heads"), ("qkv_bias",))
    if c["patch_size"] > c["image_size"]:
        raise BadConfigValue("vision_config.patch_size", c["patch_size"],
                             f"at most vision_config.image_size ({c['image_size']})")
    h, i, layers, patch = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["patch_size"]
    positions = (c["image_size"] // patch) ** 2 + 1  # patches plus the class token
    linear = layers * (4 * h * h + 2 * h * i)  # qkv (3h*h), projection, fc1, fc2
    per_layer_other = (3 * h if c["qkv_bias"] else 0) + h + i + h + 4 * h  # qkv, proj, fc1, fc2 biases; 2 norms
    other = layers * per_layer_other + h + 3 * patch * patch * h + h + positions * h + 2 * h
    return linear, other


def _qformer(config: dict[str, Any], queries: int) -> int:
    c = _checked("qformer_config", {**QFORMER_DEFAULTS, **config},
                 ("hidden_size", "intermediate_size", "num_hidden_layers", "cross_attention_frequency",
                  "encoder_hidden_size", "vocab_size", "max_position_embeddings"), ("use_qformer_text_input",))
    h, i, layers, encoder = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["encoder_hidden_size"]
    ffn = 2 * h * i + i + h + 2 * h  # one feed-forward block and its norm
    per_layer = 4 * h * h + 4 * h + 2 * h + ffn * (2 if c["use_qformer_text_input"] else 1)  # + text FFN
    cross_layers = len(range(0, layers, c["cross_attention_frequency"]))
    cross = 2 * h * h + 2 * encoder * h + 4 * h + 2 * h  # q, out from h; k, v from the vision width; norm
    return layers * per_layer + cross_layers * cross + 2 * h + queries * h


def _opt(config: dict[str, Any]) -> dict[str, int]:
    c = _checked("text_config", {**OPT_DEFAULTS, **config},
                 ("vocab_size", "hidden_size", "num_hidden_layers", "ffn_dim", "num_attention_heads",
                  "max_position_embeddings"), ("tie_word_embeddings",), ("word_embed_proj_dim",))
    v, h, layers, f = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["ffn_dim"]
    words = c.get("word_embed_proj_dim") or h
    linear = layers * (4 * h * h + 2 * h * f) + (2 * words * h if words != h else 0)  # + project_in/out
    other = layers * (9 * h + f) + v * words + (c["max_position_embeddings"] + 2) * h + 2 * h
    return {"linear": linear, "head": 0 if c["tie_word_embeddings"] else v * words, "other": other,
            "kv": 2 * layers * h, "context": c["max_position_embeddings"], "heads": c["num_attention_heads"],
            "ffn": f, "width": h}


def _t5(config: dict[str, Any]) -> dict[str, int]:
    c = _checked("text_config", {**T5_DEFAULTS, **config},
                 ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets",
                  "n_positions"), ("tie_word_embeddings",), ("num_decoder_layers",))
    if not isinstance(c["feed_forward_proj"], str):
        raise BadConfigValue("text_config.feed_forward_proj", c["feed_forward_proj"], 'a name such as "gated-gelu"')
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
    vision = {**VISION_DEFAULTS, **_section(config, "vision_config")}
    qformer = {**QFORMER_DEFAULTS, **_section(config, "qformer_config")}
    top = _top_counts(config, "num_query_tokens", "image_text_hidden_size")
    queries, e = top["num_query_tokens"], top["image_text_hidden_size"]
    vision_linear, vision_other = _vision(vision)  # checks the vision values
    qformer_params = _qformer(qformer, queries)  # checks the Q-Former values
    h = qformer["hidden_size"]
    embeddings = (qformer["vocab_size"] + qformer["max_position_embeddings"]) * h
    return ModelShape(
        family="retrieval", quantizable=vision_linear,
        kept=2 * h * e + 2 * h,  # vision_projection, text_projection, itm_head (768 -> 2)
        qformer=qformer_params, other=vision_other + embeddings + 2 * e + 2,
        kv_values_per_token=0,  # no cache: one forward per batch
        context_tokens=(vision["image_size"] // vision["patch_size"]) ** 2 + 1,  # the widest sequence: the ViT's
        attention_heads=vision["num_attention_heads"], ffn=vision["intermediate_size"],
    )


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """The shape of a BLIP-2 checkpoint from its config.json (a dict); missing keys take HF defaults.

    Raises:
        BadConfigValue: a value the counts read that no checkpoint can have (naming its key).
    """
    from chatbot.engine.checkpoint_kind import checkpoint_kind

    if not isinstance(config, dict):
        raise BadConfigValue("the whole file", config, "a group of settings in braces")
    check_architectures(config)
    _section(config, "qformer_config")  # `checkpoint_kind` reads it when there are no architectures
    if checkpoint_kind(config) == "retrieval":
        return _retrieval_shape(config)
    family = text_model_family(config)
    text = _section(config, "text_config")
    queries = _top_counts(config, "num_query_tokens")["num_query_tokens"]
    vision_linear, vision_other = _vision(_section(config, "vision_config"))
    qformer_config = {**QFORMER_DEFAULTS, **_section(config, "qformer_config")}
    qformer_params = _qformer(qformer_config, queries)  # checks the Q-Former values
    lm = _t5(text) if family == "flan-t5" else _opt(text)
    projection = qformer_config["hidden_size"] * lm["width"]
    return ModelShape(
        family=family,
        quantizable=vision_linear + lm["linear"],
        kept=projection + lm["head"],
        qformer=qformer_params,
        other=vision_other + lm["other"] + lm["width"],  # + the projection's bias
        kv_values_per_token=lm["kv"], context_tokens=lm["context"], attention_heads=lm["heads"], ffn=lm["ffn"],
    )


def read_shape(checkpoint: Path) -> ModelShape:
    """The shape of the checkpoint in a folder (its config.json)."""
    return shape_from_config(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")))
