"""A checkpoint folder missing what the processor needs, or holding weights of another model, is refused with
one sentence before it can answer: transformers would build an empty tokenizer ("" answers) or fill the weights
it did not find with random values (gibberish answers), and say nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chatbot.engine.checkpoint_files import error_summary
from chatbot.engine.loader import load_checkpoint
from chatbot.errors import NotACheckpointError

MATCH_HINT = ("Put the config.json and weights of one checkpoint together (save_pretrained writes both), or pass a "
              "complete checkpoint.")


def copy_without(source: Path, folder: Path, *names: str) -> Path:
    shutil.copytree(source, folder)
    for name in names:
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize("drop, what, hint", [
    (("tokenizer.json", "tokenizer_config.json"), "lacks the tokenizer files tokenizer.json and tokenizer_config.json",
     "Copy them"),
    (("tokenizer_config.json",), "lacks the tokenizer file tokenizer_config.json", "Copy it"),
    (("tokenizer.json",), "lacks the tokenizer file tokenizer.json", "Copy it"),
    (("processor_config.json",), "lacks the image processor's settings (preprocessor_config.json, or "
                                 "processor_config.json with an image_processor entry)", "Copy those files"),
])
def test_a_folder_without_its_processor_files_is_refused(tmp_path, checkpoints, drop, what, hint) -> None:
    folder = copy_without(checkpoints["opt"], tmp_path / "partial", *drop)
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folder), device="cpu")
    assert error.value.message == f"The folder {folder} {what}."
    assert error.value.hint == (f"{hint} from the checkpoint the folder was made from (the processor's save_pretrained "
                                "writes them), or pass a complete checkpoint.")


def test_a_vocabulary_stands_in_for_tokenizer_json_and_preprocessor_config_for_processor_config(
        tmp_path, retrieval_checkpoint) -> None:
    """What the hub checkpoints hold besides (vocab.txt, preprocessor_config.json) passes the check; transformers
    then builds the processor from them."""
    from transformers import Blip2Processor

    folder = copy_without(retrieval_checkpoint, tmp_path / "slow", "processor_config.json")
    processor = Blip2Processor.from_pretrained(retrieval_checkpoint)
    processor.image_processor.save_pretrained(folder)  # preprocessor_config.json, as the hub checkpoints have it
    assert (folder / "preprocessor_config.json").is_file()
    loaded = load_checkpoint(str(folder), device="cpu", kind="retrieval")
    assert loaded.processor.image_processor.size == processor.image_processor.size


def test_weights_of_another_checkpoint_are_refused(tmp_path, checkpoints, retrieval_checkpoint) -> None:
    folder = tmp_path / "swapped"
    shutil.copytree(checkpoints["opt"], folder)
    shutil.copy(retrieval_checkpoint / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folder), device="cpu")
    assert error.value.message == (f"The weights in {folder.resolve()} do not match its config.json (39 of the "
                                   "model's weights are missing, e.g. language_model.lm_head.weight).")
    assert error.value.hint == MATCH_HINT


@pytest.mark.parametrize("quantize", ["none", "int8", "8bit", "4bit"])
def test_a_config_naming_another_language_model_is_refused_in_every_precision(tmp_path, checkpoints, quantize) -> None:
    folder = tmp_path / "llama"
    shutil.copytree(checkpoints["opt"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folder), device="cpu", quantize=quantize)
    assert error.value.message == (f"The weights in {folder.resolve()} do not match its config.json (21 of the "
                                   "model's weights are missing, e.g. language_model.lm_head.weight).")


def test_weights_of_other_sizes_than_the_config_are_one_sentence(tmp_path, checkpoints) -> None:
    folder = tmp_path / "wider"
    shutil.copytree(checkpoints["flan-t5"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["d_ff"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folder), device="cpu")
    assert error.value.message == (f"The weights in {folder.resolve()} do not match its config.json (some of them have "
                                   "other sizes than it gives).")
    assert error.value.hint == MATCH_HINT


def test_library_text_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = ("Can't load image processor for '/tmp/x'. If you were trying to load it from 'https://huggingface.co/"
            "models', make sure you don't have a local directory with the same name. Otherwise, make sure '/tmp/x' is "
            "the correct path to a directory containing a preprocessor_config.json file")
    assert error_summary(OSError(text)) == (  # cut at a word: not "make sure '/tmp/x"
        "Can't load image processor for '/tmp/x'. If you were trying to load it from 'https://huggingface.co/models', "
        "make sure you don't have a local directory with the same name. Otherwise, make sure…")
    assert error_summary(OSError("x" * 300)) == "x" * 200 + "…"
    assert error_summary(OSError("Short enough.\nSecond line")) == "Short enough"
