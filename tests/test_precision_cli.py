"""`--quantize`, the config file and `blip2-chat models`, run as a user runs them: a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from chatbot.engine.precision import MEMORY_LIMIT_ENV, Precision, estimate_memory
from chatbot.engine.registry import KNOWN_CHECKPOINTS, find_checkpoint
from chatbot.engine.shape import read_shape
from chatbot.frontends.listings import Target, model_row
from tests.conftest import put_in_hub_cache
from tests.test_cli import PREFIX, QUESTION, Runs, imported_modules, json_lines, one_line, only_cut_offs, run_together

HF_HUB_ID = "Salesforce/blip2-opt-2.7b"
GB = 10**9


def blip2_chat(*args: object, home: Path, limit: str | None = None,
               python: tuple[str, ...] = ("-m", "chatbot")) -> subprocess.CompletedProcess[str]:
    """`blip2-chat ARGS` with its own config folder and, optionally, a memory limit."""
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home)}
    env.pop(MEMORY_LIMIT_ENV, None)
    if limit is not None:
        env[MEMORY_LIMIT_ENV] = limit
    return subprocess.run([sys.executable, *python, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=180, env=env, stdin=subprocess.DEVNULL)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints, checked as such."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX)
    return lines[0]


def between_float32_and_bfloat16(checkpoint: Path) -> str:
    """A memory limit under float32's estimate and over bfloat16's, so `auto` must step down once."""
    shape = read_shape(checkpoint)
    high, low = (estimate_memory(shape, Precision("none", dtype)).total for dtype in ("float32", "bfloat16"))
    return str((high + low) // 2)


# The medium-opt synthetic architecture's config: float32 needs 1.02 GB, 8-bit (float32 rest) 0.81 GB.
MEDIUM_CONFIG = {
    "model_type": "blip-2", "num_query_tokens": 32,
    "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6},
    "qformer_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 4,
                       "encoder_hidden_size": 384},
    "text_config": {"model_type": "opt", "vocab_size": 8001, "hidden_size": 768, "num_hidden_layers": 8,
                    "num_attention_heads": 12, "ffn_dim": 3072},
}


def fake_checkpoint(folder: Path) -> Path:
    """A folder that passes for a checkpoint until its (empty) weights are read: the memory check comes first."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MEDIUM_CONFIG), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    root = tmp_path_factory.mktemp("precision-cli")
    empty = root / "empty-home"
    configured = root / "configured"
    configured.mkdir()
    (configured / "config.toml").write_text(
        f'# my defaults\nmodel = "{checkpoints["opt"]}"\nquantize = "4bit"\nmax_new_tokens = 3\n', encoding="utf-8")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text('model = "opt-2.7b"\nquantize = 8bit\n', encoding="utf-8")
    red, opt, t5 = pictures["red"], checkpoints["opt"], checkpoints["flan-t5"]
    ask = partial(blip2_chat, "ask", red, QUESTION)
    missing_bnb = ("-c", "import sys; sys.modules['bitsandbytes'] = None; from chatbot.cli import main; "
                         "sys.exit(main(sys.argv[1:]))")
    return run_together({
        "opt-8bit": partial(ask, "--model", opt, "--quantize", "8bit", home=empty),
        "opt-4bit": partial(ask, "--model", opt, "--quantize", "4bit", home=empty),
        "t5-8bit": partial(ask, "--model", t5, "--quantize", "8bit", "--json", home=empty),
        "t5-4bit": partial(ask, "--model", t5, "--quantize", "4bit", "--json", home=empty),
        "t5-int8": partial(ask, "--model", t5, "--quantize", "int8", "--json", home=empty),
        "no-bitsandbytes-int8": partial(ask, "--model", opt, "--quantize", "int8", "--json", home=empty,
                                        python=missing_bnb),
        "auto": partial(ask, "--model", opt, "--json", home=empty, limit=between_float32_and_bfloat16(opt)),
        "too-big": partial(ask, "--model", fake_checkpoint(root / "medium"), "--quantize", "none", "--dtype",
                           "float32", "--device", "cpu", home=empty, limit="0.9GB"),
        "no-bitsandbytes": partial(ask, "--model", opt, "--quantize", "8bit", home=empty, python=missing_bnb),
        "config": partial(ask, "--json", home=configured),
        "config-overridden": partial(ask, "--json", "--quantize", "none", "--max-new-tokens", "4", home=configured),
        "config-broken": partial(ask, "--model", opt, home=broken),
    })


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_ask_with_quantize_answers(runs: Runs, bits: str) -> None:
    result = runs[f"opt-{bits}"]
    one_line(result)
    assert only_cut_offs(result)  # no bitsandbytes chatter on a piped stderr


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_ask_json_names_the_precision_and_why(runs: Runs, bits: str) -> None:
    (record,) = json_lines(runs[f"t5-{bits}"], 1)
    assert record["precision"] == bits and str(record["answer"]).strip()
    assert str(record["precision_reason"]).startswith(f"Using {bits[0]}-bit, as asked: it needs ")
    assert "is free on cpu (RAM)" in str(record["precision_reason"])


