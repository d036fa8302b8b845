"""Start-up: `blip2-chat --help`, and the chat app's first painted screen (before any model loads).

    python benchmarks/bench_startup.py

Each figure is the median of several fresh processes, measured from the process's start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402

# A child that starts the real app (its model load never finishes here) and reports, measured from
# its own interpreter start, when the first screen has been composed and painted.
FIRST_PAINT = r"""
import time, sys
started = time.perf_counter()
import asyncio, threading
from PIL import Image
from chatbot.core.settings import Settings
from chatbot.images import load_image
from chatbot.tui.app import create_app
Image.new("RGB", (320, 240), (40, 120, 200)).save(sys.argv[1])
never = threading.Event()
def slow_engine(settings, progress):
    never.wait()
app = create_app(Settings(model="none"), image=load_image(sys.argv[1]), engine_factory=slow_engine,
                 renderer="halfcell")
async def main():
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        print(f"{time.perf_counter() - started:.4f}")
        never.set()
        app.exit()
asyncio.run(main())
"""


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; answers --help
    help_s = median_seconds([sys.executable, "-m", "chatbot", "--help"], 10)
    paints = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", FIRST_PAINT, "/tmp/bench-startup.png"], check=True,
                             capture_output=True, text=True)
        paints.append(float(out.stdout.strip().splitlines()[-1]))
    paint_s = statistics.median(paints)
    print(f"blip2-chat --help: {help_s:.3f} s (median of 10, whole process)")
    print(f"chat app first paint: {paint_s:.3f} s (median of 5, from interpreter start)")
    print("wrote", write_result("startup", {"help_seconds": help_s, "first_paint_seconds": paint_s,
                                            "first_paint_runs": paints}, RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
