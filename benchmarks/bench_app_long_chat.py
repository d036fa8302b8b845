"""A long chat resumed in the chat app: time to the first paint, to the last turn shown, and per question.

    python benchmarks/bench_app_long_chat.py [--before OLD_TREE] [--turns 10 1000 5000 20000] [--limit 120]

Each run is a fresh process that builds a chat of N turns through the library (`Session`, `Turn`, `ImageRef`,
two pictures taking turns, a `/compare` every 25th turn), saves it with `SessionStore.save`, loads it back as
`--continue` does and opens the app on it headless (`App.run_test`, 110x36) with a `ScriptedEngine`. Wall-clock
times from the app's start: the first frame Textual composes for the screen (`App._display`, called in headless
runs too, after the frame is rendered), and the first frame with the chat's last turn mounted. At 10 and 1,000
turns it then types questions key by key (through the pilot, which waits for the screen after every key) and times
each from its first key to its answer shown (`per_question_s`: flat when the chat's length costs nothing), and
streams one long answer of 1,500 words (`long_answer`: wall time and frames composed while
it streamed: the repaint cost should not grow with the chat).

`--before` names a copy of the package from another commit (`git archive HEAD chatbot | tar -x -C /tmp/before`):
its app runs too, in the same rounds, so before and after are measured side by side under the same load. A run
that has not painted within `--limit` seconds is stopped and recorded as such.

Writes benchmarks/results/app-long-chat.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS  # noqa: E402

SIZE = (110, 36)
QUESTIONS_TIMED = 5
LONG_ANSWER_WORDS = 1500


def build_session(turns: int, folder: Path) -> Any:
    """A chat of `turns` turns about two pictures saved in `folder` (the app reopens the last one)."""
    import hashlib

    from PIL import Image

    from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn

    refs = []
    for name, colour in (("red.png", (200, 30, 30)), ("blue.png", (30, 30, 200))):
        path = folder / name
        Image.new("RGB", (64, 48), colour).save(path)
        refs.append(ImageRef(str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
    session = Session(model="scripted-opt")
    for index in range(turns):
        image = refs[(index // 100) % 2]  # another picture every 100 turns
        turn = Turn(f"Question {index}: what is in the picture?", f"Answer {index}: a square, and it is coloured.",
                    image)
        if index % 25 == 24:
            turn.compared.append(ComparedAnswer(refs[1 - refs.index(image)], f"The other one {index}."))
        session.turns.append(turn)
    session.image = session.turns[-1].image if session.turns else refs[0]
    session.context_start = max(0, turns - 3)
    return session


async def _open(app: Any, last_question: str, started: float, frames: list[float], pilot: Any) -> dict[str, Any]:
    """When the first frame came, and the first frame showing `last_question`'s turn."""
    from chatbot.tui.widgets.transcript import Transcript

    transcript = app.query_one(Transcript)
    while not (transcript.pairs and transcript.pairs[-1].question.text == last_question
               and transcript.pairs[-1].answer.is_mounted):
        await pilot.pause(0.01)
    shown_at = time.perf_counter()
    count = len(frames)
    while len(frames) == count:  # the next frame composed shows it
        await pilot.pause(0.01)
    return {"first_paint_s": round(frames[0] - started, 3), "last_turn_shown_s": round(frames[-1] - started, 3),
            "mounted_after_s": round(shown_at - started, 3), "pairs_mounted": len(transcript.pairs),
            "widgets_in_transcript": len(transcript.children)}


def keys(text: str) -> list[str]:
    return ["space" if character == " " else character for character in text]


async def _idle(app: Any, pilot: Any) -> None:
    while not (app.conversation.engine is not None and app.answer is None and not app.pending):
        await pilot.pause(0.005)


