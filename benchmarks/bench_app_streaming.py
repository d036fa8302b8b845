"""Decoding speed in the chat app against the screen-reader mode: same model, picture, question and settings.

    python benchmarks/bench_app_streaming.py [--before OLD_TREE] [--model DIR] [--repeats 3]

The app runs for real, in a pseudo-terminal (120x40, no graphics protocol) whose output this process
drains, the way a terminal would; a pilot types the question and reads the engine's figures when the
answer ends. The screen-reader mode runs as `blip2-chat chat --plain --json`. Both load the model in a
fresh process each time. `--before` names a copy of the repository with other (older) code: its app runs
too, in the same rounds, so before and after are measured side by side under the same load.

Writes benchmarks/results/app-streaming-<model>.json: tokens per second per run and their medians.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, ensure_checkpoint, write_result  # noqa: E402

QUESTION = "Describe it"
COLUMNS, LINES = 120, 40

# The child: the real app (the model loads in its background worker as usual), driven by an auto pilot
# that types the question key by key, waits for the answer to end and writes the engine's figures.
CHILD = r"""
import json, sys
tree, picture, model, tokens, seed, out, QUESTION = sys.argv[1:8]
sys.path.insert(0, tree)
import os
try:  # what the blip2-chat command sets before torch loads (a tree from before it had no such setting)
    from chatbot.cli import OMP_WAIT
    os.environ.setdefault(*OMP_WAIT)
except ImportError:
    pass
from chatbot.core.settings import Settings
from chatbot.engine.base import GenerationOptions
from chatbot.images import load_image
from chatbot.tui.app import create_app

settings = Settings(model=model, device="cpu", options=GenerationOptions(max_new_tokens=int(tokens), seed=int(seed)))
app = create_app(settings, image=load_image(picture), renderer="halfcell")

async def drive(pilot):
    while app.conversation.engine is None:
        await pilot.pause(0.05)
    await pilot.press(*("space" if c == " " else c for c in QUESTION), "enter")
    while app.answer is None and not app.conversation.session.turns:
        await pilot.pause(0.01)
    while app.answer is not None:
        await pilot.pause(0.05)
    stats = app.conversation.engine.last_stats
    turn = app.conversation.session.turns[-1]
    shown = app.query_one("Transcript").pairs[-1].answer.text
    with open(out, "w") as file:
        json.dump({"tokens_per_second": stats.tokens_per_second, "new_tokens": stats.new_tokens,
                   "seconds_total": stats.seconds_total, "shown_is_recorded": shown == turn.answer}, file)
    app.exit()

app.run(auto_pilot=drive)
"""


def run_app(tree: Path, picture: Path, model: Path, tokens: int, seed: int, home: Path) -> dict[str, Any]:
    """One app run in a pseudo-terminal; its output is read and thrown away as a terminal would show it."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "BLIP2_CHAT_GRAPHICS": "0",
               "BLIP2_CHAT_HOME": str(home), "PYTHONPATH": str(tree)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tree), str(picture), str(model), str(tokens), str(seed), str(out),
             QUESTION],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tree, start_new_session=True)
        os.close(slave)
        painted = 0
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                painted += len(data)
            elif child.poll() is not None:
                break
        child.wait(timeout=60)
        os.close(master)
        if not out.exists():
            raise RuntimeError(f"the app in {tree} gave no result (exit status {child.returncode})")
        result = json.loads(out.read_text())
        result["terminal_bytes"] = painted
        return result


def run_plain(tree: Path, picture: Path, model: Path, tokens: int, seed: int, home: Path) -> dict[str, Any]:
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home), "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", str(picture), "--plain", "--model", str(model), "--device", "cpu",
         "--max-new-tokens", str(tokens), "--seed", str(seed), "--json"],
        input=QUESTION + "\n", capture_output=True, text=True, env=env, cwd=tree, check=True)
    record = json.loads(done.stdout.splitlines()[0])
    return {"tokens_per_second": record["timings"]["tokens_per_second"], "new_tokens": record["tokens"]["new"],
            "seconds_total": record["timings"]["total_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a checkpoint folder (default: the synthetic tiny-opt)")
    parser.add_argument("--picture", type=Path, help="default: a generated picture")
    parser.add_argument("--before", type=Path, help="a copy of the repository whose app runs too, for comparison")
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = args.model or ensure_checkpoint("tiny-opt")
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        picture = args.picture
        if picture is None:
            from benchmarks.common import make_picture

            picture = Path(scratch) / "picture.png"
            make_picture(7).image.save(picture)
        variants: dict[str, Any] = {"plain": lambda: run_plain(ROOT, picture, model, args.max_new_tokens,
                                                               args.seed, home),
                                    "app": lambda: run_app(ROOT, picture, model, args.max_new_tokens, args.seed, home)}
        if args.before is not None:
            before = args.before.resolve()
            variants["app_before"] = lambda: run_app(before, picture, model, args.max_new_tokens, args.seed, home)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for round_ in range(args.repeats):  # interleaved, so a change in the machine's load hits them all
            for name, run in variants.items():
                runs[name].append(run())
                print(f"round {round_ + 1} {name:10s} {runs[name][-1]['tokens_per_second']:7.1f} tok/s "
                      f"({runs[name][-1]['new_tokens']} tokens)", flush=True)
    medians = {name: statistics.median(r["tokens_per_second"] for r in results) for name, results in runs.items()}
    payload = {"model": str(model), "question": QUESTION, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
               "terminal": f"{COLUMNS}x{LINES} pseudo-terminal, BLIP2_CHAT_GRAPHICS=0",
               "median_tokens_per_second": medians,
               "app_over_plain": {name: medians[name] / medians["plain"] for name in medians if name != "plain"},
               "runs": runs}
    path = write_result(f"app-streaming-{model.name}", payload, RESULTS)
    print(json.dumps(payload["median_tokens_per_second"]), "->", path)


if __name__ == "__main__":
    main()
