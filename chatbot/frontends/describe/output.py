"""The files `describe` writes (JSON Lines, CSV, a Markdown table) and reads back to resume.

Every row is written with one `write`, then flushed and fsynced, so a run killed at any moment
loses at most the row being written. That torn last row is found on `--resume` (a record only
ends at a line break outside quotes) and cut off before new rows are appended. A disk that fills up
is the same: the rows before are whole, and the run ends with one sentence saying so.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from chatbot.errors import UserError
from chatbot.frontends.describe.row_lines import (
    FIELDS,
    HEADERS,
    BadLine,
    guess_format,
    md_cell,
    md_cells,
    parse_records,
)
from chatbot.frontends.screen_reader import is_terminal
from chatbot.untrusted import json_line, visible

FORMATS = ("jsonl", "csv", "md")  # the text formats, appended row by row and resumable
ALL_FORMATS = (*FORMATS, "parquet")  # parquet: written whole at the end (parquet_output.py)
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".md": "md", ".markdown": "md",
             ".parquet": "parquet"}
_SURROGATES = re.compile("[\ud800-\udfff]")  # the undecodable bytes of a file name that is not UTF-8 (os.fsdecode)
# A CSV cell starting with one of these is a formula to a spreadsheet (`=HYPERLINK(...)` in a file name would
# run when alt.csv is opened): such a cell is written after a `'`, which spreadsheets take to mean "text" and
# hide; a cell that starts with `'` gets one more, so `--resume` reads every cell back by dropping one.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Row:
    """One image's outcome: alt text, or the error that stopped it (then alt_text is "")."""

    path: str  # absolute path
    alt_text: str = ""
    error: str = ""
    sha256: str = ""  # of the file's bytes; "" when the file could not be read

    @property
    def failed(self) -> bool:
        return bool(self.error)


class OutputError(UserError):
    """The output file cannot be used (exists, unreadable, not a describe output)."""


def format_for(out: Path | None, requested: str | None) -> str:
    """The output format: --format if given, else from the --out suffix, else JSON Lines."""
    if requested:
        if requested not in ALL_FORMATS:
            raise OutputError(f"Unknown format '{visible(requested)}'.", f"Use one of: {', '.join(ALL_FORMATS)}.")
        return requested
    return _SUFFIXES.get(out.suffix.lower(), "jsonl") if out is not None else "jsonl"


def header(fmt: str) -> str:
    """What a new file of this format starts with."""
    return HEADERS[fmt]


