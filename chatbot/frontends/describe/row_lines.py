"""Reading a describe output back for `--resume`, line by line: each record kept, each line that is no row
named by its line in the file and what is wrong with it, so the error can say which line to fix.

Text only: no path, no file handling (chatbot.frontends.describe.output reads the file and says the error).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import NamedTuple

from chatbot.frontends.progress_line import plural
from chatbot.untrusted import has_controls, visible

FIELDS = ("path", "alt_text", "error", "sha256")  # the columns, in this order, in every format
HEADERS = {"jsonl": "", "csv": "path,alt_text,error,sha256\n",  # what a new file of each format starts with
           "md": "| File | Alt text | Error | SHA-256 |\n|---|---|---|---|\n"}


class BadLine(NamedTuple):
    """A line of an output file that is not a row `describe` writes."""

    number: int  # the line in the file, counted from 1, header lines included (what an editor shows)
    problem: str  # what is wrong, after 'it': 'is not valid JSON (expecting value at column 1)'
    foreign: bool = False  # does not parse in this format at all: if no line does, the format is likely wrong


def parse_records(body: str, fmt: str, first_line: int) -> tuple[list[list[str]], list[BadLine]]:
    """The rows in `body` (a file after its header) as lists of the four cells, and the lines that are not rows.

    `first_line`: the file's line number of the body's first line. Blank lines are neither.
    """
    if fmt == "jsonl":
        return _jsonl_records(body, first_line)
    if fmt == "csv":
        return _csv_records(body, first_line)
    return _md_records(body, first_line)


def guess_format(text: str) -> str | None:
    """The format a file's text starts like (its header, or a JSON object on its first line); None: none of them."""
    for fmt in ("md", "csv"):
        if text.startswith(HEADERS[fmt]):
            return fmt
    try:
        first = json.loads(text.split("\n", 1)[0])
    except (ValueError, RecursionError):
        return None
    return "jsonl" if isinstance(first, dict) else None


def _jsonl_records(body: str, first_line: int) -> tuple[list[list[str]], list[BadLine]]:
    records: list[list[str]] = []
    bad: list[BadLine] = []
    for index, line in enumerate(body.split("\n")):  # records end at "\n" only: U+2028 in a name is no line break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            bad.append(BadLine(first_line + index, "is nested too deeply to be a row"))
            continue
        except ValueError as error:  # json.JSONDecodeError
            bad.append(BadLine(first_line + index, _not_json(error), foreign=True))
            continue
        problem = _record_problem(record)
        if problem:
            bad.append(BadLine(first_line + index, problem))
        else:
            records.append([record[name] or "" for name in FIELDS])
    return records, bad


