"""Search index speed: query latency (exact and approximate), recall@10, build time, disk, memory, rescan.

Synthetic unit vectors of the real shape (32 x 256 per image): `clustered` (vectors around 3,000
concept centres plus noise, like real embeddings) and `random` (no structure: the hardest case for any
approximate search). The text encoder is not timed here. Results: benchmarks/results/search.json.

    nice -n 10 .venv/bin/python -m benchmarks.bench_search --sizes 10000 100000 300000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.core.photo_index.coarse import probes_for
from chatbot.core.photo_index.store import FileState, IndexStore

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINT = "synthetic/bench"
_COLD = """
import sys, time, numpy as np
t = time.perf_counter()
from chatbot.core.photo_index.store import IndexStore
store = IndexStore.open(__import__('pathlib').Path(sys.argv[1]), 'synthetic/bench', create=False)
query = np.load(sys.argv[2])
opened = time.perf_counter() - t
store.search(query[0], 10)
first = time.perf_counter() - t
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
print(opened, first, int(status['VmHWM'].split()[0]) * 1024, int(status['RssAnon'].split()[0]) * 1024)
"""


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(n: int, kind: str, seed: int = 0, step: int = 5000):  # type: ignore[no-untyped-def]
    """Yield [<=step, 32, 256] float16 blocks of `n` images, then return nothing; queries via `queries`."""
    rng = np.random.default_rng(seed)
    centres = unit(np.random.default_rng(99).standard_normal((3000, 256)).astype(np.float32))
    for start in range(0, n, step):
        m = min(step, n - start)
        if kind == "random":
            block = rng.standard_normal((m, 32, 256), dtype=np.float32)
        else:
            picks = np.take_along_axis(rng.integers(0, 3000, (m, 4)), rng.integers(0, 4, (m, 32)), axis=1)
            block = centres[picks] + 0.08 * rng.standard_normal((m, 32, 256), dtype=np.float32)
        yield unit(block).astype(np.float16)


def queries(kind: str, count: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "random":
        return unit(rng.standard_normal((count, 256))).astype(np.float32)
    centres = unit(np.random.default_rng(99).standard_normal((3000, 256)).astype(np.float32))
    return unit(centres[rng.integers(0, 3000, count)] + 0.08 * rng.standard_normal((count, 256))).astype(np.float32)


def disk_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())


def bench_size(n: int, kind: str, work: Path, n_queries: int, exact_queries: int,
               probes: tuple[int | None, ...] = (None,), keep: bool = False, old_code: Path | None = None) -> dict:
    folder = work / f"{kind}-{n}"
    reused = keep and (folder / "index.sqlite").exists()
    if not reused:
        shutil.rmtree(folder, ignore_errors=True)
    store = IndexStore.open(folder, CHECKPOINT, create=True)
    if reused and store.vectors.rows != n:
        raise SystemExit(f"{folder} holds {store.vectors.rows} images, not {n}: delete it or leave out --keep")
    started = time.perf_counter()
    row = 0
    for block in [] if reused else synthetic(n, kind):
        shas = [f"{i:064x}" for i in range(row, row + len(block))]
        files = [FileState(f"/photos/{row + i}.jpg", 1000, 1, sha) for i, sha in enumerate(shas)]
        store.add_batch(files, dict(zip(shas, block, strict=True)))
        row += len(block)
    append_s = time.perf_counter() - started
    started = time.perf_counter()
    store.refresh_approximate()  # reused: only files what is missing (derived files rebuilt if stale)
    train_s = time.perf_counter() - started
    qs = queries(kind, n_queries)
    np.save(work / "q.npy", qs)
    exact_top, exact_ms = [], []
    for q in qs[:exact_queries]:
        t = time.perf_counter()
        exact_top.append([h.path for h in store.search(q, 10, exact=True)])
        exact_ms.append((time.perf_counter() - t) * 1000)
    runs: dict[str, Any] = {}
    for probe in probes:  # the same index and queries for every setting, interleaved query by query
        runs["default" if probe is None else str(probe)] = (lambda p: lambda q: store.search(q, 10, probes=p))(probe)
    if old_code is not None:  # the committed code's default search, on the same files
        old = _import_old(old_code).IndexStore.open(folder, None, create=False)
        runs["old_code_default"] = lambda q: old.search(q, 10)
    approx_ms: dict[str, list[float]] = {name: [] for name in runs}
    recall: dict[str, list[float]] = {name: [] for name in runs}
    for search in runs.values():
        search(qs[-1])  # the first search of a kind reads its files; not what a user waits for again
    for i, q in enumerate(qs):
        for name, search in runs.items():
            t = time.perf_counter()
            found = [h.path for h in search(q)]
            approx_ms[name].append((time.perf_counter() - t) * 1000)
            if i < exact_queries:
                recall[name].append(len(set(found) & set(exact_top[i])) / 10)
    by_probes = {name: {"approx_ms_p50": round(float(np.median(approx_ms[name])), 1),
                        "approx_ms_p95": round(float(np.percentile(approx_ms[name], 95)), 1),
                        "recall_at_10": round(float(np.mean(recall[name])), 3)} for name in runs}
    first = next(iter(runs))
    if old_code is not None:
        old.close()
    cold = subprocess.run([sys.executable, "-c", _COLD, str(folder), str(work / "q.npy")], capture_output=True,
                          text=True, check=True).stdout.split()
    result = {
        "images": n, "kind": kind,
        "reused_index": reused,
        "append_s_per_1000_images": None if reused else round(append_s / n * 1000, 3),
        "train_approximate_s": None if reused else round(train_s, 1),
        "exact_ms_p50": round(float(np.median(exact_ms)), 1),
        "exact_ms_p95": round(float(np.percentile(exact_ms, 95)), 1), "exact_queries": len(exact_ms),
        **by_probes[first], "approx_queries": len(qs), "probes": first,
        "default_probes": probes_for(n, len(store._coarse.centres)) if store._coarse else None,
        "by_probes": by_probes,
        "disk_bytes_per_image": round(disk_bytes(folder) / n),
        "cold_open_s": round(float(cold[0]), 3), "cold_open_and_first_search_s": round(float(cold[1]), 3),
        "search_process_peak_rss_mb": round(int(cold[2]) / 2**20),  # counts the index's mapped file pages
        "search_process_private_mb": round(int(cold[3]) / 2**20),  # RssAnon: memory of its own
    }
    print(json.dumps(result), flush=True)
    store.close()
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _import_old(commit: Path) -> Any:
    """The photo index package as committed at `commit` (git), importable next to today's: the old
    code searches the same index files, so old and new are timed side by side in one process."""
    import importlib

    package = Path(tempfile.mkdtemp(prefix="old-photo-index-")) / "old_photo_index"
    package.mkdir()
    (package / "__init__.py").write_text("")
    split_out = ("folder", "database", "compaction", "recorded_paths",  # modules store.py was split into later
                 "access_errors", "index_files", "swap")  # and folder.py
    for name in ("coarse", "store", "vectors", *split_out):
        shown = subprocess.run(["git", "show", f"{commit}:chatbot/core/photo_index/{name}.py"],
                               capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if shown.returncode != 0 and name in split_out:
            continue  # a commit from before this module was split out of store.py
        shown.check_returncode()
        (package / f"{name}.py").write_text(shown.stdout.replace("chatbot.core.photo_index.", "old_photo_index."))
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("old_photo_index.store")


def bench_rescan(work: Path, files: int = 10_000) -> dict:
    """Index `files` tiny PNGs with a stand-in embedder, then time a re-run over the unchanged folder."""
    from PIL import Image

    from chatbot.core.photo_index.build import update_index

    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    for i in range(files):
        Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, i // 65536)).save(photos / f"{i:05}.png")
    store = IndexStore.open(work / "rescan-index", CHECKPOINT, create=True, rebuild=True)

    def embed(images: list) -> np.ndarray:  # stand-in: not a model benchmark
        return np.ones((len(images), 32, 256), np.float32) / 16

    first = update_index(store, [photos], recursive=False, embed=embed, batch_size=256)
    again = update_index(store, [photos], recursive=False, embed=embed, batch_size=256)
    result = {"files": files, "first_run_s": round(first.seconds, 2), "unchanged_rescan_s": round(again.seconds, 3),
              "unchanged": again.unchanged}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["clustered", "random"])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--exact-queries", type=int, default=5, help="queries whose recall is measured")
    parser.add_argument("--probes", nargs="+", default=["default"],
                        help="lists a search looks in, or `default` (scaled with the lists); several: measured "
                             "side by side (the first is reported)")
    parser.add_argument("--compare-commit", type=Path, default=None, metavar="REV",
                        help="also time the photo index code of this git commit, interleaved on the same index")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each built index in --work and reuse one of the right size on the next run")
    parser.add_argument("--no-rescan", action="store_true", help="leave out the rescan benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json", help="where the results go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-search-"))
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs", "sizes": [], "rescan": None}
    out["rescan"] = None if args.no_rescan else bench_rescan(work)
    for kind in args.kinds:
        for n in args.sizes:
            probes = tuple(None if p == "default" else int(p) for p in args.probes)
            out["sizes"].append(bench_size(n, kind, work, args.queries, args.exact_queries, probes,
                                           keep=args.keep, old_code=args.compare_commit))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("peak RSS of this process (MB):", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
