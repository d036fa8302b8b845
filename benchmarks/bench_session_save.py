"""What one save of a long chat costs, before and after the session file was made once per save, side by side.

A chat is saved after every turn, and a save writes every turn, so its cost grows with the chat. Before, each
save made the file's text twice (`Conversation.save` to compare it with the last saved text, then
`SessionStore.save` again), each time through `dataclasses.asdict` (a deep copy) and json's pure-Python indenting
encoder. After, the text is made once, by hand, and is the same text, character for character (the run checks).

"Before" is the code of the commit given with --before (the last one without the change), taken from git into a
temporary folder and run in a child process; "after" is this working tree. Both time the same steps, those of
`Conversation.save` after a turn: make the text, compare it with the last saved text, `SessionStore.save` (claim,
checks, write, fsync, rename). "serialize" is the making of the text alone, once per save.

    python benchmarks/bench_session_save.py                    # 100, 1000, 10000 turns
    python benchmarks/bench_session_save.py --turns 100 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

BEFORE = "cfc1f81"  # the last commit whose saves made the text twice, through asdict and json's indenting encoder


def long_chat(turns: int) -> Any:
    """A chat of `turns` turns like a piped one, about 400 bytes a turn in the file (the prober's 7.8 MB chat of
    26,400 turns had 300; a session file may have 8 MB, so 20,000 turns at most); every tenth turn compared with
    a second picture."""
    from chatbot.core.session import ComparedAnswer, ImageRef, Session, Turn

    cat = ImageRef("/home/someone/Pictures/holiday/cat on the mat.jpg", "3f" * 32)
    dog = ImageRef("/home/someone/Pictures/holiday/dog.png", "a1" * 32)
    session = Session(model="Salesforce/blip2-opt-2.7b", id="20250101-120000-abcdef", image=cat,
                      options={"max_new_tokens": 40, "seed": 7}, created=1_700_000_000.0)
    for n in range(turns):
        turn = Turn(f"What is the animal doing in picture {n}?", f"the cat is sitting on a mat, number {n}, and "
                    "looking at the camera", cat, created=1_700_000_000.0 + n * 7.25)
        if n % 10 == 0:
            turn.compared = [ComparedAnswer(dog, "a dog lying on the grass")]
        session.turns.append(turn)
    return session


def measure(turns: int, repeats: int, new: bool) -> dict[str, Any]:
    """Seconds (median of `repeats`) that one save of a `turns`-turn chat takes, and its text's making alone.

    `new`: this tree's steps (the text made once, given to `SessionStore.save`); else the old ones."""
    from chatbot.core.session import Turn
    from chatbot.core.session_files import session_json
    from chatbot.core.store import SessionStore

    session = long_chat(turns)
    with tempfile.TemporaryDirectory() as folder:
        store = SessionStore(Path(folder))
        saved = session_json(session)
        store.save(session)
        save_times, serialize_times = [], []
        for n in range(repeats):
            session.turns.append(Turn(f"And now, question {n}?", "an answer", session.image, created=1.8e9 + n))
            started = time.perf_counter()
            text = session_json(session)  # Conversation.save: is there anything new to write?
            assert text != saved
            if new:
                store.save(session, text)
            else:
                store.save(session)  # which made the text again
            save_times.append(time.perf_counter() - started)
            saved = text
            started = time.perf_counter()
            session_json(session)
            serialize_times.append(time.perf_counter() - started)
            session.turns.pop()  # the same length for every repeat
        written = (Path(folder) / f"{session.id}.json").read_bytes()
    return {"code": sys.modules["chatbot.core.store"].__file__, "turns": turns, "file_bytes": len(written),
            "save_s": statistics.median(save_times), "serialize_s": statistics.median(serialize_times), "text": text}


def child(turns: list[int], repeats: int, new: bool) -> None:
    """Run in the tree on sys.path; print the results as one JSON line."""
    print(json.dumps([measure(count, repeats, new) for count in turns]))


def before_tree(commit: str, folder: Path) -> Path:
    """The chatbot and prompts packages of `commit`, unpacked into `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "chatbot", "prompts"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_in(tree: Path, turns: list[int], repeats: int, new: bool) -> list[dict[str, Any]]:
    """`measure` in a child process whose `chatbot` package is the one in `tree`."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.bench_session_save import child; "
            f"sys.path.insert(0, {str(tree)!r}); child({turns!r}, {repeats}, {new})")  # chatbot: imported after
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree)
    if done.returncode:
        sys.exit(f"The run in {tree} failed:\n{done.stderr[-3000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    if any(Path(row["code"]).parents[2] != tree.resolve() for row in results):
        sys.exit(f"The child ran the code in {results[0]['code']}, not in {tree}.")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", default=BEFORE, help="the commit whose code is 'before' (default %(default)s)")
    args = parser.parse_args()

    from benchmarks.common import RESULTS, write_result

    with tempfile.TemporaryDirectory() as folder:
        old = run_in(before_tree(args.before, Path(folder)), args.turns, args.repeats, new=False)
    new = run_in(ROOT, args.turns, args.repeats, new=True)
    rows = []
    print(f"{'turns':>6} {'file MB':>8} {'save before':>12} {'save after':>11} {'ratio':>6} "
          f"{'text before':>12} {'text after':>11} {'ratio':>6}  same text")
    for was, now in zip(old, new, strict=True):
        same = was.pop("text") == now.pop("text")
        was.pop("code"), now.pop("code")
        row = {"turns": now["turns"], "file_bytes": now["file_bytes"], "same_text": same,
               "save_before_s": was["save_s"], "save_after_s": now["save_s"],
               "save_ratio": was["save_s"] / now["save_s"],
               "serialize_before_s": was["serialize_s"], "serialize_after_s": now["serialize_s"],
               "serialize_ratio": was["serialize_s"] / now["serialize_s"]}
        rows.append(row)
        print(f"{row['turns']:>6} {row['file_bytes'] / 1e6:>8.2f} {row['save_before_s']:>11.4f}s "
              f"{row['save_after_s']:>10.4f}s {row['save_ratio']:>5.1f}x {row['serialize_before_s']:>11.4f}s "
              f"{row['serialize_after_s']:>10.4f}s {row['serialize_ratio']:>5.1f}x  {same}")
    if not all(row["same_text"] for row in rows):
        sys.exit("The session file's text differs from before's: that is a bug, not a result.")
    path = write_result("session-save", {"before": args.before, "repeats": args.repeats, "rows": rows,
                                         "what": "one save after a turn (make the text, compare, SessionStore.save "
                                                 "with write and fsync), median seconds; serialize: the text alone"},
                        RESULTS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
