"""FlanT5 refuses float16; the refusal names where the float16 came from (the --dtype flag or the config file's
dtype) and the way forward from there. A checkpoint saved in float16 is no origin: `auto` never picks it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from chatbot.core.settings import settings_from
from chatbot.engine.device_and_dtype import choose_dtype
from chatbot.engine.loader import load_checkpoint
from chatbot.engine.precision import candidates
from chatbot.errors import OptionError

OVERFLOWS = "FlanT5 overflows in float16 and answers with garbage"
FROM_FLAG = (f"{OVERFLOWS}, and --dtype asks for float16.", "Use --dtype bfloat16 or float32.")
FROM_CONFIG = (f"{OVERFLOWS}, and the config file's dtype is float16.",
               "Change the config file's dtype to bfloat16, float32 or auto, or give --dtype bfloat16 for this run.")


@pytest.mark.parametrize(("flags", "file", "expected"), [
    ({"dtype": "float16"}, {}, FROM_FLAG),
    ({"dtype": "float16"}, {"dtype": "bfloat16"}, FROM_FLAG),  # the flag wins over the file, and is named
    ({}, {"dtype": "float16"}, FROM_CONFIG),
], ids=["flag", "flag-over-config", "config"])
def test_the_refusal_names_where_float16_came_from(checkpoints: dict[str, Path], flags: dict[str, str],
                                                   file: dict[str, str], expected: tuple[str, str]) -> None:
    settings = settings_from(flags, file, environ={})
    assert settings.dtype == "float16"
    with pytest.raises(OptionError) as refused:
        load_checkpoint(str(checkpoints["flan-t5"]), device="cpu", dtype=settings.dtype,
                        dtype_from=settings.source_of("dtype"))
    assert (refused.value.message, refused.value.hint) == expected
    # The check /model makes before letting the loaded model go says the same (the family known at once).
    with pytest.raises(OptionError) as switch:
        candidates("flan-t5", quantize=settings.quantize, dtype=settings.dtype, auto_dtype="float32", on_gpu=False,
                   dtype_from=settings.source_of("dtype"))
    assert (switch.value.message, switch.value.hint) == expected


def test_without_a_named_origin_the_refusal_is_the_one_that_always_works() -> None:
    with pytest.raises(OptionError) as refused:
        choose_dtype("float16", "cpu", "flan-t5")
    assert (refused.value.message, refused.value.hint) == (f"{OVERFLOWS}.", "Use --dtype bfloat16 or float32.")


def test_a_flan_t5_checkpoint_saved_in_float16_loads_in_float32_on_cpu(checkpoints: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    """Its own dtype is not asked for: --dtype auto means float32 on a CPU, and never float16 for FlanT5."""
    folder = tmp_path / "t5-saved-in-float16"
    shutil.copytree(checkpoints["flan-t5"], folder)
    config = json.loads((folder / "config.json").read_text())
    for part in (config, *(config[key] for key in ("text_config", "vision_config", "qformer_config") if key in config)):
        part["dtype"] = "float16"
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(str(folder), device="cpu", dtype="auto", dtype_from="the config file's dtype")
    assert loaded.precision == "float32"
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_auto_on_a_gpu_without_bfloat16_never_means_float16_for_flan_t5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert choose_dtype("auto", "cuda:0", "flan-t5") is torch.float32
    assert choose_dtype("auto", "cuda:0", "opt") is torch.float16
