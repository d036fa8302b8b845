"""The loader: local folders, the hub cache, and clear errors when a model is nowhere to be found."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from chatbot.engine.blip2 import Blip2Engine
from chatbot.engine.checkpoint_location import resolve_model
from chatbot.engine.device_and_dtype import choose_dtype
from chatbot.engine.loader import load_checkpoint
from chatbot.engine.registry import KNOWN_CHECKPOINTS, find_checkpoint, resolve_alias
from chatbot.errors import ModelNotFoundError, NotACheckpointError, OptionError
from tests.conftest import put_in_hub_cache


def test_local_folder_loads_with_its_family(checkpoints) -> None:
    for family, path in checkpoints.items():
        loaded = load_checkpoint(str(path), device="cpu")
        assert loaded.family == family and loaded.resolved.source == "directory"
        assert loaded.precision == "float32" and loaded.device == "cpu"
        assert Blip2Engine(loaded).info.is_encoder_decoder == (family == "flan-t5")


def test_cached_hub_id_and_alias_load_offline(checkpoints) -> None:
    repo = put_in_hub_cache(checkpoints["opt"], "Salesforce/blip2-opt-2.7b")
    try:
        for name in ("Salesforce/blip2-opt-2.7b", "opt-2.7b"):
            resolved = resolve_model(name)
            assert resolved.source == "cache" and resolved.hub_id == "Salesforce/blip2-opt-2.7b"
        loaded = load_checkpoint("opt-2.7b", device="cpu")
        assert loaded.family == "opt"
    finally:
        shutil.rmtree(repo)


def test_unknown_hub_id_offline_names_the_fix() -> None:
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("nobody/no-such-model")
    assert "nobody/no-such-model" in str(error.value) and "HF_HUB_OFFLINE" in str(error.value)


@pytest.mark.parametrize("failure, reason", [
    (OSError("An error happened while trying to locate the files on the Hub. Got: ConnectError: [Errno -2] Name "
             "or service not known."), "the Hugging Face hub could not be reached (no network connection?)"),
    (OSError("401 Client Error: Repository Not Found for url"), "401 Client Error: Repository Not Found for url"),
])
def test_a_failed_download_says_why_plainly_and_how_to_try_offline(monkeypatch, failure, reason) -> None:
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("nobody/no-such-model")
    assert error.value.message == f"Could not download nobody/no-such-model: {reason}."
    assert "blip2-chat demo, or --model demo" in error.value.hint


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "not-a-hub-id"])
def test_missing_folder_or_nonsense_name(name) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve_model(name)


def test_folders_that_are_not_blip2_checkpoints(tmp_path, checkpoints) -> None:
    with pytest.raises(NotACheckpointError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotACheckpointError, match="bert"):
        resolve_model(str(tmp_path))
    pickled = tmp_path / "pickled"
    shutil.copytree(checkpoints["opt"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(NotACheckpointError, match="safetensors"):
        resolve_model(str(pickled))
    a_file = tmp_path / "config.json"
    with pytest.raises(NotACheckpointError, match="is a file"):
        resolve_model(str(a_file))


def test_a_config_that_is_not_json_is_one_sentence_with_its_place(tmp_path, checkpoints) -> None:
    folder = tmp_path / "not-json"
    shutil.copytree(checkpoints["opt"], folder)
    (folder / "config.json").write_text('{"model_type": "blip-2",')
    with pytest.raises(NotACheckpointError) as error:
        resolve_model(str(folder))
    assert error.value.message == (f"The folder {folder} has a config.json that is not valid JSON (Expecting property "
                                   "name enclosed in double quotes: line 1 column 25 (char 24)).")
    assert error.value.hint == "Fix the file, or save the checkpoint again with save_pretrained."


def test_damaged_weights_are_one_clear_error(tmp_path, checkpoints) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["opt"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(NotACheckpointError, match="could not be loaded"):
        load_checkpoint(str(broken), device="cpu")


def test_registry_aliases() -> None:
    assert resolve_alias("flan-t5-xl") == "Salesforce/blip2-flan-t5-xl"
    assert resolve_alias("BLIP2-OPT-6.7B-COCO") == "Salesforce/blip2-opt-6.7b-coco"
    assert resolve_alias("/some/folder") == "/some/folder"
    assert find_checkpoint("flan-t5-xxl").context_tokens == 512  # type: ignore[union-attr]
    assert {k.family for k in KNOWN_CHECKPOINTS} == {"opt", "flan-t5"}
    assert all(k.weights_gb["4bit"] < k.weights_gb["8bit"] < k.weights_gb["float16"] for k in KNOWN_CHECKPOINTS)


def test_dtype_policy() -> None:
    assert choose_dtype("auto", "cpu", "flan-t5") is torch.float32
    assert choose_dtype("bfloat16", "cpu", "opt") is torch.bfloat16
    with pytest.raises(OptionError, match="float16"):
        choose_dtype("float16", "cpu", "flan-t5")  # FlanT5 overflows in float16
    with pytest.raises(OptionError):
        choose_dtype("float8", "cpu", "opt")
