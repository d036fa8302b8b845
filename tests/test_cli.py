"""The `blip2-chat` command run as a user runs it: a subprocess, reading only exit codes and output.

Every model-loading run costs several seconds, mostly importing torch and transformers on one core,
so module fixtures start the independent model-loading runs of a group at once (`run_together`) and
the tests only read their output. Bad input found before the model loads must fail fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from chatbot.core.answer_wording import cut_short_text
from chatbot.images import load_image

QUESTION = "what is in the picture?"
PREFIX = "blip2-chat: "
JSON_KEYS = {"question", "answer", "model", "image", "image_sha256", "timings", "tokens"}
TIMING_KEYS = {"load_seconds", "first_token_seconds", "total_seconds", "tokens_per_second"}


def run_cli(
    *args: object, stdin: str | None = None, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `python -m chatbot ARGS` with this environment (offline, isolated HF_HOME from conftest)."""
    io: dict[str, object] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "chatbot", *map(str, args)],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
        env=os.environ.copy(), **io,  # type: ignore[arg-type]
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single non-empty line a successful one-shot command prints, checked as such."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].strip(), "the answer is empty"
    return lines[0]


def only_cut_offs(result: subprocess.CompletedProcess[str], limit: int = 30) -> bool:
    """Stderr holds nothing but the sentence that an answer reached max_new_tokens (a random-weight model never
    ends an answer itself): progress goes only to a terminal, so piped stderr is otherwise clean."""
    said = cut_short_text(limit, command_line=True)
    return all(line.endswith(said) for line in result.stderr.splitlines())


def json_lines(result: subprocess.CompletedProcess[str], count: int) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == count, result.stdout
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in records)
    return records


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli_tracing_imports(*args: object) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`run_cli` under `python -X importtime`: the result (its stderr without the trace) and what it imported.

    "Refused before the model loads" is checked this way, not with a clock: without torch and
    transformers imported, no model can have been touched, however slow the machine.
    """
    traced = run_cli(*args, python_flags=("-X", "importtime"))
    imported = imported_modules(traced.stderr)
    stderr = "".join(line for line in traced.stderr.splitlines(keepends=True) if not line.startswith("import time:"))
    return subprocess.CompletedProcess(traced.args, traced.returncode, traced.stdout, stderr), imported


def imported_modules(importtime_stderr: str) -> set[str]:
    """Top-level package names from `python -X importtime` output."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


Runs = dict[str, subprocess.CompletedProcess[str]]
Job = Callable[[], subprocess.CompletedProcess[str]]


def run_together(jobs: dict[str, Job]) -> Runs:
    """Run independent model-loading commands at once: each spends seconds importing torch on one core."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def run_cli_into_closed_pipe(*args: object) -> subprocess.CompletedProcess[str]:
    """Like `blip2-chat ... | head -n 0`: whoever reads stdout is gone before the first answer."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "chatbot", *map(str, args)], stdout=write_end, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", timeout=120,
            env=os.environ.copy(),
        )
    finally:
        os.close(write_end)


# --- help --------------------------------------------------------------------------------------


def test_help_imports_no_model_stack() -> None:
    traced = run_cli("--help", python_flags=("-X", "importtime"))
    assert traced.returncode == 0
    assert "usage: blip2-chat" in traced.stdout
    for command in ("ask", "caption", "chat"):
        assert command in traced.stdout
    loaded = imported_modules(traced.stderr)
    assert "chatbot" in loaded  # the trace did run
    assert not loaded & {"torch", "transformers"}, sorted(loaded & {"torch", "transformers"})
    plain = run_cli("--help")
    assert plain.returncode == 0 and plain.stdout == traced.stdout  # (its speed: benchmarks/bench_startup.py)


def test_subcommand_help_and_no_command() -> None:
    result = run_cli("ask", "--help")
    assert result.returncode == 0
    assert "--max-new-tokens" in result.stdout and "--json" in result.stdout
    bare = run_cli()
    assert bare.returncode == 0 and "usage: blip2-chat" in bare.stdout


