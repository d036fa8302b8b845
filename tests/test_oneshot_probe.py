"""What a user probe of `ask` and `caption` found, each now one sentence and the right exit status:

- a question or `--prompt` typed in another encoding (its bytes arrive as lone surrogates) crashed in the
  tokenizer; now refused before the model loads (exit 2);
- a `--prompt` longer than the model's context crashed `caption` (IndexError) and no image was captioned;
  now refused once, after the model loads and before any image is answered (exit 2);
- a model failure on one of several images ended `caption` with a traceback; now it is named and the others
  go on (exit 1), as `ask` does;
- a full disk (`> /dev/full`) ended in a traceback, and `ask` first took the write error for the model's;
- a closed stdout (`>&-`): `caption` printed nothing and said it worked, `ask` crashed;
- `ask a.jpg b.jpg` took b.jpg for the question, and `ask "What is it?" photo.jpg` did not say that the
  image comes first.

Where the front end is what is tested, a ScriptedEngine answers (no model); the runs that must show the real
model's path (the prompt's length, stdout's buffering) are subprocesses on the demo model, two at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends import oneshot
from tests.test_cli import PREFIX, imported_modules, run_cli, run_cli_tracing_imports

NOT_UTF8 = "caf\udce9?"  # what Python makes of the argument b"caf\xe9?" (Latin-1 typed into a UTF-8 system)
UTF8_HINT = "Type it again in UTF-8 (check your terminal's character encoding)."
FULL_DISK = (f"{PREFIX}Could not write the answer: No space left on device. "
             "Free some space, or send the output somewhere else, and run it again.")
CLOSED = (f"{PREFIX}Standard output is closed, so the answer has nowhere to go. "
          "Run it again with stdout open, or send it to a file (> answer.txt).")
LONG_PROMPT = "a " * 200  # 201 tokens for the demo model, whose room is 90 (152 positions, 32 image, 30 answer)
MODEL_STACK = {"torch", "transformers"}


def never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-shot commands fail the test if they open a model: what is said must be said before that."""
    def open_engine_for(settings: Settings) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(oneshot, "open_engine_for", open_engine_for)


def scripted(monkeypatch: pytest.MonkeyPatch, *answers: str) -> ScriptedEngine:
    engine = ScriptedEngine(*answers)
    monkeypatch.setattr(oneshot, "open_engine_for", lambda settings: engine)
    return engine


def cli(*args: object) -> int:
    from chatbot.cli import main

    return main([*map(str, args)])


