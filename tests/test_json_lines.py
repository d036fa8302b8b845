"""JSON written for people and scripts (`ask`/`caption --json`, the screen-reader chat's `--json`, `describe`'s
JSON Lines, `search --json`, `index --json`) goes through one function, `chatbot.untrusted.json_line`.

A reviewer found two escapers that had drifted: the one behind `--json` left lone surrogates raw, so
`caption $'\\xff.png' --json` ended in UnicodeEncodeError on a strict UTF-8 stdout and wrote the raw byte
(invalid UTF-8; \\x9b is a C1 CSI for a terminal) under the C.UTF-8 locale; `describe`'s left U+2028 raw, which
`str.splitlines` takes for the end of a line. Every line is checked against references of its own: `json.loads`
gives the record back, `encode("utf-8")` works, and `safe_line` below lists the characters a line may not hold
without reusing the code under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import chatbot.frontends.oneshot
import chatbot.frontends.search.index_run
import chatbot.frontends.search.search_run
from chatbot.cli import main
from chatbot.core.photo_search import Found
from chatbot.core.runtime import print_json
from chatbot.engine.scripted import ScriptedEngine
from chatbot.untrusted import json_line
from tests.conftest import make_image
from tests.test_describe import describe_here, use_scripted_engine
from tests.test_hostile_names import NOT_UTF8, named_in_bytes
from tests.test_photo_index import CHECKPOINT, picture, pixel_embed

BIDI = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}
CAPTION = "\x1b]52;c;cHduZWQ=\x07 a \x9b31m red \u202e square\u2028 on \x7f grass"


def unsafe(char: str) -> bool:
    """What no JSON line of ours may hold raw: a C0 control, DEL, a C1 control, a bidi override, a line or
    paragraph separator, a lone surrogate (written out here, not taken from chatbot.untrusted)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in BIDI or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF


def safe_line(line: str) -> None:
    """One line of valid UTF-8, with nothing a terminal acts on."""
    line.encode("utf-8")  # strict: a lone surrogate raises
    bad = [f"U+{ord(char):04X}" for char in line if unsafe(char)]
    assert not bad, (bad, line)


def json_records(out: str) -> list[Any]:
    """Each line of `out` checked, then read with `json.loads`."""
    assert out.endswith("\n"), repr(out)
    lines = out[:-1].split("\n")
    for line in lines:
        safe_line(line)
    return [json.loads(line) for line in lines]


# --- the function -------------------------------------------------------------------------------------------

SPECIAL = [chr(code) for code in (*range(0x20), *range(0x7F, 0xA0))] + sorted(BIDI) + ["\u2028", "\u2029"]
UNDECODABLE = [chr(code) for code in range(0xDC80, 0xDD00)]  # a name's bytes that are not UTF-8 (os.fsdecode)
texts = st.text(st.one_of(st.characters(), st.sampled_from(SPECIAL), st.sampled_from(UNDECODABLE)), max_size=40)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts)
records = st.dictionaries(texts, st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12), max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(record=records)
@example(record={"image": os.fsdecode(b"/tmp/probe_json/\xff.png")})  # the reviewer's file
@example(record={"answer": CAPTION, "path": os.fsdecode(b"/p/" + NOT_UTF8)})
@example(record={"\x1b[2J": "\u2029\ud800"})  # in a key too; a lone high surrogate at the end
def test_any_record_is_one_safe_line_that_reads_back_as_itself(record: dict[str, Any]) -> None:
    line = json_line(record)
    assert "\n" not in line
    safe_line(line)
    assert json.loads(line) == record


def test_characters_that_need_no_escape_are_written_as_they_are() -> None:
    assert json_line({"caption": "Ein Bär 🐻 am café"}) == '{"caption": "Ein Bär 🐻 am café"}'
    assert json_line({"a": "\x9b\udcff\u2028"}) == '{"a": "\\u009b\\udcff\\u2028"}'


# --- every command that writes JSON for people and scripts ---------------------------------------------------


