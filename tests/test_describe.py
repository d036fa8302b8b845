"""`blip2-chat describe`: alt text for folders, in three formats, surviving a kill, batched == one at a time.

The command runs as a subprocess on a folder with good images, a broken file, a copy, notes
and sub-folders. A run is SIGKILLed half-way and resumed. The batched engine path is checked
token by token against the one-image path on both families.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import UserError
from chatbot.frontends.describe.alt_text import DEFAULT_MAX_NEW_TOKENS, DEFAULT_REPETITION_PENALTY, to_alt_text
from chatbot.frontends.describe.output import FIELDS, OutputError, Row, complete_length, read_rows, render
from chatbot.frontends.describe.run import describe
from chatbot.frontends.progress_line import ProgressLine, plural
from chatbot.image_files import Unreadable, find_images, unreadable_sentence
from chatbot.images import load_image
from tests.conftest import FAMILIES, make_image
from tests.test_cli import Runs, run_cli, run_cli_tracing_imports, run_together

ALT_TEXT_OPTIONS = GenerationOptions(max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                                     repetition_penalty=DEFAULT_REPETITION_PENALTY)
SUMMARY = re.compile(r"^Done: (\d+) described, (\d+) skipped \(already in the output\), (\d+) failed\.")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """photos/: two images, a copy of one, a broken JPEG, notes, a hidden file, sub/ and sub/deeper/."""
    root = tmp_path_factory.mktemp("describe") / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    make_image(root / "beach.png", (30, 120, 220))
    make_image(root / "forest.jpg", (20, 150, 40), size=(80, 60))
    shutil.copyfile(root / "beach.png", root / "copy of beach.png")
    make_image(root / "whole.jpg", (200, 60, 20), size=(96, 72))
    data = (root / "whole.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) // 3])
    (root / "whole.jpg").unlink()
    (root / "notes.txt").write_text("not a picture\n", encoding="utf-8")
    make_image(root / ".hidden.png", (0, 0, 0))
    make_image(root / "sub" / "city.png", (120, 120, 120), size=(70, 50))
    make_image(root / "sub" / "deeper" / "night.PNG", (10, 10, 60), size=(50, 70))
    return root


def expected_images(photos: Path, recursive: bool) -> set[str]:
    top = {"beach.png", "forest.jpg", "copy of beach.png", "broken.jpg"}
    below = {"sub/city.png", "sub/deeper/night.PNG"} if recursive else set()
    return {str(photos / name) for name in top | below}


# --- finding images (no model) --------------------------------------------------------------------


def test_find_images_walks_folders_once_per_file(photos: Path) -> None:
    assert set(find_images([str(photos)])) == expected_images(photos, recursive=False)
    found = find_images([str(photos), str(photos / "beach.png"), str(photos / "sub")], recursive=True)
    assert sorted(found) == sorted(expected_images(photos, recursive=True))  # beach.png and sub/ once
    assert find_images([str(photos / "notes.txt")]) == [str(photos / "notes.txt")]  # named outright: tried


@pytest.mark.parametrize(("paths", "words"), [
    (["{root}/missing"], ["No file or folder", "missing"]),
    (["https://example.org/cat.jpg"], ["not links"]),
    (["{root}/sub/empty"], ["No images found", ".jpg"]),
])
def test_find_images_refuses_what_it_cannot_use(tmp_path: Path, paths, words) -> None:
    root = tmp_path / "root"
    (root / "sub" / "empty").mkdir(parents=True)
    with pytest.raises(UserError) as caught:
        find_images([path.format(root=root) for path in paths])
    for word in words:
        assert word in str(caught.value)


def test_a_folder_with_only_sub_folders_suggests_recursive(photos: Path) -> None:
    with pytest.raises(UserError, match="--recursive"):
        find_images([str(photos.parent)])


# --- alt text and progress (no model) -------------------------------------------------------------


@pytest.mark.parametrize(("caption", "alt"), [
    ("an image of a dog on a beach", "A dog on a beach."),
    ("  a photo of   a picture of two cats ", "Two cats."),
    ("this is a photograph showing a red car!", "A red car!"),
    ("a painting of a woman", "A painting of a woman."),  # the medium is worth saying
    ("image processing lab", "Image processing lab."),
    ("a photo of", ""),
    ("", ""),
])
def test_captions_become_alt_text(caption: str, alt: str) -> None:
    assert to_alt_text(caption) == alt


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_words_when_stderr_is_not_a_terminal() -> None:
    clock, stream = Clock(), io.StringIO()
    progress = ProgressLine(10, stream, every_seconds=5, clock=clock)
    progress.start("Describing 10 images, 2 at a time.")
    for _ in range(2):
        clock.now += 1
        progress.advance(worked=False)  # skipped: done, but no speed yet
    for _ in range(8):
        clock.now += 1
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Describing 10 images, 2 at a time."
    assert lines[1] == "1 of 10 images done."
    assert lines[2] == "6 of 10 images done, 0.7 images per second, about 6 seconds left."  # 5 s later
    assert lines[-1] == "10 of 10 images done, 0.8 images per second."
    assert "\r" not in stream.getvalue()


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    clock, stream = Clock(), Terminal()
    progress = ProgressLine(4, stream, clock=clock, environ={"TERM": "xterm-256color"})
    progress.start()
    for _ in range(4):
        clock.now += 0.5
        progress.advance()
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\n")
    assert "[######------------------] 1/4 images  2.0 images/s  0:02 left" in text
    assert "[########################] 4/4 images  2.0 images/s  took 0:02" in text  # nothing left: how long
    assert "\x1b" not in text


@pytest.mark.parametrize(("columns", "drawn"), [
    ("80", "[######------------------] 1/4 images  2.0 images/s  0:02 left"),
    ("40", "1/4 images  2.0 images/s  0:02 left"),  # the graphic goes first
    ("30", "1/4 images  0:02 left"),  # then the speed
    ("12", "1/4 images "),  # then the end is cut
])
def test_the_bar_fits_the_terminal_so_a_redraw_never_wraps(columns: str, drawn: str) -> None:
    # a probe: at 20 columns the 66-character bar wrapped, and each "\r" redraw began a new line
    clock, stream = Clock(), Terminal()
    progress = ProgressLine(4, stream, clock=clock, environ={"TERM": "xterm-256color", "COLUMNS": columns})
    progress.start()
    clock.now += 0.5
    progress.advance()
    assert stream.getvalue() == "\r" + drawn and len(drawn) < int(columns)


def test_a_stop_between_redraws_leaves_the_bar_at_the_last_row() -> None:
    """The bar is redrawn at most 10 times a second; a stop (Ctrl+C) must not leave it behind the rows written."""
    clock, stream = Clock(), Terminal()
    progress = ProgressLine(33, stream, clock=clock, environ={"TERM": "xterm-256color"})
    progress.start()
    for _ in range(6):  # all within one redraw interval: only the first is drawn as it happens
        progress.advance()
    progress.finish()
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("[####--------------------] 6/33 images  ") and last.endswith("left\n")


@pytest.mark.parametrize("environ, bar", [({"ACCESSIBLE": "1"}, True), ({"TERM": "dumb"}, True),
                                         ({"TERM": "xterm", "ACCESSIBLE": "0"}, False)])
def test_progress_in_words_on_a_terminal_for_screen_readers_or_beside_other_output(environ, bar) -> None:
    """A screen reader would read every redraw of the bar; a dumb terminal cannot redraw; rows on the same
    screen (describe without --out) would run into the bar's line."""
    clock, stream = Clock(), Terminal()
    progress = ProgressLine(3, stream, clock=clock, bar=bar, environ=environ)
    progress.start("Describing 3 images, 1 at a time.")
    for _ in range(3):
        clock.now += 10
        progress.advance()
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "Describing 3 images, 1 at a time.", "1 of 3 images done, 0.1 images per second, about 20 seconds left.",
        "2 of 3 images done, 0.1 images per second, about 10 seconds left.",
        "3 of 3 images done, 0.1 images per second."]
    assert "\r" not in stream.getvalue()


