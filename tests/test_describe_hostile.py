"""`blip2-chat describe` where the world is unfriendly: symlink loops and unreadable folders, a full disk,
a reader that went away, and file names and captions carrying terminal escape sequences.

No model is loaded: a ScriptedEngine answers (in this process, or in a child process where stdout and
stderr must be real files), because what is tested is the front end around the model.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.describe.output import OutputWriteError, Row, RowWriter, header, read_rows, render
from chatbot.frontends.describe.run import describe
from chatbot.image_files import Unreadable, find_images
from chatbot.untrusted import has_controls, visible
from tests.conftest import make_image
from tests.test_describe import SUMMARY, assert_valid, describe_here, use_scripted_engine

# --- finding images: loops and unreadable entries are left out, said once, and the rest described ---------


@pytest.fixture
def tangled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tangled/: two images (one in sub/), `loop -> .`, x.png <-> y.png, self.jpg -> itself, and locked/,
    a folder that cannot be listed (its listing fails with EACCES: chmod would not stop root)."""
    root = tmp_path / "tangled"
    (root / "sub").mkdir(parents=True)
    (root / "locked").mkdir()
    make_image(root / "a.png", (200, 30, 30))
    make_image(root / "sub" / "b.png", (20, 180, 40))
    (root / "loop").symlink_to(".")
    (root / "x.png").symlink_to("y.png")
    (root / "y.png").symlink_to("x.png")
    (root / "self.jpg").symlink_to("self.jpg")
    scandir = os.scandir

    def scandir_except_locked(path):  # type: ignore[no-untyped-def]
        if Path(path) == root / "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_except_locked)
    return root


def test_loops_and_unreadable_folders_are_left_out(tangled: Path) -> None:
    unreadable: list[Unreadable] = []
    found = find_images([str(tangled)], recursive=True, unreadable=unreadable)
    assert found == [str(tangled / "a.png"), str(tangled / "sub" / "b.png")]  # `loop` is not walked round
    assert sorted(unreadable) == [Unreadable(str(tangled / "locked"), "permission denied"),
                                  Unreadable(str(tangled / "self.jpg"), "a loop of symbolic links"),
                                  Unreadable(str(tangled / "x.png"), "a loop of symbolic links"),
                                  Unreadable(str(tangled / "y.png"), "a loop of symbolic links")]
    assert find_images([str(tangled / "loop" / "loop")]) == [str(tangled / "loop" / "loop" / "a.png")]


