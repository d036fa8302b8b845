"""Where a follow-up turn's time goes on a GPU: torch.profiler around each of our turns, both decoders.

The same loaded model is wrapped twice: once decoding with plain `generate` over a DynamicCache
(the path the GPU took before static decoding; `static_decoding=False`), once with the static cache
and CUDA graphs (the default on GPUs). Each runs a chat of `--turns` questions with the naive loop's
turn interleaved (as in bench_turns.py, so the conditions match), and every one of our turns is
profiled: wall time, time to first token, the device's busy time, and the operations that took the
most host time. The slowest turn's trace is kept (Chrome trace format, gzipped).

    python benchmarks/profile_turns.py --arch blip2-opt-2.7b --out benchmarks/results
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.bench_turns import QUESTIONS, answer_in_whole_words, naive_turn  # noqa: E402
from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402

TOP = 10  # operations listed per turn


def profiler() -> Any:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    try:  # our turns run on the engine's model thread: record every thread's operations
        from torch._C._profiler import _ExperimentalConfig

        return profile(activities=activities, experimental_config=_ExperimentalConfig(profile_all_threads=True))
    except (ImportError, TypeError):
        return profile(activities=activities)


def summarize(prof: Any) -> dict[str, Any]:
    """The operations with the most host time, the kernels with the most device time, and the device's busy time."""
    averages = prof.key_averages()

    def device_time(event: Any) -> float:
        return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))

    host = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP]
    device = sorted(averages, key=device_time, reverse=True)[:TOP]
    return {
        "host_ops_ms": [(e.key, round(e.self_cpu_time_total / 1e3, 2), e.count) for e in host],
        "device_ops_ms": [(e.key[:90], round(device_time(e) / 1e3, 2), e.count) for e in device],
        "device_busy_ms": round(sum(device_time(e) for e in averages) / 1e3, 2),
        "host_total_ms": round(sum(e.self_cpu_time_total for e in averages) / 1e3, 2),
    }


def profiled_chat(engine: Any, options: Any, turns: int, seed: int, trace_dir: Path, label: str) -> list[dict]:
    from chatbot.core.conversation import Conversation

    engine.forget()
    chat = Conversation.with_engine(engine, make_picture(seed=seed), options)
    rows = []
    for turn in range(turns):
        question = QUESTIONS[turn % len(QUESTIONS)]
        naive_turn(engine, chat.image, chat.prepare(question).text, options)  # as in bench_turns: naive first
        synchronize()
        with profiler() as prof:
            started = time.perf_counter()
            "".join(chat.ask(question))
            synchronize()
            wall = time.perf_counter() - started
        stats = engine.last_stats
        trace = trace_dir / f"{label}-turn{turn + 1}.json"
        prof.export_chrome_trace(str(trace))
        row = {"turn": turn + 1, "wall_s": round(wall, 4), "ttft_s": round(stats.seconds_to_first_token, 4),
               "reused_prefix_tokens": stats.reused_prefix_tokens, "prompt_tokens": stats.prompt_tokens,
               "trace": str(trace), **summarize(prof)}
        rows.append(row)
        print(f"{label} turn {turn + 1}: wall {wall:.3f} s, TTFT {stats.seconds_to_first_token:.3f} s, device busy "
              f"{row['device_busy_ms']:.1f} ms; top host ops: "
              + ", ".join(f"{name} {ms:.1f} ms" for name, ms, _ in row["host_ops_ms"][:4]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="blip2-opt-2.7b")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import Blip2Engine
    from chatbot.engine.loader import load_checkpoint

    checkpoint = ensure_checkpoint(args.arch, dtype="bfloat16" if args.arch.startswith("blip2-") else "float32")
    loaded = load_checkpoint(str(checkpoint))
    options = GenerationOptions(max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens)
    trace_dir = Path("/tmp/profile-traces")
    trace_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"arch": args.arch, "device": loaded.device, "precision": loaded.precision}
    for label, static in (("generate", False), ("graphs", None)):
        engine = Blip2Engine(loaded, static_decoding=static)
        answer_in_whole_words(engine)
        warm = make_picture(seed=99)  # first calls pay one-off costs: keep them out, as bench_turns does
        "".join(engine.stream(warm, "Question: What is it? Answer:", options))
        print(f"{label}: decoding with {engine.decoding}", flush=True)
        result[label] = {"decoding": engine.decoding,
                         "turns": profiled_chat(engine, options, args.turns, 1, trace_dir, label)}
    slowest = max(result["generate"]["turns"] + result["graphs"]["turns"], key=lambda row: row["wall_s"])
    args.out.mkdir(parents=True, exist_ok=True)
    kept = args.out / f"profile-{args.arch}-slowest-turn.json.gz"
    with open(slowest["trace"], "rb") as source, gzip.open(kept, "wb") as target:
        shutil.copyfileobj(source, target)
    print(f"kept the slowest turn's trace ({slowest['trace']}) as {kept}")
    path = write_result(f"profile-{args.arch}-{loaded.device.split(':')[0]}-{loaded.precision}", result, args.out)
    print(f"wrote {path}")
    print(json.dumps({label: [(r["turn"], r["wall_s"], r["ttft_s"]) for r in result[label]["turns"]]
                      for label in ("generate", "graphs")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