def render(row: Row, fmt: str, *, shown: bool = False) -> str:
    """One row as text, ending in a line break.

    `shown`: the row is read on a terminal, so CSV cells show control characters as `\\x1b` (see
    chatbot.untrusted). JSON Lines writes them as `\\u` escapes always: valid, lossless and safe; Markdown
    always writes them as `\\x1b` too, a table being a document for people (`md_cell`, which reads back exactly).
    CSV files keep every other character (quoted): they are data, and `--resume` matches their paths
    (`path_key`). A file name that is not UTF-8 cannot be written as it is: CSV and Markdown show its
    undecodable bytes as `\\x9b`, JSON as `\\udc9b` (which reads back as the same name).
    """
    values = [getattr(row, name) for name in FIELDS]
    if fmt == "jsonl":
        return json_line(asdict(row)) + "\n"
    if fmt == "csv":
        cells = [spreadsheet_safe(visible(v) if shown else writable_text(v)) for v in values]
        # csv quotes a field holding a comma, a quote or "\n" (the line terminator), but not one holding "\r",
        # which a reader takes for a line break too: a row with a "\r" anywhere has all its fields quoted
        buffer = io.StringIO()
        every = any("\r" in cell for cell in cells)
        csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if every else csv.QUOTE_MINIMAL).writerow(cells)
        return buffer.getvalue()
    return "| " + " | ".join(md_cell(value) for value in values) + " |\n"


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula: `'` before one that starts like a formula or with `'`."""
    return "'" + cell if cell.startswith((*_FORMULA_STARTS, "'")) else cell


def from_spreadsheet_safe(cell: str) -> str:
    """The cell `spreadsheet_safe` was given (a cell written before it existed, unchanged unless it starts with `'`)."""
    return cell[1:] if cell.startswith("'") else cell


def path_key(path: str, fmt: str) -> str:
    """`path` as it reads back from a file of this format (`read_rows` of what `render` wrote): `--resume`
    compares paths this way. CSV and Markdown write undecodable bytes as `\\x9b`, which reads back as such
    text from CSV and as U+009B from Markdown."""
    if fmt == "jsonl":
        return path
    if fmt == "md":
        return md_cells(render(Row(path), fmt))[0]
    return writable_text(path)


def writable_text(text: str) -> str:
    """`text` that a UTF-8 file can hold: the undecodable bytes of a file name shown as `\\x9b`."""
    return _SURROGATES.sub(lambda match: visible(match.group()), text)


class RowWriter:
    """Appends rows to a file (or stdout), each one flushed, and fsynced when it is a file, before the next.

    A write that fails (a full disk) raises `OutputWriteError`: the rows before it are whole on disk
    and `--resume` cuts off the one torn by the failure. A closed pipe raises `BrokenPipeError`, which
    the CLI turns into a quiet stop, as Unix tools do.
    """

    def __init__(self, stream: IO[str], fmt: str, owned: bool = False, *, name: str = "stdout",
                 shown: bool = False) -> None:
        self.stream = stream
        self.fmt = fmt
        self.name = name  # what error messages call the output: its path, or "stdout"
        self._shown = shown  # read on a terminal: CSV cells show control characters (`visible`)
        self._owned = owned  # opened here, so closed here (stdout is not)
        self._failed = False
        self._syncable = _is_regular_file(stream)

    @classmethod
    def open(cls, path: Path, fmt: str) -> RowWriter:
        """Open `path` for appending; a new or empty file gets the format's header first."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = open(path, "a", encoding="utf-8", newline="")  # closed by close()
        except OSError as error:
            raise OutputError(f"Cannot write {visible(path)}: {error.strerror or error}.",
                              "Choose another --out.") from None
        writer = cls(stream, fmt, owned=True, name=str(path))
        try:
            if _at_start(stream):
                writer.write_header()
        except BaseException:
            writer.close()
            raise
        return writer

    @classmethod
    def to_stdout(cls, stream: IO[str], fmt: str) -> RowWriter:
        """Rows to `stream` (stdout, left open), after the format's header, so `> alt.md` is a whole table.

        On a terminal, CSV cells show control characters instead of emitting them (JSON Lines and Markdown
        escape them anyway).
        """
        writer = cls(stream, fmt, name="stdout", shown=is_terminal(stream))
        writer.write_header()
        return writer

    def write_header(self) -> None:
        if header(self.fmt):
            self._write(header(self.fmt))

    def write(self, row: Row) -> None:
        self._write(render(row, self.fmt, shown=self._shown))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)  # one write per row: a kill tears at most this row
            self.stream.flush()
            if self._syncable:
                os.fsync(self.stream.fileno())
        except BrokenPipeError:
            self._failed = True
            raise
        except OSError as error:
            self._failed = True
            raise OutputWriteError(self.name, error) from None

    def close(self) -> None:
        """Close the file if it was opened here; after a failed write, what is left in the buffer is dropped."""
        if not self._owned:
            return
        try:
            self.stream.close()  # flushes first: fails again when the write before did
        except OSError as error:
            if not self._failed:
                self._failed = True
                raise OutputWriteError(self.name, error) from None

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OutputWriteError(OutputError):
    """Rows could not be written (a full disk, a quota, an I/O error); the ones before are kept."""

    def __init__(self, name: str, error: OSError) -> None:
        reason = _WRITE_FAILURES.get(error.errno or 0) or (error.strerror or str(error)).lower()
        if name == "stdout":
            hint = "Free some space and run it again, or pass --out FILE to write to a file you can --resume."
        else:
            hint = "The rows written so far are kept: free some space, then run the same command with --resume."
        super().__init__(f"Could not write to {visible(name)}: {reason}.", hint)
        self.errno = error.errno


