"""File names and captions that a terminal or a UTF-8 file cannot take as they are: names whose bytes are not
valid UTF-8 (Python holds them as lone surrogates, `os.fsdecode`), and escape sequences in rows written to a
terminal. `describe` and `index` finish, `--resume` recognises what was written, and nothing reaches a terminal raw.

No model is loaded: a ScriptedEngine answers for `describe`, and `index` gets a fixed function of the pixels.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.store import IndexStore
from chatbot.frontends.describe.output import read_rows
from chatbot.untrusted import has_controls, visible
from tests.conftest import make_image
from tests.test_describe import SUMMARY, assert_valid, describe_here, use_scripted_engine
from tests.test_photo_index import CHECKPOINT, indexed, picture, pixel_embed

NOT_UTF8 = b"\x9b2J\xff.png"  # \x9b is the one-byte CSI: raw, it would start an escape sequence


def named_in_bytes(folder: Path, name: bytes) -> Path:
    """`folder / name` for a name given as bytes (as `os.listdir` gives it back); skip where the filesystem refuses."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
    try:
        path.touch()
    except OSError as error:  # a filesystem that insists on UTF-8 names
        pytest.skip(f"this filesystem refuses names that are not UTF-8 ({error})")
    path.unlink()
    return path


def summary_of(err: str) -> tuple[str, ...]:
    match = SUMMARY.match(err.splitlines()[-1])
    assert match, err
    return match.groups()


def assert_shown_safely(text: str) -> None:
    """Every line is valid UTF-8 without a control character (a line break only ends a line)."""
    text.encode("utf-8")  # no lone surrogate, which only a surrogateescape stream would emit, raw
    for line in text.split("\n"):
        assert not has_controls(line), repr(line)


# --- names that are not valid UTF-8 -----------------------------------------------------------------------


def test_an_undecodable_name_is_shown_as_its_bytes() -> None:
    assert visible(os.fsdecode(b"/p/" + NOT_UTF8)) == "/p/\\x9b2J\\xff.png"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_a_name_that_is_not_utf8_is_described_then_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    odd = make_image(named_in_bytes(folder, NOT_UTF8), (200, 30, 30))
    make_image(folder / "plain.png", (20, 180, 40))
    out = tmp_path / f"alt.{fmt}"
    use_scripted_engine(monkeypatch, "a red square", "a green square")  # in the order of the names
    assert describe_here(folder, "--out", out) == 0
    err = capsys.readouterr().err
    assert summary_of(err) == ("2", "0", "0")
    assert_shown_safely(err)

    plain, row = assert_valid(out, fmt, 2)  # valid UTF-8, and each format's own reader takes it
    assert (plain["path"], plain["alt_text"], row["alt_text"]) == (str(folder / "plain.png"), "A red square.",
                                                                   "A green square.")
    if fmt == "jsonl":  # lossless: the same name, down to its bytes
        assert "\\udc9b2J\\udcff.png" in out.read_text(encoding="utf-8")
        assert os.fsencode(row["path"]) == os.fsencode(odd)
    else:  # its undecodable bytes escaped
        assert row["path"] == visible(str(odd)) and row["path"].endswith("/\\x9b2J\\xff.png")

    written = out.read_bytes()
    use_scripted_engine(monkeypatch)  # nothing left to describe
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert summary_of(capsys.readouterr().err) == ("0", "2", "0")  # the odd name is recognised as done
    assert out.read_bytes() == written


def test_describe_to_stdout_writes_an_undecodable_name_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    image = make_image(named_in_bytes(tmp_path, NOT_UTF8), (200, 30, 30))
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(image, "--format", "csv") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith(visible(str(image)) + ",A red square.,,")


def test_parquet_writes_an_undecodable_name_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyarrow")
    from chatbot.frontends.describe.parquet_output import read_parquet_rows

    image = make_image(named_in_bytes(tmp_path, NOT_UTF8), (200, 30, 30))
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(image, "--out", tmp_path / "alt.parquet") == 0
    assert summary_of(capsys.readouterr().err) == ("1", "0", "0")
    (row,) = read_parquet_rows(tmp_path / "alt.parquet")
    assert (row.path, row.alt_text) == (visible(str(image)), "A red square.")