def test_installed_command_runs() -> None:
    script = Path(sys.executable).with_name("blip2-chat")
    if not script.exists():
        pytest.skip("the blip2-chat script is not installed next to this interpreter")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("blip2-chat ")


# --- ask ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ask_runs(checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    """The same greedy question on each family, and once more on OPT to compare."""
    ask = ("ask", pictures["red"], QUESTION, "--model")
    return run_together({
        "opt": partial(run_cli, *ask, checkpoints["opt"]),
        "opt-again": partial(run_cli, *ask, checkpoints["opt"]),
        "flan-t5": partial(run_cli, *ask, checkpoints["flan-t5"]),
    })


@pytest.mark.parametrize("family", ["opt", "flan-t5"])
def test_ask_answers_in_one_line(family: str, ask_runs: Runs) -> None:
    result = ask_runs[family]
    one_line(result)
    assert only_cut_offs(result)  # progress goes only to a terminal; piped stderr stays clean
    assert "\x1b" not in result.stdout


def test_greedy_ask_is_deterministic(ask_runs: Runs) -> None:
    assert one_line(ask_runs["opt"]) == one_line(ask_runs["opt-again"])


@pytest.fixture(scope="module")
def option_runs(checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    """Asks with decoding and output flags; sampling twice with one seed."""
    opt = ("ask", pictures["red"], QUESTION, "--model", checkpoints["opt"])
    sampled = (*opt, "--temperature", "0.8", "--seed", "7")
    return run_together({
        "json": partial(run_cli, "ask", pictures["green"], f"  {QUESTION}  ", "--model", checkpoints["flan-t5"],
                        "--json", "--max-new-tokens", "5"),
        "beams": partial(run_cli, *opt, "--num-beams", "3"),
        "sampled": partial(run_cli, *sampled),
        "sampled-again": partial(run_cli, *sampled),
    })


def test_ask_json_record(option_runs: Runs, pictures: dict[str, Path]) -> None:
    image = pictures["green"]
    result = option_runs["json"]
    assert result.stderr == ""
    (record,) = json_lines(result, 1)
    assert JSON_KEYS <= record.keys()
    assert record["question"] == QUESTION
    assert isinstance(record["answer"], str) and record["answer"].strip()
    assert str(record["model"]).endswith("tiny-flan-t5")
    assert record["image"] == str(image)
    assert record["image_sha256"] == sha256_of(image)

    timings = record["timings"]
    assert isinstance(timings, dict) and TIMING_KEYS <= timings.keys()
    assert all(isinstance(timings[key], (int, float)) and timings[key] >= 0 for key in TIMING_KEYS)
    assert timings["load_seconds"] > 0
    assert timings["first_token_seconds"] <= timings["total_seconds"]

    tokens = record["tokens"]
    assert isinstance(tokens, dict)
    assert isinstance(tokens["prompt"], int) and tokens["prompt"] > 0
    assert isinstance(tokens["new"], int) and 1 <= tokens["new"] <= 5


def test_ask_with_beam_search(option_runs: Runs) -> None:
    result = option_runs["beams"]
    one_line(result)
    assert only_cut_offs(result)


def test_ask_sampling_with_seed_repeats(option_runs: Runs) -> None:
    assert one_line(option_runs["sampled"]) == one_line(option_runs["sampled-again"])
    assert only_cut_offs(option_runs["sampled"])


# --- caption -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caption_runs(checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    red, green = pictures["red"], pictures["green"]
    return run_together({
        "two": partial(run_cli, "caption", red, green, "--model", checkpoints["flan-t5"]),
        "one": partial(run_cli, "caption", red, "--model", checkpoints["opt"]),
        "json": partial(run_cli, "caption", green, red, "--model", checkpoints["flan-t5"], "--json"),
        "closed-pipe": partial(run_cli_into_closed_pipe, "caption", red, green, "--model", checkpoints["opt"]),
    })


def test_caption_two_images_prints_path_and_caption(caption_runs: Runs, pictures: dict[str, Path]) -> None:
    result = caption_runs["two"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    for line, image in zip(lines, [pictures["red"], pictures["green"]], strict=True):
        assert line.startswith(f"{image}: ")
        assert line.removeprefix(f"{image}: ").strip()
    assert only_cut_offs(result)


def test_caption_one_image_prints_just_the_caption(caption_runs: Runs, pictures: dict[str, Path]) -> None:
    text = one_line(caption_runs["one"])
    assert not text.startswith(str(pictures["red"]))


def test_caption_json_one_object_per_image(caption_runs: Runs, pictures: dict[str, Path]) -> None:
    records = json_lines(caption_runs["json"], 2)
    for record, image in zip(records, [pictures["green"], pictures["red"]], strict=True):
        assert record["image"] == str(image)
        assert record["image_sha256"] == sha256_of(image)
        assert isinstance(record["answer"], str) and record["answer"].strip()


def test_caption_into_closed_pipe_ends_quietly(caption_runs: Runs) -> None:
    # `blip2-chat caption *.jpg | head -n 1`: the reader leaving early is normal, not a crash.
    result = caption_runs["closed-pipe"]
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


# --- chat --plain --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_runs(checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    red, green, opt = pictures["red"], pictures["green"], checkpoints["opt"]
    return run_together({
        "undo": partial(run_cli, "chat", red, "--plain", "--model", opt,
                        stdin="what is it?\nwhat colour?\n/undo\nhow big?\n"),
        "commands": partial(run_cli, "chat", red, "--plain", "--model", opt,
                            stdin=f"what is it?\n/foo\nstill there?\n/image {green}\nand now?\n"),
        "json": partial(run_cli, "chat", green, "--plain", "--json", "--model", checkpoints["flan-t5"],
                        stdin="what is it?\n\nwhat colour?\n"),
    })


def test_chat_plain_answers_each_question(chat_runs: Runs) -> None:
    result = chat_runs["undo"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # the screen-reader mode's labelled transcript (tests/test_plain.py)
    you = [line for line in lines if line.startswith("You: ")]  # the piped /undo is echoed where it was typed
    assert you == ["You: what is it?", "You: what colour?", "You: /undo", "You: how big?"], result.stdout
    answers = [line for line in lines if not line.startswith("You: ")]
    assert len(answers) == 3 and all(line.startswith("Assistant: ") and line[11:].strip() for line in answers)
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "Traceback" not in result.stderr


def test_chat_plain_image_switch_and_unknown_command(chat_runs: Runs, pictures: dict[str, Path]) -> None:
    result = chat_runs["commands"]
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if not line.startswith("You: ")]
    assert len(answers) == 3, result.stdout  # the session went on after /foo and after /image
    assert all(answer.startswith("Assistant: ") and answer[11:].strip() for answer in answers)
    notes = result.stderr.splitlines()  # states in words, command results and errors, one a line
    (unknown,) = [note for note in notes if note.startswith(PREFIX)]
    assert "/foo" in unknown
    (switched,) = [note for note in notes if note.startswith("Now talking about")]
    assert str(pictures["green"]) in switched
    assert notes.index(unknown) < notes.index(switched)
    assert "\x1b" not in result.stdout + result.stderr


def test_chat_plain_json_one_object_per_answer(chat_runs: Runs, pictures: dict[str, Path]) -> None:
    records = json_lines(chat_runs["json"], 2)
    assert [record["question"] for record in records] == ["what is it?", "what colour?"]
    for record in records:
        assert JSON_KEYS <= record.keys()
        assert record["image"] == str(pictures["green"])
        assert record["image_sha256"] == sha256_of(pictures["green"])
        assert isinstance(record["answer"], str) and record["answer"].strip()


# --- bad input: exit 2, one line, no traceback ---------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    """How to build one bad invocation and the words its one-line error must contain."""

    build: Callable[[Path, dict[str, Path], dict[str, Path]], list[object]]  # (tmp, pictures, checkpoints)
    words: Callable[[Path, dict[str, Path], dict[str, Path]], list[str]]
    before_model: bool  # fails before importing torch, so it must be fast


def _text_as_jpg(tmp: Path) -> Path:
    path = tmp / "notes.jpg"
    path.write_text("these are my shopping notes, not a picture\n", encoding="utf-8")
    return path


def _truncated_jpeg(tmp: Path) -> Path:
    whole = tmp / "whole.jpg"
    image = Image.new("RGB", (256, 192), (30, 90, 200))
    ImageDraw.Draw(image).ellipse((40, 30, 200, 160), fill=(250, 200, 20))
    image.save(whole, quality=90)
    data = whole.read_bytes()
    path = tmp / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _zero_bytes(tmp: Path) -> Path:
    path = tmp / "empty.png"
    path.write_bytes(b"")
    return path


def _tiny_image(tmp: Path) -> Path:
    path = tmp / "dot.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)
    return path


def _empty_dir(tmp: Path) -> Path:
    path = tmp / "not-a-checkpoint"
    path.mkdir()
    return path


def _bert_dir(tmp: Path) -> Path:
    path = tmp / "bert-base"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    return path


def _ask(image: object, question: str = QUESTION, *extra: object, model: object = None) -> list[object]:
    return ["ask", image, question, *extra, *(["--model", model] if model is not None else [])]


def _bad_option(flag: str, value: str, words: list[str]) -> BadCase:
    """`ask` about the red picture with one option out of range: refused in words that contain `words`, before
    the model loads."""
    return BadCase(lambda t, p, c: _ask(p["red"], QUESTION, flag, value, model=c["opt"]), lambda t, p, c: words, True)


BAD_INPUTS: dict[str, BadCase] = {
    "missing-image": BadCase(
        lambda t, p, c: _ask(t / "no-such-photo.jpg", model=c["opt"]),
        lambda t, p, c: ["No file", str(t / "no-such-photo.jpg")], True),
    "directory-as-image": BadCase(
        lambda t, p, c: _ask(t, model=c["opt"]), lambda t, p, c: ["folder", str(t)], True),
    "text-file-named-jpg": BadCase(
        lambda t, p, c: _ask(_text_as_jpg(t), model=c["opt"]),
        lambda t, p, c: ["not an image", str(t / "notes.jpg")], True),
    "truncated-jpeg": BadCase(
        lambda t, p, c: _ask(_truncated_jpeg(t), model=c["opt"]),
        lambda t, p, c: ["damaged", str(t / "truncated.jpg")], True),
    "zero-byte-file": BadCase(
        lambda t, p, c: _ask(_zero_bytes(t), model=c["opt"]),
        lambda t, p, c: ["empty", "0 bytes", str(t / "empty.png")], True),
    "one-pixel-image": BadCase(
        lambda t, p, c: _ask(_tiny_image(t), model=c["opt"]), lambda t, p, c: ["1x1", str(t / "dot.png")], True),
    "empty-question": BadCase(
        lambda t, p, c: _ask(p["red"], "   ", model=c["opt"]), lambda t, p, c: ["question", "empty"], True),
    "max-new-tokens-0": _bad_option("--max-new-tokens", "0", ["--max-new-tokens", "0"]),
    "num-beams-0": _bad_option("--num-beams", "0", ["--num-beams", "0"]),
    "negative-temperature": _bad_option(
        "--temperature", "-1", ["--temperature must be 0, or a number from 0.01 to 100 (got -1)"]),
    "top-p-above-1": _bad_option("--top-p", "1.5", ["--top-p", "1.5"]),
    "repetition-penalty-0": _bad_option(
        "--repetition-penalty", "0", ["--repetition-penalty must be a number from 0.01 to 10 (got 0)"]),
    "seed-too-large": _bad_option(
        "--seed", str(2**64), [f"--seed must be a whole number from 0 to {2**63 - 1} (got {2**64})"]),
    "temperature-nan": _bad_option(
        "--temperature", "nan", ["--temperature must be 0, or a number from 0.01 to 100 (got nan)"]),
    "continue-and-resume": BadCase(
        lambda t, p, c: ["--continue", "--resume", "20250101-120000-abcdef"],
        lambda t, p, c: ["Give either --continue or --resume ID, not both."], True),
    "unknown-hub-model-offline": BadCase(
        lambda t, p, c: _ask(p["red"], model="nobody/no-such-model"),
        lambda t, p, c: ["nobody/no-such-model"], False),
    "empty-dir-as-model": BadCase(
        lambda t, p, c: _ask(p["red"], model=_empty_dir(t)),
        lambda t, p, c: ["BLIP-2", str(t / "not-a-checkpoint")], False),
    "other-model-type-dir": BadCase(
        lambda t, p, c: _ask(p["red"], model=_bert_dir(t)),
        lambda t, p, c: ["bert", "BLIP-2", str(t / "bert-base")], False),
    "question-longer-than-context": BadCase(
        lambda t, p, c: _ask(p["red"], "why " * 3000, model=c["opt"]),
        lambda t, p, c: ["too long"], False),
}


@pytest.fixture(scope="module")
def model_error_runs(tmp_path_factory: pytest.TempPathFactory, pictures: dict[str, Path],
                     checkpoints: dict[str, Path]) -> dict[str, tuple[subprocess.CompletedProcess[str], list[str]]]:
    """The cases found only once torch is imported, run together; each with the words its error needs."""
    root = tmp_path_factory.mktemp("model-errors")
    jobs: dict[str, Job] = {}
    words: dict[str, list[str]] = {}
    for case, bad in BAD_INPUTS.items():
        if not bad.before_model:
            folder = root / case
            folder.mkdir()
            jobs[case] = partial(run_cli, *bad.build(folder, pictures, checkpoints))
            words[case] = bad.words(folder, pictures, checkpoints)
    return {case: (result, words[case]) for case, result in run_together(jobs).items()}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case: str, tmp_path: Path, pictures: dict[str, Path],
                                          checkpoints: dict[str, Path], request: pytest.FixtureRequest) -> None:
    bad = BAD_INPUTS[case]
    if bad.before_model:
        args = bad.build(tmp_path, pictures, checkpoints)
        result, imported = run_cli_tracing_imports(*args)
        assert not imported & {"torch", "transformers"}, f"{case}: the model stack was loaded before the check"
        expected = bad.words(tmp_path, pictures, checkpoints)
    else:
        result, expected = request.getfixturevalue("model_error_runs")[case]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(PREFIX)
    for word in expected:
        assert word in line, f"{word!r} not in {line!r}"


def test_missing_image_fails_before_importing_torch(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    result = run_cli("ask", tmp_path / "gone.png", QUESTION, "--model", checkpoints["opt"],
                     python_flags=("-X", "importtime"))
    assert result.returncode == 2
    assert not imported_modules(result.stderr) & {"torch", "transformers"}


# --- a 100-megapixel photo -------------------------------------------------------------------------

# Runs the CLI's main() in a child and reports that child's own peak RSS (kB) on its last stderr line.
PEAK_RSS_WRAPPER = """
import resource, sys
from chatbot.images import load_image
from chatbot.cli import main
code = main(sys.argv[1:])
peak_kb = 0
try:
    with open("/proc/self/status") as status:  # VmHWM: this process's high-water mark, reset by exec
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
print(f"peak-rss-kb {peak_kb}", file=sys.stderr)
sys.exit(code)
"""


def test_hundred_megapixel_jpeg_is_answered_in_bounded_memory(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    photo = tmp_path / "huge.jpg"
    image = Image.new("RGB", (12000, 8400), (200, 220, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((1000, 1000, 6000, 5000), fill=(200, 30, 30))
    draw.rectangle((7000, 3000, 11000, 8000), fill=(20, 160, 40))
    image.save(photo, quality=30)  # ~1.6 MB, under a second
    del image, draw

    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, "ask", str(photo), QUESTION,
         "--model", str(checkpoints["opt"]), "--device", "cpu"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
        env=os.environ.copy(), stdin=subprocess.DEVNULL,
    )
    one_line(result)
    *other, last = result.stderr.splitlines()
    assert other in ([], [cut_short_text(30, command_line=True)]), result.stderr
    peak_mb = int(last.removeprefix("peak-rss-kb ")) / 1024
    # Seen: ~380 MB for this photo, about the same as for a 64x48 one (JPEG draft decoding at 1/8
    # scale); a full decode would add ~300 MB of pixels, and a float copy several GB more.
    print(f"100-megapixel ask: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1536, f"peak RSS {peak_mb:.0f} MB"


def test_the_example_picture_the_readme_uses_is_answered(checkpoints: dict[str, Path]) -> None:
    """The README's first command, on the repository's own picture (with the offline synthetic model)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "photo.jpg"
    assert load_image(example).original_size == (640, 480)
    result = run_cli("ask", example, "What is in the picture?", "--model", checkpoints["opt"], "--max-new-tokens", "4")
    assert result.returncode == 0 and only_cut_offs(result, 4) and len(result.stdout.splitlines()) == 1, result


def test_ask_about_several_images_answers_each_as_alone(checkpoints: dict[str, Path],
                                                       pictures: dict[str, Path]) -> None:
    """`ask A B "q"`: one `PATH: answer` line per image, each the answer `ask` gives for that image alone
    (its own fresh context); with --json one record per image."""
    model = ("--model", checkpoints["opt"], "--max-new-tokens", "5")
    runs = run_together({
        "red": partial(run_cli, "ask", pictures["red"], QUESTION, *model),
        "green": partial(run_cli, "ask", pictures["green"], QUESTION, *model),
        "both": partial(run_cli, "ask", pictures["red"], pictures["green"], QUESTION, *model),
        "json": partial(run_cli, "ask", pictures["red"], pictures["green"], QUESTION, *model, "--json"),
    })
    alone = {name: one_line(runs[name]) for name in ("red", "green")}
    assert runs["both"].returncode == 0, runs["both"].stderr
    assert runs["both"].stdout.splitlines() == [f"{pictures['red']}: {alone['red']}",
                                                f"{pictures['green']}: {alone['green']}"]
    records = json_lines(runs["json"], 2)
    assert [(r["image"], r["answer"], r["question"]) for r in records] == [
        (str(pictures["red"]), alone["red"], QUESTION), (str(pictures["green"]), alone["green"], QUESTION)]


def test_ask_and_caption_go_on_past_a_file_that_cannot_be_read(checkpoints: dict[str, Path],
                                                              pictures: dict[str, Path], tmp_path: Path) -> None:
    """Of several images, one that cannot be read is one sentence on stderr and the others are answered as
    they would be without it; exit 2. None readable: the model is never loaded."""
    notes = _text_as_jpg(tmp_path)
    model = ("--model", checkpoints["opt"], "--max-new-tokens", "5")
    runs = run_together({
        "both": partial(run_cli, "caption", pictures["red"], pictures["green"], *model),
        "messy": partial(run_cli, "caption", pictures["red"], notes, pictures["green"], *model),
        "ask": partial(run_cli, "ask", notes, pictures["green"], QUESTION, *model),
        "none": partial(run_cli, "caption", notes, tmp_path / "gone.png", *model),
    })
    assert runs["both"].returncode == 0 and runs["messy"].returncode == 2
    assert runs["messy"].stdout == runs["both"].stdout  # the readable ones, exactly as without the bad one
    assert [line.split(" is ")[0] for line in runs["messy"].stderr.splitlines() if "blip2-chat:" in line] == [
        f"blip2-chat: {notes}"]
    assert runs["ask"].returncode == 2 and runs["ask"].stdout.startswith(f"{pictures['green']}: ")
    assert runs["none"].returncode == 2 and runs["none"].stdout == ""
    assert runs["none"].stderr.splitlines()[-1] == (
        "blip2-chat: None of the 2 images could be read (each is named above). Check the paths, or convert the "
        "files to JPEG or PNG.")
    assert "Loading" not in runs["none"].stderr


def test_object_storage_paths_without_ray_say_what_reads_them(capsys: pytest.CaptureFixture[str]) -> None:
    """Not "No file or folder at /cwd/s3:/bucket": describe reads s3:// and gs:// with --ray; index never."""
    from chatbot.cli import main

    assert main(["describe", "s3://bucket/photos/", "-r", "--model", "demo"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: describe reads s3:// paths only with --ray (s3://bucket/photos/). Add --ray (the cluster "
        "extra: pip install -e '.[cluster]'), or copy the images to a folder.")
    assert main(["index", "gs://bucket/photos", "--model", "demo"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: index works on files and folders on this machine, not gs://bucket/photos. Copy the images "
        "to a folder first.")


@pytest.mark.parametrize("ray", [[], ["--ray", "local"]])
def test_a_scheme_no_command_reads_is_named_with_or_without_ray(ray: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`ftp://` is no object storage that --ray reads: with --ray it was told to add --ray."""
    from chatbot.cli import main

    assert main(["describe", "ftp://host/photos", *ray, "--model", "demo"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: describe works on files and folders on this machine, not ftp://host/photos. Copy the images "
        "to a folder first.")


def test_storage_schemes_are_known_whatever_their_case() -> None:
    from chatbot.image_files import is_storage_uri

    assert [is_storage_uri(p) for p in ("S3://b/k", "gs://b", "abfss://c@a/p", "ftp://h/p", "s3:/b", "./s3")] == [
        True, True, True, False, False, False]


@pytest.mark.parametrize("command", [["describe", "examples/photo.jpg"], ["index", "examples"]])
@pytest.mark.parametrize("flags", [["--workers", "2"], ["--gpus-per-worker", "1"]])
def test_cluster_flags_without_ray_are_refused(command: list[str], flags: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """They were silently ignored: a run on one machine with `--workers 2` looked like it used two."""
    from chatbot.cli import main

    assert main([*command, *flags, "--model", "demo"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: --workers and --gpus-per-worker go with --ray (a run on one machine has one model). Add --ray "
        "to run on a local Ray instance or a cluster, or leave them out.")


@pytest.mark.parametrize("command", [["describe", "examples/photo.jpg"], ["index", "examples"]])
@pytest.mark.parametrize(("flags", "said"), [
    (["--workers", "0"], "--workers must be from 1 to 1024 (got 0). Try 1 per GPU."),
    (["--workers", "5000"], "--workers must be from 1 to 1024 (got 5000). Try 1 per GPU."),
    (["--gpus-per-worker", "nan"], "--gpus-per-worker must be from 0 to 16 (got nan). Use 1 for one GPU per worker, "
                                   "or 0 for CPU."),
    (["--gpus-per-worker", "-1"], "--gpus-per-worker must be from 0 to 16 (got -1.0). Use 1 for one GPU per worker, "
                                  "or 0 for CPU."),
])
def test_cluster_widths_are_checked_before_ray_starts(command: list[str], flags: list[str], said: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--gpus-per-worker nan` passed every check (no comparison with nan is true) and reached Ray."""
    import sys

    from chatbot.cli import main

    assert main([*command, "--ray", *flags, "--model", "demo"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"blip2-chat: {said}"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("command", [["models"], ["sessions"], ["models", "--json"]])
def test_a_full_disk_under_the_output_is_one_sentence(command: list[str], tmp_path: Path) -> None:
    """`blip2-chat models > /dev/full` ended in a traceback from print()."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "chatbot", *command], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=60, env={**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)})
    assert (result.returncode, result.stderr) == (2, "blip2-chat: No space left on device (the output).\n")
