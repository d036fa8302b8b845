"""Two `describe --format parquet --out same.parquet` at once: a probe found one run's rows silently lost (the
other formats refused the second run, Parquet did not, and its end replaced whatever was at NAME).

The first run is played in this process: `held_alone` holds the output as `run_describe` does, and a
`ParquetRowWriter` writes into it; the second run is the real command (a ScriptedEngine answers). Files are
read back with pyarrow itself, not with describe's reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.errors import UserError
from chatbot.frontends.describe.out_file import held_alone
from chatbot.frontends.describe.output import Row
from chatbot.frontends.describe.parquet_output import ParquetRowWriter
from tests.conftest import make_image
from tests.test_describe import describe_here, use_scripted_engine

pq = pytest.importorskip("pyarrow.parquet")

FIRST_RUN = [Row("/p/a.png", "A cat.", "", "ab" * 32), Row("/p/b.png", "", "The file is damaged.", "cd" * 32)]
BUSY = "Wait for it to finish, or choose another --out."


def cells(path: Path) -> list[tuple[str, str, str, str]]:
    """The rows of a Parquet file as pyarrow reads them."""
    return [(r["path"], r["alt_text"], r["error"], r["sha256"]) for r in pq.read_table(path).to_pylist()]


def expected(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    return [(row.path, row.alt_text, row.error, row.sha256) for row in rows]


def first_writer(out: Path, held: int | None) -> ParquetRowWriter:
    """The first run's writer, its two rows given (still in memory: fewer than a row group)."""
    writer = ParquetRowWriter(out, held)
    for row in FIRST_RUN:
        writer.write(row)
    return writer


def test_a_second_parquet_run_into_the_same_out_is_refused_and_the_first_keeps_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "t" / "y.parquet"
    use_scripted_engine(monkeypatch, "a red square")
    with held_alone(out, "parquet") as held:  # the first run, at work
        writer = first_writer(out, held)
        assert describe_here(image, "--out", out) == 2
        assert capsys.readouterr().err == f"blip2-chat: Another blip2-chat describe is writing to {out}. {BUSY}\n"
        assert not out.exists()  # nothing appears under NAME before the first run is whole
        # --resume is refused for Parquet before the lock is looked at; the first run's file is not touched
        assert describe_here(image, "--out", out, "--resume") == 2
        assert "--resume cannot continue a Parquet file" in capsys.readouterr().err
        writer.close()
    assert cells(out) == expected(FIRST_RUN)
    assert not (tmp_path / "t" / "y.parquet.partial").exists()
    assert describe_here(image, "--out", out) == 2  # once it is done, the file is there: never written over
    assert capsys.readouterr().err == (f"blip2-chat: {out} already exists, and a Parquet file is never written "
                                       "over. Choose another --out, or move that file away first.\n")
    assert cells(out) == expected(FIRST_RUN)


def test_a_text_run_and_a_parquet_run_into_the_same_file_refuse_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "y.parquet"
    use_scripted_engine(monkeypatch, "a red square")
    with held_alone(out, "parquet") as held:
        writer = first_writer(out, held)
        assert describe_here(image, "--format", "jsonl", "--out", out, "--resume") == 2
        assert capsys.readouterr().err == f"blip2-chat: Another blip2-chat describe is writing to {out}. {BUSY}\n"
        assert not out.exists()  # the refused run leaves no empty file there
        writer.close()
    assert cells(out) == expected(FIRST_RUN)
    out.unlink()
    with held_alone(out, "jsonl"):  # a JSON Lines run into y.parquet, at work
        assert describe_here(image, "--format", "parquet", "--out", out) == 2
        assert capsys.readouterr().err == f"blip2-chat: Another blip2-chat describe is writing to {out}. {BUSY}\n"
    assert not (tmp_path / "y.parquet.partial").exists()


def test_a_file_appearing_under_the_name_before_the_end_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "y.parquet"
    partial = tmp_path / "y.parquet.partial"
    with held_alone(out, "parquet") as held:
        writer = first_writer(out, held)
        out.write_bytes(b"another program's file")
        with pytest.raises(UserError) as refused:
            writer.close()
    assert str(refused.value) == (
        f"{out} appeared while this describe ran (another program made it), so it was left as it is, and this run's "
        f"2 rows are kept in {partial}. Move {partial} to a name of its own to keep them (a later describe into "
        f"{out} writes over it), or compare the two first.")
    assert out.read_bytes() == b"another program's file"
    assert cells(partial) == expected(FIRST_RUN)


def test_the_command_says_so_when_a_file_appears_under_the_name_while_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "y.parquet"
    use_scripted_engine(monkeypatch, "a red square")
    write = ParquetRowWriter.write

    def write_then_appear(self: ParquetRowWriter, row: Row) -> None:
        write(self, row)
        out.write_bytes(b"another program's file")  # made while the run goes on

    monkeypatch.setattr(ParquetRowWriter, "write", write_then_appear)
    assert describe_here(image, "--out", out) == 2
    partial = tmp_path / "y.parquet.partial"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blip2-chat: {out} appeared while this describe ran (another program made it), so it was left as it is, and "
        f"this run's 1 row is kept in {partial}. Move {partial} to a name of its own to keep them (a later describe "
        f"into {out} writes over it), or compare the two first.")
    assert out.read_bytes() == b"another program's file"
    assert [(path, text) for path, text, _, _ in cells(partial)] == [(str(image), "A red square.")]


def test_an_empty_file_under_the_name_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "red.png", (200, 30, 30))
    out = tmp_path / "y.parquet"
    out.touch()
    use_scripted_engine(monkeypatch, "a red square")
    assert describe_here(image, "--out", out) == 2
    assert capsys.readouterr().err == (f"blip2-chat: {out} already exists, and a Parquet file is never written "
                                       "over. Choose another --out, or move that file away first.\n")
    assert out.read_bytes() == b"" and not (tmp_path / "y.parquet.partial").exists()


def test_a_run_stopped_before_any_row_group_leaves_no_partial_file(tmp_path: Path) -> None:
    # Ctrl+C with a model loaded leaves the process at once (os._exit), so the writer itself must tidy up
    out = tmp_path / "y.parquet"
    with held_alone(out, "parquet") as held:
        writer = first_writer(out, held)  # two rows, still in memory: no row group written
        assert (tmp_path / "y.parquet.partial").exists()  # held from the start
        writer.close(finished=False)
        assert sorted(tmp_path.iterdir()) == []


def test_a_stopped_parquet_run_says_nothing_was_written_under_the_name_and_does_not_promise_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl+C: a Parquet file is named only once its run ends, and --resume refuses Parquet; the sentence said
    "What was described so far is saved; run the same command with --resume to go on", both untrue."""
    import chatbot.core.runtime
    from tests.test_describe import StopsAfter

    folder = tmp_path / "five"
    folder.mkdir()
    for n in range(5):
        make_image(folder / f"img{n}.png", (40 * n, 30, 200 - 30 * n))
    out = tmp_path / "alt.parquet"
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: StopsAfter(2))
    assert describe_here(folder, "--out", out, "--batch-size", "1") == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"Stopped after 2 of 5 images. A Parquet file is named only once the run ends, so {out} was not written; "
        "run the same command again to describe them all (Parquet cannot be resumed; JSON Lines can, with "
        "--out FILE.jsonl).")
    assert not out.exists()
