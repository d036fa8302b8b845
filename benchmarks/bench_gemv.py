"""Would one fused query-key-value product read faster than three? The decode step's linear layers, alone.

At batch size 1 a decode step's linear layers are matrix-vector products, bound by how fast the
weights are read. The H200 profile (docs/benchmarks.md, "Decode speed") found cuBLAS reading the
52 MB FFN matrices of OPT-2.7B at 3.3 TB/s but the 13 MB attention ones at 1.9 TB/s. This times, for
every layer of the model at once (distinct weights per layer, so no cache holds them), the attention
projections as OPT runs them (query, key and value apart, then the output), against query, key and
value as one product of a three-times-taller matrix, and the FFN's two products as the reference:
each variant one CUDA graph of all layers, replayed (on a CPU, run eagerly: a rehearsal, not a figure).
The answer says whether fusing the projections is worth building into the decode step.

    python benchmarks/bench_gemv.py                         # OPT-2.7B's shapes, bfloat16
    python benchmarks/bench_gemv.py --hidden 256 --ffn 1024 --layers 4 --dtype float32   # a quick rehearsal
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, synchronize, write_result  # noqa: E402


def timed(run: Callable[[], None], device: Any, replays: int) -> float:
    """Seconds one `run` takes: captured as a CUDA graph and replayed on a GPU, run eagerly elsewhere."""
    import torch

    if device.type == "cuda":
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        run = graph.replay
    run()
    synchronize()
    started = time.perf_counter()
    for _ in range(replays):
        run()
    synchronize()
    return (time.perf_counter() - started) / replays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2560, help="model width (OPT-2.7B: 2560)")
    parser.add_argument("--ffn", type=int, default=10240, help="FFN width (OPT-2.7B: 10240)")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (OPT-2.7B: 32)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    h, f, n = args.hidden, args.ffn, args.layers

    def weights(rows: int, cols: int) -> list[tuple[Any, Any]]:
        return [(torch.randn(rows, cols, device=device, dtype=dtype) * 0.02,
                 torch.randn(rows, device=device, dtype=dtype) * 0.02) for _ in range(n)]

    x = torch.randn(1, 1, h, device=device, dtype=dtype)
    wide = torch.randn(1, 1, f, device=device, dtype=dtype)
    qkv = weights(3 * h, h)  # the fused matrices; the separate ones are row blocks of them (same bytes)
    apart = [[(w[i * h:(i + 1) * h], b[i * h:(i + 1) * h]) for i in range(3)] for w, b in qkv]
    out_proj, fc1, fc2 = weights(h, h), weights(f, h), weights(h, f)

    def separate() -> None:  # as OPT runs them: three products of the same input
        for projections in apart:
            for w, b in projections:
                F.linear(x, w, b)

    def fused() -> None:
        for w, b in qkv:
            F.linear(x, w, b).split(h, dim=-1)

    def output() -> None:
        for w, b in out_proj:
            F.linear(x, w, b)

    def ffn() -> None:
        for (w1, b1), (w2, b2) in zip(fc1, fc2, strict=True):
            F.linear(x, w1, b1)
            F.linear(wide, w2, b2)

    element = torch.finfo(dtype).bits // 8
    variants = {  # name: (run, bytes of weights and biases it reads)
        "query, key, value apart": (separate, n * 3 * (h * h + h) * element),
        "query, key, value fused": (fused, n * 3 * (h * h + h) * element),
        "output projection": (output, n * (h * h + h) * element),
        "FFN (fc1, fc2)": (ffn, n * (2 * f * h + f + h) * element),
    }
    with torch.inference_mode():
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):  # interleaved: each round times every variant once
            for name, (run, _) in variants.items():
                seconds[name].append(timed(run, device, args.replays))
    rows = []
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (eager, a rehearsal)"
    print(f"{where}, {args.dtype}, {n} layers of width {h} (FFN {f}); per step, median of {args.rounds} rounds")
    for name, (_, size) in variants.items():
        median = statistics.median(seconds[name])
        rows.append({"variant": name, "ms_per_step": median * 1e3, "gb_per_step": size / 1e9,
                     "tb_per_s": size / median / 1e12, "rounds_ms": [s * 1e3 for s in seconds[name]]})
        print(f"  {name:<26} {median * 1e3:8.3f} ms  {size / 1e9:6.3f} GB  {size / median / 1e12:6.2f} TB/s")
    saving = rows[0]["ms_per_step"] - rows[1]["ms_per_step"]
    ratio = rows[1]["ms_per_step"] / rows[0]["ms_per_step"]
    print(f"fusing query, key and value saves {saving:.3f} ms a step ({ratio:.2f}x the time)")
    path = write_result(f"gemv-{device.type}-{args.dtype}-{h}", {
        "device": where, "dtype": args.dtype, "hidden": h, "ffn": f, "layers": n,
        "graphs": device.type == "cuda", "replays": args.replays, "rounds": args.rounds, "rows": rows,
        "fused_saving_ms_per_step": saving,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
