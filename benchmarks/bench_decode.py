"""Decode speed against the memory-bandwidth limit, and the cost of our streaming and caching.

At batch size 1 every new token reads all language-model weights once, so
tokens/s <= bandwidth / bytes of weights. This script measures this machine's read bandwidth,
then decode tokens/s of (a) our engine's stream and (b) plain `language_model.generate` on the
same inputs, interleaved, and reports both as a fraction of the limit and ours against plain.

    python benchmarks/bench_decode.py --arch blip2-opt-2.7b
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_turns import FirstTokenClock  # noqa: E402
from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402


def read_bandwidth(device: str, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second this device reads, from summing a large tensor (best of `repeats`)."""
    import torch

    data = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize()
        started = time.perf_counter()
        data.sum()
        synchronize()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best


def weight_bytes_per_token(model: Any) -> int:
    """Bytes of language-model weights one decode step reads (tied weights counted once).

    OPT: the whole language model. FlanT5: its decoder and LM head (the encoder ran once, in the
    prefill; the cross-attention keys and values are cached, so their projections are not read again,
    and are left out). Weights packed for oneDNN (chatbot/engine/cpu_kernels.py) and int8 weights are
    buffers, not parameters: counted too.
    """
    lm = model.language_model
    parts = [lm] if model.config.use_decoder_only_language_model else [lm.decoder, lm.lm_head]
    named = [*lm.named_parameters(), *lm.named_buffers()]
    skipped = {id(t) for name, t in named if ".EncDecAttention.k." in name or ".EncDecAttention.v." in name}
    seen: set[int] = set()
    total = 0
    tensors = [t for part in parts for t in (*part.parameters(), *part.buffers()) if id(t) not in skipped]
    for tensor in tensors:
        key = id(tensor) if tensor.is_mkldnn else tensor.data_ptr()  # packed tensors have no data pointer
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def decode_rate(first: float, end: float, tokens: int) -> float:
    return (tokens - 1) / (end - first)


def plain_decode(engine: Any, inputs: dict[str, Any], options: Any) -> float:
    import torch

    clock = FirstTokenClock()
    with torch.inference_mode():
        engine.model.language_model.generate(**inputs, **engine.generate_kwargs(options), streamer=clock)
    synchronize()
    end = time.perf_counter()
    return decode_rate(clock.first or end, end, options.max_new_tokens)


def our_decode(engine: Any, image: Any, prompt: str, options: Any) -> float:
    engine.forget()  # full prefill, like the plain call: only decoding is compared
    first = None
    for _chunk in engine.stream(image, prompt, options):
        first = first or time.perf_counter()
    synchronize()
    end = time.perf_counter()
    stats = engine.last_stats
    started = end - stats.seconds_total
    return decode_rate(started + stats.seconds_to_first_token, end, stats.new_tokens)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="blip2-opt-2.7b")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import open_engine

    checkpoint = ensure_checkpoint(args.arch, dtype="bfloat16" if args.arch.startswith("blip2-") else "float32")
    engine = open_engine(str(checkpoint), device=args.device, dtype=args.dtype)
    options = GenerationOptions(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    image = make_picture(seed=3)
    prompt = "Question: What is in the picture? Answer: two circles. Question: Which is bigger? Answer:"
    import torch

    with torch.inference_mode():
        inputs = engine.language_inputs(image, engine.input_ids(prompt))
    plain_decode(engine, inputs, options)  # warm-up
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(our_decode(engine, image, prompt, options))
        plain.append(plain_decode(engine, inputs, options))
    bandwidth = read_bandwidth(engine.info.device)
    weights = weight_bytes_per_token(engine.model)
    limit = bandwidth / weights
    result = {
        "arch": args.arch, "device": engine.info.device, "precision": engine.info.precision, "tokens": args.tokens,
        "decoding": engine.decoding,
        "read_bandwidth_gb_s": bandwidth / 1e9, "lm_weight_gb_per_token": weights / 1e9,
        "limit_tokens_per_s": limit, "ours_tokens_per_s": statistics.median(ours),
        "plain_tokens_per_s": statistics.median(plain), "ours_runs": ours, "plain_runs": plain,
    }
    result["ours_fraction_of_limit"] = result["ours_tokens_per_s"] / limit
    result["plain_fraction_of_limit"] = result["plain_tokens_per_s"] / limit
    result["ours_over_plain"] = result["ours_tokens_per_s"] / result["plain_tokens_per_s"]
    for key, value in result.items():
        if not isinstance(value, list):
            print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    name = f"decode-{args.arch}-{engine.info.device.split(':')[0]}-{engine.info.precision}"
    print("wrote", write_result(name, result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
