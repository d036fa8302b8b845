"""Turn results of bench_turns.py into a Markdown table and a PNG plot of latency per turn.

    python benchmarks/report_turns.py benchmarks/results/turns-blip2-opt-2.7b-cpu-float32.json ...

Prints the Markdown for docs/benchmarks.md and writes docs/turns-<arch>-<device>.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def table(result: dict) -> str:
    ahead = result.get("think_ahead_pause")
    lines = [
        f"**{result['arch']}** on {result['machine'].get('gpu', 'CPU')} ({result['device']}, {result['precision']}), "
        f"{result['answer_tokens']}-token answers, "
        + (f"median of {result['conversations']} conversations, " if result.get("conversations", 1) > 1 else "")
        + (f"thinking ahead while the person takes {ahead:g} s to ask, " if ahead is not None else "")
        + f"measured {result['when']}:",
        "",
        "| turn | prompt tokens | reused | TTFT ours (s) | TTFT naive (s) | TTFT speed-up | turn ours (s) | "
        "turn naive (s) | turn speed-up | same tokens |" + (" prepared ahead (s) |" if ahead is not None else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|" + ("---:|" if ahead is not None else ""),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['turn']} | {row['prompt_tokens']} | {row['reused_prefix_tokens']} | {row['ours_ttft']:.3f} | "
            f"{row['naive_ttft']:.3f} | {row['naive_ttft'] / row['ours_ttft']:.1f}x | {row['ours_total']:.3f} | "
            f"{row['naive_total']:.3f} | {row['naive_total'] / row['ours_total']:.1f}x | "
            f"{'yes' if row['identical_tokens'] else 'no'} |"
            + (f" {row['prepared_ahead_seconds']:.3f} |" if ahead is not None else "")
        )
    summary = result["summary"]
    flat = summary.get("ours_ttft_turn8_over_turn2")
    lines += ["", f"Turn 6 TTFT speed-up {summary['ttft_speedup_turn_6']:.1f}x; ours never slower per turn: "
              f"{'yes' if summary['never_slower_total'] else 'no'}"
              + (f"; our TTFT turn 8 / turn 2 = {flat:.2f}" if flat else "") + "."]
    return "\n".join(lines)


def plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    turns = [r["turn"] for r in rows]
    fig, (ttft, total) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, title in ((ttft, "ttft", "time to first token"), (total, "total", "whole turn")):
        axis.plot(turns, [r[f"naive_{key}"] for r in rows], "o-", color="#c0392b", label="naive loop")
        axis.plot(turns, [r[f"ours_{key}"] for r in rows], "o-", color="#2471a3", label="blip2-chat")
        axis.set_title(title)
        axis.set_xlabel("turn")
        axis.set_ylabel("seconds")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    ttft.legend()
    device = result["machine"].get("gpu", "CPU")
    ahead = result.get("think_ahead_pause")
    thinking = f", thinking ahead ({ahead:g} s pauses)" if ahead is not None else ""
    fig.suptitle(f"{result['arch']} ({result['precision']}) on {device}: latency per turn{thinking}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(paths: list[str]) -> int:
    for name in paths:
        result = json.loads(Path(name).read_text())
        suffix = "-ahead" if result.get("think_ahead_pause") is not None else ""
        image = plot(result, DOCS / f"turns-{result['arch']}-{result['device'].split(':')[0]}{suffix}.png")
        print(table(result))
        print(f"\n![latency per turn]({image.name})\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="turns-*.json files written by bench_turns.py")
    sys.exit(main(parser.parse_args().results))
