"""8-bit and 4-bit loading through bitsandbytes, and which modules stay unquantized (also for int8).

Quantized: every Linear layer of the ViT-g vision encoder and of the language model's body: 93% of
OPT-2.7B's parameters (3.50 of 3.74 B), 96% of OPT-6.7B's, 79% of FlanT5's (transformers keeps T5's FFN
output layers `wo` out, by `_keep_in_fp32_modules`). Left in the compute dtype, for the reasons
measured in docs/benchmarks.md ("Which modules stay unquantized"):

- the Q-Former and its query tokens (105 M parameters, 3% of OPT-2.7B): transformers already keeps
  them out (`Blip2ForConditionalGeneration._keep_in_fp32_modules`); quantizing them multiplied the
  image tokens' error by 2.3-3.4 to save 0.1 GB;
- the language projection (2-3 M parameters, under 0.1%): quantizing it saves at most 3 MB but
  multiplied the image tokens' error by 5 (all 32 pass through it); our engine also reads the
  model's compute dtype from its weight;
- the LM head: OPT ties it to the input embeddings, and quantizing it fails to load in bitsandbytes;
  FlanT5's is untied (66 M, 1.5% of the 8-bit model), and its rounding lands straight on the choice
  of the next token. transformers skips it by default; naming our own skip list replaces that
  default, so we list it.

The vision encoder stays quantized: keeping it (+1 GB in 8-bit) left the logits' error where it was.
"""

from __future__ import annotations

from typing import Any

from chatbot.engine.precision import Precision
from chatbot.errors import QuantizationUnavailableError

# Names matched as module-name suffixes by transformers; qformer and query_tokens are added by
# transformers itself from `_keep_in_fp32_modules`.
UNQUANTIZED_MODULES = ["language_projection", "lm_head"]
# The same choice for int8 weight-only (chatbot/engine/int8_weights.py), which quantizes only the vision
# encoder and the language model, by layer name: their LM head, and FlanT5's FFN output layers, which
# transformers keeps out of bitsandbytes (so the memory estimates, which count them unquantized, hold).
INT8_KEPT = {"lm_head", "wo"}
INSTALL_HINT = "Install it with `pip install 'bitsandbytes>=0.45'`, or load without it: --quantize none."


def check_bitsandbytes(precision: Precision, device: str) -> None:
    """Fail with one clear sentence when bitsandbytes is missing or cannot run on `device`."""
    try:
        import bitsandbytes
    except ImportError:
        raise QuantizationUnavailableError(
            f"--quantize {precision.quantize} needs the bitsandbytes package, which is not installed.", INSTALL_HINT
        ) from None
    except Exception as error:  # noqa: BLE001 - a broken native library fails in its own ways
        raise QuantizationUnavailableError(
            f"--quantize {precision.quantize} needs bitsandbytes, which failed to load ({_first_line(error)}).",
            INSTALL_HINT,
        ) from None
    kind = device.split(":")[0]
    supported = getattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    if kind not in supported:
        version = getattr(bitsandbytes, "__version__", "?")
        raise QuantizationUnavailableError(
            f"bitsandbytes {version} cannot run {precision.words} on {device}.",
            "Use --quantize none (with --dtype bfloat16 to halve the memory), or a CUDA GPU.",
        )


def bitsandbytes_config(precision: Precision, compute_dtype: Any, device: str) -> Any:
    """The `BitsAndBytesConfig` for 8-bit or 4-bit NF4 (double quantization), after checking bitsandbytes.

    `compute_dtype` is the torch dtype the unquantized modules hold and 4-bit matmuls run in:
    the one `--dtype auto` picks for the device (float32 on CPU, bfloat16 on GPUs that have it).
    """
    check_bitsandbytes(precision, device)
    from transformers import BitsAndBytesConfig

    if precision.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(UNQUANTIZED_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(UNQUANTIZED_MODULES),
    )


def is_bitsandbytes_failure(error: BaseException) -> bool:
    """True when a loading error comes from bitsandbytes or its native library, not the checkpoint."""
    text = f"{type(error).__module__} {error}".lower()
    return "bitsandbytes" in text or "bnb" in text.split()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__).rstrip(".")[:160]
