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
COMPILE_ENV = "BLIP2_CHAT_COMPILE"  # "1" compiles the decode step (TorchInductor) before the graphs capture it

__all__ = ["COMPILE_ENV", "GRAPHS_ENV", "StaticDecoding", "compile_wanted", "graph_blocker", "graphs_wanted",
           "set_up_static_decoding", "static_decoding_for"]

_NO = ("0", "false", "no", "off")


def graphs_wanted() -> bool:
    """False when the user turned CUDA graphs off with BLIP2_CHAT_CUDA_GRAPHS=0."""
    return os.environ.get(GRAPHS_ENV, "1").strip().lower() not in _NO


def compile_wanted() -> bool:
    """True when the user asked for a compiled decode step with BLIP2_CHAT_COMPILE=1 (off by default)."""
    value = os.environ.get(COMPILE_ENV, "0").strip().lower()
    return bool(value) and value not in _NO


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
    progress: Callable[[str], None] | None = None, compile_step: bool = False,
) -> tuple[StaticDecoding | None, str]:
    """The model's static decoding, its graphs captured on a GPU; and how answers will be decoded, in words.

    `compile_step`: compile the decode step first (TorchInductor: fewer, fused kernels per step). Where
    that fails (no compiler, an operation it cannot trace), the step is set up uncompiled and the
    words say why. (None, "generate (why)") where static decoding cannot be had at all: a model CUDA
    graphs cannot hold, or any failure while setting it up, which leaves the proven path (`generate`
    with a DynamicCache) in place.
    """
    use_graphs = device.type == "cuda" and graphs_wanted()
    blocker = graph_blocker(model) if use_graphs else None
    if blocker:
        return None, f"generate ({blocker})"
    decoding = "CUDA graphs" if use_graphs else "static cache"
    compile_note = ""
    if compile_step:
        static, failure = _built(model, dtype, device, context_tokens, use_graphs, progress, compile_step=True)
        if static is not None:
            return static, _described(static, decoding + ", compiled")
        compile_note = f"; not compiled ({failure})"
        if progress:
            progress(f"Could not compile the decode step ({failure}); it runs uncompiled "
                     f"(set {COMPILE_ENV}=0 to skip trying)")
    static, failure = _built(model, dtype, device, context_tokens, use_graphs, progress, compile_step=False)
    if static is None:
        return None, f"generate (static decoding unavailable: {failure})"
    return static, _described(static, decoding) + compile_note


def _built(
    model: Any, dtype: torch.dtype, device: torch.device, context_tokens: int, use_graphs: bool,
    progress: Callable[[str], None] | None, compile_step: bool,
) -> tuple[StaticDecoding | None, str]:
    """A static decoding, compiled and captured as asked; or None and what went wrong, in a few words."""
    from chatbot.engine.loader import is_out_of_memory

    try:
        with torch.inference_mode():
            static = static_decoding_for(model, dtype, device, context_tokens)
            if compile_step:
                if progress:
                    progress("Compiling the decode step (once per process)")
                static.compile()
            if use_graphs:
                if progress:
                    progress("Capturing the decode step as a CUDA graph")
                static.capture()
    except Exception as error:  # noqa: BLE001 - any failure leaves a proven path in place
        if is_out_of_memory(error) and device.type == "cuda":
            torch.cuda.empty_cache()
        first_line = (str(error).strip().splitlines() or [""])[0]
        return None, f"{type(error).__name__}: {first_line[:120]}"
    return static, ""


def _described(static: StaticDecoding, decoding: str) -> str:
    note = getattr(static, "prefill_note", "")
    return decoding + (f"; {note}" if note else "")