_WRITE_FAILURES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                   errno.EFBIG: "the file is too large for the disk", errno.EIO: "an input/output error"}


def _is_regular_file(stream: IO[str]) -> bool:
    """Whether `stream` writes to a regular file (not a terminal, a pipe, a device or a stream in memory)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _at_start(stream: IO[str]) -> bool:
    """Whether nothing is in the file yet (a pipe or a device that cannot tell: yes)."""
    try:
        return stream.tell() == 0
    except OSError:
        return True


def complete_length(text: str, fmt: str) -> int:
    """How many characters of `text` are whole records (the rest is a row torn by a kill)."""
    end = len(text)
    while end > 0:
        if text[end - 1] == "\n" and (fmt != "csv" or text.count('"', 0, end) % 2 == 0):
            return end  # CSV: a line break inside quotes belongs to a field, it does not end a record
        end = text.rfind("\n", 0, end - 1) + 1
    return 0


def read_rows(path: Path, fmt: str) -> list[Row]:
    """Rows already in an output file, cutting off a torn last row first (the file is changed in place).

    Raises:
        OutputError: the file is not a describe output of this format.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OutputError(f"Cannot read {visible(path)}: {error.strerror or error}.", "Check the path.") from None
    text = data.decode("utf-8", errors="replace")
    keep = complete_length(text, fmt)
    if keep < len(text):
        with open(path, "r+b") as handle:  # cut at the byte where the whole records end
            handle.truncate(len(text[:keep].encode("utf-8")))
            handle.flush()
            os.fsync(handle.fileno())
        text = text[:keep]
    if header(fmt) and text and not text.startswith(header(fmt)):
        if header(fmt).startswith(text):  # killed while writing the header: nothing was described yet
            path.write_text("", encoding="utf-8")
            return []
        raise OutputError(f"{visible(path)} does not look like a {fmt} file from `blip2-chat describe` "
                          f"(it does not start with the {fmt} header).", _format_hint(text, fmt))
    records, bad = parse_records(text[len(header(fmt)):], fmt, first_line=header(fmt).count("\n") + 1)
    if bad:
        raise _bad_lines_error(path, text, fmt, bad, any_rows=bool(records))
    if fmt == "csv":
        records = [[from_spreadsheet_safe(cell) for cell in cells] for cells in records]
    return [Row(*cells) for cells in records]


def _bad_lines_error(path: Path, text: str, fmt: str, bad: list[BadLine], any_rows: bool) -> OutputError:
    """The first line that is no row, named; the format blamed only when no line at all reads as this format."""
    first = bad[0]
    if not any_rows and all(line.foreign for line in bad):  # not one line reads as this format
        return OutputError(f"{visible(path)} does not look like a {fmt} file from `blip2-chat describe`: "
                           f"line {first.number} {first.problem}.", _format_hint(text, fmt))
    message = f"Line {first.number} of {visible(path)} is not a row from `blip2-chat describe`: it {first.problem}."
    if len(bad) == 1:
        return OutputError(message, "Fix or remove that line, then run the same command again; "
                                    "or choose another --out.")
    others = [str(line.number) for line in bad[1:6]] + ([f"{len(bad) - 6} more"] if len(bad) > 6 else [])
    lines = f"Line {others[0]} is" if len(others) == 1 else f"Lines {', '.join(others[:-1])} and {others[-1]} are"
    return OutputError(message, f"{lines} not rows either: fix or remove them, then run the same command again; "
                                "or choose another --out.")


_FORMAT_NAMES = {"jsonl": "a JSON Lines file", "csv": "a CSV file", "md": "a Markdown table"}


def _format_hint(text: str, fmt: str) -> str:
    guess = guess_format(text)
    if guess and guess != fmt:
        return f"It looks like {_FORMAT_NAMES[guess]}: pass --format {guess}, or choose another --out."
    return "Pass --format to match it, or choose another --out."
