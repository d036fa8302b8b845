"""Markdown for docs/benchmarks.md from a GPU run's results: the decode table and "Against the targets".

After `bash benchmarks/gpu_checks.sh` on a GPU, unpack its results.tar.gz into a folder and run

    python benchmarks/gpu_report.py [RESULTS_DIR] [--opt blip2-opt-2.7b] [--t5 blip2-flan-t5-xl]

(RESULTS_DIR defaults to benchmarks/results/). It reads turns-{arch}-cuda-*.json, decode-{arch}-cuda-*.json,
precision-cuda-{arch}.json, describe-*-{arch}.json and gemv-cuda-*.json (bfloat16 preferred where several
match) and prints the tables, the ratios computed from the figures. A missing file makes its rows say "not measured".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Row = tuple[str, str, str]  # target, measured, met?
Data = dict[str, Any] | None


def find(folder: Path, pattern: str) -> Path | None:
    """The GPU result file matching `pattern`: bfloat16 first, CPU results never; None where there is none."""
    matches = [path for path in sorted(folder.glob(pattern)) if "-cpu-" not in path.name]
    ranked = sorted(matches, key=lambda path: (not path.name.endswith("-bfloat16.json"), "bfloat16" not in path.name))
    return ranked[0] if ranked else None


def load(folder: Path, pattern: str) -> tuple[str, Data]:
    """The file's name and its figures, or the pattern and None where no file matches."""
    path = find(folder, pattern)
    return (path.name, json.loads(path.read_text())) if path else (pattern, None)


def missing(name: str) -> str:
    return f"not measured (no {name})"


def tok(rate: float) -> str:
    return f"{rate:.0f} tok/s"


def follow_up_row(name: str, turns: Data) -> Row:
    """Target 1: our first token at most 0.5x the naive loop's on every follow-up (turn 2 on)."""
    target = "follow-up first token at most 0.5x the naive loop's from turn 2 on (OPT)"
    if turns is None:
        return target, missing(name), "-"
    ratios = {row["turn"]: row["ours_ttft"] / row["naive_ttft"] for row in turns["rows"] if row["turn"] >= 2}
    if not ratios:
        return target, f"not measured (no follow-up turn in {name})", "-"
    over = {turn: ratio for turn, ratio in ratios.items() if ratio > 0.5}
    measured = (f"{min(ratios.values()):.2f}-{max(ratios.values()):.2f}x; median "
                f"{statistics.median(ratios.values()):.2f}x; {len(ratios) - len(over)} of {len(ratios)} "
                "follow-ups at or under 0.5x")
    met = "no: " + ", ".join(f"turn {turn} at {ratio:.2f}x" for turn, ratio in over.items()) if over else "yes"
    return target, measured, met


def whole_turn_row(name: str, turns: Data) -> Row:
    """Target 2: FlanT5 never slower than the naive loop per whole turn."""
    target = "FlanT5 never slower than naive per whole turn"
    if turns is None:
        return target, missing(name), "-"
    rows = turns["rows"]
    speedups = [row["naive_total"] / row["ours_total"] for row in rows]
    slower = [f"turn {row['turn']} at {row['naive_total'] / row['ours_total']:.2f}x" for row in rows
              if row["ours_total"] > row["naive_total"]]
    measured = f"{min(speedups):.1f}-{max(speedups):.1f}x faster on each of {len(rows)} turns"
    return target, measured, ("no: " + ", ".join(slower) if slower else "yes")


def decode_rows(name: str, decode: Data, label: str, goal: bool) -> list[Row]:
    """Targets 3 and 4: decode tokens/s, fraction of the limit and against plain generate; the compiled step too.

    `goal`: judge against the issue's 40% of the limit and 5x plain generate; otherwise "measured".
    """
    if decode is None:
        return [(f"decode ({label})", missing(name), "-")]
    precision = decode.get("precision", "?")
    limit = decode["limit_tokens_per_s"]
    target = (f"decode at 40% of the bandwidth limit (about {0.4 * limit:.0f} tok/s), 5x plain generate "
              f"({label}, {precision})" if goal else f"decode ({label}, {precision})")
    rows = []
    for who, what in (("ours", target), ("compiled", "the same, the decode step compiled (BLIP2_CHAT_COMPILE=1)")):
        rate = decode.get(f"{who}_tokens_per_s")
        if rate is None:
            continue
        fraction, over_plain = decode[f"{who}_fraction_of_limit"], decode[f"{who}_over_plain"]
        notes = [f"{tok(rate)}, {fraction:.0%}; {over_plain:.1f}x plain"]
        if who == "compiled":
            decoding = decode.get("compiled_decoding") or ""
            if ", compiled" not in decoding:
                notes.append(f"step not compiled: {decoding or 'unknown'}")
            if decode.get("compile_and_capture_s") is not None:
                notes.append(f"compile and capture {decode['compile_and_capture_s']:.1f} s")
            kernels = [f"{decode[key]} {word}" for key, word in (("ours_kernels_per_step", "uncompiled"),
                                                                  ("compiled_kernels_per_step", "compiled"))
                       if decode.get(key) is not None]
            if kernels:
                notes.append("kernels a step: " + ", ".join(kernels))
        short = [text for ok, text in ((fraction >= 0.4, f"{fraction:.0%} of the limit"),
                                       (over_plain >= 5, f"{over_plain:.1f}x plain")) if not ok]
        met = "measured" if not goal else "no: " + ", ".join(short) if short else "yes"
        rows.append((what, "; ".join(notes), met))
    return rows


