"""`describe --format parquet`: the same four columns as the text formats, in one Parquet file.

Parquet cannot be appended to, so rows are gathered in row groups and the file is written beside its final
name (`NAME.partial`, which the run holds: see `held_alone`) and linked to NAME when the run ends: a stopped run
leaves no half file under NAME, and a file that appeared there meanwhile is never replaced (the run says so,
and its rows stay in NAME.partial). It is not resumable; runs that may be stopped write JSON Lines and
convert at the end. pyarrow comes with the `cluster` extra (Ray Data needs it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

from chatbot.errors import UserError
from chatbot.frontends.describe.out_file import drop_if_empty, partial_name
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
    """Collects rows and writes them as row groups of `ROWS_PER_GROUP` into NAME.partial; `close` finishes it and
    gives it its name, never taking the place of a file there (another program's, written meanwhile).

    `held`: NAME.partial as `held_alone` opened and locked it for this run (None: opened here by name).
    """

    def __init__(self, path: Path, held: int | None = None) -> None:
        self.path = path
        self.partial = partial_name(path)
        self._held = held
        self._rows: list[Row] = []
        self._written = 0  # rows in row groups already
        self._sink: IO[bytes] | None = None
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
                self._sink = self._open_sink()
                self._writer = pa.parquet.ParquetWriter(self._sink, table.schema)
            self._writer.write_table(table)
        except OSError as error:
            raise self._cannot_write(error) from None
        self._written += len(self._rows)
        self._rows.clear()

    def _open_sink(self) -> IO[bytes]:
        """NAME.partial, emptied (what a stopped run left there is written over)."""
        if self._held is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.partial, "wb")  # closed by close()
        os.ftruncate(self._held, 0)
        os.lseek(self._held, 0, os.SEEK_SET)
        return open(self._held, "wb", closefd=False)  # the descriptor (and its lock) stays held_alone's

    def close(self, finished: bool = True) -> None:
        """End the file; `finished`: the run is done, so it gets its name (else NAME.partial is left as it is).

        Raises:
            OutputError: it could not be written, or a file appeared under NAME meanwhile (the rows are kept in
                NAME.partial, and the sentence says so).
        """
        if finished and (self._rows or self._writer is None):
            self._flush()
        if self._writer is None or self._sink is None:
            if self._held is not None:
                drop_if_empty(self.partial, self._held)  # stopped before a row group: now, as the process may
            return                                       # leave at once (`exit_now`), before held_alone can
        try:
            self._writer.close()
            self._sink.flush()
            os.fsync(self._sink.fileno())
        except OSError as error:
            raise self._cannot_write(error) from None
        finally:
            self._writer = None
            self._sink.close()
        if finished:
            self._give_name()

    def _give_name(self) -> None:
        """NAME.partial becomes NAME, only if nothing is there: a link, which fails when the name is taken (as
        `write_new` does), then NAME.partial goes."""
        try:
            os.link(self.partial, self.path)
        except FileExistsError:
            raise self._taken() from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(self.path):
                raise self._taken() from None
            os.rename(self.partial, self.path)
            return
        with contextlib.suppress(OSError):
            self.partial.unlink()

    def _taken(self) -> OutputError:
        rows = "1 row is" if self._written == 1 else f"{self._written} rows are"
        return OutputError(f"{visible(self.path)} appeared while this describe ran (another program made it), so it "
                           f"was left as it is, and this run's {rows} kept in {visible(self.partial)}.",
                           f"Move {visible(self.partial)} to a name of its own to keep them (a later describe into "
                           f"{visible(self.path)} writes over it), or compare the two first.")

    def _cannot_write(self, error: OSError) -> OutputError:
        return OutputError(f"Cannot write {visible(self.path)}: {error.strerror or error}.",
                           "Free some space or choose another --out.")

    def __enter__(self) -> ParquetRowWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self.close(finished=kind is None)


def read_parquet_rows(path: Path) -> list[Row]:
    """The rows of a Parquet file `describe` wrote (for tests and conversions)."""
    table = _pyarrow().parquet.read_table(path)
    return [Row(**{name: str(record[name] or "") for name in FIELDS}) for record in table.to_pylist()]
