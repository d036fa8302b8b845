"""How the screen-reader mode reads its lines: as UTF-8, whatever PYTHONIOENCODING or the locale says.

A prober piped Chinese, Arabic and emoji questions into `chat --plain` under PYTHONIOENCODING=ascii: they
arrived as runs of U+FFFD and were asked and saved so, without a word (under latin-1, as mojibake); and a line
that was not UTF-8 was asked with U+FFFD in it where `ask` refuses such a question. Now piped lines are UTF-8,
a line that is not is refused in `ask`'s sentence (nothing asked or saved for it) and the chat goes on.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatbot.frontends.plain.terminal import input_encoding
from tests.terminal_support import Screen, ended, run_in_terminal

NOT_UTF8 = "blip2-chat: The question is not valid UTF-8 text. Type it again in UTF-8 (check your terminal's " \
           "character encoding)."
COMMAND_NOT_UTF8 = NOT_UTF8.replace("The question", "The command")
CHINESE, ARABIC = "这是什么？", "ما هذا؟ 🐱"


def hostile_locale(home: Path, encoding: str) -> dict[str, str]:
    """The environment of a container nobody configured: the C locale, and PYTHONIOENCODING set."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LC_", "PYTHONUTF8"))}
    return {**env, "LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": encoding, "BLIP2_CHAT_HOME": str(home)}


def saved_questions(home: Path) -> list[str]:
    (path,) = sorted((home / "sessions").glob("*.json"))
    session: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return [turn["question"] for turn in session["turns"]]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_piped_questions_are_read_as_utf8_and_a_line_that_is_not_is_refused(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path, encoding: str
) -> None:
    """Chinese, Arabic and emoji arrive intact and are saved so; a CRLF line, a NUL and a last line without its
    line end keep their behaviour; a question with bytes that are not UTF-8 is refused in one sentence, nothing
    is asked or saved for it, and the lines after it are answered; a command keeps such bytes, so `/image` of a
    file whose name is Latin-1 opens it (the bytes of a name are no text to refuse)."""
    latin = tmp_path / os.fsdecode(b"caf\xe9.png")
    latin.write_bytes(pictures["green"].read_bytes())
    stdin = (f"{CHINESE}\n".encode() + b"\xff\xfe hi\n" + f"{ARABIC}\r\n".encode()
             + b"/image " + os.fsencode(latin) + b"\n" + b"a\x00b?\n" + b"last one")
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"]),
         "--max-new-tokens", "3"],
        input=stdin, capture_output=True, timeout=120, env=hostile_locale(tmp_path, encoding),
    )
    stderr = result.stderr.decode(encoding, errors="replace")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr
    assert saved_questions(tmp_path) == [CHINESE, ARABIC, "a\x00b?", "last one"]
    notes = stderr.splitlines()
    assert notes.count(NOT_UTF8) == 1 and notes.count(COMMAND_NOT_UTF8) == 0, stderr
    assert any(note.startswith(f"Now talking about {tmp_path}/caf\\xe9.png. ") for note in notes), stderr  # opened
    assert "\ufffd" not in stderr and "\\ufffd" not in stderr
    stdout = result.stdout.decode(encoding)
    assert stdout.count("Assistant: ") == 4
    you = [line for line in stdout.splitlines() if line.startswith("You: ")]
    assert you[1] == "You: \\xff\\xfe hi" and you[3] == f"You: /image {tmp_path}/caf\\xe9.png"  # shown escaped


def test_the_up_arrow_history_does_not_keep_a_refused_line(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """At a terminal whose encoding says ASCII (PYTHONIOENCODING=ascii), readline's lines are UTF-8: a Chinese
    question is asked and saved intact; a line with bytes that are not UTF-8 is refused, told apart from a real
    U+FFFD, which is asked as typed; neither the refused line nor anything for it is saved."""
    pytest.importorskip("pty")
    env = {**hostile_locale(tmp_path, "ascii"), "TERM": "dumb"}
    del env["LC_ALL"]  # readline reads keys in the locale Python coerces LANG=C to (C.UTF-8), as a terminal does
    process, ours, theirs = run_in_terminal(
        ["chat", str(pictures["red"]), "--model", str(checkpoints["opt"]), "--max-new-tokens", "3"], env=env)
    os.close(theirs)  # reading ends when the child closes the terminal
    screen = Screen(ours)
    with ended(process, ours):
        screen.wait_for_text(b"You: ", 1)
        os.write(ours, CHINESE.encode() + b"\r")
        screen.wait_for_text(b"You: ", 2)
        os.write(ours, b"\xff\xfe hi\r")
        screen.wait_for_text(b"You: ", 3)
        os.write(ours, "a real \ufffd?\r".encode())
        screen.wait_for_text(b"You: ", 4)
        os.write(ours, b"\x04")  # Ctrl+D
        screen.wait_for_text(b"Goodbye.", 1)
        assert process.wait(timeout=30) == 0
    text = screen.data.decode("ascii", errors="replace").replace("\r\n", "\n")
    assert text.count(NOT_UTF8) == 1 and text.count("\nAssistant: ") == 2, text
    assert saved_questions(tmp_path) == [CHINESE, "a real \ufffd?"]
    assert (tmp_path / "plain-history").read_text(encoding="utf-8").splitlines() == [CHINESE, "a real \ufffd?"]


class Stream(io.StringIO):
    def __init__(self, encoding: str, terminal: bool) -> None:
        super().__init__()
        self._encoding, self.terminal = encoding, terminal

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(("encoding", "terminal", "read_as"), [
    ("ascii", False, "utf-8"), ("latin-1", False, "utf-8"), ("cp1252", False, "utf-8"),
    ("ANSI_X3.4-1968", True, "utf-8"), ("ascii", True, "utf-8"),  # an ASCII terminal: UTF-8 reads what it does
    ("latin-1", True, "latin-1"), ("utf-8", True, "utf-8"), ("no-such-codec", True, "utf-8"),
])
def test_the_encoding_lines_are_read_in(encoding: str, terminal: bool, read_as: str) -> None:
    assert input_encoding(Stream(encoding, terminal)) == read_as
