"""Two chats share the line history file: one adding lines while the other trims it (a chat starting) loses
none of them, and the file never holds half a line."""

from __future__ import annotations

import multiprocessing
import re
from pathlib import Path

import pytest

from chatbot.core import line_history
from chatbot.core.line_history import LineHistory

LIMIT = 120  # the trimming limit in the two chats, so that they trim often
PER_CHAT = 50  # lines each chat adds: both together stay under LIMIT, so none may be dropped
FILLER = LIMIT + 30  # lines already there, over the limit: the first trim has work to do
PAD = "x" * 300
LINE = re.compile(rf"^(?:old \d{{4}}|(?:a|b) \d{{4}} {PAD})$")

needs_fcntl = pytest.mark.skipif(line_history._fcntl is None, reason="no fcntl: the file is used without a lock")


def _chat(path: str, name: str, start: multiprocessing.synchronize.Event) -> None:
    """Add PER_CHAT lines, reading (which trims) after each, as a chat starting does; fail on a torn line."""
    line_history.HISTORY_LINES = LIMIT
    history = LineHistory(Path(path), lambda sentence: None)
    start.wait()
    for number in range(PER_CHAT):
        history.add([f"{name} {number:04d} {PAD}"])
        torn = [line for line in history.read() if not LINE.match(line)]
        assert not torn, f"{name} read a torn line: {torn[0][:80]!r}"


@needs_fcntl
def test_two_chats_adding_and_trimming_at_once_lose_no_line(tmp_path: Path) -> None:
    path = tmp_path / "plain-history"
    path.write_text("".join(f"old {number:04d}\n" for number in range(FILLER)))
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    chats = [context.Process(target=_chat, args=(str(path), name, start)) for name in ("a", "b")]
    for chat in chats:
        chat.start()
    start.set()
    for chat in chats:
        chat.join(timeout=120)
    assert [chat.exitcode for chat in chats] == [0, 0]

    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(LINE.match(line) for line in lines)
    assert len(lines) == LIMIT  # each chat read (trimmed) after its last line
    for name in ("a", "b"):
        added = [line.split()[1] for line in lines if line.startswith(f"{name} ")]
        assert added == [f"{number:04d}" for number in range(PER_CHAT)], f"chat {name} lost lines"
    # What is left of the old lines is their newest end, in order: the trims kept the last lines.
    old = [line for line in lines if line.startswith("old ")]
    assert old == [f"old {number:04d}" for number in range(FILLER - len(old), FILLER)]


def test_without_fcntl_the_file_is_still_added_to_and_trimmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no fcntl: the history works there as before, unlocked."""
    monkeypatch.setattr(line_history, "_fcntl", None)
    monkeypatch.setattr(line_history, "HISTORY_LINES", 3)
    history = LineHistory(tmp_path / "plain-history", lambda sentence: None)
    history.add(["one", "two", "three", "four"])
    assert history.read() == ["two", "three", "four"]
    assert (tmp_path / "plain-history").read_text(encoding="utf-8") == "two\nthree\nfour\n"