def _not_json(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"is not valid JSON ({error.msg[:1].lower()}{error.msg[1:]} at column {error.colno})"
    return "is not valid JSON"


def _record_problem(record: object) -> str:
    """What keeps a JSON value from being a row ('' when nothing does)."""
    if not isinstance(record, dict):
        return f"is {_kind(record)}, not an object with {_names(FIELDS, 'and')}"
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return f"has no {_names(missing, 'or')}"
    for name in FIELDS:
        if record[name] is not None and not isinstance(record[name], str):
            return f"has {_kind(record[name])} for its {name}, not text"
    return ""


def _kind(value: object) -> str:
    if isinstance(value, bool):  # before int: True is an int
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "text" if isinstance(value, str) else "null"


def _names(names: Sequence[str], joiner: str) -> str:
    """'path', 'path or error', 'alt_text, error or sha256'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {joiner} {names[-1]}"


def _csv_records(body: str, first_line: int) -> tuple[list[list[str]], list[BadLine]]:
    records: list[list[str]] = []
    bad: list[BadLine] = []
    reader = csv.reader(io.StringIO(body, newline=""))
    start = first_line  # where the next record starts: a quoted field may span lines
    try:
        for record in reader:
            number, start = start, first_line + reader.line_num
            if not record:
                continue
            if len(record) != len(FIELDS):
                bad.append(BadLine(number, f"has {plural(len(record), 'column')}, not {len(FIELDS)}"))
            else:
                records.append(record)
    except csv.Error as error:  # e.g. a field over csv's size limit: the reader cannot go on past it
        bad.append(BadLine(start, f"is not valid CSV ({error})"))
    return records, bad


def _md_records(body: str, first_line: int) -> tuple[list[list[str]], list[BadLine]]:
    records: list[list[str]] = []
    bad: list[BadLine] = []
    for index, line in enumerate(body.split("\n")):  # rows hold no line break of any kind (cells are folded)
        row = line.strip()
        if not row:
            continue
        cells = md_cells(row)
        if not (row.startswith("|") and row.endswith("|")):
            bad.append(BadLine(first_line + index, "is not a table row (it does not start and end with |)"))
        elif len(cells) != len(FIELDS):
            bad.append(BadLine(first_line + index, f"has {plural(len(cells), 'cell')}, not {len(FIELDS)}"))
        else:
            records.append(cells)
    return records, bad


# Characters that would start Markdown formatting inside a table cell (`~`: GFM strikethrough), written after a `\`.
_MD_SPECIAL = frozenset("\\|*_`[]<>&~")
_MD_SPACE = "&#32;"  # a space a table would drop (at either end of a cell) or fold (after another space)
_MD_NAMED = {"n": "\n", "r": "\r", "t": "\t"}


def md_cell(text: str) -> str:
    """`text` as one Markdown table cell that renders as the text itself and reads back exactly (`md_cells`).

    Formatting characters get a `\\`; control characters (and bidi overrides, invisible characters, line
    separators) are written as `\\x1b`, `\\n`, `\\u202e` (see chatbot.untrusted), so the row stays one line
    and a file shown with `cat` emits nothing a terminal acts on; white space other than single spaces between
    words is written as an escape too (`&#32;` for a space), so names that differ only in white space stay
    apart. Lone surrogates (the undecodable bytes of a file name that is not UTF-8) read back as the byte's
    code point: U+DC9B as U+009B.
    """
    out = []
    for index, ch in enumerate(text):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == " ":
            alone = 0 < index < len(text) - 1 and text[index - 1] != " "
            out.append(" " if alone else _MD_SPACE)
        elif has_controls(ch):
            out.append(visible(ch))
        elif ch.isspace():
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def md_cells(line: str) -> list[str]:
    """Split a table row on unescaped pipes and undo `md_cell` (a file of an older version, which wrote control
    characters raw and folded white space, reads back as it was written)."""
    raw_cells, start, text, index = [], 0, line.strip(), 0
    while index < len(text):
        if text[index] == "\\":
            index += 1  # the next character is escaped: a pipe there is text
        elif text[index] == "|":
            raw_cells.append(text[start:index])
            start = index + 1
        index += 1
    raw_cells.append(text[start:])
    return [_md_decoded(cell.strip(" ")) for cell in raw_cells[1:-1]]  # the row starts and ends with a pipe


def _md_decoded(cell: str) -> str:
    out, index = [], 0
    while index < len(cell):
        ch = cell[index]
        index += 1
        if ch == "\\":
            escaped = cell[index:index + 1]
            digits = {"x": 2, "u": 4}.get(escaped, 0)
            code = cell[index + 1:index + 1 + digits]
            if digits and len(code) == digits and all(c in "0123456789abcdefABCDEF" for c in code):
                out.append(chr(int(code, 16)))
                index += 1 + digits
            else:
                out.append(_MD_NAMED.get(escaped, escaped))
                index += 1
        elif cell.startswith(_MD_SPACE, index - 1):
            out.append(" ")
            index += len(_MD_SPACE) - 1
        else:
            out.append(ch)
    return "".join(out)
