"""PyTorch's default CPU kernels against oneDNN's packed linear layers, on the shapes a chat runs.

Each variant loads the checkpoint in a fresh process (the same loader the app uses; only
`BLIP2_CHAT_ONEDNN` differs), and times the language model on what a turn does: a full prefill,
a follow-up prefill that continues a KV cache, and decoding one token at a time; and the vision
encoder on one image. Processes alternate (default, oneDNN, default, oneDNN, ...) so a noisy
neighbour hits both; the median per variant is reported.

    python benchmarks/bench_cpu_kernels.py --arch blip2-opt-2.7b --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, write_result  # noqa: E402

PAST = 200  # tokens already in the KV cache: a chat a few turns in
FOLLOW_UP = 18  # new tokens of a follow-up turn: the last answer token, ". Question: ...? Answer:"


def measure(arch: str, repeats: int) -> dict[str, Any]:
    """In this process: load through the app's loader and time the shapes (seconds, best of `repeats`)."""
    import torch

    from chatbot.engine.loader import load_checkpoint

    dtype = "bfloat16" if arch.startswith("blip2-") else "float32"
    started = time.perf_counter()
    loaded = load_checkpoint(str(ensure_checkpoint(arch, dtype=dtype)), device="cpu", dtype="float32")
    load_seconds = time.perf_counter() - started
    model = loaded.model
    lm = model.language_model
    packed = sum(type(m).__name__ == "PackedLinear" for m in model.modules())
    hidden = lm.get_input_embeddings().weight.shape[1]
    generator = torch.Generator().manual_seed(0)

    def embeds(n: int) -> torch.Tensor:
        return torch.randn(1, n, hidden, generator=generator)

    def best(run: Any) -> float:
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            run()
            times.append(time.perf_counter() - began)
        return min(times)

    timings: dict[str, float] = {}
    with torch.inference_mode():
        if model.config.use_decoder_only_language_model:
            prefix = embeds(PAST)

            def continued(n: int) -> float:
                """Seconds for `n` new tokens after a PAST-token cache (the cache itself is not timed)."""
                cache = lm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1).past_key_values
                began = time.perf_counter()
                lm(inputs_embeds=embeds(n), attention_mask=torch.ones(1, PAST + n, dtype=torch.long),
                   past_key_values=cache, use_cache=True, logits_to_keep=1)
                return time.perf_counter() - began

            timings["full_prefill"] = best(lambda: lm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1))
            for n, key in ((FOLLOW_UP, "follow_up_prefill"), (1, "decode_step")):
                continued(n)  # warm-up
                timings[key] = min(continued(n) for _ in range(repeats))
        else:
            encoder = lm.get_encoder()
            timings["full_prefill"] = best(lambda: encoder(inputs_embeds=embeds(PAST)))
        pixels = torch.randn(1, 3, model.config.vision_config.image_size, model.config.vision_config.image_size)
        timings["vision_encoder"] = best(lambda: model.vision_model(pixel_values=pixels))
    return {"load_seconds": load_seconds, "packed_layers": packed, **timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="blip2-opt-2.7b")
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant, alternating")
    parser.add_argument("--repeats", type=int, default=3, help="timings per shape within a process (best kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["0", "1"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.arch, args.repeats)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "onednn": []}
    for round_ in range(args.rounds):
        for variant, switch in (("default", "0"), ("onednn", "1")):
            env = {**os.environ, "BLIP2_CHAT_ONEDNN": switch}
            done = subprocess.run([sys.executable, __file__, "--arch", args.arch, "--repeats", str(args.repeats),
                                   "--child", switch], env=env, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"round {round_ + 1} {variant}: " + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)
    keys = [k for k in runs["default"][0] if k not in ("packed_layers",)]
    medians = {variant: {k: statistics.median(r[k] for r in rows) for k in keys} for variant, rows in runs.items()}
    print(f"\n{args.arch}, float32, CPU: seconds (median of {args.rounds} processes)")
    print(f"{'shape':<20} {'default':>9} {'oneDNN':>9} {'speed-up':>9}")
    for key in keys:
        a, b = medians["default"][key], medians["onednn"][key]
        print(f"{key:<20} {a:>9.3f} {b:>9.3f} {a / b:>8.2f}x")
    path = write_result(f"cpu-kernels-{args.arch}", {
        "arch": args.arch, "past_tokens": PAST, "follow_up_tokens": FOLLOW_UP, "rounds": args.rounds,
        "repeats": args.repeats, "runs": runs, "medians": medians,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