def test_a_run_over_loops_says_what_it_left_out_once_and_describes_the_rest(
    tangled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    use_scripted_engine(monkeypatch, "a red square", "a green square", "a blue square")
    out = tmp_path / "alt.jsonl"
    assert describe_here(tangled, tangled / "x.png", "-r", "--out", out) == 0  # x.png named outright: tried
    notes = capsys.readouterr().err.splitlines()
    (left_out,) = [note for note in notes if note.startswith("Left out")]
    assert left_out.startswith("Left out 4 entries that could not be read: ")
    for name in ("locked (permission denied)", "self.jpg (a loop of symbolic links)", "x.png (a loop", "y.png (a"):
        assert f"{os.sep}{name}" in left_out
    assert SUMMARY.match(notes[-1]).groups() == ("2", "0", "1")  # type: ignore[union-attr]
    rows = {Path(row.path).name: row for row in read_rows(out, "jsonl")}
    assert [rows["a.png"].alt_text, rows["b.png"].alt_text] == ["A red square.", "A green square."]
    assert "Too many levels of symbolic links" in rows["x.png"].error and rows["x.png"].sha256 == ""


def test_a_folder_with_nothing_readable_says_so_before_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    assert describe_here(tmp_path) == 2
    notes = capsys.readouterr().err.splitlines()
    assert notes[0].startswith("Left out 2 entries that could not be read: ")
    assert notes[1].startswith("blip2-chat: No images found in ") and len(notes) == 2


# --- named like an image, but no file to read: a named pipe, a link to nothing. Named, and a pipe never opened ---


@pytest.fixture
def not_files(tmp_path: Path) -> Path:
    """odd/: a.png, fifo.png (a named pipe: opening it waits for a writer) and dangling.png -> nowhere.png."""
    root = tmp_path / "odd"
    root.mkdir()
    make_image(root / "a.png", (200, 30, 30))
    os.mkfifo(root / "fifo.png")
    os.symlink("nowhere.png", root / "dangling.png")
    return root


def never_opened(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Opening `path` fails the test at once (rather than hanging it, as opening a named pipe would)."""
    import builtins

    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert os.path.abspath(os.fspath(file)) != str(path), f"{path} was opened"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


def test_pipes_and_links_to_nothing_are_named_not_dropped(not_files: Path) -> None:
    unreadable: list[Unreadable] = []
    assert find_images([str(not_files)], unreadable=unreadable) == [str(not_files / "a.png")]
    assert unreadable == [Unreadable(str(not_files / "dangling.png"), "a link to nothing"),
                          Unreadable(str(not_files / "fifo.png"), "a named pipe, not a regular file")]


def test_a_run_names_them_and_describes_the_rest(not_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    use_scripted_engine(monkeypatch, "a red square")
    never_opened(monkeypatch, not_files / "fifo.png")
    assert describe_here(not_files, "--out", tmp_path / "alt.jsonl") == 0
    notes = capsys.readouterr().err.splitlines()
    assert notes[0] == (f"Left out 2 entries that could not be read: {not_files / 'dangling.png'} (a link to "
                        f"nothing), {not_files / 'fifo.png'} (a named pipe, not a regular file).")
    assert SUMMARY.match(notes[-1]).groups() == ("1", "0", "0")  # type: ignore[union-attr]


def test_a_pipe_named_outright_becomes_an_error_row_without_being_opened(
    not_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A file named outright is tried whatever it is; hashing it for its row must not open a pipe (it would hang)."""
    use_scripted_engine(monkeypatch)
    never_opened(monkeypatch, not_files / "fifo.png")
    out = tmp_path / "alt.jsonl"
    assert describe_here(not_files / "fifo.png", "--out", out) == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("0", "0", "1")  # type: ignore[union-attr]
    (row,) = read_rows(out, "jsonl")
    assert "is a named pipe, not a regular file" in row.error and row.sha256 == ""


# --- a full disk, a closed pipe: one sentence (or none), no traceback, the rows so far kept -----------------

# The command in a child process, with real stdout and stderr, answered by a ScriptedEngine.
SCRIPTED_CLI = """
import json, os, sys
import chatbot.core.runtime
from chatbot.engine.scripted import ScriptedEngine
answers = json.loads(os.environ.get("SCRIPTED_ANSWERS", "[]"))
chatbot.core.runtime.open_engine_for = lambda settings, progress=None: ScriptedEngine(*answers)
from chatbot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_scripted(*args: object, answers: tuple[str, ...] = (), stdout: object = subprocess.PIPE,
                 ) -> subprocess.CompletedProcess[str]:
    """`blip2-chat describe ARGS` in a child process; its output must be valid UTF-8."""
    return subprocess.run(
        [sys.executable, "-c", SCRIPTED_CLI, "describe", *map(str, args)], stdin=subprocess.DEVNULL,
        stdout=stdout, stderr=subprocess.PIPE, text=True, encoding="utf-8", timeout=120,  # type: ignore[call-overload]
        env={**os.environ, "SCRIPTED_ANSWERS": json.dumps(answers)},
    )


@pytest.fixture(scope="module")
def three_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    for n, colour in enumerate([(200, 30, 30), (20, 180, 40), (10, 10, 250)]):
        make_image(folder / f"img{n}.png", colour)
    return folder


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    for noise in ("Traceback", "Exception ignored", "Error:", "Errno"):
        assert noise not in result.stderr, result.stderr


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a disk always full)")


@needs_dev_full
@pytest.mark.parametrize("fmt", ["jsonl", "md"])  # md: the header is the first write that fails
@pytest.mark.parametrize("where", ["--out", "stdout"])
def test_a_full_disk_ends_the_run_with_one_sentence(three_images: Path, fmt: str, where: str) -> None:
    if where == "--out":
        result = run_scripted(three_images, "--format", fmt, "--out", "/dev/full")
    else:
        with open("/dev/full", "w") as full:
            result = run_scripted(three_images, "--format", fmt, stdout=full)
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result)
    said = [line for line in result.stderr.splitlines() if line.startswith("blip2-chat: ")]
    name = "/dev/full" if where == "--out" else "stdout"
    assert said == [line for line in result.stderr.splitlines() if "disk" in line]  # said once
    assert said[0].startswith(f"blip2-chat: Could not write to {name}: the disk is full. ")
    assert result.stderr.endswith(said[0] + "\n")


@pytest.mark.parametrize("fmt", ["jsonl", "md"])
def test_a_closed_pipe_stops_quietly(three_images: Path, fmt: str) -> None:
    """Like `describe ... | head -1` once head has gone: exit 141 (128 + SIGPIPE), as chatbot.cli.main does."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_scripted(three_images, "--format", fmt, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert_no_traceback(result)
    assert not [line for line in result.stderr.splitlines() if line.startswith("blip2-chat: ")]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_resume_into_something_that_is_not_a_file_is_one_sentence(three_images: Path, tmp_path: Path,
                                                                   kind: str) -> None:
    """--resume reads --out back first: from a named pipe that would wait forever for a writer."""
    out = tmp_path / "alt.jsonl"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    result = run_scripted(three_images, "--out", out, "--resume")
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result)
    assert result.stderr.strip() == (f"blip2-chat: --resume reads --out back, and {out} is not a regular file. "
                                     "Give --out a file, or leave out --resume to write into it." if kind == "fifo"
                                     else f"blip2-chat: --out {out} is a folder, not a file. Name a file in it, "
                                     f"e.g. --out {out}/alt.jsonl.")


class DiskWithRoomFor(io.RawIOBase):
    """A file on a disk with `free` bytes left: the write that crosses it is cut short, the next fails with ENOSPC."""

    def __init__(self, path: Path, free: int) -> None:
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed by close())
        self.free = free

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.file.fileno()

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.file.write(bytes(data[: self.free]))
        self.free -= written
        return written

    def close(self) -> None:
        self.file.close()
        super().close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_resume_goes_on_after_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    folder = tmp_path / "five"
    folder.mkdir()
    paths = [str(make_image(folder / f"img{n}.png", (50 * n, 200 - 40 * n, 90))) for n in range(5)]
    answers = ("a red square", "a green square", "a blue square", "a grey square", "a pink square")
    rows: list[Row] = []
    describe(ScriptedEngine(*answers), paths, rows.append, options=GenerationOptions())
    kept = (header(fmt) + render(rows[0], fmt) + render(rows[1], fmt)).encode("utf-8")
    torn = render(rows[2], fmt).encode("utf-8")[:20]  # the disk fills in the middle of the third row

    out = tmp_path / f"alt.{fmt}"
    disk = io.TextIOWrapper(io.BufferedWriter(DiskWithRoomFor(out, len(kept) + len(torn))), encoding="utf-8",
                            newline="")
    writer = RowWriter(disk, fmt, owned=True, name=str(out))
    with pytest.raises(OutputWriteError, match="Could not write to .*: the disk is full") as full:
        writer.write_header()
        describe(ScriptedEngine(*answers), paths, writer.write, options=GenerationOptions())
    assert "--resume" in str(full.value)
    writer.close()  # what is left in the buffer is dropped, without a second error
    assert out.read_bytes() == kept + torn  # the rows before the full disk are intact

    use_scripted_engine(monkeypatch, *answers[2:])  # space was freed: go on
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("3", "2", "0")  # type: ignore[union-attr]
    assert read_rows(out, fmt) == rows
    assert_valid(out, fmt, 5)


