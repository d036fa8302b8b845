"""Images per second of `describe` at several batch sizes (1, 4 and 8 unless told), side by side in one run.

The real pipeline (`chatbot.frontends.describe.run.describe`: read and decode each file, encode the images,
generate, clean the caption up, hand over the row) runs over the same folder of generated
pictures once per batch size, rounds interleaved so no size always meets a warmer machine.
Every image's answer is fixed at `--answer-tokens` tokens (min = max: random weights would
otherwise stop anywhere), and the image-embedding cache is emptied before each pass so every
pass encodes every image, as a first run over a folder does.

    python benchmarks/bench_describe.py                         # medium-opt, 24 images, auto device
    python benchmarks/bench_describe.py --device cpu --images 16 --threads 1   # a shared, busy CPU
    python benchmarks/bench_describe.py --arch blip2-opt-2.7b --images 64 --batch-sizes 1,8,32,64 --rounds 1  # GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402

BATCH_SIZES = (1, 4, 8)  # the default; --batch-sizes changes it


def device_slug(engine: Any) -> str:
    """'cpu', or the GPU's name in file-name form ('nvidia-h100-80gb-hbm3')."""
    import torch

    if engine.info.device.startswith("cuda"):
        name = torch.cuda.get_device_name(engine.device)
        return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())
    return "cpu"


def write_pictures(folder: Path, count: int) -> list[str]:
    """`count` different generated pictures (640x480 PNG) in `folder`; their paths."""
    paths = []
    for seed in range(count):
        path = folder / f"picture-{seed:03d}.png"
        make_picture(seed=seed).image.save(path)
        paths.append(str(path))
    return paths


def one_pass(engine: Any, paths: list[str], options: Any, batch_size: int) -> tuple[float, list[Any]]:
    from chatbot.frontends.describe.run import describe

    engine.images.clear()  # every pass encodes every image
    rows: list[Any] = []
    synchronize()
    started = time.perf_counter()
    summary = describe(engine, paths, rows.append, options=options, batch_size=batch_size)
    synchronize()
    seconds = time.perf_counter() - started
    if summary.described != len(paths):
        raise RuntimeError(f"batch size {batch_size}: {summary.sentence()}")
    return seconds, rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import open_engine
    from chatbot.frontends.describe.alt_text import DEFAULT_REPETITION_PENALTY

    checkpoint = ensure_checkpoint(args.arch, dtype="bfloat16" if args.arch.startswith("blip2-") else "float32")
    engine = open_engine(str(checkpoint), device=args.device, dtype=args.dtype)
    sizes = tuple(int(size) for size in args.batch_sizes.split(","))
    options = GenerationOptions(max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens,
                                repetition_penalty=DEFAULT_REPETITION_PENALTY)
    with tempfile.TemporaryDirectory(prefix="bench-describe-") as folder:
        paths = write_pictures(Path(folder), args.images)
        for size in sizes:  # warm-up: kernels, allocator, first-call costs
            one_pass(engine, paths[:size], options, size)
        seconds: dict[int, list[float]] = {size: [] for size in sizes}
        texts: dict[int, list[str]] = {}
        for round_ in range(args.rounds):
            order = sizes if round_ % 2 == 0 else tuple(reversed(sizes))
            for size in order:
                took, rows = one_pass(engine, paths, options, size)
                seconds[size].append(took)
                texts[size] = [row.alt_text for row in rows]
                print(f"round {round_ + 1} batch {size}: {len(paths) / took:.2f} images/s", flush=True)
    identical = all(texts[size] == texts[sizes[0]] for size in sizes)
    rows_out = []
    for size in sizes:
        median = statistics.median(seconds[size])
        rows_out.append({
            "batch_size": size, "seconds_median": round(median, 4), "seconds_all": [round(s, 4) for s in seconds[size]],
            "images_per_second": round(len(paths) / median, 3),
            "tokens_per_second": round(len(paths) * args.answer_tokens / median, 1),
        })
    for row in rows_out:
        row["speedup_over_batch_1"] = round(row["images_per_second"] / rows_out[0]["images_per_second"], 2)
    return {
        "arch": args.arch, "device": engine.info.device, "precision": engine.info.precision, "images": len(paths),
        "decoding": engine.decoding,
        "answer_tokens": args.answer_tokens, "rounds": args.rounds, "identical_text_across_batch_sizes": identical,
        "rows": rows_out, "slug": device_slug(engine),
    }


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| batch size | images/s | tokens/s | vs batch 1 |", "|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['batch_size']} | {row['images_per_second']:.2f} | {row['tokens_per_second']:.0f} | "
                     f"{row['speedup_over_batch_1']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="medium-opt", help="synthetic architecture (default: medium-opt)")
    parser.add_argument("--images", type=int, default=24, help="pictures in the folder (default: 24)")
    parser.add_argument("--answer-tokens", type=int, default=30, help="tokens per description (default: 30)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per batch size; the median counts (default: 3)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated batch sizes, the first being the one others are compared with")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default: torch's choice). On a shared, busy CPU use 1: "
                             "a team of OpenMP threads that spin-wait for each other can run several times slower")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run(args)
    path = write_result(f"describe-{result.pop('slug')}-{result['arch']}", result, args.out)
    print(f"\n{result['arch']} on {result['device']} ({result['precision']}), {result['images']} images, "
          f"{result['answer_tokens']} tokens each; same text at every batch size: "
          f"{result['identical_text_across_batch_sizes']}")
    print(markdown_table(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
