"""`describe --ray` and `index --ray` on a local Ray instance: the same rows and embeddings as one machine.

The reference is the one-machine run of the same command (its own code path: the engine in this process,
files read here). Ray is imported outright, so where the `cluster` extra is missing these tests fail rather
than skip (CI installs it). One local Ray instance serves the whole module; the checkpoints are the tiny
synthetic ones.
"""

from __future__ import annotations

import json
import shutil
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


@pytest.mark.parametrize(("workers", "batch"), [(1, 2), (2, 3)])
def test_describe_on_ray_writes_the_file_one_machine_writes(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, workers: int, batch: int,
) -> None:
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
) -> None:
    marker = tmp_path / "died"
    monkeypatch.setenv("BLIP2_CHAT_FAULT_AFTER", "2")  # the actor ends its process on its 2nd batch, once
    monkeypatch.setenv("BLIP2_CHAT_FAULT_MARKER", str(marker))
    on_ray = describe(photos, tmp_path / "ray.csv", checkpoints["opt"], "--batch-size", "2", "--ray")
    assert marker.exists()  # the worker really died (and Ray restarted it and retried its batch)
    monkeypatch.delenv("BLIP2_CHAT_FAULT_AFTER")
    assert on_ray == describe(photos, tmp_path / "alone.csv", checkpoints["opt"], "--batch-size", "2")


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


def index(photos: Path, folder: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    capsys.readouterr()
    assert main(["index", str(photos), "--model", str(checkpoint), "--index", str(folder), "--json",
                 "--batch-size", "2", *extra]) == 0
    record = json.loads(capsys.readouterr().out)
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
    assert index(folder, on_ray, retrieval_checkpoint, capsys, "--ray", "--workers", "2") == first
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