def test_int8_weight_only_needs_no_bitsandbytes(runs: Runs) -> None:
    (record,) = json_lines(runs["t5-int8"], 1)
    assert record["precision"] == "int8" and str(record["answer"]).strip()
    assert str(record["precision_reason"]).startswith("Using int8 weight-only, as asked: it needs ")
    (record,) = json_lines(runs["no-bitsandbytes-int8"], 1)
    assert record["precision"] == "int8" and str(record["answer"]).strip()


def test_auto_steps_down_when_float32_does_not_fit_and_says_why(runs: Runs) -> None:
    (record,) = json_lines(runs["auto"], 1)
    assert record["precision"] == "bfloat16"
    assert str(record["precision_reason"]).startswith("Using bfloat16: float32 needs 0.")
    assert "but only 0." in str(record["precision_reason"])


def test_explicit_choice_that_cannot_fit_says_needed_free_and_what_fits(runs: Runs) -> None:
    line = error_line(runs["too-big"])
    assert "The model needs 1.0 GB in float32 but only 0.9 GB is free on cpu (RAM; capped by " \
           "BLIP2_CHAT_MAX_MEMORY)." in line
    assert "--quantize 8bit would fit (it needs 0.8 GB)" in line


def test_missing_bitsandbytes_is_one_clear_line(runs: Runs) -> None:
    line = error_line(runs["no-bitsandbytes"])
    assert "--quantize 8bit needs the bitsandbytes package, which is not installed" in line
    assert "pip install" in line and "--quantize none" in line


def test_config_file_sets_defaults_and_flags_override_it(runs: Runs, checkpoints: dict[str, Path]) -> None:
    (record,) = json_lines(runs["config"], 1)
    assert record["model"] == str(checkpoints["opt"])
    assert record["precision"] == "4bit"
    assert record["tokens"]["new"] <= 3  # type: ignore[index]
    (overridden,) = json_lines(runs["config-overridden"], 1)
    assert overridden["model"] == str(checkpoints["opt"])  # from the file still
    assert overridden["precision"] == "float32"  # --quantize none beats the file's 4bit
    assert overridden["tokens"]["new"] <= 4  # type: ignore[index]


def test_malformed_config_file_is_one_error_naming_file_and_line(runs: Runs, tmp_path_factory) -> None:
    line = error_line(runs["config-broken"])
    assert "config.toml is not valid TOML" in line and "line 2" in line


# --- blip2-chat models ---------------------------------------------------------------------------