def precision_row(name: str, precision: Data) -> Row:
    """Target 5: 8-bit worth using, i.e. our int8 weight-only decodes faster than bitsandbytes' 8-bit."""
    target = "8-bit worth using; auto prefers the fastest that fits"
    if precision is None:
        return target, missing(name), "-"
    rates = {row["precision"]: row["tokens_per_second"] for row in precision["rows"] if "tokens_per_second" in row}
    measured = "decode " + ", ".join(f"{kind} {rate:.0f}" for kind, rate in rates.items()) + " tok/s"
    if "int8" not in rates or "8bit" not in rates:
        return target, measured, "measured (no int8 or no 8bit row to compare)"
    faster = rates["int8"] > rates["8bit"]
    return target, measured, "yes" if faster else f"no: int8 {tok(rates['int8'])} against 8bit's {tok(rates['8bit'])}"


def describe_row(name: str, describe: Data) -> Row:
    """Target 6: describe's images/s at each batch size."""
    if describe is None:
        return "describe images/s at each batch size", missing(name), "-"
    rows = describe["rows"]
    sizes = ", ".join(str(row["batch_size"]) for row in rows)
    return (f"describe images/s at batch {sizes}", ", ".join(f"{row['images_per_second']:.1f}" for row in rows),
            "measured")


def table(header: list[str], rows: list[list[str]] | list[Row], numbers: bool = False) -> list[str]:
    """Markdown table lines; `numbers`: every column but the first right-aligned."""
    rules = ["---", *[("---:" if numbers else "---") for _ in header[1:]]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def decode_table(decodes: list[tuple[str, str, Data]]) -> list[str]:
    """Model | limit | ours | compiled (when any file has it) | plain | ours / plain."""
    compiled = any(data and data.get("compiled_tokens_per_s") is not None for _, _, data in decodes)
    header = ["model", "limit", "ours", *(["compiled"] if compiled else []), "plain `generate`", "ours / plain"]
    rows = []
    for arch, name, data in decodes:
        if data is None:
            rows.append([arch, missing(name), *["-"] * (len(header) - 2)])
            continue
        rate = data.get("compiled_tokens_per_s")
        cell = f"{tok(rate)} ({data['compiled_fraction_of_limit']:.0%})" if rate is not None else "-"
        rows.append([f"{arch}, {data.get('precision', '?')}", tok(data["limit_tokens_per_s"]),
                     f"{tok(data['ours_tokens_per_s'])} ({data['ours_fraction_of_limit']:.0%})",
                     *([cell] if compiled else []), tok(data["plain_tokens_per_s"]), f"{data['ours_over_plain']:.1f}x"])
    return table(header, rows, numbers=True)


def gemv_table(name: str, gemv: Data) -> list[str]:
    """bench_gemv's variants (ms a step, GB, TB/s) and what fusing query, key and value saves; [] without a file."""
    if gemv is None:
        return []
    rows = [[row["variant"], f"{row['ms_per_step']:.3f} ms", f"{row['gb_per_step']:.2f} GB",
             f"{row['tb_per_s']:.2f} TB/s"] for row in gemv["rows"]]
    by_name = {row["variant"]: row["ms_per_step"] for row in gemv["rows"]}
    apart, fused = by_name["query, key, value apart"], by_name["query, key, value fused"]
    return [f"`bench_gemv.py` ({gemv.get('device', '?')}, {gemv.get('dtype', '?')}, {gemv.get('layers')} layers of "
            f"width {gemv.get('hidden')}), the decode step's linear layers alone, per step:", "",
            *table(["linear layers", "time", "weights read", "rate"], rows, numbers=True), "",
            f"Fusing query, key and value: {apart - fused:.3f} ms a step less ({fused / apart:.2f}x the time).", ""]


def report(folder: Path, opt: str, t5: str) -> str:
    """The whole Markdown: the decode table, the targets table, and which files (and when) they come from."""
    files = {
        "turns_opt": load(folder, f"turns-{opt}-cuda-*.json"), "turns_t5": load(folder, f"turns-{t5}-cuda-*.json"),
        "decode_opt": load(folder, f"decode-{opt}-cuda-*.json"), "decode_t5": load(folder, f"decode-{t5}-cuda-*.json"),
        "precision": load(folder, f"precision-cuda-{opt}.json"), "describe": load(folder, f"describe-*-{opt}.json"),
    }
    gemv = load(folder, "gemv-cuda-*.json")
    targets = [
        follow_up_row(*files["turns_opt"]),
        whole_turn_row(*files["turns_t5"]),
        *decode_rows(*files["decode_opt"], label="OPT", goal=True),
        *decode_rows(*files["decode_t5"], label="FlanT5", goal=False),
        precision_row(*files["precision"]),
        describe_row(*files["describe"]),
    ]
    decodes = [(arch, *files[key]) for arch, key in ((opt, "decode_opt"), (t5, "decode_t5"))]
    sources = [f"`{name}` ({data.get('when', '?')})" for name, data in [*files.values(), gemv] if data is not None]
    lines = ["`bench_decode.py`, ours against plain `language_model.generate` on the same inputs:", "",
             *decode_table(decodes), "", *gemv_table(*gemv), "### Against the targets of the GPU issue", "",
             *table(["target", "measured", "met?"], targets), "", "From " + (", ".join(sources) or "no file") + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="folder of result JSON files")
    parser.add_argument("--opt", default="blip2-opt-2.7b", help="the OPT architecture's name in the file names")
    parser.add_argument("--t5", default="blip2-flan-t5-xl", help="the FlanT5 architecture's name in the file names")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"no folder {args.results}", file=sys.stderr)
        return 2
    print(report(args.results, args.opt, args.t5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
