"""The screen-reader mode as a blind user's probe found it: a piped transcript that says every command, one
sentence when Ctrl+C stops the model loading, few loading lines, and /help that names keys only at a keyboard.

Every check here is by lines and percent steps, never by the clock.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from tests.plain_support import FakeStream, plain_chat

# --- 1. a piped transcript says every command -----------------------------------------------------


def test_piped_stdout_alone_reads_as_the_whole_chat(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """`... | blip2-chat chat --plain > chat.txt`: the switch, the comparison, the retry and the undo are each
    on stdout where they happened, so no answer changes for no visible reason."""
    engine = ScriptedEngine("a red square", "a green square", "green", "a big green square", "a slash")
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    script = ["what is it?", f"/image {pictures['green']}", "what is it?", f"/compare {pictures['red']}",
              "/retry", "/undo", "//slash question?", "/set temperature 0.5", "/nonsense"]
    assert plain.run(script) == 0
    assert out.getvalue().splitlines() == [
        "You: what is it?", "Assistant: a red square",
        f"You: /image {pictures['green']}",
        "You: what is it?", "Assistant: a green square",
        f"You: /compare {pictures['red']}", "green.jpg: a green square", "red.png: green",
        "You: /retry", "Assistant: a big green square",  # the answer again, not a new turn
        "You: /undo",
        "You: //slash question?", "Assistant: a slash",  # as typed: "You: /slash question?" reads as a command
        "You: /set temperature 0.5",
        "You: /nonsense",
    ]
    said = notes.getvalue().splitlines()  # what each command did stays on stderr
    assert any(line.startswith(f"Now talking about {pictures['green']}.") for line in said)
    assert "Removed the last question and its answer: what is it?" in said
    assert [turn.question for turn in plain.conversation.session.turns] == ["what is it?", "/slash question?"]


def test_at_a_terminal_commands_are_not_echoed_twice(
    tmp_path: Path, pictures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed at a terminal the line is on the screen already; --json keeps stdout to JSON records."""
    plain, out, _ = plain_chat(ScriptedEngine("a red square", "again"), pictures["red"], tmp_path / "sessions",
                               echo=False)
    plain.run(["what is it?", "/retry", "/undo"])
    assert out.getvalue().splitlines() == ["Assistant: a red square", "Assistant: again"]
    plain, out, _ = plain_chat(ScriptedEngine("a red square"), pictures["red"], tmp_path / "json" / "sessions",
                               json_records=True)
    plain.run(["what is it?", "/undo"])
    assert out.getvalue() == ""
    printed = capsys.readouterr().out.splitlines()  # the JSON records go to sys.stdout itself
    assert [json.loads(line)["answer"] for line in printed] == ["a red square"]


# --- 2. Ctrl+C while the model loads ---------------------------------------------------------------


def interrupted_load(settings: Settings, progress: Any = None) -> None:
    raise KeyboardInterrupt  # what Ctrl+C does while the weights load


def run_cli(argv: list[str], home: Path, monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    from chatbot import cli
    from chatbot.frontends.plain import chat

    monkeypatch.setenv("BLIP2_CHAT_HOME", str(home))
    monkeypatch.setattr(chat, "exit_now", lambda code, **kwargs: code)  # os._exit would end the tests
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(argv)


def test_ctrl_c_while_the_model_loads_says_so_in_one_sentence(
    tmp_path: Path, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatbot.frontends.plain import chat

    monkeypatch.setattr(chat, "open_engine_for", interrupted_load)
    assert run_cli(["chat", str(pictures["red"]), "--plain", "--model", "demo"], tmp_path, monkeypatch) == 130
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == "Stopped while the model was loading; nothing was saved."
    assert captured.out == ""
    assert not list((tmp_path / "sessions").glob("*.json"))


def test_ctrl_c_while_a_resumed_chat_loads_says_the_chat_is_kept(
    tmp_path: Path, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatbot.frontends.plain import chat

    plain, _, _ = plain_chat(ScriptedEngine("a red square"), pictures["red"], tmp_path / "sessions")
    plain.run(["what is it?"])
    session = plain.conversation.session
    saved = (tmp_path / "sessions" / f"{session.id}.json").read_bytes()
    monkeypatch.setattr(chat, "open_engine_for", interrupted_load)
    assert run_cli(["--continue", "--plain", "--model", "demo"], tmp_path, monkeypatch) == 130
    said = capsys.readouterr().err.splitlines()
    assert said[-1] == f"Stopped while the model was loading; session {session.id} is saved as it was."
    assert (tmp_path / "sessions" / f"{session.id}.json").read_bytes() == saved


# --- 3. loading: a few percent lines, then ready ---------------------------------------------------


@pytest.mark.parametrize(("weights", "lines"), [
    (40, ["Loading model: 25 percent", "Loading model: 50 percent", "Loading model: 75 percent"]),
    (3, ["Loading model: 25 percent", "Loading model: 50 percent"]),  # steps of a third: fewer lines
    (1, []),  # all at once: nothing but ready
])
def test_loading_says_at_most_three_percent_steps_then_ready(
    weights: int, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    from transformers.utils import logging as transformers_logging

    from chatbot.frontends.plain import chat

    def load(settings: Settings, progress: Any = None) -> ScriptedEngine:
        for _ in transformers_logging.tqdm(list(range(weights)), desc="Loading weights"):  # as from_pretrained does
            pass
        return ScriptedEngine()

    monkeypatch.setattr(chat, "open_engine_for", load)
    said: list[str] = []
    chat.open_engine_saying(Settings(model="scripted"), said.append)
    assert said == [*lines, "Model ready."]


# --- 4. /help names keys only at a keyboard --------------------------------------------------------


def test_help_with_piped_input_says_no_keys(
    tmp_path: Path, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatbot.frontends.plain import chat

    monkeypatch.setattr(chat, "open_engine_for", lambda settings, progress=None: ScriptedEngine())
    assert run_cli(["chat", str(pictures["red"]), "--plain", "--model", "demo"], tmp_path, monkeypatch,
                   stdin="/help\n") == 0
    captured = capsys.readouterr()
    assert "/image PATH" in captured.err and "two slashes" in captured.err  # the commands are said
    for word in ("arrow", "Ctrl+C", "Ctrl+D", "Keys"):
        assert word not in captured.err
    assert captured.out == "You: /help\n"


def test_help_at_a_keyboard_says_the_keys_that_work_there() -> None:
    from chatbot.frontends.plain.chat import keys_help

    at_screen = keys_help(FakeStream(True), FakeStream(True))  # readline: arrows and clearing a line work
    assert "arrows" in at_screen and "clears a half-typed line" in at_screen
    to_file = keys_help(FakeStream(True), FakeStream(False))  # `> chat.txt`: lines read without readline
    assert "Ctrl+C" in to_file and "arrow" not in to_file and "clears" not in to_file
    assert keys_help(FakeStream(False), FakeStream(True)) == ""


def test_help_says_the_keys_it_is_given(tmp_path: Path, pictures: dict[str, Path]) -> None:
    plain, _, notes = plain_chat(ScriptedEngine(), pictures["red"], tmp_path / "sessions", keys="Keys: only these.")
    plain.run(["/help"])
    assert "Keys: only these." in notes.getvalue().splitlines()