# --- escape sequences in file names and captions never reach the terminal raw -------------------------------

HOSTILE = "\x1b]0;PWNED\x07.png"  # sets the window title when printed raw


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder with an image named HOSTILE, a plain one and a loop with an escape in its name; captions
    with escapes too (OSC 52 writes the clipboard, CSI 2J clears the screen, \\x9b is the one-byte CSI)."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "pictures"
    folder.mkdir()
    make_image(root / "red.png", (200, 30, 30))
    shutil.copyfile(root / "red.png", folder / HOSTILE)
    make_image(folder / "plain.png", (20, 180, 40))
    (folder / "\x1b[2Jloop.png").symlink_to("\x1b[2Jloop.png")
    answers = ("\x1b]52;c;cHduZWQ=\x07 a red square", "a \x9b31m green \u202e square")
    out = root / "\x1b]0;OUT\x07.jsonl"
    runs: dict[str, Any] = {
        "md": run_scripted(folder, "--format", "md", answers=answers),
        "jsonl": run_scripted(folder, "--out", out, answers=answers),
    }
    runs["again"] = run_scripted(folder, "--out", out, answers=answers)  # the output exists now
    runs["missing"] = run_scripted(folder / "\x1b[2Jgone.png")
    return {**runs, "out": out, "folder": folder}