def child(tree: str, turns: int, out: str, extra: str) -> None:
    """One run (in its own process): the app on a chat of `turns` turns, from the package in `tree`."""
    sys.path.insert(0, tree)
    import asyncio

    from textual.app import App

    from chatbot.core.settings import Settings
    from chatbot.core.store import SessionStore
    from chatbot.engine.scripted import ScriptedEngine
    from chatbot.tui.app import create_app

    assert Path(sys.modules["chatbot"].__file__ or "").is_relative_to(tree), "the package under test"
    folder = Path(os.environ["BLIP2_CHAT_HOME"])
    built = build_session(turns, folder)
    store = SessionStore()
    store.save(built)
    loaded_at = time.perf_counter()
    session = store.load(built.id)
    result: dict[str, Any] = {"turns": turns, "load_s": round(time.perf_counter() - loaded_at, 3)}
    frames: list[float] = []
    display = App._display

    def counted(self: Any, screen: Any, renderable: Any) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
        display(self, screen, renderable)

    App._display = counted  # type: ignore[method-assign]
    long_answer = " ".join(f"word{index}" for index in range(LONG_ANSWER_WORDS))
    engine = ScriptedEngine(delay=0.0)
    started = time.perf_counter()
    app = create_app(Settings(model="scripted-opt"), session=session, store=store,
                     engine_factory=lambda settings, progress: engine, renderer="halfcell")

    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            last = session.turns[-1].question if session.turns else ""
            result.update(await _open(app, last, started, frames, pilot))
            Path(out).write_text(json.dumps(result))  # the opening is measured: kept if what follows is stopped
            await _idle(app, pilot)
            if "questions" in extra:
                times = []
                for index in range(QUESTIONS_TIMED):
                    engine.enqueue(f"A short answer number {index} about the square and its colour.")
                    began = time.perf_counter()
                    await pilot.press(*keys(f"What about it {index}"))  # a key per character
                    await pilot.press("enter")
                    await _idle(app, pilot)
                    await pilot.pause()
                    times.append(round(time.perf_counter() - began, 3))
                result["per_question_s"] = times
            if "long" in extra:
                engine.enqueue(long_answer)
                engine.delay = 0.001  # a chunk a millisecond, as a fast model streams
                frames_before = len(frames)
                began = time.perf_counter()
                await pilot.press(*keys("Tell me more"), "enter")
                await _idle(app, pilot)
                result["long_answer"] = {"words": LONG_ANSWER_WORDS, "wall_s": round(time.perf_counter() - began, 3),
                                         "frames": len(frames) - frames_before}
            app.exit()

    asyncio.run(run())
    Path(out).write_text(json.dumps(result))


def run_child(tree: Path, turns: int, extra: str, limit: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "result.json"
        env = {**os.environ, "BLIP2_CHAT_HOME": home, "PYTHONPATH": str(tree)}
        command = [sys.executable, __file__, "--child", str(tree), str(turns), str(out), extra]
        began = time.perf_counter()
        try:
            done = subprocess.run(command, env=env, cwd=home, timeout=limit, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            partial = json.loads(out.read_text()) if out.exists() else {}
            return {"turns": turns, **partial, "stopped_after_s": limit,
                    **({} if partial else {"first_paint_s": None, "note": f"no frame within {limit:.0f} s"})}
        if done.returncode != 0 or not out.exists():
            return {"turns": turns, "error": (done.stderr or done.stdout)[-2000:]}
        result: dict[str, Any] = json.loads(out.read_text())
        result["process_s"] = round(time.perf_counter() - began, 3)
        return result


def cell(value: object) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a tree whose chatbot/ is the code to compare with")
    parser.add_argument("--turns", type=int, nargs="+", default=[10, 1000, 5000, 20000])
    parser.add_argument("--limit", type=float, default=120.0, help="seconds a run may take before it is stopped")
    args = parser.parse_args()
    trees = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for turns in args.turns:
        extra = ",".join(word for word, wanted in (("questions", turns in (10, 1000)), ("long", turns in (10, 1000)))
                         if wanted)
        for name, tree in trees.items():
            result = run_child(tree, turns, extra, args.limit)
            runs[name].append(result)
            print(name, json.dumps(result), flush=True)
    print(f"\n{'turns':>6} | {'paint before':>12} | {'paint after':>11} | {'last turn before':>16} | "
          f"{'last turn after':>15} | {'pairs after':>11}")
    for index, turns in enumerate(args.turns):
        before = runs["before"][index] if "before" in runs else {}
        after = runs["after"][index]
        print(f"{turns:>6} | {cell(before.get('first_paint_s')):>12} | {cell(after.get('first_paint_s')):>11} | "
              f"{cell(before.get('last_turn_shown_s')):>16} | {cell(after.get('last_turn_shown_s')):>15} | "
              f"{cell(after.get('pairs_mounted')):>11}")
    for name in trees:
        for result in runs[name]:
            if "per_question_s" in result:
                print(f"{name}: per question at {result['turns']} turns: {result['per_question_s']}")
            if "long_answer" in result:
                print(f"{name}: {LONG_ANSWER_WORDS}-word answer at {result['turns']} turns: {result['long_answer']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "app-long-chat.json"
    path.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "size": f"{SIZE[0]}x{SIZE[1]} headless (App.run_test)", "limit_s": args.limit,
        "trees": {name: str(tree) for name, tree in trees.items()}, "runs": runs,
    }, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    else:
        main()