def test_index_refuses_a_name_that_is_not_utf8_and_indexes_the_rest(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    odd = picture(named_in_bytes(photos, NOT_UTF8), 1)
    picture(photos / "plain.png", 2)
    odd_folder = named_in_bytes(tmp_path, b"\xffolder")
    odd_folder.mkdir()
    inside = picture(odd_folder / "a.png", 3)
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    try:
        for _ in range(2):  # and again: the same sentence, nothing half-done
            summary = update_index(store, [photos], recursive=False, embed=pixel_embed)
            assert summary.failed == [(str(odd), "its name is not valid UTF-8; rename it to index it.")]
            assert set(indexed(store)) == {str(photos / "plain.png")}
        inside_only = update_index(store, [odd_folder], recursive=False, embed=pixel_embed)  # a root named so
        assert inside_only.failed == [(str(inside), "its name is not valid UTF-8; rename it to index it.")]
        assert set(indexed(store)) == {str(photos / "plain.png")}
    finally:
        store.close()


# --- rows on a terminal: every format shows control characters instead of emitting them -------------------

HOSTILE = "\x1b]0;PWNED\x07\t\u202egnp.png"  # sets the window title; a tab; reverses what follows
CAPTION = "\x1b]52;c;cHduZWQ=\x07 a \x9b31m red \u202e square"  # writes the clipboard, the one-byte CSI, bidi


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def hostile_image(tmp_path: Path) -> Path:
    folder = tmp_path / "hostile"
    folder.mkdir()
    return make_image(folder / HOSTILE, (200, 30, 30))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_rows_on_a_terminal_carry_no_control_character(hostile_image: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    use_scripted_engine(monkeypatch, CAPTION)
    assert describe_here(hostile_image, "--format", fmt) == 0
    shown = terminal.getvalue()
    assert_shown_safely(shown)
    assert_shown_safely(capsys.readouterr().err)
    if fmt == "jsonl":  # valid JSON all the same, and every character is still there
        record = json.loads(shown)
        assert (record["path"], record["alt_text"]) == (str(hostile_image), "\x1b]52;c;cHduZWQ=\x07 a \x9b31m red "
                                                                             "\u202e square.")
    else:
        assert "PWNED\\x07" in shown and "cHduZWQ=\\x07 a \\x9b31m red \\u202e square." in shown


def test_csv_to_a_file_keeps_every_character(hostile_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal (`> alt.csv`): the data as it is, which `--resume` matches exactly."""
    use_scripted_engine(monkeypatch, CAPTION)
    assert describe_here(hostile_image, "--format", "csv") == 0
    saved = tmp_path / "alt.csv"
    saved.write_text(capsys.readouterr().out, encoding="utf-8")
    (row,) = read_rows(saved, "csv")
    assert (row.path, row.alt_text) == (str(hostile_image), "\x1b]52;c;cHduZWQ=\x07 a \x9b31m red \u202e square.")


# --- Markdown folds white space in names: --resume matches what it wrote ----------------------------------


def test_markdown_resume_recognises_names_with_white_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "spaced"
    folder.mkdir()
    for n, name in enumerate(["a\tb.png", "line\nbreak.png", "two  spaces.png", "two spaces.png"]):
        make_image(folder / name, (40 * n, 200 - 40 * n, 90))  # the last two fold alike, their bytes differ
    out = tmp_path / "alt.md"
    use_scripted_engine(monkeypatch, "one", "two", "three", "four")
    assert describe_here(folder, "--out", out) == 0
    assert summary_of(capsys.readouterr().err) == ("4", "0", "0")
    written = out.read_bytes()
    use_scripted_engine(monkeypatch)
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert summary_of(capsys.readouterr().err) == ("0", "4", "0")  # no image described twice
    assert out.read_bytes() == written
