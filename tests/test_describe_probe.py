"""What a user probe of `describe` found: a carriage return in a file name made invalid CSV; Markdown redirected
from stdout (`> alt.md`) spelled hostile names unlike `--out alt.md`, so `--resume` described them again; an
--out that is a folder was refused only once the model had loaded; and a second Ctrl+C while the run stopped
aborted the process with a traceback.

The format tests write rows and read them back with the csv module and JSON (independent of describe's
reader) and with `read_rows` (what --resume uses); a ScriptedEngine answers where the front end is what is
tested. The Ctrl+C test runs the demo model in a child process and holds its model thread busy until told.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatbot.frontends.describe.ctrl_c import CtrlC
from chatbot.frontends.describe.out_file import held_alone
from chatbot.frontends.describe.output import FIELDS, Row, RowWriter, read_rows
from chatbot.frontends.describe.run import as_found
from chatbot.untrusted import has_controls
from tests.conftest import make_image
from tests.test_cli import run_cli_tracing_imports
from tests.test_describe import SUMMARY, describe_here, use_scripted_engine
from tests.test_hostile_names import NOT_UTF8, named_in_bytes

# --- 1. any character in a name: every row reads back, and --resume finds it ------------------------------

# any character (NUL too: no name holds it, but a caption might), and the lone surrogates that stand for the
# undecodable bytes of a name that is not UTF-8 (os.fsdecode gives U+DC80..U+DCFF, never others); the characters
# CSV, Markdown and a terminal treat specially made likely
name_chars = st.characters(blacklist_categories=("Cs",)) | st.sampled_from('\r\n",|\\\x00\x1b\x85\u2028 ') \
    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
names = st.text(alphabet=name_chars, min_size=1, max_size=24)


def as_written(text: str) -> str:
    """The reference for what a UTF-8 file holds of `text`: each undecodable byte (U+DC80..U+DCFF) as `\\xNN`."""
    return "".join(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text)


def as_read_from_markdown(text: str) -> str:
    """The reference for a Markdown cell read back: `text` itself, but for each undecodable byte of a name
    (U+DC80..U+DCFF), which the table writes as `\\xNN` and so reads back as U+0080..U+00FF."""
    return "".join(chr(ord(ch) - 0xDC00) if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text)


def as_in_csv(text: str) -> str:
    """The reference for a CSV cell: `as_written`, after a `'` where a spreadsheet would see a formula (a cell
    starting with = + - @, a tab or a carriage return) or where the cell starts with `'` itself."""
    cell = as_written(text)
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else cell


def rows_for(name: str) -> list[Row]:
    return [Row(f"/p/{name}", error=f"{name} is damaged.", sha256="ab" * 32),
            Row(f"/p/{name}.png", alt_text=f"A {name}, quoted.", sha256="cd" * 32), Row("/q/plain.png", "A cat.")]


def write(path: Path, fmt: str, rows: list[Row]) -> None:
    path.unlink(missing_ok=True)
    with RowWriter.open(path, fmt) as writer:
        for row in rows:
            writer.write(row)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
@example(name="\r\rcr.jpg")  # the probe's name
@example(name="a\rb,\"c\"\n\udcff")
@example(name='=HYPERLINK("http://x.example/?"&A1,"open")')
@example(name="'=1+1")
def test_any_name_reads_back_from_csv_exactly_and_resumes(name: str, tmp_path: Path) -> None:
    rows = rows_for(name)
    path = tmp_path / "alt.csv"
    write(path, "csv", rows)
    with open(path, encoding="utf-8", newline="") as handle:  # the csv module on its own, as a spreadsheet would
        records = list(csv.reader(handle))
    assert records == [list(FIELDS)] + [[as_in_csv(getattr(row, field)) for field in FIELDS] for row in rows]
    done = read_rows(path, "csv")  # what --resume reads
    assert done == [Row(*(as_written(getattr(row, field)) for field in FIELDS)) for row in rows]
    paths = [row.path for row in rows]
    assert [row.path for row in as_found(done, paths, "csv")] == paths  # each image found under its own name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
@example(name="\r\rcr.jpg")
@example(name=" a  b\t~~struck~~ &#32; \\x1b\u3000")  # spaces a table drops or folds; an escape's own spelling
def test_any_name_reads_back_from_json_lines_and_markdown(name: str, tmp_path: Path) -> None:
    rows = rows_for(name)
    for fmt in ("jsonl", "md"):
        path = tmp_path / f"alt.{fmt}"
        write(path, fmt, rows)
        text = path.read_bytes().decode("utf-8")  # valid UTF-8 whatever the name
        if fmt == "jsonl":
            assert [json.loads(line) for line in text.split("\n")[:-1]] == [
                {field: getattr(row, field) for field in FIELDS} for row in rows]  # lossless
        else:  # a table row is one line holding nothing a terminal obeys, and every cell reads back
            assert len(text.split("\n")) == 2 + len(rows) + 1 and not has_controls(text.replace("\n", ""))
            assert read_rows(path, fmt) == [Row(*(as_read_from_markdown(getattr(row, field)) for field in FIELDS))
                                            for row in rows]
        paths = [row.path for row in rows]
        assert [row.path for row in as_found(read_rows(path, fmt), paths, fmt)] == paths


def test_a_carriage_return_in_a_name_is_described_then_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "h"
    folder.mkdir()
    (folder / "\r\rcr.jpg").write_bytes(b"x")  # not an image: an error row, whose message names the file too
    make_image(folder / "red.png", (200, 30, 30))
    out = tmp_path / "h.csv"
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(folder, "--out", out) == 0
    capsys.readouterr()
    with open(out, encoding="utf-8", newline="") as handle:
        header, broken, red = csv.reader(handle)
    assert header == list(FIELDS) and broken[0] == str(folder / "\r\rcr.jpg") and broken[2]
    assert red[:2] == [str(folder / "red.png"), "A red square."]
    written = out.read_bytes()
    use_scripted_engine(monkeypatch)
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("0", "2", "0")  # type: ignore[union-attr]
    assert out.read_bytes() == written


def test_an_answer_that_reads_as_a_formula_is_text_to_a_spreadsheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    make_image(folder / "red.png", (200, 30, 30))
    out = tmp_path / "f.csv"
    use_scripted_engine(monkeypatch, '=HYPERLINK("http://x.example/","open")')
    assert describe_here(folder, "--out", out) == 0
    with open(out, encoding="utf-8", newline="") as handle:
        _, red = csv.reader(handle)
    assert red[1].startswith("'=HYPERLINK(")  # a spreadsheet shows it as text, without the '
    assert read_rows(out, "csv")[0].alt_text == red[1][1:]  # what --resume and the user's text see
    capsys.readouterr()
    use_scripted_engine(monkeypatch)
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("0", "1", "0")  # type: ignore[union-attr]


# --- 2. Markdown on stdout: a file gets what --out writes; a pipe's table is recognised by --resume ------------


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """hostile/: an escape sequence in a name, a name that is not UTF-8 (where the filesystem allows), a plain one."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    make_image(folder / "\x1b[31mred.png", (200, 30, 30))
    make_image(named_in_bytes(folder, b"bad" + NOT_UTF8), (20, 180, 40))
    make_image(folder / "plain.png", (20, 30, 200))
    return folder


def resumed(folder: Path, out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple:
    capsys.readouterr()
    use_scripted_engine(monkeypatch)
    assert describe_here(folder, "--out", out, "--resume") == 0
    return SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups()  # type: ignore[union-attr]


def test_markdown_redirected_to_a_file_is_what_out_writes(hostile: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    answers = ("a red square", "a green square", "a blue square")
    use_scripted_engine(monkeypatch, *answers)
    assert describe_here(hostile, "--out", tmp_path / "out.md") == 0
    redirected = tmp_path / "redirected.md"
    with open(redirected, "w", encoding="utf-8", newline="") as stdout:  # `> redirected.md`
        monkeypatch.setattr(sys, "stdout", stdout)
        use_scripted_engine(monkeypatch, *answers)
        assert describe_here(hostile, "--format", "md") == 0
        monkeypatch.undo()
    assert redirected.read_bytes() == (tmp_path / "out.md").read_bytes()
    before = redirected.read_bytes()
    assert resumed(hostile, redirected, monkeypatch, capsys) == ("0", "3", "0")  # none described twice
    assert redirected.read_bytes() == before


def test_markdown_on_a_pipe_is_shown_safely_and_resumed(hostile: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    use_scripted_engine(monkeypatch, "a red square", "a green square", "a blue square")
    assert describe_here(hostile, "--format", "md") == 0  # captured: not a file, so perhaps a terminal at the end
    table = capsys.readouterr().out
    assert all(not has_controls(line) for line in table.split("\n"))  # nothing raw that a terminal would obey
    assert "\\x1b" in table and "\\x9b" in table
    saved = tmp_path / "teed.md"  # `| tee teed.md`
    saved.write_text(table, encoding="utf-8")
    assert resumed(hostile, saved, monkeypatch, capsys) == ("0", "3", "0")  # the shown spelling is recognised
    assert saved.read_text(encoding="utf-8") == table


def test_names_that_differ_only_in_white_space_each_get_their_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "spaces"
    folder.mkdir()
    names = ["a b.png", "a  b.png", "a\tb.png", " a b.png"]
    first = make_image(folder / names[0], (200, 30, 30))
    for name in names[1:]:
        (folder / name).write_bytes(first.read_bytes())  # the same bytes: only the name tells them apart
    out = tmp_path / "spaces.md"
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(first, "--out", out) == 0
    assert resumed(folder, out, monkeypatch, capsys) == ("3", "1", "0")  # once described, three still to do
    assert sorted(row.path for row in read_rows(out, "md")) == sorted(str(folder / name) for name in names)
    assert resumed(folder, out, monkeypatch, capsys) == ("0", "4", "0")


# --- 3. an --out that cannot be written is refused before the model loads -----------------------------------


@pytest.mark.parametrize(("where", "said"), [
    ("{folder}", "--out {folder} is a folder, not a file. Name a file in it, e.g. --out {folder}/alt.csv."),
    ("{image}/alt.csv", "Cannot write {image}/alt.csv: {image} is not a folder. Choose another --out."),
    ("{image}/deeper/alt.csv", "Cannot write {image}/deeper/alt.csv: {image} is not a folder. Choose another --out."),
])
def test_an_out_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path: Path, where: str,
                                                                          said: str) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    image = make_image(folder / "red.png", (200, 30, 30))
    out = where.format(folder=folder, image=image)
    before = image.read_bytes()
    result, imported = run_cli_tracing_imports("describe", folder, "--format", "csv", "--out", out, "--model", "demo")
    assert not imported & {"torch", "transformers"}
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"blip2-chat: {said.format(folder=folder, image=image)}\n"
    assert image.read_bytes() == before and sorted(folder.iterdir()) == [image]


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("target", ["missing.jsonl", "existing.jsonl"])
def test_a_link_at_out_is_refused_before_the_model_loads(tmp_path: Path, target: str, resume: bool) -> None:
    # a probe: a dangling link planted at --out had describe create its target and write the rows there
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    victim = tmp_path / "elsewhere" / target
    victim.parent.mkdir()
    if target == "existing.jsonl":
        victim.write_text('{"path": "/x.png", "alt_text": "A cat.", "error": "", "sha256": ""}\n')
    before = victim.read_bytes() if victim.exists() else None
    link = tmp_path / "alt.jsonl"
    link.symlink_to(victim)
    result, imported = run_cli_tracing_imports("describe", image, "--out", link, "--model", "demo",
                                               *(["--resume"] if resume else []))
    assert not imported & {"torch", "transformers"}
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"blip2-chat: --out {link} is a symbolic link (to {victim}), and describe writes only to "
                             "a file itself, never through a link. Give --out the file's own path, or another name.\n")
    assert (victim.read_bytes() if victim.exists() else None) == before and link.is_symlink()


def test_a_second_run_into_the_same_out_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # a probe: two runs with the same --out (and --resume) each described every image and appended its row
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "alt.csv"
    use_scripted_engine(monkeypatch, "a red square")
    with held_alone(out, "csv"):  # the first run, at work
        assert describe_here(image, "--out", out, "--resume") == 2
    assert capsys.readouterr().err == (f"blip2-chat: Another blip2-chat describe is writing to {out}. Wait for it to "
                                       "finish (then --resume goes on from its rows), or choose another --out.\n")
    assert not out.exists()  # the first run wrote nothing: no empty file is left behind
    assert describe_here(image, "--out", out, "--resume") == 0  # and once it is done, the file is free
    assert out.read_text(encoding="utf-8").count("A red square.") == 1


def test_a_resume_with_nothing_left_loads_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # a README walk-through: --resume over a folder all in the output loaded the model to describe nothing
    folder = tmp_path / "two"
    folder.mkdir()
    make_image(folder / "red.png", (200, 30, 30))
    make_image(folder / "blue.png", (20, 30, 200))
    out = tmp_path / "alt.csv"
    use_scripted_engine(monkeypatch, "a blue square", "a red square")
    assert describe_here(folder, "--out", out) == 0
    written = out.read_bytes()
    capsys.readouterr()
    assert describe_here(folder, "--out", out, "--resume", "--model", str(tmp_path / "no-such-model")) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"Nothing left to describe: 2 images are in {out} already, with the same bytes; the model was not loaded.",
        f"Done: 0 described, 2 skipped (already in the output), 0 failed. Results in {out}."]
    assert out.read_bytes() == written
    (folder / "red.png").write_bytes((folder / "blue.png").read_bytes())  # other bytes: the model is needed again
    assert resumed(folder, out, monkeypatch, capsys) == ("1", "1", "0")


def test_plain_true_in_the_config_gives_sentences_not_a_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a blind user's probe: with `plain = true`, describe and index still redrew a bar on the terminal
    from chatbot.locations import HOME_ENV
    from tests.test_describe import Terminal

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv(HOME_ENV, str(home))
    (home / "config.toml").write_text("plain = true\n")
    monkeypatch.setenv("TERM", "xterm-256color")  # a terminal that could show the bar
    monkeypatch.delenv("ACCESSIBLE", raising=False)
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(image, "--out", tmp_path / "alt.jsonl") == 0
    said = stderr.getvalue()
    assert "\r" not in said and "1 of 1 image done" in said


def test_a_run_that_fails_before_its_first_row_leaves_no_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "alt.jsonl"
    assert describe_here(image, "--out", out, "--model", str(tmp_path / "no-such-model")) == 2
    assert "no-such-model" in capsys.readouterr().err and not out.exists()


def test_an_out_in_missing_folders_makes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    use_scripted_engine(monkeypatch, "a red square")
    out = tmp_path / "new" / "deeper" / "alt.jsonl"
    assert describe_here(image, "--out", out) == 0
    assert [json.loads(line)["alt_text"] for line in out.read_text(encoding="utf-8").splitlines()] == ["A red square."]


# --- 4. Ctrl+C twice: one clean stop --------------------------------------------------------------------------


def test_a_ctrl_c_while_a_row_is_written_lands_after_it_and_later_ones_are_ignored() -> None:
    previous = signal.getsignal(signal.SIGINT)
    steps: list[str] = []
    try:
        ctrl_c = CtrlC()
        with pytest.raises(KeyboardInterrupt), ctrl_c.installed():
            with ctrl_c.held():
                signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns
                steps.append("row written")
            steps.append("next row")
        assert steps == ["row written"] and ctrl_c.pressed
        signal.raise_signal(signal.SIGINT)  # while the run stops: ignored
        steps.append("stopped cleanly")
        assert steps == ["row written", "stopped cleanly"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_that_ends_gives_ctrl_c_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGINT)
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(make_image(tmp_path / "red.png", (200, 30, 30)), "--out", tmp_path / "alt.jsonl") == 0
    assert signal.getsignal(signal.SIGINT) is before


# The CLI with its model thread held busy from the fourth batch on, until the file RELEASE exists; it makes the
# file BUSY when it starts holding. Three batches of two rows are written by then, every time.
HELD_CLI = """
import os, sys, time
from pathlib import Path
from chatbot.engine import batched
answer_batch = batched.answer_batch
batches = []
def held(*args, **kwargs):  # runs on the engine's model thread
    batches.append(1)
    if len(batches) > 3:
        Path(os.environ["BUSY"]).touch()
        while not Path(os.environ["RELEASE"]).exists():
            time.sleep(0.01)
    return answer_batch(*args, **kwargs)
batched.answer_batch = held
from chatbot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def wait_for(condition, process: subprocess.Popen[bytes], what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, f"describe ended before {what}"
        time.sleep(0.01)


def test_ctrl_c_twice_stops_once_without_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(12):
        make_image(folder / f"img{n:02d}.png", (20 * n, 255 - 20 * n, (70 * n) % 256), size=(40 + 4 * n, 40))
    out, err = tmp_path / "alt.csv", tmp_path / "stderr.txt"
    busy, release = tmp_path / "busy", tmp_path / "release"
    env = {**os.environ, "BUSY": str(busy), "RELEASE": str(release)}
    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", HELD_CLI, "describe", str(folder), "--out", str(out), "--batch-size", "2",
             "--model", "demo", "--max-new-tokens", "4"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        wait_for(busy.exists, process, "its fourth batch")
        process.send_signal(signal.SIGINT)  # the model thread is busy: the stop must not wait for it
        deadline = time.monotonic() + 120
        while process.poll() is None and b"Stopped after" not in err.read_bytes():
            assert time.monotonic() < deadline, "no stop was said"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)  # a second Ctrl+C while it stops (nothing, if it has left already)
        release.touch()  # the model thread may finish its batch now
        process.wait(timeout=120)
    finally:
        release.touch()
        if process.poll() is None:
            process.kill()
            process.wait()
    said = err.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 130, said
    assert "Traceback" not in said and "terminate called" not in said, said
    assert said.splitlines()[-1] == ("Stopped after 6 of 12 images. What was described so far is saved; run the "
                                     "same command with --resume to go on.")
    with open(out, encoding="utf-8", newline="") as handle:
        header, *rows = csv.reader(handle)
    assert header == list(FIELDS) and len(rows) == 6
    for path, alt_text, error, sha256 in rows:
        assert Path(path).parent == folder and alt_text and not error and re.fullmatch("[0-9a-f]{64}", sha256)
    assert len({row[0] for row in rows}) == 6


# --- 5. a --prompt no model can take: not UTF-8 before the model loads, too long before any image is answered ------


def test_a_prompt_that_is_not_utf8_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    """A --prompt typed in another encoding arrives with its bytes as lone surrogates, which the tokenizer
    refused with a TypeError once the model had loaded."""
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "alt.jsonl"
    result, imported = run_cli_tracing_imports("describe", image, "--out", out, "--model", "demo",
                                               "--prompt", "caf\udce9")
    assert not imported & {"torch", "transformers"}
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("blip2-chat: The prompt is not valid UTF-8 text. Type it again in UTF-8 (check your "
                             "terminal's character encoding).\n")
    assert not out.exists()


def test_a_prompt_too_long_for_the_model_is_refused_before_any_image_is_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The model could not take it (an IndexError inside generate, and no row); now the same rule as a question's
    length, checked once after the model loads: 2048 positions, 32 for the image, 30 for the answer."""
    import chatbot.core.runtime
    from chatbot.engine.scripted import ScriptedEngine

    engine = ScriptedEngine("a red square")
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: engine)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for n in range(3):
        make_image(folder / f"img{n}.png", (60 * n, 30, 30))
    out = tmp_path / "alt.jsonl"
    assert describe_here(folder, "--out", out, "--prompt", "a " * 1990) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("blip2-chat: The prompt is too long for this model: it needs 1992 tokens and there is room "
                       "for 1986. Shorten --prompt (or lower --max-new-tokens).")
    assert not any(line.startswith("Describing") for line in err)
    assert engine.prompts == [] and not out.exists()
    assert describe_here(folder, "--out", out, "--prompt", "a " * 1984) == 0  # 1986 tokens: it fits
    assert len(read_rows(out, "jsonl")) == 3
