"""Decode speed against the memory-bandwidth limit, and the cost of our streaming and caching.

At batch size 1 every new token reads all language-model weights once, so
tokens/s <= bandwidth / bytes of weights. This script measures this machine's read bandwidth,
then decode tokens/s of (a) our engine's stream and (b) plain `language_model.generate` on the
same inputs, interleaved, and reports both as a fraction of the limit and ours against plain.
With --compiled, a third contender runs in the same rounds: our engine with its decode step compiled
by TorchInductor before the CUDA graphs capture it (BLIP2_CHAT_COMPILE=1), with the seconds that
compiling and capturing took, and (on a GPU) the kernels one step launches, compiled and not.

    python benchmarks/bench_decode.py --arch blip2-opt-2.7b [--compiled]
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


def kernels_per_step(static: Any) -> int | None:
    """GPU kernels one decode step launches, run eagerly in the first attention window (None off a GPU).

    A graph replay launches the same kernels; the profiler sees them one by one only when they run eagerly.
    The step writes one cache position past what is held; the next turn starts from a fresh prefill anyway.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if static is None or static.device.type != "cuda":
        return None
    with torch.inference_mode(), static._attending(static.windows[0]):
        static._eager_step()
        synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            static._eager_step()
            synchronize()
    return sum(1 for event in trace.events() if event.device_type == DeviceType.CUDA)


def set_up_contender(engine: Any, compile_step: bool) -> tuple[Any, str, float]:
    """A second static decoding of the engine's model (compiled or not), how it decodes, and its set-up seconds."""
    from chatbot.engine.static import set_up_static_decoding

    started = time.perf_counter()
    static, decoding = engine.model_thread().submit(
        set_up_static_decoding, engine.model, engine._compute_dtype(), engine.device, engine.info.context_tokens,
        None, compile_step).result()
    synchronize()
    return static, decoding, time.perf_counter() - started


def rounds(
    engine: Any, contenders: dict[str, tuple[Any, str]], image: Any, prompt: str, inputs: dict[str, Any],
    options: Any, repeats: int,
) -> dict[str, list[float]]:
    """Decode rates of each contender (a static decoding for the engine, or none) and of plain generate, interleaved."""
    rates: dict[str, list[float]] = {name: [] for name in (*contenders, "plain")}
    for _ in range(repeats):
        for name, (static, decoding) in contenders.items():
            engine.static, engine.decoding = static, decoding
            rates[name].append(our_decode(engine, image, prompt, options))
        rates["plain"].append(plain_decode(engine, inputs, options))
    engine.static, engine.decoding = contenders["ours"]
    return rates


def summary(rates: dict[str, list[float]], limit: float) -> dict[str, Any]:
    """Median rates, each as a fraction of the bandwidth limit and against plain generate (and ours)."""
    plain = statistics.median(rates["plain"])
    figures: dict[str, Any] = {}
    for name, runs in rates.items():
        rate = statistics.median(runs)
        figures.update({f"{name}_tokens_per_s": rate, f"{name}_runs": runs, f"{name}_fraction_of_limit": rate / limit})
        if name != "plain":
            figures[f"{name}_over_plain"] = rate / plain
    if "compiled" in rates:
        figures["compiled_over_ours"] = figures["compiled_tokens_per_s"] / figures["ours_tokens_per_s"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="blip2-opt-2.7b")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--compiled", action="store_true",
                        help="also our engine with its decode step compiled (TorchInductor), in the same rounds")
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
    bandwidth = read_bandwidth(engine.info.device)
    weights = weight_bytes_per_token(engine.model)
    result = {
        "arch": args.arch, "device": engine.info.device, "precision": engine.info.precision, "tokens": args.tokens,
        "decoding": engine.decoding, "read_bandwidth_gb_s": bandwidth / 1e9, "lm_weight_gb_per_token": weights / 1e9,
        "limit_tokens_per_s": bandwidth / weights,
    }
    name = f"decode-{args.arch}-{engine.info.device.split(':')[0]}-{engine.info.precision}"
    contenders = {"ours": (engine.static, engine.decoding)}
    # First ours and plain alone, written at once: a compile cut short by a time limit keeps these.
    rates = rounds(engine, contenders, image, prompt, inputs, options, args.repeats)
    result.update(summary(rates, result["limit_tokens_per_s"]), ours_kernels_per_step=kernels_per_step(engine.static))
    print("wrote", write_result(name, result, args.out), flush=True)
    if args.compiled:
        static, decoding, seconds = set_up_contender(engine, compile_step=True)
        print(f"compiled step: {decoding}, set up in {seconds:.1f} s", flush=True)
        contenders["compiled"] = (static, decoding)
        rates = rounds(engine, contenders, image, prompt, inputs, options, args.repeats)  # all three, side by side
        result.update(summary(rates, result["limit_tokens_per_s"]), compiled_decoding=decoding,
                      compile_and_capture_s=seconds, compiled_kernels_per_step=kernels_per_step(static))
    for key, value in result.items():
        if not isinstance(value, list):
            print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    print("wrote", write_result(name, result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