@pytest.fixture
def odd_image(tmp_path: Path) -> Path:
    """A picture whose name is not valid UTF-8 (\\x9b is the one-byte CSI, \\xff no character at all)."""
    return make_image(named_in_bytes(tmp_path, NOT_UTF8), (200, 30, 30))


@pytest.mark.parametrize("command", [["caption"], ["ask", "What is it?"]])
def test_ask_and_caption_json_of_a_name_that_is_not_utf8(odd_image: Path, command: list[str],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(chatbot.frontends.oneshot, "open_engine_for", lambda settings: ScriptedEngine(CAPTION))
    assert main([command[0], str(odd_image), *command[1:], "--json", "--model", "demo"]) == 0
    (record,) = json_records(capsys.readouterr().out)
    assert os.fsencode(record["image"]) == os.fsencode(odd_image)  # the same name, down to its bytes
    assert record["answer"].startswith("\x1b]52;c;cHduZWQ=\x07 a \x9b31m red \u202e square")


def test_the_record_the_chat_prints_is_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The screen-reader chat's --json (and ask/caption) print through `print_json`."""
    record = {"image": os.fsdecode(b"/p/" + NOT_UTF8), "answer": CAPTION}
    print_json(record)
    assert json_records(capsys.readouterr().out) == [record]


def test_search_json_of_names_that_are_not_utf8(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    found = [Found(os.fsdecode(b"/p/" + NOT_UTF8), 0.41, 0.9), Found("/p/\x1b]0;PWNED\x07\u2028.png", 0.2, None, True)]

    class Finder:
        @classmethod
        def from_settings(cls, *args: object, **kwargs: object) -> Finder:
            return cls()

        def find(self, *args: object, **kwargs: object) -> list[Found]:
            return found

    monkeypatch.setattr(chatbot.frontends.search.search_run, "Finder", Finder)
    assert main(["search", "a red square", "--json"]) == 0
    assert json_records(capsys.readouterr().out) == [item.to_dict(rank) for rank, item in enumerate(found, 1)]


def test_describe_json_lines_hold_one_record_a_line(odd_image: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """U+2028 in a name stays in its row: a reader that splits with `str.splitlines` gets one row per image."""
    separated = make_image(odd_image.parent / "line\u2028separator\u2029.png", (20, 180, 40))
    use_scripted_engine(monkeypatch, "a green square", CAPTION)  # in the order of the names
    assert describe_here(odd_image.parent, "--format", "jsonl") == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2
    rows = {os.fsencode(row["path"]): row["alt_text"] for row in json_records(out)}
    assert rows == {os.fsencode(separated): "A green square.",
                    os.fsencode(odd_image): "\x1b]52;c;cHduZWQ=\x07 a \x9b31m red \u202e square on \x7f grass."}


def test_index_json_of_a_folder_and_a_name_that_are_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "\x1b[2J\u202e photos"
    photos.mkdir()
    folder = named_in_bytes(tmp_path, b"\x1b]0;PWNED\x07\xff index")
    odd = picture(named_in_bytes(photos, NOT_UTF8), 1)  # refused by the index: named in the summary
    picture(photos / "plain.png", 2)

    class Embedder:
        def __init__(self, *args: object, on_loaded: Any = None, **kwargs: object) -> None:
            pass

        def __call__(self, images: list[Any]) -> Any:
            return pixel_embed(images)

    monkeypatch.setattr(chatbot.frontends.search.index_run, "LazyEmbedder", Embedder)
    monkeypatch.setattr(chatbot.frontends.search.index_run, "choose_index_model", lambda *args, **kwargs: CHECKPOINT)
    assert main(["index", str(photos), "--index", str(folder), "--json"]) == 0
    out, err = capsys.readouterr()
    for line in err.splitlines():  # the sentences on stderr too
        safe_line(line)
    (record,) = json_records(out)
    assert os.fsencode(record["index"]) == os.fsencode(folder)
    assert [os.fsencode(failure["path"]) for failure in record["failed"]] == [os.fsencode(odd)]
    assert (record["model"], record["pictures"]) == (CHECKPOINT, 1)
