"""Precision policy and memory estimates: pure functions, no model loaded (except on the meta device)."""

from __future__ import annotations

import pytest

from chatbot.engine.precision import (
    MEMORY_LIMIT_ENV,
    Precision,
    candidates,
    choose_precision,
    estimate_memory,
    free_memory_bytes,
    is_capped,
    parse_size,
)
from chatbot.engine.registry import KNOWN_CHECKPOINTS, find_checkpoint
from chatbot.engine.shape import ModelShape, shape_from_config
from chatbot.errors import OptionError, OutOfMemoryError

GB = 10**9
P = Precision


def shape_of(alias: str) -> ModelShape:
    known = find_checkpoint(alias)
    assert known is not None
    return shape_from_config(known.config)


# --- shapes -------------------------------------------------------------------------------------


def test_shape_counts_match_the_model_transformers_builds() -> None:
    """Every synthetic architecture (tiny to flan-t5-xxl) counted exactly, group by group."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    from chatbot.engine.synthetic import ARCHITECTURES, _configs

    class Tokenizer:  # _configs only asks for the newline token's id
        def convert_tokens_to_ids(self, token: str) -> int:
            return 5

    for name, arch in ARCHITECTURES.items():
        config = _configs(arch, 997, Tokenizer())
        with torch.device("meta"):
            model = Blip2ForConditionalGeneration(config)
        shape = shape_from_config(config.to_dict())
        linear = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        wo = sum(v for n, v in linear.items() if n.endswith(".wo"))  # T5 keeps these out (_keep_in_fp32_modules)
        quantizable = sum(v for n, v in linear.items()
                          if n.startswith("vision_model") or (n.startswith("language_model") and "lm_head" not in n))
        head = model.language_model.lm_head.weight
        tied = head is model.language_model.get_input_embeddings().weight
        assert shape.params == sum(p.numel() for p in model.parameters()), name
        assert shape.quantizable == quantizable - wo, name
        assert shape.kept == linear["language_projection"] + wo + (0 if tied else head.numel()), name
        assert shape.qformer == sum(p.numel() for p in model.qformer.parameters()) + model.query_tokens.numel()


def test_hub_checkpoints_have_their_model_card_sizes() -> None:
    for known in KNOWN_CHECKPOINTS:
        shape = shape_from_config(known.config)
        counted = shape.params / 1e9
        if known.family == "flan-t5":  # transformers 5 keeps untied T5's encoder/decoder embedding copies
            text = known.config["text_config"]
            counted -= 2 * text["vocab_size"] * text["d_model"] / 1e9
        assert counted == pytest.approx(known.params_billions, rel=0.005), known.alias
        assert shape.quantizable / shape.params > 0.78  # what 8-bit and 4-bit shrink is most of the model


# --- estimates ----------------------------------------------------------------------------------


def test_estimates_shrink_with_precision_for_every_known_checkpoint() -> None:
    for known in KNOWN_CHECKPOINTS:
        shape = shape_from_config(known.config)
        ladder = [P("none", "float32"), P("none", "bfloat16"), P("8bit", "bfloat16"), P("4bit", "bfloat16")]
        weights = [estimate_memory(shape, p, on_gpu=True).weights for p in ladder]
        totals = [estimate_memory(shape, p, on_gpu=True).total for p in ladder]
        assert weights == sorted(weights, reverse=True) and totals == sorted(totals, reverse=True)
        # on a CPU, quantizing on load holds float32 copies for a while (measured: docs/benchmarks.md)
        cpu = estimate_memory(shape, P("8bit", "bfloat16"), on_gpu=False)
        assert cpu.loading == int(0.30 * shape.quantizable * 4) and cpu.total > totals[2]
        assert weights[0] == 2 * weights[1]  # float32 is exactly twice bfloat16
        # float16 keeps the Q-Former in float32 (transformers' _keep_in_fp32_modules): 2 bytes more per parameter
        float16 = estimate_memory(shape, P("none", "float16")).weights
        assert float16 - weights[1] == 2 * shape.qformer


def test_estimate_parts_for_opt_2_7b() -> None:
    shape = shape_of("opt-2.7b")
    bf16 = estimate_memory(shape, P("none", "bfloat16"))
    assert bf16.kv_cache == 2 * 32 * 2560 * 2048 * 2  # K and V, 32 layers, width 2560, 2048 positions, 2 bytes
    assert 7.4 * GB < bf16.weights < 7.6 * GB  # 3.74 B parameters at 2 bytes
    int8 = estimate_memory(shape, P("8bit", "bfloat16"))
    # 3.50 B quantized weights at 1 byte, 0.24 B (Q-Former, embeddings, projection, norms) at 2 bytes
    assert int8.weights == shape.quantizable + 2 * (shape.params - shape.quantizable)
    nf4 = estimate_memory(shape, P("4bit", "bfloat16")).weights
    assert nf4 == int(shape.quantizable * (0.5 + (1 + 4 / 256) / 64)) + 2 * (shape.params - shape.quantizable)


# --- the ladder ---------------------------------------------------------------------------------


def labels(precisions: list[Precision]) -> list[str]:
    return [f"{p.quantize}/{p.dtype}" for p in precisions]


def test_fallback_order() -> None:
    cpu = candidates("opt", quantize="auto", dtype="auto", auto_dtype="float32", on_gpu=False)
    assert labels(cpu) == ["none/float32", "none/bfloat16", "8bit/float32", "4bit/float32"]
    gpu = candidates("opt", quantize="auto", dtype="auto", auto_dtype="bfloat16", on_gpu=True)
    assert labels(gpu) == ["none/bfloat16", "8bit/bfloat16", "4bit/bfloat16"]
    old_gpu = candidates("opt", quantize="auto", dtype="auto", auto_dtype="float16", on_gpu=True)
    assert labels(old_gpu) == ["none/float16", "8bit/float16", "4bit/float16"]
    asked = candidates("opt", quantize="auto", dtype="float32", auto_dtype="bfloat16", on_gpu=True)
    assert labels(asked) == ["none/float32", "8bit/float32", "4bit/float32"]  # the asked dtype is kept throughout
    assert labels(candidates("opt", quantize="4bit", dtype="auto", auto_dtype="bfloat16", on_gpu=True)) == [
        "4bit/bfloat16"]


def test_a_gpu_with_the_int8_kernel_takes_int8_weight_only_for_its_8bit_step() -> None:
    gpu = candidates("opt", quantize="auto", dtype="auto", auto_dtype="bfloat16", on_gpu=True, int8_kernel=True)
    assert labels(gpu) == ["none/bfloat16", "int8/bfloat16", "4bit/bfloat16"]
    cpu = candidates("opt", quantize="auto", dtype="auto", auto_dtype="float32", on_gpu=False, int8_kernel=True)
    assert labels(cpu) == ["none/float32", "none/bfloat16", "8bit/float32", "4bit/float32"]  # the kernel is GPU-only
    assert labels(candidates("opt", quantize="8bit", dtype="auto", auto_dtype="bfloat16", on_gpu=True,
                             int8_kernel=True)) == ["8bit/bfloat16"]  # bitsandbytes stays for whoever asks
    shape = shape_of("opt-6.7b")
    tight = choose_precision(shape, device="cuda:0", free_bytes=12 * GB, auto_dtype="bfloat16", int8_kernel=True)
    assert tight.precision == P("int8", "bfloat16")
    assert tight.reason == ("Using int8 weight-only: bfloat16 needs 18.2 GB but only 12.0 GB is free on cuda:0; int8 "
                            "weight-only needs 10.4 GB. It decodes faster than bitsandbytes 8-bit in the same memory.")
    assert estimate_memory(shape, P("int8", "bfloat16")) == estimate_memory(shape, P("8bit", "bfloat16"))


@pytest.mark.parametrize("quantize", ["auto", "none", "int8", "8bit", "4bit"])
@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
@pytest.mark.parametrize("on_gpu", [False, True])
def test_flan_t5_never_float16(quantize: str, dtype: str, on_gpu: bool) -> None:
    # a GPU without bfloat16 gives FlanT5 float32 for --dtype auto (chatbot.engine.device_and_dtype.choose_dtype)
    auto_dtype = ("bfloat16" if on_gpu else "float32") if dtype != "float16" else "float32"
    tried = candidates("flan-t5", quantize=quantize, dtype=dtype, auto_dtype=auto_dtype, on_gpu=on_gpu)
    assert tried and all(p.dtype != "float16" for p in tried)
    with pytest.raises(OptionError, match="float16"):
        candidates("flan-t5", quantize=quantize, dtype="float16", auto_dtype=auto_dtype, on_gpu=on_gpu)


def test_unknown_quantize_value() -> None:
    with pytest.raises(OptionError, match="--quantize"):
        candidates("opt", quantize="3bit", dtype="auto", auto_dtype="float32", on_gpu=False)


# --- choices and their sentences ----------------------------------------------------------------


def need(alias: str, precision: Precision) -> int:
    return estimate_memory(shape_of(alias), precision).total


def test_auto_takes_the_best_that_fits_and_says_why() -> None:
    shape = shape_of("opt-6.7b")
    roomy = choose_precision(shape, device="cuda:0", free_bytes=70 * GB, auto_dtype="bfloat16")
    assert roomy.precision == P("none", "bfloat16")
    assert roomy.reason == f"Using bfloat16: it needs {need('opt-6.7b', roomy.precision) / GB:.1f} GB and 70.0 GB " \
                           "is free on cuda:0."
    tight = choose_precision(shape, device="cuda:0", free_bytes=12 * GB, auto_dtype="bfloat16")
    assert tight.precision == P("8bit", "bfloat16")
    assert tight.reason.startswith("Using 8-bit: bfloat16 needs 18.2 GB but only 12.0 GB is free on cuda:0; 8-bit "
                                   "needs 10.4 GB")
    tighter = choose_precision(shape, device="cuda:0", free_bytes=8 * GB, auto_dtype="bfloat16")
    assert tighter.precision == P("4bit", "bfloat16")


def test_auto_on_cpu_tries_bfloat16_before_quantizing() -> None:
    shape = shape_of("flan-t5-xl")
    choice = choose_precision(shape, device="cpu", free_bytes=12 * GB, auto_dtype="float32")
    assert choice.precision == P("none", "bfloat16")
    assert "float32 needs 17.9 GB but only 12.0 GB is free on cpu (RAM)" in choice.reason


def test_explicit_choice_that_cannot_fit_names_needed_free_and_what_fits() -> None:
    shape = shape_of("opt-6.7b")
    with pytest.raises(OutOfMemoryError) as error:
        choose_precision(shape, device="cuda:0", free_bytes=12 * GB, quantize="none", auto_dtype="bfloat16")
    text = str(error.value)
    assert "needs 18.2 GB in bfloat16 but only 12.0 GB is free on cuda:0" in text
    assert "--quantize 8bit would fit (it needs 10.4 GB)" in text
    fits = choose_precision(shape, device="cuda:0", free_bytes=12 * GB, quantize="8bit", auto_dtype="bfloat16")
    assert fits.reason.startswith("Using 8-bit, as asked: it needs 10.4 GB")


def test_nothing_fits() -> None:
    with pytest.raises(OutOfMemoryError, match="even 4-bit needs .* and only 2.0 GB is free on cuda:0") as error:
        choose_precision(shape_of("flan-t5-xxl"), device="cuda:0", free_bytes=2 * GB, auto_dtype="bfloat16")
    assert "--device cpu" in str(error.value)
    with pytest.raises(OutOfMemoryError, match="smaller model"):
        choose_precision(shape_of("opt-2.7b"), device="cpu", free_bytes=GB // 2, quantize="4bit")


# --- free memory --------------------------------------------------------------------------------


def test_sizes_and_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_size("6GB") == 6 * GB and parse_size("512 MiB") == 512 * 2**20 and parse_size("1000") == 1000
    assert parse_size("1.5gb") == 1_500_000_000
    with pytest.raises(OptionError, match=MEMORY_LIMIT_ENV):
        parse_size("lots")
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    free = free_memory_bytes("cpu")
    assert free > 0 and not is_capped(free)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1MB")
    assert free_memory_bytes("cpu") == 10**6 and is_capped(10**6)
    choice = choose_precision(shape_of("opt-2.7b"), device="cpu", free_bytes=20 * GB, capped=True)
    assert choice.reason.endswith("20.0 GB is free on cpu (RAM; capped by BLIP2_CHAT_MAX_MEMORY).")


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-6GB", "0", "0.5", "1e300GB", "-inf MB"])
def test_a_memory_limit_that_memory_cannot_be_is_one_sentence_naming_the_variable(monkeypatch, value: str) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, value)
    with pytest.raises(OptionError) as error:
        free_memory_bytes("cpu")
    assert str(error.value) == (f"{MEMORY_LIMIT_ENV}={value!r} is not a usable size: it must be finite and above "
                                f"zero. Write it like 6GB or 512MB, or unset {MEMORY_LIMIT_ENV} to plan with what is "
                                "free.")


def test_sizes_said_together_show_the_digits_that_tell_them_apart() -> None:
    from chatbot.engine.precision import gigabytes

    assert gigabytes(275_412_000, 275_000_000) == "0.2754 GB" and gigabytes(275_000_000, 275_412_000) == "0.2750 GB"
    assert gigabytes(18_200_000_000, 6 * GB) == "18.2 GB" and gigabytes(GB, GB) == "1.0 GB"
    assert gigabytes(275_000_001, 275_000_000) == "0.275000001 GB"  # to the byte, as a last resort
    # weights 4 bytes, slack 256 MiB: 268,435,460 bytes needed, 268,000,000 free (was "0.3 GB but only 0.3 GB")
    shape = ModelShape("opt", quantizable=0, kept=0, qformer=0, other=1, kv_values_per_token=0, context_tokens=0,
                       attention_heads=1, ffn=1)
    with pytest.raises(OutOfMemoryError) as error:
        choose_precision(shape, device="cpu", free_bytes=268_000_000, quantize="none", capped=True)
    assert str(error.value) == ("The model needs 0.2684 GB in float32 but only 0.2680 GB is free on cpu (RAM; capped "
                                "by BLIP2_CHAT_MAX_MEMORY). Close other programs, or pick a smaller model (see "
                                "`blip2-chat models`).")
    choice = choose_precision(shape, device="cpu", free_bytes=268_500_000)
    assert choice.reason == "Using float32: it needs 0.268 GB and 0.269 GB is free on cpu (RAM)."
