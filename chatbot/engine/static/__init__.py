"""Decoding over a static KV cache, one CUDA-graph replay per new token on a GPU.

`generate` runs the language model's Python code for every new token: hundreds of small kernel
launches, each paid for on the CPU. At batch size 1 on a GPU that costs far more than reading the
weights (OPT-2.7B on an H200: about 27 ms a token, where the weights take 1.3 ms to read). Here the
decode step (one token in, the next token's logits out) is captured once as a CUDA graph over a
KV cache whose tensors never move (`StaticCache`), and each token is one replay.

`generate` itself still prepares everything: the generation config, the logits processors and the
stopping criteria are its own. Its decoding loop is ours, handed in as `custom_generate`
(transformers' documented hook for that), and so is OPT's prefill, itself a graph for prompts of up
to 128 new tokens (padded to a bucket; longer ones take `generate`'s own prefill): the same processors and the same
token choice (`argmax`, or `multinomial` on the softmax, consuming the random generator exactly as
`generate` does), so the tokens equal `generate`'s. The tests check it in float32 against plain
`generate` for both families, with every decoding option, on the CPU (where the step runs without a
graph: same code, same cache) and on a GPU with graphs.

- OPT: one cache of the model's full context. The engine rewinds it to the prefix the next turn
  shares with the last (`rewind`), so KV-prefix reuse works as before. A decode step captured over
  the whole 2048 positions would read all of them every token (0.67 GB at OPT-2.7B, an eighth of
  the weights); so a graph is captured per attention window (256, 512, 1024, 2048 positions) and
  each token replays the smallest that holds the sequence so far (on an H200 that saved less than
  expected: docs/benchmarks.md, "Decode speed").
- FlanT5: a self-attention cache for the answer and a cross-attention cache of the encoder's 512
  positions. The encoder's output is padded to 512 and the padding masked out, so one graph serves
  every prompt length.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from chatbot.engine.static.base import StaticDecoding

GRAPHS_ENV = "BLIP2_CHAT_CUDA_GRAPHS"  # "0" decodes with plain `generate` on GPUs too

__all__ = ["GRAPHS_ENV", "StaticDecoding", "graph_blocker", "graphs_wanted", "set_up_static_decoding",
           "static_decoding_for"]


def graphs_wanted() -> bool:
    """False when the user turned CUDA graphs off with BLIP2_CHAT_CUDA_GRAPHS=0."""
    return os.environ.get(GRAPHS_ENV, "1").strip() not in ("0", "false", "no", "off")


def graph_blocker(model: Any) -> str | None:
    """Why this model's decode step cannot be captured as a CUDA graph, or None when it can.

    bitsandbytes' 8-bit layers split each input's outlier columns off (threshold 6), whose number
    depends on the values: the host must read it, which a graph cannot do.
    """
    for module in model.modules():
        state = getattr(module, "state", None)
        if type(module).__name__ == "Linear8bitLt" and getattr(state, "threshold", 0.0) > 0:
            return "bitsandbytes 8-bit layers read their outliers on the host, which CUDA graphs cannot hold"
    return None


def static_decoding_for(model: Any, dtype: torch.dtype, device: torch.device, encoder_positions: int) -> StaticDecoding:
    """The static decoding of this BLIP-2 model's language model (OPT or FlanT5)."""
    language_model = model.language_model
    if model.config.use_decoder_only_language_model:
        from chatbot.engine.static.decoder_only import DecoderOnlyDecoding

        return DecoderOnlyDecoding(language_model, dtype, device)
    from chatbot.engine.static.encoder_decoder import EncoderDecoderDecoding

    return EncoderDecoderDecoding(language_model, dtype, device, encoder_positions)


def set_up_static_decoding(
    model: Any, dtype: torch.dtype, device: torch.device, context_tokens: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[StaticDecoding | None, str]:
    """The model's static decoding, its graphs captured on a GPU; and how answers will be decoded, in words.

    (None, "generate (why)") where it cannot be had: a model CUDA graphs cannot hold, or any failure
    while setting it up, which leaves the proven path (`generate` with a DynamicCache) in place.
    """
    from chatbot.engine.loader import is_out_of_memory

    use_graphs = device.type == "cuda" and graphs_wanted()
    blocker = graph_blocker(model) if use_graphs else None
    if blocker:
        return None, f"generate ({blocker})"
    try:
        with torch.inference_mode():
            static = static_decoding_for(model, dtype, device, context_tokens)
            if use_graphs:
                if progress:
                    progress("Capturing the decode step as a CUDA graph")
                static.capture()
    except Exception as error:  # noqa: BLE001 - any failure leaves the proven path in place
        if is_out_of_memory(error):
            torch.cuda.empty_cache()
        return None, f"generate (static decoding unavailable: {type(error).__name__}: {str(error)[:120]})"
    decoding = "CUDA graphs" if use_graphs else "static cache"
    note = getattr(static, "prefill_note", "")
    return static, decoding + (f"; {note}" if note else "")