def test_models_table(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    repo = put_in_hub_cache(checkpoints["opt"], HF_HUB_ID, Path(os.environ["HF_HUB_CACHE"]))  # for the subprocess
    try:
        result = blip2_chat("models", "--device", "cpu", home=tmp_path, limit="1GB",
                            python=("-X", "importtime", "-m", "chatbot"))
    finally:
        shutil.rmtree(repo)
    assert result.returncode == 0, result.stderr
    assert not imported_modules(result.stderr) & {"torch", "transformers"}  # so it answers at once
    lines = result.stdout.splitlines()
    assert lines[0].split()[:7] == ["model", "params", "float32", "bf16/fp16", "8-bit", "4-bit", "cached"]
    assert lines[0].endswith("fits here (cpu, 1.0 GB free, capped by BLIP2_CHAT_MAX_MEMORY)")
    rows = {line.split()[0]: line.split() for line in lines[1:len(KNOWN_CHECKPOINTS) + 1]}
    assert set(rows) == {known.alias for known in KNOWN_CHECKPOINTS}
    assert rows["opt-2.7b"][:4] == ["opt-2.7b", "3.74", "B", "18.2"]  # float32: 18.2 GB with the full context
    assert rows["opt-2.7b"][11] == "yes" and rows["opt-2.7b-coco"][11] == "no"  # only the one we cached
    assert all(row[-1] == "none" for row in rows.values())  # nothing fits in 1 GB
    assert "none: not even 4-bit fits in the free memory" in result.stdout  # ... and the legend says what "none" means
    assert "FlanT5 never runs in float16" in result.stdout


def test_models_json(tmp_path: Path) -> None:
    result = blip2_chat("models", "--json", "--device", "cpu", home=tmp_path, limit="1GB")
    records = json_lines(result, len(KNOWN_CHECKPOINTS))
    xl = {record["alias"]: record for record in records}["flan-t5-xl"]
    assert xl["hub_id"] == "Salesforce/blip2-flan-t5-xl" and xl["free_bytes"] == 10**9 and xl["device"] == "cpu"
    assert xl["fits"] == [] and xl["auto"] is None and xl["cached"] is False
    assert set(xl["needs_bytes"]) == {"float32", "bfloat16", "8bit", "4bit"}  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "mps", "", "CPU"])
def test_models_device_is_checked_by_the_settings_rule(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`models --device cuda:x` reached int("x") in the loader on a GPU machine: now the one --device rule."""
    from chatbot.cli import main

    assert main(["models", "--device", device]) == 2
    said = "needs a value: auto, cpu, cuda or cuda:N." if not device else \
        f"must be auto, cpu, cuda or cuda:N (got '{device}')."
    assert capsys.readouterr().err == f"blip2-chat: --device {said} e.g. cuda:0.\n"


@pytest.mark.parametrize(("target", "alias", "fits", "triton"), [
    (Target("cpu", "float32", 10 * GB), "opt-2.7b", ["bfloat16", "8bit", "4bit"], True),  # int8 is for GPUs
    (Target("cpu", "float32", 15 * GB), "opt-6.7b", ["4bit"], False),  # quantizing on a CPU holds more while loading
    (Target("cpu", "float32", 40 * GB), "flan-t5-xl", ["float32", "bfloat16", "8bit", "4bit"], False),
    (Target("cuda:0", "bfloat16", 20 * GB), "opt-6.7b", ["bfloat16", "float16", "8bit", "4bit"], False),
    (Target("cuda:0", "bfloat16", 20 * GB), "opt-6.7b", ["bfloat16", "float16", "int8", "4bit"], True),
    (Target("cuda:0", "bfloat16", 12 * GB), "opt-6.7b", ["8bit", "4bit"], False),
    (Target("cuda:0", "bfloat16", 12 * GB), "opt-6.7b", ["int8", "4bit"], True),
    (Target("cuda:0", "float16", 16 * GB), "flan-t5-xl", ["8bit", "4bit"], False),  # float32, not float16: 17.9 GB
    (Target("cuda:0", "bfloat16", 12 * GB), "flan-t5-xxl", ["4bit"], True),
])
def test_what_fits_where(target: Target, alias: str, fits: list[str], triton: bool, monkeypatch) -> None:
    """The table follows the loader's ladder: on a GPU with Triton, int8 weight-only is its 8-bit step."""
    monkeypatch.setattr("chatbot.frontends.listings.triton_installed", lambda: triton)
    known = find_checkpoint(alias)
    assert known is not None
    row = model_row(known, target)
    assert row["fits"] == fits and row["auto"] == fits[0]