def test_one_of_anything_is_said_in_the_singular() -> None:
    assert (plural(0, "image"), plural(1, "image"), plural(2, "image")) == ("0 images", "1 image", "2 images")
    assert (plural(1, "entry", "entries"), plural(3, "entry", "entries")) == ("1 entry", "3 entries")
    clock, stream = Clock(), io.StringIO()
    progress = ProgressLine(1, stream, clock=clock)
    clock.now += 1
    progress.advance()
    assert stream.getvalue() == "1 of 1 image done, 1.0 images per second.\n"  # a rate stays plural
    assert "] 1/1 image  1.0 images/s" in progress.bar()
    loop = Unreadable("/p/a.png", "a loop of symbolic links")
    assert unreadable_sentence([loop]) == \
        "Left out 1 entry that could not be read: /p/a.png (a loop of symbolic links)."
    assert unreadable_sentence([loop, loop]).startswith("Left out 2 entries that could not be read: /p/a.png (")


# --- output formats: written, read back, torn rows cut (no model) ----------------------------------

AWKWARD = [
    Row("/photos/a|b,c \"d\".png", alt_text="A *bold* claim | with `code`, \\slashes\\ & <tags>.", sha256="ab" * 32),
    Row("/photos/ünïcödé.jpg", alt_text="Ein Hund, der läuft.", sha256="cd" * 32),
    Row("/photos/broken.jpg", error="/photos/broken.jpg is damaged or incomplete. Re-download it.", sha256=""),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_rows_read_back_exactly(tmp_path: Path, fmt: str) -> None:
    from chatbot.frontends.describe.output import RowWriter

    path = tmp_path / f"out.{fmt}"
    writer = RowWriter.open(path, fmt)
    for row in AWKWARD:
        writer.write(row)
    writer.close()
    assert read_rows(path, fmt) == AWKWARD
    assert_valid(path, fmt, len(AWKWARD))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_a_torn_last_row_is_cut_off(tmp_path: Path, fmt: str) -> None:
    from chatbot.frontends.describe.output import RowWriter, header

    path = tmp_path / f"out.{fmt}"
    writer = RowWriter.open(path, fmt)
    writer.write(AWKWARD[0])
    writer.close()
    whole = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(render(AWKWARD[1], fmt).encode("utf-8")[:17])  # killed in the middle of a row
    assert read_rows(path, fmt) == AWKWARD[:1]
    assert path.read_bytes() == whole
    path.write_text(header(fmt)[:9], encoding="utf-8")  # killed while writing the header
    assert read_rows(path, fmt) == []


def test_csv_records_end_only_outside_quotes() -> None:
    text = 'path,alt_text,error,sha256\n"/a\nb.png",x,,1\n"/c\n'
    assert complete_length(text, "csv") == len('path,alt_text,error,sha256\n"/a\nb.png",x,,1\n')


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("| File | Alt text | Error | SHA-256 |\n|---|---|---|---|\n", encoding="utf-8")
    with pytest.raises(OutputError, match="does not look like a csv file"):
        read_rows(path, "csv")


def assert_valid(path: Path, fmt: str, rows: int) -> list[dict[str, str]]:
    """Check the file parses as its format with independent readers; return its rows as dicts."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    if fmt == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
        assert all(set(record) == set(FIELDS) for record in records)
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        assert tuple(reader.fieldnames or ()) == FIELDS
        records = list(reader)
    else:
        lines = text.splitlines()
        assert lines[0] == "| File | Alt text | Error | SHA-256 |" and lines[1] == "|---|---|---|---|"
        records = []
        for line in lines[2:]:
            cells = re.split(r"(?<!\\)\|", line)  # a pipe in a cell is escaped
            assert cells[0] == "" and cells[-1] == "" and len(cells) == len(FIELDS) + 2, line
            # CommonMark: a backslash escapes ASCII punctuation only (`\\x1b` is shown as it is written)
            records.append(dict(zip(FIELDS, (re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", c.strip()) for c in cells[1:-1]),
                                    strict=True)))
    assert len(records) == rows, text
    return [{key: str(value or "") for key, value in record.items()} for record in records]


# --- the command on a folder ------------------------------------------------------------------------


def run_describe(*args: object) -> subprocess.CompletedProcess[str]:
    return run_cli("describe", *args)


@pytest.fixture(scope="module")
def folder_runs(photos: Path, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Runs:
    out = tmp_path_factory.mktemp("describe-out")
    model = ("--model", checkpoints["opt"], "--max-new-tokens", "12")
    return run_together({
        "jsonl": partial(run_describe, photos, "-r", "--out", out / "alt.jsonl", *model),
        "csv": partial(run_describe, photos, "--recursive", "--out", out / "alt.csv", "--batch-size", "3", *model),
        "md": partial(run_describe, photos, "-r", "--format", "md", "--out", out / "alt.txt", *model),
        "top": partial(run_describe, photos, photos / "beach.png", *model),  # to stdout, no sub-folders
    })


def outputs(folder_runs: Runs) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    def out_of(result: subprocess.CompletedProcess[str]) -> Path:
        return Path(result.args[result.args.index("--out") + 1])

    return {fmt: (folder_runs[fmt], out_of(folder_runs[fmt])) for fmt in ("jsonl", "csv", "md")}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_every_image_described_once_in_each_format(folder_runs: Runs, photos: Path, fmt: str) -> None:
    result, path = outputs(folder_runs)[fmt]
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = assert_valid(path, fmt, 6)
    assert Counter(row["path"] for row in rows) == Counter(expected_images(photos, recursive=True))
    by_name = {Path(row["path"]).name: row for row in rows}
    broken = by_name.pop("broken.jpg")
    assert "damaged" in broken["error"] and broken["alt_text"] == ""
    assert broken["sha256"] == hashlib.sha256((photos / "broken.jpg").read_bytes()).hexdigest()
    for row in by_name.values():
        assert row["alt_text"] and not row["error"] and len(row["sha256"]) == 64
        assert row["alt_text"][0].isupper() or not row["alt_text"][0].isalpha()
        assert row["sha256"] == load_image(row["path"]).sha256
    assert by_name["copy of beach.png"]["alt_text"] == by_name["beach.png"]["alt_text"]  # same bytes, same text
    assert SUMMARY.match(result.stderr.splitlines()[-1]).groups() == ("5", "0", "1")  # type: ignore[union-attr]


def test_the_formats_agree(folder_runs: Runs) -> None:
    rows = {fmt: sorted(read_rows(path, fmt), key=lambda row: row.path)
            for fmt, (_, path) in outputs(folder_runs).items()}
    assert rows["jsonl"] == rows["csv"] == rows["md"]  # batch size 3 and 8, three writers: the same rows


def test_progress_is_said_in_words_on_a_piped_stderr(folder_runs: Runs) -> None:
    notes = folder_runs["jsonl"].stderr.splitlines()
    assert "Describing 6 images, 8 at a time." in notes
    assert "6 of 6 images done, " in "\n".join(notes) and " images per second." in "\n".join(notes)
    assert "\r" not in folder_runs["jsonl"].stderr and "\x1b" not in folder_runs["jsonl"].stderr


def test_without_recursive_and_to_stdout(folder_runs: Runs, photos: Path) -> None:
    result = folder_runs["top"]
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert Counter(row["path"] for row in rows) == Counter(expected_images(photos, recursive=False))
    assert SUMMARY.match(result.stderr.splitlines()[-1]).groups() == ("3", "0", "1")  # type: ignore[union-attr]


def test_resume_of_a_finished_run_skips_everything(folder_runs: Runs, checkpoints: dict[str, Path],
                                                   photos: Path) -> None:
    _, path = outputs(folder_runs)["csv"]
    before = path.read_bytes()
    again = run_describe(photos, "-r", "--out", path, "--resume", "--model", checkpoints["opt"])
    assert again.returncode == 0, again.stderr
    assert SUMMARY.match(again.stderr.splitlines()[-1]).groups() == ("0", "6", "0")  # type: ignore[union-attr]
    assert path.read_bytes() == before


def test_an_existing_output_is_not_overwritten(folder_runs: Runs, photos: Path, checkpoints: dict[str, Path]) -> None:
    _, path = outputs(folder_runs)["md"]
    before = path.read_bytes()
    result, imported = run_cli_tracing_imports("describe", photos, "--out", path, "--format", "md", "--model",
                                               checkpoints["opt"])
    assert not imported & {"torch", "transformers"}  # refused before loading the model
    assert result.returncode == 2 and "already exists" in result.stderr and "--resume" in result.stderr
    assert path.read_bytes() == before


# --- a run killed half-way, then resumed -------------------------------------------------------------

# Runs the CLI with every batch slowed down, so the test can kill it half-way (the tiny model is fast).
SLOW_CLI = """
import sys, time
from chatbot.engine.blip2 import Blip2Engine
answer_batch = Blip2Engine.answer_batch
def slow(self, *args, **kwargs):
    answers = answer_batch(self, *args, **kwargs)
    time.sleep(0.15)
    return answers
Blip2Engine.answer_batch = slow
from chatbot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume_describes_each_image_exactly_once(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(12):
        make_image(folder / f"img{n:02d}.png", (20 * n, 255 - 20 * n, (70 * n) % 256), size=(40 + 4 * n, 40))
    out = tmp_path / "alt.jsonl"
    args = ["describe", str(folder), "--out", str(out), "--batch-size", "1", "--model", str(checkpoints["opt"]),
            "--max-new-tokens", "6"]
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= 3):
            assert process.poll() is None and time.monotonic() < deadline, "describe ended before it was killed"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    text = out.read_text(encoding="utf-8")
    before = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # whole rows
    assert 3 <= len(before) < 12
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"path": "' + str(folder / "img11.png") + '", "alt_te')  # as if killed mid-write

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    described, skipped, failed = map(int, SUMMARY.match(resumed.stderr.splitlines()[-1]).groups())  # type: ignore[union-attr]
    assert (described, skipped, failed) == (12 - len(before), len(before), 0)
    rows = assert_valid(out, "jsonl", 12)
    assert Counter(row["path"] for row in rows) == Counter(str(path) for path in folder.iterdir())
    assert rows[: len(before)] == [{key: str(value or "") for key, value in row.items()} for row in before]


# --- batched == one at a time ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("batch")
    colours = [(200, 30, 30), (20, 180, 40), (10, 10, 250), (250, 250, 10), (120, 60, 200), (0, 0, 0),
               (255, 255, 255), (90, 200, 200)]
    return [load_image(make_image(root / f"{n}.png", colour, size=(48 + 8 * n, 40 + 4 * n)))
            for n, colour in enumerate(colours)]


PROMPTS: dict[str, str | list[str]] = {"same": "", "different": ["", "Question: what is it? Answer:", "a photo of",
                                      "Question: how many dogs are on the grass? Answer:"] * 2}


def assert_batched_equals_single(engine, images: list, prompt: str | list[str]) -> None:
    """Each image alone, then all in one batch: the same tokens and text per image, the chat's KV cache untouched."""
    singles = []
    for n, image in enumerate(images):
        engine.images.clear()  # encoded alone, as in a one-image run
        answer = engine.answer(image, prompt if isinstance(prompt, str) else prompt[n], ALT_TEXT_OPTIONS)
        singles.append((list(engine.last_stats.token_ids), answer))
    engine.images.clear()
    kv_cache_before = engine.prefix.held
    answers = engine.answer_batch(images, prompt, ALT_TEXT_OPTIONS)
    stats = engine.last_batch_stats
    assert stats.token_ids == [tokens for tokens, _ in singles]
    assert answers == [answer for _, answer in singles]
    assert len(set(answers)) > 1  # the images really differ
    assert stats.images == len(images) and stats.images_encoded == len(images) and stats.seconds_total > 0
    assert engine.prefix.held is kv_cache_before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompts", ["same", "different"])
def test_batched_tokens_equal_one_at_a_time(engines, eight_images, family: str, prompts: str) -> None:
    """Greedy (describe's options); different prompts make rows of different lengths, so padding is exercised."""
    assert_batched_equals_single(engines[family], eight_images, PROMPTS[prompts])


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_tokens_equal_one_at_a_time_on_cuda(checkpoints, eight_images, family: str) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from chatbot.engine.blip2 import open_engine

    # FlanT5 on a GPU: rows of different lengths are padded on the right and attended with a mask, and a
    # single image through the static decoding attends over its encoder output padded to 512; either
    # way other kernels than the unpadded pass's run, whose float32 rounding flipped a near-tie of the
    # random weights on an H200 (token 21 of 30, docs/benchmarks.md). So FlanT5 is checked with one
    # prompt for all rows, on the plain path, where nothing is padded.
    engine = open_engine(str(checkpoints[family]), device="cuda", dtype="float32", static_decoding=family == "opt")
    assert_batched_equals_single(engine, eight_images, PROMPTS["different" if family == "opt" else "same"])


def test_describe_gives_the_same_rows_at_any_batch_size(engines, eight_images) -> None:
    paths = [image.source for image in eight_images]
    results = {}
    for size in (1, 3, 8):
        engines["opt"].images.clear()
        rows: list[Row] = []
        summary = describe(engines["opt"], paths, rows.append, options=ALT_TEXT_OPTIONS, batch_size=size)
        assert (summary.described, summary.skipped, summary.failed) == (8, 0, 0)
        results[size] = rows
    assert results[1] == results[3] == results[8]
    assert [row.path for row in results[1]] == paths


def test_ctrl_c_stops_describe_and_keeps_the_rows(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    folder = tmp_path / "some"
    folder.mkdir()
    for n in range(6):
        make_image(folder / f"img{n}.png", (40 * n, 30, 200 - 30 * n))
    out = tmp_path / "alt.csv"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "describe", str(folder), "--out", str(out), "--batch-size", "1",
         "--model", str(checkpoints["opt"]), "--max-new-tokens", "4"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= 2):  # the header and one row
            assert process.poll() is None and time.monotonic() < deadline, "describe ended before Ctrl+C"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    stopped = re.search(r"Stopped after (\d) of 6 images\. What was described so far is saved; run the same "
                        r"command with --resume to go on\.", stderr)
    assert stopped, stderr
    assert "Traceback" not in stderr
    rows = len(assert_valid(out, "csv", len(read_rows(out, "csv"))))
    assert 1 <= rows < 6 and int(stopped.group(1)) == rows  # stopped just after a row was seen: it is counted


@pytest.mark.parametrize(("extra", "words"), [
    (["--resume"], ["--resume needs", "--out"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    (["--format", "xml"], ["invalid choice: 'xml'"]),
])
def test_bad_describe_flags_fail_before_the_model_loads(photos: Path, checkpoints: dict[str, Path],
                                                       extra: list[str], words: list[str]) -> None:
    result, imported = run_cli_tracing_imports("describe", photos, "--model", checkpoints["opt"], *extra)
    assert not imported & {"torch", "transformers"}
    assert result.returncode == 2 and result.stdout == ""
    for word in words:
        assert word in result.stderr


def test_an_engine_without_batching_answers_one_at_a_time(eight_images) -> None:
    from chatbot.engine.scripted import ScriptedEngine
    from chatbot.frontends.describe.run import EMPTY_ANSWER

    engine = ScriptedEngine("a red square", "an image of a green field", "")  # the base class's answer_batch
    rows: list[Row] = []
    summary = describe(engine, [image.source for image in eight_images[:3]], rows.append,
                       options=GenerationOptions(), batch_size=2)
    assert [row.alt_text for row in rows] == ["A red square.", "A green field.", ""]
    assert rows[2].error == EMPTY_ANSWER  # empty alt text would mark the image as decorative
    assert (summary.described, summary.skipped, summary.failed) == (2, 0, 1)
    assert engine.prompts == ["", "", ""]
    assert (engine.last_batch_stats.images, engine.last_batch_stats.new_tokens) == (1, 0)


# --- the command in this process, on a scripted engine (no model: fast, and the front end is what is tested) ---


def use_scripted_engine(monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
    """`describe` gets a ScriptedEngine saying `answers` (then "I cannot tell.") instead of loading a model."""
    import chatbot.core.runtime
    from chatbot.engine.scripted import ScriptedEngine

    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for",
                        lambda settings, progress=None: ScriptedEngine(*answers))


def describe_here(*args: object) -> int:
    from chatbot.cli import main

    return main(["describe", *map(str, args)])


def test_one_image_is_said_in_the_singular_by_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    use_scripted_engine(monkeypatch, "a red square")
    image = make_image(tmp_path / "only.png", (200, 30, 30))
    assert describe_here(image, "--out", tmp_path / "alt.jsonl") == 0
    notes = capsys.readouterr().err.splitlines()
    assert "Describing 1 image, 8 at a time." in notes
    assert any(note.startswith("1 of 1 image done, ") for note in notes)
    assert SUMMARY.match(notes[-1]).groups() == ("1", "0", "0")  # type: ignore[union-attr]
    assert not re.search(r"(?<![\d.])1 (images|entries)\b", "\n".join(notes))  # "501.1 images per second" is fine


@pytest.mark.parametrize("fmt", ["csv", "md"])
def test_a_table_on_stdout_starts_with_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """`describe --format md > alt.md` is a whole Markdown table, and a CSV on stdout has its column names."""
    use_scripted_engine(monkeypatch, "a green square", "a red square")  # in the order of the names
    folder = tmp_path / "two"
    folder.mkdir()
    make_image(folder / "red.png", (200, 30, 30))
    make_image(folder / "green.png", (20, 180, 40))
    assert describe_here(folder, "--format", fmt) == 0
    saved = tmp_path / f"alt.{fmt}"  # as `> alt.md` would save it
    saved.write_text(capsys.readouterr().out, encoding="utf-8")
    rows = assert_valid(saved, fmt, 2)  # the header is there, then the rows, once each
    assert [row["alt_text"] for row in rows] == ["A green square.", "A red square."]
    assert [row.path for row in read_rows(saved, fmt)] == [str(folder / "green.png"), str(folder / "red.png")]


class StopsAfter(ScriptedEngine):
    """A ScriptedEngine that answers `batches` batches, then is stopped as by Ctrl+C."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.batches = batches

    def answer_batch(self, images, prompt, options):  # type: ignore[no-untyped-def]
        if self.batches == 0:
            raise KeyboardInterrupt
        self.batches -= 1
        return super().answer_batch(images, prompt, options)


def test_a_stop_says_how_many_images_have_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The count said at a stop is of the rows in the output (skipped ones included), not of the last progress
    line shown (sentences come at most every few seconds, so it is often behind)."""
    import chatbot.core.runtime

    folder = tmp_path / "five"
    folder.mkdir()
    for n in range(5):
        make_image(folder / f"img{n}.png", (40 * n, 30, 200 - 30 * n))
    out = tmp_path / "alt.jsonl"
    for batches, resume, rows in [(2, [], 2), (1, ["--resume"], 3)]:
        monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None, n=batches:
                            StopsAfter(n))
        assert describe_here(folder, "--out", out, "--batch-size", "1", *resume) == 130
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"Stopped after {rows} of 5 images. What was described so far is saved; run the same command with "
            "--resume to go on.")
        assert len(read_rows(out, "jsonl")) == rows
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: StopsAfter(2))
    assert describe_here(folder, "--batch-size", "1") == 130  # to stdout: --resume cannot go on from there
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err.splitlines()[-1] == ("Stopped after 2 of 5 images. Pass --out FILE to write a file that "
                                             "--resume can go on from.")


def test_jsonl_on_stdout_has_no_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    use_scripted_engine(monkeypatch)
    assert describe_here(make_image(tmp_path / "red.png", (200, 30, 30))) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["path"] == str(tmp_path / "red.png")


def test_describe_does_not_offer_json(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its rows are JSON Lines already; the model flags' --json (one object per answer) meant nothing here."""
    from chatbot.cli import main

    with pytest.raises(SystemExit):
        main(["describe", "--help"])
    assert "--json" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["describe", str(photos), "--json"])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "no --json" in error and "--format jsonl" in error
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    assert "--json" in capsys.readouterr().out  # the other commands keep it
