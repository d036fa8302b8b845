"""A model in the Hugging Face cache is checked as a folder is: an interrupted download, a copy that is not
BLIP-2, or one without safetensors weights or tokenizer files is one sentence saying how to fetch it again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbot.engine.checkpoint_location import _OFFLINE_HINT, cached_checkpoint, resolve_model
from chatbot.engine.loader import load_checkpoint
from chatbot.errors import NotACheckpointError
from chatbot.frontends.listings import is_cached
from tests.conftest import put_in_hub_cache

HUB_ID = "Salesforce/blip2-opt-2.7b"
FETCH_AGAIN = ("Fetch it again: run once with network access (HF_HUB_OFFLINE unset), or run "
               f"`hf download {HUB_ID}`; or pass --model with a local folder ({_OFFLINE_HINT}).")
FORCE_AGAIN = f"Fetch it again with `hf download {HUB_ID} --force-download`, or pass --model with a local folder " \
              f"({_OFFLINE_HINT})."


@pytest.fixture
def cache_with(tmp_path: Path, checkpoints: dict[str, Path]) -> Iterator[object]:
    """`cache_with(keep=..., drop=..., cache=...)`: tiny-opt's files (or only `keep`, less `drop`) cached as
    Salesforce/blip2-opt-2.7b (in `cache`, default this process's); returns the snapshot folder. The cached
    repo goes when the test ends."""
    repos: list[Path] = []

    def make(keep: tuple[str, ...] = (), drop: tuple[str, ...] = (), cache: Path | None = None) -> Path:
        folder = tmp_path / f"partial-{len(repos)}"
        folder.mkdir()
        for file in checkpoints["opt"].iterdir():
            if (not keep or file.name in keep) and file.name not in drop:
                shutil.copy(file, folder / file.name)
        repos.append(put_in_hub_cache(folder, HUB_ID, cache))
        return next((repos[-1] / "snapshots").iterdir())

    yield make
    for repo in repos:
        shutil.rmtree(repo)


def refusal(name: str = "opt-2.7b") -> NotACheckpointError:
    with pytest.raises(NotACheckpointError) as error:
        resolve_model(name)
    return error.value


def test_an_interrupted_download_says_the_cached_copy_is_incomplete(cache_with) -> None:
    snapshot = cache_with(keep=("README.md",))  # nothing but what the download fetched first
    (snapshot / "README.md").write_text("# BLIP-2\n")
    error = refusal()
    assert error.message == f"The cached copy of {HUB_ID} ({snapshot}) is incomplete: it has no config.json."
    assert error.hint == FETCH_AGAIN
    assert cached_checkpoint(HUB_ID)[0] == snapshot and not is_cached(HUB_ID)  # `models` says "cached no" too


def test_the_command_says_it_in_one_line_and_exits_2(cache_with, pictures) -> None:
    snapshot = cache_with(keep=("README.md",), cache=Path(os.environ["HF_HUB_CACHE"]))  # where the command looks
    (snapshot / "README.md").write_text("# BLIP-2\n")
    result = subprocess.run([sys.executable, "-m", "chatbot", "ask", str(pictures["red"]), "what is it?",
                             "--model", "opt-2.7b"], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"blip2-chat: The cached copy of {HUB_ID} ({snapshot}) is incomplete: it has no "
                             f"config.json. {FETCH_AGAIN}\n")


def test_a_cached_copy_of_another_model_type_is_refused(cache_with) -> None:
    snapshot = cache_with()
    (snapshot / "config.json").write_text('{"model_type": "bert"}')
    error = refusal()
    assert error.message == f'The cached copy of {HUB_ID} ({snapshot}) holds a model of type "bert", not BLIP-2.'
    assert error.hint == FORCE_AGAIN


def test_a_cached_copy_with_pickled_weights_only_says_safetensors_only(cache_with) -> None:
    snapshot = cache_with()
    (snapshot / "model.safetensors").rename(snapshot / "pytorch_model.bin")
    error = refusal(HUB_ID)
    assert error.message == (f"The cached copy of {HUB_ID} ({snapshot}) is incomplete: it has no .safetensors weights "
                             "(other weight formats are not loaded, for safety).")
    assert error.hint == FETCH_AGAIN


@pytest.mark.parametrize("drop, what", [
    (("tokenizer.json", "tokenizer_config.json"), "lacks the tokenizer files tokenizer.json and tokenizer_config.json"),
    (("processor_config.json",), "lacks the image processor's settings (preprocessor_config.json, or "
                                 "processor_config.json with an image_processor entry)"),
])
def test_a_cached_copy_without_its_processor_files_is_incomplete(cache_with, drop, what) -> None:
    snapshot = cache_with(drop=drop)
    assert refusal().message == f"The cached copy of {HUB_ID} ({snapshot}) is incomplete: it {what}."


def test_a_missing_shard_of_sharded_weights_is_incomplete(cache_with) -> None:
    snapshot = cache_with()
    (snapshot / "model.safetensors").rename(snapshot / "model-00001-of-00002.safetensors")
    (snapshot / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", '
        '"b": "model-00002-of-00002.safetensors"}}')
    assert refusal().message == (f"The cached copy of {HUB_ID} ({snapshot}) is incomplete: it lacks the weights file "
                                 "model-00002-of-00002.safetensors that model.safetensors.index.json lists.")


def test_a_snapshot_the_hub_library_knows_is_incomplete(monkeypatch, tmp_path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import IncompleteSnapshotError

    def listed_files_missing(*args: object, **kwargs: object) -> str:
        raise IncompleteSnapshotError("The cached snapshot ... is incomplete: 1 file(s) are missing",
                                      snapshot_path=str(tmp_path))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", listed_files_missing)
    assert refusal().message == (f"The cached copy of {HUB_ID} ({tmp_path}) is incomplete: it misses files that its "
                                 "download listed (an interrupted download?).")


def test_online_an_incomplete_copy_is_completed_by_downloading_the_rest(cache_with, checkpoints, monkeypatch) -> None:
    import huggingface_hub

    snapshot = cache_with(drop=("model.safetensors", "tokenizer.json"))
    look_in_cache = huggingface_hub.snapshot_download
    fetched: list[str] = []

    def download_the_rest(repo_id: str, **kwargs: object) -> str:  # the hub, as far as the cache can tell
        if kwargs.get("local_files_only"):
            return look_in_cache(repo_id, **kwargs)  # type: ignore[arg-type]
        for name in ("model.safetensors", "tokenizer.json"):
            shutil.copy(checkpoints["opt"] / name, snapshot / name)
            fetched.append(name)
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download_the_rest)
    said: list[str] = []
    resolved = resolve_model("opt-2.7b", progress=said.append)
    assert (resolved.path, resolved.source, fetched) == (snapshot, "download", ["model.safetensors", "tokenizer.json"])
    assert said == [f"Downloading the rest of {HUB_ID} (the cached copy is incomplete)"]
    assert load_checkpoint(resolved, device="cpu").family == "opt"


def test_online_an_incomplete_copy_that_cannot_be_completed_says_both(cache_with, monkeypatch) -> None:
    import huggingface_hub

    snapshot = cache_with(drop=("model.safetensors",))
    look_in_cache = huggingface_hub.snapshot_download

    def no_network(repo_id: str, **kwargs: object) -> str:
        if kwargs.get("local_files_only"):
            return look_in_cache(repo_id, **kwargs)  # type: ignore[arg-type]
        raise OSError("ConnectError: [Errno -2] Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    error = refusal()
    assert error.message == (f"The cached copy of {HUB_ID} ({snapshot}) is incomplete: it has no .safetensors weights "
                             "(other weight formats are not loaded, for safety), and downloading the rest failed: the "
                             "Hugging Face hub could not be reached (no network connection?).")
    assert error.hint == FETCH_AGAIN


def test_a_complete_cached_copy_is_used_and_listed_as_cached(cache_with) -> None:
    snapshot = cache_with()
    assert cached_checkpoint(HUB_ID) == (snapshot, None) and is_cached(HUB_ID)
    resolved = resolve_model("opt-2.7b")
    assert (resolved.path, resolved.source) == (snapshot, "cache")