def terminal_lines(result: subprocess.CompletedProcess[str], stdout_too: bool) -> list[str]:
    return result.stderr.splitlines() + (result.stdout.splitlines() if stdout_too else [])


@pytest.mark.parametrize("run", ["md", "jsonl", "again", "missing"])
def test_no_sentence_on_a_terminal_carries_a_raw_escape(hostile: dict[str, Any], run: str) -> None:
    result = hostile[run]
    assert result.returncode == (0 if run in ("md", "jsonl") else 2), result.stderr  # ran to its end
    lines = terminal_lines(result, stdout_too=run == "md")  # md on stdout is read by people; jsonl is data
    assert len(lines) >= 2 if run in ("md", "jsonl") else lines
    for line in lines:
        assert "\x1b" not in line and not has_controls(line), repr(line)


def test_escaped_names_are_still_named(hostile: dict[str, Any]) -> None:
    md, jsonl, again, missing = (hostile[run] for run in ("md", "jsonl", "again", "missing"))
    assert md.returncode == jsonl.returncode == 0, md.stderr + jsonl.stderr
    table = md.stdout.splitlines()
    assert table[:2] == ["| File | Alt text | Error | SHA-256 |", "|---|---|---|---|"]
    assert any("\\x1b\\]0;PWNED\\x07.png" in line and "\\x1b\\]52;c;cHduZWQ=\\x07 a red square." in line
               for line in table)  # Markdown-escaped, then made visible
    assert any("A \\x9b31m green \\u202e square." in line for line in table)
    loop = visible(str(hostile["folder"] / "\x1b[2Jloop.png"))
    assert f"Left out 1 entry that could not be read: {loop} (a loop of symbolic links)." in md.stderr
    assert f"Results in {visible(hostile['out'])}." in jsonl.stderr
    assert again.returncode == 2 and f"{visible(hostile['out'])} already exists." in again.stderr
    assert missing.returncode == 2 and "No file or folder at " in missing.stderr
    assert "\\x1b[2Jgone.png" in missing.stderr


def test_files_keep_names_and_captions_exactly(hostile: dict[str, Any]) -> None:
    """Rows in a file are data: JSON escapes the controls, and reading it back gives every character."""
    rows = {Path(row["path"]).name: row for row in assert_valid(hostile["out"], "jsonl", 2)}
    assert rows[HOSTILE]["alt_text"] == "\x1b]52;c;cHduZWQ=\x07 a red square."
    assert rows["plain.png"]["alt_text"] == "A \x9b31m green \u202e square."
    assert "\x1b" not in hostile["out"].read_text(encoding="utf-8")  # as \\u001b


# --- a model named with an escape sequence: what describe says about loading it is shown, not emitted ----------


def test_loading_a_model_whose_name_holds_an_escape_is_said_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """describe's sentences on stderr go through the status writer index uses (`chatbot.core.runtime.say`): the
    real `open_engine_for` and loader name the folder ("Loading model ..."); only the weights are not loaded."""
    import types

    from chatbot.locations import demo_model_dir

    model = tmp_path / "m\x1b[7mX"  # reverse video from here on, when printed raw
    shutil.copytree(demo_model_dir("chat"), model)
    blip2 = types.ModuleType("chatbot.engine.blip2")

    def open_engine(resolved: Any, progress: Any = None, **options: object) -> ScriptedEngine:
        progress(f"Loading {resolved.path} on cpu")  # a progress line naming the folder
        return ScriptedEngine("a red square")

    blip2.open_engine = open_engine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chatbot.engine.blip2", blip2)
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    assert describe_here(image, "--model", model, "--out", tmp_path / "alt.jsonl") == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err
    lines = err.splitlines()
    for line in lines:
        assert not has_controls(line), repr(line)
    shown = visible(model)
    assert f"Loading model {shown} ..." in lines and f"Loading {shown} on cpu" in lines  # named all the same