def run_with_stdout(stdout: Any, *args: object, close_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -X importtime -m chatbot ARGS` with stdout going to `stdout` (a file), or closed (`>&-`)."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "chatbot", *map(str, args)], stdout=stdout,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
        timeout=120, env=os.environ.copy(), preexec_fn=(lambda: os.close(1)) if close_stdout else None,
    )


def without_trace(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


# --- 1. text that is not UTF-8: one sentence before the model loads --------------------------------------------


def test_a_question_that_is_not_utf8_is_refused_before_the_model_loads(pictures: dict[str, Path]) -> None:
    result, imported = run_cli_tracing_imports("ask", "--model", "demo", pictures["red"], NOT_UTF8)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"{PREFIX}The question is not valid UTF-8 text. {UTF8_HINT}"]
    assert result.stdout == "" and not imported & MODEL_STACK


def test_a_caption_prompt_that_is_not_utf8_is_refused_before_the_model_loads(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    never_loaded(monkeypatch)
    assert cli("caption", pictures["red"], pictures["green"], "--prompt", "caf\udce9") == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{PREFIX}The prompt is not valid UTF-8 text. {UTF8_HINT}"]
    assert captured.out == ""


# --- 2. a prompt too long for the model: said once, before any image is answered ---------------------------------


def test_a_caption_prompt_too_long_for_the_model_is_refused_before_any_image_is_answered(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = scripted(monkeypatch)  # 2048 positions: 32 for the image, 30 for the answer, 1986 for the prompt
    assert cli("caption", pictures["red"], pictures["green"], "--prompt", "a " * 1990) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{PREFIX}The prompt is too long for this model: it needs 1992 tokens and there is room for 1986. "
        "Shorten --prompt (or lower --max-new-tokens)."]
    assert captured.out == "" and engine.prompts == []  # no image was answered
    assert cli("caption", pictures["red"], "--prompt", "a " * 1984) == 0  # 1986 tokens: it fits
    assert engine.prompts == ["a " * 1984]


# --- 3. a model failure on one image: named, the others go on ----------------------------------------------------


def test_caption_names_a_model_failure_and_goes_on_with_the_next_image(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = scripted(monkeypatch, "a green square")
    engine.fail_next(RuntimeError("CUDA error: an illegal memory access"))
    red, green = str(pictures["red"]), str(pictures["green"])
    assert oneshot.run_caption(Settings(model="scripted"), [red, green]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{green}: a green square"]
    assert captured.err.splitlines() == [
        f"{PREFIX}{red}: The model failed (RuntimeError: CUDA error: an illegal memory access)."]


def test_caption_of_one_image_says_a_model_failure_in_one_sentence(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = scripted(monkeypatch)
    engine.fail_next(MemoryError())
    assert cli("caption", pictures["red"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{PREFIX}{pictures['red']}: Ran out of memory. Try a lower --max-new-tokens, or a smaller model."]


# --- 4. stdout cannot take the answer: the user's to fix, never the model's failure ------------------------------


class FullDisk:
    """A stdout on a full disk: every write fails as /dev/full's does."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("json", [[], ["--json"]])
@pytest.mark.parametrize("command", ["ask", "caption"])
def test_a_full_disk_is_one_sentence_not_a_model_failure(
        command: str, json: list[str], pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """ask: the first word streamed cannot be written (ask took that for the model's failure); caption: the first
    of two captions cannot be written. Either way the run stops there, with the one sentence."""
    engine = scripted(monkeypatch, "a red square", "a green square")
    monkeypatch.setattr(sys, "stdout", FullDisk())
    args = [pictures["red"], "What is it?"] if command == "ask" else [pictures["red"], pictures["green"]]
    assert cli(command, *args, *json) == 2
    assert capsys.readouterr().err.splitlines() == [FULL_DISK]  # not "The model failed (OSError ...)"
    assert len(engine.prompts) == 1  # the run stopped at the first answer it could not write


def test_a_closed_pipe_still_ends_quietly(pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """BrokenPipeError is not a full disk: the CLI stops quietly with 141, as before."""
    class ClosedPipe(FullDisk):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            raise OSError("not a real file")

    scripted(monkeypatch)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(BrokenPipeError):
        oneshot.run_ask(Settings(model="scripted"), [str(pictures["red"])], "What is it?")
    assert capsys.readouterr().err == ""  # not taken for the model's failure either


# --- 5. stdout closed: said before the model loads --------------------------------------------------------------


@pytest.mark.parametrize("command", ["ask", "caption"])
def test_a_closed_stdout_is_refused_before_the_model_loads(command: str, pictures: dict[str, Path]) -> None:
    question = ["What is it?"] if command == "ask" else []
    result = run_with_stdout(None, command, "--model", "demo", pictures["red"], *question, close_stdout=True)
    assert result.returncode == 2, result.stderr
    assert without_trace(result.stderr) == [CLOSED]
    assert not imported_modules(result.stderr) & MODEL_STACK


# --- 6. the question is an image: the arguments were meant otherwise ---------------------------------------------


def test_ask_refuses_an_image_in_the_question_s_place(pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    never_loaded(monkeypatch)
    red, green = pictures["red"], pictures["green"]
    assert cli("ask", red, green) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PREFIX}The last argument is the question, and {green} is a file: ask IMAGE... QUESTION. "
        f"Put the question last, in quotes, e.g. blip2-chat ask {red} {green} 'What is in the picture?'"]
    assert cli("ask", red, "https://example.org/cat.png") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PREFIX}The last argument is the question, and https://example.org/cat.png is a web address: "
        f"ask IMAGE... QUESTION. Put the question last, in quotes, e.g. blip2-chat ask {red} "
        "https://example.org/cat.png 'What is in the picture?'"]


def test_ask_says_the_image_comes_first_when_the_question_came_first(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        work: Path) -> None:
    never_loaded(monkeypatch)
    red, green = pictures["red"], pictures["green"]
    assert cli("ask", "What is it?", red) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PREFIX}The image comes first, then the question (ask IMAGE... QUESTION): {red} is a file, and "
        f"\"What is it?\" is not. e.g. blip2-chat ask {red} 'What is it?'"]
    assert cli("ask", "Which is red?", red, green) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PREFIX}The image comes first, then the question (ask IMAGE... QUESTION): {green} is a file, and "
        f"\"Which is red?\" is not. e.g. blip2-chat ask {red} {green} 'Which is red?'"]


def test_a_question_that_is_no_file_is_asked(pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], work: Path) -> None:
    """Questions that merely look like names or links are questions: only an existing file or a lone link is not."""
    engine = scripted(monkeypatch)
    for question in ("photo.jpg?", "Is https://example.org/cat.png a cat?", "What is in red.png"):
        assert cli("ask", pictures["red"], question) == 0, capsys.readouterr().err
    assert len(engine.prompts) == 3


# --- the real model's path: the prompt's length, and stdout on a full disk ---------------------------------------


def run_two_at_a_time(jobs: dict[str, Callable[[], subprocess.CompletedProcess[str]]]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def run_into_full_disk(*args: object) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return run_with_stdout(full, *args)


@pytest.fixture(scope="module")
def demo_runs(pictures: dict[str, Path]) -> dict[str, Any]:
    red, green = pictures["red"], pictures["green"]
    jobs: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
        "long-prompt": partial(run_cli, "caption", red, green, "--model", "demo", "--prompt", LONG_PROMPT)}
    if os.path.exists("/dev/full"):
        jobs["caption-full"] = partial(run_into_full_disk, "caption", "--model", "demo", red)
        jobs["ask-full"] = partial(run_into_full_disk, "ask", "--model", "demo", red, "What is it?")
    return run_two_at_a_time(jobs)


def test_a_prompt_longer_than_the_demo_model_reads_is_one_sentence(demo_runs: dict[str, Any]) -> None:
    result = demo_runs["long-prompt"]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"{PREFIX}The prompt is too long for this model: it needs 201 tokens and there is room for 90. "
        "Shorten --prompt (or lower --max-new-tokens).")


@pytest.mark.parametrize("command", ["caption", "ask"])
def test_writing_to_a_full_disk_is_one_sentence(command: str, demo_runs: dict[str, Any]) -> None:
    if f"{command}-full" not in demo_runs:
        pytest.skip("no /dev/full here")
    result = demo_runs[f"{command}-full"]
    assert result.returncode == 2, result.stderr
    lines = without_trace(result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert lines[-1] == FULL_DISK and "The model failed" not in result.stderr
