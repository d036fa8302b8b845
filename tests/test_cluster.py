"""`describe --ray` and `index --ray` on a local Ray instance: the same rows and embeddings as one machine.

The reference is the one-machine run of the same command (its own code path: the engine in this process,
files read here). Ray is imported outright, so where the `cluster` extra is missing these tests fail rather
than skip (CI installs it). One local Ray instance serves the whole module; the checkpoints are the tiny
synthetic ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from chatbot.cli import main
from chatbot.core.photo_index.store import IndexStore
from chatbot.frontends.describe import output
from chatbot.frontends.describe.output import read_rows
from chatbot.frontends.describe.parquet_output import read_parquet_rows
from tests.conftest import make_image

COLOURS = {"red": (200, 30, 30), "green": (20, 180, 40), "blue": (30, 30, 200), "yellow": (240, 200, 0),
           "black": (10, 10, 10)}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> object:
    """One small local Ray instance for the module; the commands join it instead of starting their own."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good pictures, a copy of one (same sha256), a damaged JPEG and a file that is no image at all."""
    root = tmp_path_factory.mktemp("photos")
    for index, (name, colour) in enumerate(COLOURS.items()):
        make_image(root / f"{name}.png", colour, (64 + 8 * index, 48))
    shutil.copy(root / "green.png", root / "green copy.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / "notes.png").write_bytes(b"not a picture at all")
    return root


def describe(photos: Path, out: Path, checkpoint: Path, *extra: str) -> str:
    assert main(["describe", str(photos), "--model", str(checkpoint), "--out", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("workers", "batch"), [(1, 2), (2, 8)])
def test_describe_on_ray_writes_the_file_one_machine_writes(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, workers: int, batch: int,
) -> None:
    """With 2 workers and batches of 8, the 8 files go to the workers as 2 batches of 4 (each worker gets work):
    the answers, and so the file, are still the ones one machine writes in batches of 8."""
    alone = describe(photos, tmp_path / "alone.jsonl", checkpoints["opt"], "--batch-size", str(batch))
    on_ray = describe(photos, tmp_path / "ray.jsonl", checkpoints["opt"], "--batch-size", str(batch),
                      "--ray", "--workers", str(workers))
    assert on_ray == alone  # the same text, errors, sha256 and order, byte for byte
    rows = read_rows(tmp_path / "ray.jsonl", "jsonl")
    assert len(rows) == len(list(photos.iterdir())) == len({row.path for row in rows})
    by_name = {Path(row.path).name: row for row in rows}
    assert by_name["green copy.png"].alt_text == by_name["green.png"].alt_text != ""
    assert "damaged" in by_name["broken.jpg"].error and by_name["notes.png"].error


def test_workers_needing_more_gpus_than_the_cluster_has_are_refused_before_anything_runs(
    photos: Path, checkpoints: dict[str, Path], retrieval_checkpoint: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ray would wait for the GPUs forever (it only warns that the job may hang): one sentence instead."""
    gpus = ray.cluster_resources().get("GPU", 0.0)
    wide = ["--ray", "--workers", "2", "--gpus-per-worker", str(gpus + 1)]
    said = (f"blip2-chat: 2 workers with --gpus-per-worker {gpus + 1:g} need {2 * (gpus + 1):g} GPUs, and the local "
            f"Ray instance has {gpus:g}. Use --gpus-per-worker 0 to run on CPU cores, fewer --workers, or a cluster "
            "with GPUs.")
    assert main(["describe", str(photos), "--out", str(tmp_path / "x.jsonl"), "--model", str(checkpoints["opt"]),
                 *wide]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == said
    assert not (tmp_path / "x.jsonl").exists()
    assert main(["index", str(photos), "--index", str(tmp_path / "i"), "--model", str(retrieval_checkpoint),
                 *wide]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == said


def test_a_killed_worker_loses_and_repeats_no_row(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rows on stdout: Ray's own note about the dead worker (which Ray prints on stdout) stays out of them."""
    marker = tmp_path / "died"
    monkeypatch.setenv("BLIP2_CHAT_FAULT_AFTER", "2")  # the actor ends its process on its 2nd batch, once
    monkeypatch.setenv("BLIP2_CHAT_FAULT_MARKER", str(marker))
    args = ["describe", str(photos), "--model", str(checkpoints["opt"]), "--format", "csv", "--batch-size", "2"]
    assert main([*args, "--ray"]) == 0
    on_ray = capsys.readouterr().out
    assert marker.exists()  # the worker really died (and Ray restarted it and retried its batch)
    monkeypatch.delenv("BLIP2_CHAT_FAULT_AFTER")
    assert main(args) == 0
    assert on_ray == capsys.readouterr().out


def test_an_exception_in_a_worker_is_one_sentence(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not Ray's traceback of a few hundred lines, nor an empty output file: a worker's own UserError as one machine
    says it (here a model folder the driver did not check), anything else as 'A Ray worker failed: ...'."""
    from chatbot.cluster import jobs

    nope = tmp_path / "nope"
    assert describe_status(photos, tmp_path / "alone.jsonl", nope) == 2
    alone = capsys.readouterr().err.splitlines()[-1]
    monkeypatch.setattr(jobs, "check_model_here", lambda *args, **kwargs: None)  # as for a cluster's shared folder
    assert describe_status(photos, tmp_path / "a.jsonl", nope, "--ray") == 2
    assert capsys.readouterr().err.splitlines()[-1] == alone
    assert not (tmp_path / "a.jsonl").exists()  # the run failed before the output was opened
    marker = tmp_path / "no such folder" / "died"  # creating the marker fails in the worker: FileNotFoundError
    monkeypatch.setenv("BLIP2_CHAT_FAULT_AFTER", "1")
    monkeypatch.setenv("BLIP2_CHAT_FAULT_MARKER", str(marker))
    assert describe_status(photos, tmp_path / "b.jsonl", checkpoints["opt"], "--ray") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blip2-chat: A Ray worker failed: FileNotFoundError: [Errno 2] No such file or directory: '{marker}'. The "
        "rows written so far are kept; with --out, --resume goes on from them. (Ray's logs are in "
        "/tmp/ray/session_latest/logs on each node.)")
    assert not (tmp_path / "b.jsonl").exists()


def describe_status(photos: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return main(["describe", str(photos), "--model", str(checkpoint), "--out", str(out), *extra])


PROGRESS = re.compile(r"\d+ of 8 images done(, [\d.]+ images per second)?(, about [\w ]+ left)?\.")


def test_a_run_says_only_our_own_sentences(photos: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Ray's notices (token authentication, progress bars disabled, execution finished), its C++ core's lines and
    its warnings stay in its logs. A separate process, joining this module's Ray instance by its address, so that
    its stderr is the command's alone."""
    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "alt.jsonl"
    run = subprocess.run([sys.executable, "-m", "chatbot", "describe", str(photos), "--model", str(checkpoints["opt"]),
                          "--out", str(out), "--ray", address], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[:2] == [f"Describing on Ray ({address}, 1 worker).", "Describing 8 images, 8 at a time."]
    assert lines[-1] == f"Done: 6 described, 0 skipped (already in the output), 2 failed. Results in {out}."
    named = [line for line in lines[2:-1] if line.startswith("Not described: ")]  # the two failed images, by name
    assert len(named) == 2 and all(str(photos) in line for line in named)
    cut = [line for line in lines[2:-1] if " cut off at 30 tokens" in line]  # random weights seldom end sooner
    assert len(cut) <= 1
    assert [line for line in lines[2:-1] if not PROGRESS.fullmatch(line) and line not in named + cut] == []
    assert run.stdout == ""


def test_resume_goes_on_after_a_stopped_ray_run(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    alone = describe(photos, tmp_path / "alone.jsonl", checkpoints["opt"], "--batch-size", "1")
    out = tmp_path / "ray.jsonl"
    write, written = output.RowWriter.write, []

    def stop_after_three(self: output.RowWriter, row: output.Row) -> None:
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(row)
        write(self, row)

    monkeypatch.setattr(output.RowWriter, "write", stop_after_three)
    args = ["describe", str(photos), "--model", str(checkpoints["opt"]), "--out", str(out), "--batch-size", "1",
            "--ray"]
    assert main(args) == 130
    assert len(read_rows(out, "jsonl")) == 3
    monkeypatch.setattr(output.RowWriter, "write", write)
    assert main([*args, "--resume"]) == 0
    assert out.read_text(encoding="utf-8") == alone  # batch size 1: rows in input order either way


def test_parquet_holds_the_rows_of_jsonl(photos: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    describe(photos, tmp_path / "alt.jsonl", checkpoints["opt"])
    out = tmp_path / "alt.parquet"
    assert main(["describe", str(photos), "--model", str(checkpoints["opt"]), "--out", str(out)]) == 0
    assert read_parquet_rows(tmp_path / "alt.parquet") == read_rows(tmp_path / "alt.jsonl", "jsonl")
    assert not (tmp_path / "alt.parquet.partial").exists()


def index(photos: Path, folder: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], *extra: str,
          said: list[str] | None = None) -> dict:
    capsys.readouterr()
    assert main(["index", str(photos), "--model", str(checkpoint), "--index", str(folder), "--json",
                 "--batch-size", "2", *extra]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    if said is not None:
        said += captured.err.splitlines()
    return {key: record[key] for key in ("added", "updated", "reused", "unchanged", "removed", "failed", "pictures")}


def embeddings(folder: Path) -> dict[str, np.ndarray]:
    store = IndexStore.open_existing(folder)
    try:
        states = store.all_states()
        vectors = store.vectors_for({state.sha256 for state in states.values()})
        return {path: vectors[state.sha256].astype(np.float32) for path, state in states.items()}
    finally:
        store.close()


def searched(folder: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, float, float]]:
    capsys.readouterr()
    assert main(["search", "a red square", "--index", str(folder), "--model", str(checkpoint), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records  # a ranking to compare
    return [(record["path"], record["similarity"], record["match"]) for record in records]


def test_index_on_ray_holds_the_same_embeddings_and_finds_the_same(
    photos: Path, retrieval_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    alone, on_ray = tmp_path / "alone", tmp_path / "ray"
    first = index(folder, alone, retrieval_checkpoint, capsys)
    said: list[str] = []
    assert index(folder, on_ray, retrieval_checkpoint, capsys, "--ray", "--workers", "2", said=said) == first
    assert said[:2] == ["Indexing on Ray (a local instance, 2 workers).",
                        "Indexing 8 new or changed files, 2 at a time."]
    assert first["added"] == 5 and first["reused"] == 1 and len(first["failed"]) == 2
    reference, got = embeddings(alone), embeddings(on_ray)
    assert sorted(got) == sorted(reference)
    assert max(float(np.abs(got[path] - reference[path]).max()) for path in got) <= 1e-6
    assert searched(on_ray, retrieval_checkpoint, capsys) == searched(alone, retrieval_checkpoint, capsys)
    # The incremental rules stay the driver's: a renamed file reuses, a new one is embedded, a deleted one leaves.
    (folder / "red.png").rename(folder / "red again.png")
    make_image(folder / "white.png", (250, 250, 250))
    (folder / "black.png").unlink()
    second = index(folder, alone, retrieval_checkpoint, capsys)
    assert index(folder, on_ray, retrieval_checkpoint, capsys, "--ray") == second
    assert (second["added"], second["reused"], second["removed"]) == (1, 1, 2)
    reference, got = embeddings(alone), embeddings(on_ray)
    assert sorted(got) == sorted(reference)
    assert max(float(np.abs(got[path] - reference[path]).max()) for path in got) <= 1e-6


def test_without_ray_the_flag_says_how_to_install_it(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert main(["describe", str(photos), "--model", str(checkpoints["opt"]), "--out", str(tmp_path / "a.jsonl"),
                 "--ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'blip2-chat[cluster]'" in err and "pip install -e '.[cluster]'" in err
    assert "on Ray" not in err  # no line says Ray is at work before the one that says it is missing
    assert not (tmp_path / "a.jsonl").exists()


def test_answers_cut_off_at_max_new_tokens_are_counted_on_ray_as_on_one_machine(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The summary's "N alt texts were cut off at 4 tokens" comes from the workers' token counts on Ray: the
    same sentence one machine says (it was missing on Ray, whose results had no token counts)."""
    describe(photos, tmp_path / "alone.jsonl", checkpoints["opt"], "--max-new-tokens", "4")
    alone = [line for line in capsys.readouterr().err.splitlines() if "cut off" in line]
    describe(photos, tmp_path / "ray.jsonl", checkpoints["opt"], "--max-new-tokens", "4", "--ray")
    on_ray = [line for line in capsys.readouterr().err.splitlines() if "cut off" in line]
    assert len(alone) == 1 and "cut off at 4 tokens" in alone[0]  # random weights rarely end within 4 tokens
    assert on_ray == alone
