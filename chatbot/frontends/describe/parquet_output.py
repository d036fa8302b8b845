"""`describe --format parquet`: the same four columns as the text formats, in one Parquet file.

Parquet cannot be appended to, so rows are gathered in row groups and the file is written beside its final
name (`NAME.partial`) and renamed when the run ends: a stopped run leaves no half file under NAME. It is not
resumable; runs that may be stopped write JSON Lines and convert at the end. pyarrow comes with the
`cluster` extra (Ray Data needs it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatbot.errors import UserError
from chatbot.frontends.describe.output import FIELDS, OutputError, Row, writable_text
from chatbot.untrusted import visible

PARQUET = "parquet"
ROWS_PER_GROUP = 1_000


def parquet_refusals(out: Path | None, resume: bool) -> None:
    """Refuse what Parquet cannot do, before any model loads."""
    if out is None:
        raise OutputError("--format parquet needs a file to write.", "Pass --out FILE.parquet with it.")
    if resume:
        raise OutputError("--resume cannot continue a Parquet file (Parquet files cannot be appended to).",
                          "Write JSON Lines (--format jsonl) for runs you may stop, and convert at the end.")
    _pyarrow()


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError("--format parquet needs pyarrow, which is not installed.",
                        "Install it with: pip install 'blip2-chat[cluster]' (or pip install pyarrow).") from None
    return pyarrow


class ParquetRowWriter:
    """Collects rows and writes them as row groups of `ROWS_PER_GROUP`; `close` finishes and renames the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._rows: list[Row] = []
        self._writer: Any = None

    def write(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        pa = _pyarrow()
        table = pa.table({name: [writable_text(getattr(row, name)) for row in self._rows] for name in FIELDS},
                         schema=pa.schema([(name, pa.string()) for name in FIELDS]))
        try:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = pa.parquet.ParquetWriter(self.partial, table.schema)
            self._writer.write_table(table)
        except OSError as error:
            raise OutputError(f"Cannot write {visible(self.path)}: {error.strerror or error}.",
                              "Free some space or choose another --out.") from None
        self._rows.clear()

    def close(self, finished: bool = True) -> None:
        if finished and (self._rows or self._writer is None):
            self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if finished:
                os.replace(self.partial, self.path)

    def __enter__(self) -> ParquetRowWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self.close(finished=kind is None)


def read_parquet_rows(path: Path) -> list[Row]:
    """The rows of a Parquet file `describe` wrote (for tests and conversions)."""
    table = _pyarrow().parquet.read_table(path)
    return [Row(**{name: str(record[name] or "") for name in FIELDS}) for record in table.to_pylist()]
