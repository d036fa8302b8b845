"""`describe` on one machine vs `describe --ray` with 1 and 2 workers: images per second, end to end.

    nice -n 10 .venv/bin/python -m benchmarks.bench_cluster --images 16 --batch-size 4

Synthetic medium-opt checkpoint (random weights, real-ish shapes), 640x480 pictures, greedy, 30 new tokens.
Wall time includes loading the model (once per process or actor) and, with --ray, starting a local Ray
instance: the figure a user sees. Results go to benchmarks/results/cluster-describe-<arch>.json; the rows
of every run are compared with the one-machine run's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ensure_checkpoint, machine, make_picture, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="medium-opt")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from chatbot.cli import main as cli

    checkpoint = ensure_checkpoint(args.arch)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "pictures"
        folder.mkdir()
        for seed in range(args.images):
            make_picture(seed).image.save(folder / f"{seed:04d}.png")
        runs, reference = [], None
        for workers in [0, *args.workers]:
            out = Path(work) / f"alt-{workers}.jsonl"
            command = ["describe", str(folder), "--model", str(checkpoint), "--out", str(out),
                       "--batch-size", str(args.batch_size)]
            if workers:
                command += ["--ray", "--workers", str(workers)]
            started = time.perf_counter()
            assert cli(command) == 0
            seconds = time.perf_counter() - started
            text = out.read_text(encoding="utf-8")
            reference = reference or text
            runs.append({"ray_workers": workers or None, "seconds": round(seconds, 2),
                         "images_per_second": round(args.images / seconds, 3), "rows_identical": text == reference,
                         "command": "blip2-chat " + " ".join(command[:1] + ["PICTURES"] + command[2:3] + ["MEDIUM"]
                                                             + command[4:5] + ["alt.jsonl"] + command[6:])})
            print(runs[-1], flush=True)
    write_result(f"cluster-describe-{args.arch}", {"machine": machine(), "arch": args.arch, "images": args.images,
                                                    "batch_size": args.batch_size, "runs": runs})


if __name__ == "__main__":
    main()
