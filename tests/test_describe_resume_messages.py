"""`describe --resume` on an output file that is damaged or of another format: the error names the line of the
file and what is wrong with it, and says what to do; the format is blamed only when no line reads as it.
The file is left as it was (only a torn last row, from a kill, is cut off, and silently).

No model is loaded: the error comes before one would be, and a ScriptedEngine stands by otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.frontends.describe.output import OutputError, Row, RowWriter, read_rows, render
from tests.conftest import make_image
from tests.test_describe import SUMMARY, describe_here, use_scripted_engine

GOOD = [Row("/p/a.png", alt_text="A red square.", sha256="ab" * 32), Row("/p/b.png", error="Damaged.")]


def written(path: Path, fmt: str, *extra: str) -> bytes:
    """`path` as describe writes GOOD, then the `extra` lines; its bytes."""
    with RowWriter.open(path, fmt) as writer:
        for row in GOOD:
            writer.write(row)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write("".join(extra))
    return path.read_bytes()


def refusal(path: Path, fmt: str) -> str:
    """What `read_rows` says about `path`; the file must not change."""
    before = path.read_bytes()
    with pytest.raises(OutputError) as error:
        read_rows(path, fmt)
    assert path.read_bytes() == before  # nothing saved is lost
    return str(error.value)


@pytest.mark.parametrize(("extra", "line", "problem"), [
    (["garbage\n"], 3, "it is not valid JSON (expecting value at column 1)"),
    (['{"path": 5}\n'], 3, "it has no alt_text, error or sha256"),
    (['{"path": 5, "alt_text": "", "error": "", "sha256": ""}\n'], 3, "it has a number for its path, not text"),
    (['["/p/c.png", "A cat.", "", ""]\n'], 3, "it is a list, not an object with path, alt_text, error and sha256"),
    (["\n", '{"path": "/p/c.png", "alt_text": "A cat.", "error": "", "sha\n'], 4, "it is not valid JSON"),
])
def test_a_bad_jsonl_line_is_named_by_its_line_in_the_file(tmp_path: Path, extra: list[str], line: int,
                                                           problem: str) -> None:
    path = tmp_path / "alt.jsonl"
    written(path, "jsonl", *extra)
    said = refusal(path, "jsonl")
    assert said.startswith(f"Line {line} of {path} is not a row from `blip2-chat describe`: {problem}")
    assert said.endswith("Fix or remove that line, then run the same command again; or choose another --out.")
    assert "--format" not in said  # the other lines read as JSON Lines: the format is right


def test_every_bad_line_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "alt.jsonl"
    written(path, "jsonl", *[f"junk {n}\n" for n in range(8)])
    said = refusal(path, "jsonl")
    assert said.startswith(f"Line 3 of {path} is not a row")
    assert "Lines 4, 5, 6, 7, 8 and 2 more are not rows either: fix or remove them" in said


def test_a_bad_first_line_before_good_ones_is_a_bad_line_not_another_format(tmp_path: Path) -> None:
    path = tmp_path / "alt.jsonl"
    path.write_text("garbage\n" + "".join(render(row, "jsonl") for row in GOOD), encoding="utf-8")
    assert refusal(path, "jsonl").startswith(f"Line 1 of {path} is not a row")


@pytest.mark.parametrize(("text", "hint"), [
    ("garbage\nmore garbage\n", "Pass --format to match it, or choose another --out."),
    ("path,alt_text,error,sha256\n/p/a.png,A cat.,,\n",
     "It looks like a CSV file: pass --format csv, or choose another --out."),
])
def test_a_file_where_no_line_is_json_is_of_another_format(tmp_path: Path, text: str, hint: str) -> None:
    path = tmp_path / "alt.jsonl"
    path.write_text(text, encoding="utf-8")
    assert refusal(path, "jsonl") == (f"{path} does not look like a jsonl file from `blip2-chat describe`: line 1 "
                                      f"is not valid JSON (expecting value at column 1). {hint}")


def test_a_table_read_as_csv_is_told_its_format(tmp_path: Path) -> None:
    path = tmp_path / "alt.csv"
    written(path, "md")
    said = refusal(path, "csv")
    assert said.startswith(f"{path} does not look like a csv file from `blip2-chat describe`")
    assert said.endswith("It looks like a Markdown table: pass --format md, or choose another --out.")


@pytest.mark.parametrize(("fmt", "extra", "line", "problem"), [
    ("csv", ['"/p/c\nd.png",A cat.,,\n', "/p/e.png,A dog.\n"], 6, "it has 2 columns, not 4"),  # a name over 2 lines
    ("md", ["| /p/c.png | A cat. |\n"], 5, "it has 2 cells, not 4"),
    ("md", ["A cat.\n"], 5, "it is not a table row (it does not start and end with |)"),
])
def test_a_bad_table_line_is_named_by_its_line_in_the_file(tmp_path: Path, fmt: str, extra: list[str], line: int,
                                                           problem: str) -> None:
    path = tmp_path / f"alt.{fmt}"
    written(path, fmt, *extra)
    said = refusal(path, fmt)
    assert said.startswith(f"Line {line} of {path} is not a row from `blip2-chat describe`: {problem}.")
    assert "--format" not in said


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_a_torn_last_line_is_still_cut_off_silently(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"alt.{fmt}"
    whole = written(path, fmt)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"path": "/p/c.png", "alt_te' if fmt == "jsonl" else "| /p/c.png | A c")  # killed mid-row
    assert read_rows(path, fmt) == GOOD
    assert path.read_bytes() == whole


def test_the_command_says_the_line_and_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    use_scripted_engine(monkeypatch, "a red square", "a green square", "a blue square")
    folder = tmp_path / "three"
    folder.mkdir()
    for n, colour in enumerate([(200, 30, 30), (20, 180, 40), (10, 10, 250)]):
        make_image(folder / f"img{n}.png", colour)
    out = tmp_path / "alt.jsonl"
    assert describe_here(folder, "--out", out, "--batch-size", "1") == 0
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    damaged = "".join(lines[:2]) + "garbage\n" + lines[2]
    out.write_text(damaged, encoding="utf-8")
    capsys.readouterr()
    assert describe_here(folder, "--out", out, "--resume") == 2
    assert capsys.readouterr().err == (
        f"blip2-chat: Line 3 of {out} is not a row from `blip2-chat describe`: it is not valid JSON (expecting "
        "value at column 1). Fix or remove that line, then run the same command again; or choose another --out.\n")
    assert out.read_text(encoding="utf-8") == damaged
    out.write_text(damaged.replace("garbage\n", ""), encoding="utf-8")  # the way forward it gave works
    assert describe_here(folder, "--out", out, "--resume") == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("0", "3", "0")  # type: ignore[union-attr]
    assert [json.loads(line)["path"] for line in out.read_text(encoding="utf-8").splitlines()] == \
        [str(folder / f"img{n}.png") for n in range(3)]
