"""Image-embedding throughput of the retrieval engine by batch size, and one query's text-encoder latency.

What `blip2-chat index` pays per image (vision encoder -> Q-Former -> projection, the image processor
included) and what `search` pays per query before any index lookup. Runs on a synthetic checkpoint of
the real dimensions (ViT-g/14 at 224 px, 12-layer Q-Former, 32 queries), loaded through the app's loader
(on CPU: float32 with oneDNN-packed linear layers). Also times ITM re-scoring, which runs the vision
encoder again for every candidate image.

    nice python benchmarks/bench_embedding.py --batches 1,4,8,16 --text-runs 20
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402

QUERY = "a dog running on a sandy beach"


def timed(run: Any) -> float:
    synchronize()
    began = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - began


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(arch: str, device: str, dtype: str, batches: list[int], repeats: int, text_runs: int,
            itm_batch: int) -> dict[str, Any]:
    from chatbot.engine.retrieval import open_retrieval_engine

    checkpoint = ensure_checkpoint(arch)
    load_before = os.getloadavg()  # other work on a shared machine slows every figure: recorded beside them
    started = time.perf_counter()
    engine = open_retrieval_engine(str(checkpoint), device=device, dtype=dtype, quantize="none")
    load_seconds = time.perf_counter() - started
    pictures = [make_picture(seed) for seed in range(max(batches + [itm_batch]))]
    engine.image_embeddings(pictures[:1])  # warm-up: first-call allocations and kernel choices
    throughput = []
    for size in batches:
        batch = pictures[:size]
        seconds = [timed(lambda: engine.image_embeddings(batch)) for _ in range(repeats)]  # noqa: B023
        middle = statistics.median(seconds)
        throughput.append({"batch": size, "seconds": seconds, "images_per_second": size / middle,
                           "seconds_per_image": middle / size})
        print(f"batch {size:>3}: {size / middle:.3f} images/s ({middle / size:.2f} s per image)", flush=True)
    for _ in range(2):
        engine.text_embeddings([QUERY])  # warm-up
    text_ms = [1000 * timed(lambda: engine.text_embeddings([QUERY])) for _ in range(text_runs)]
    print(f"text encoder, one query: p50 {percentile(text_ms, 0.5):.1f} ms, p95 {percentile(text_ms, 0.95):.1f} ms")
    itm: dict[str, Any] = {}
    if itm_batch:
        itm_seconds = timed(lambda: engine.match_probabilities(pictures[:itm_batch], QUERY))
        itm = {"batch": itm_batch, "seconds": itm_seconds, "images_per_second": itm_batch / itm_seconds}
        print(f"ITM re-scoring, batch {itm_batch}: {itm_batch / itm_seconds:.3f} images/s")
    return {
        "arch": arch, "device": engine.device, "precision": engine.precision, "image_size": engine.image_size,
        "query_tokens": engine.query_tokens, "embedding_dim": engine.embedding_dim,
        "load_seconds": load_seconds, "image_embedding": throughput,
        "text_encoder_ms": {"query": QUERY, "runs": text_runs, "p50": percentile(text_ms, 0.5),
                            "p95": percentile(text_ms, 0.95), "all": text_ms},
        "itm_rescoring": itm,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,  # Linux reports KiB
        "index_bytes_per_image_float16": engine.query_tokens * engine.embedding_dim * 2,
        "load_average_before_after": [load_before, os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="blip2-itm-vit-g", help="a synthetic retrieval architecture")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batches", default="1,4,8,16", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per batch size (the median is used)")
    parser.add_argument("--text-runs", type=int, default=20)
    parser.add_argument("--itm-batch", type=int, default=8, help="images to re-score with ITM once (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); on a busy "
                        "machine 1 thread can beat 2 by far for small products such as the text encoder's")
    parser.add_argument("--out", default="embedding_throughput", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = measure(args.arch, args.device, args.dtype, [int(b) for b in args.batches.split(",")], args.repeats,
                     args.text_runs, args.itm_batch)
    print(write_result(args.out, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
