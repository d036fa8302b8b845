"""Which modules to leave unquantized: memory saved against error added, one module group at a time.

For 8-bit and 4-bit, loads the same synthetic checkpoint with different skip lists and compares each
with the float32 model on the same image and prompt:

- image error: relative L2 error of the projected image tokens (what the language model sees);
- logit error: relative L2 error of the language model's logits over the prompt, and how often the
  top-1 token still agrees with float32's;
- footprint: `model.get_memory_footprint()`.

Random weights have no outlier features, so the absolute errors are smaller than a trained model's
would be; what the table shows is where error enters and what each group costs in memory.

    python benchmarks/bench_unquantized_modules.py --arch medium-opt --arch medium-flan-t5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, write_result  # noqa: E402

OURS = ["language_projection", "lm_head"]
# name -> (skip list given to bitsandbytes or None for transformers' default, Q-Former kept out?)
VARIANTS: dict[str, tuple[list[str] | None, bool]] = {
    "ours (Q-Former, projection, LM head kept)": (OURS, True),
    "transformers default (projection quantized)": (None, True),
    "LM head quantized too": (["language_projection"], True),
    "Q-Former quantized too": (OURS, False),
    "vision encoder kept too": ([*OURS, "vision_model"], True),
}
PROMPT = "Question: what is in the picture? Answer: a cat sits on the table. Question: what colour is it? Answer:"


def load(checkpoint: Path, device: str, quantize: str | None, skip: list[str] | None, keep_qformer: bool) -> Any:
    import torch
    from transformers import BitsAndBytesConfig, Blip2ForConditionalGeneration

    from chatbot.engine.loader import quiet_transformers

    quiet_transformers()
    compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
    extra: dict[str, Any] = {}
    if quantize == "8bit":
        extra["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    elif quantize == "4bit":
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=skip)
    kept = Blip2ForConditionalGeneration._keep_in_fp32_modules
    if not keep_qformer:  # a study only: the product never quantizes the Q-Former
        Blip2ForConditionalGeneration._keep_in_fp32_modules = ["query_tokens"]
    try:
        return Blip2ForConditionalGeneration.from_pretrained(checkpoint, dtype=compute, device_map=device,
                                                             **extra).eval()
    finally:
        Blip2ForConditionalGeneration._keep_in_fp32_modules = kept


def outputs(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
    """(projected image tokens, language-model logits) as float32 on the CPU."""
    import torch

    with torch.inference_mode():
        pixels = inputs["pixel_values"].to(model.device, model.vision_model.embeddings.patch_embedding.weight.dtype)
        image = model.get_image_features(pixels, return_dict=True).pooler_output
        kwargs = {k: v.to(model.device) for k, v in inputs.items() if k != "pixel_values"}
        if not model.config.use_decoder_only_language_model:
            kwargs["decoder_input_ids"] = kwargs["input_ids"][:, -8:]
        logits = model(pixel_values=pixels, **kwargs).logits
    return image.float().cpu(), logits.float().cpu()


def compare(reference: tuple[Any, Any], other: tuple[Any, Any]) -> dict[str, float]:
    image_ref, logits_ref = reference
    image, logits = other
    return {
        "image_rel_error": float((image - image_ref).norm() / image_ref.norm()),
        "logit_rel_error": float((logits - logits_ref).norm() / logits_ref.norm()),
        "top1_agreement": float((logits.argmax(-1) == logits_ref.argmax(-1)).float().mean()),
    }


def run(arch: str, device: str, out: Path) -> Path:
    import gc

    import torch
    from transformers import Blip2Processor

    checkpoint = ensure_checkpoint(arch, dtype="bfloat16" if arch.startswith("blip2-") else "float32")
    processor = Blip2Processor.from_pretrained(checkpoint)
    inputs = dict(processor(images=make_picture(seed=3).image, text=PROMPT, return_tensors="pt"))
    model = load(checkpoint, device, None, None, True)
    reference, reference_bytes = outputs(model, inputs), model.get_memory_footprint()
    del model
    rows = []
    for quantize in ("8bit", "4bit"):
        for name, (skip, keep_qformer) in VARIANTS.items():
            model = None
            try:
                model = load(checkpoint, device, quantize, skip, keep_qformer)
                row = {"quantize": quantize, "variant": name, "footprint_bytes": model.get_memory_footprint(),
                       **compare(reference, outputs(model, inputs))}
            except Exception as error:  # noqa: BLE001 - a variant that breaks is a finding, not a crash
                row = {"quantize": quantize, "variant": name, "fails": f"{type(error).__name__}: {error}"[:200]}
            rows.append(row)
            print(f"{arch} {quantize:5} {name:45} " + (f"fails: {row['fails']}" if "fails" in row else
                  f"{row['footprint_bytes'] / 1e6:9.1f} MB  image err {row['image_rel_error']:.4f}  logit err "
                  f"{row['logit_rel_error']:.4f}  top-1 {row['top1_agreement']:.3f}"), flush=True)
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    payload = {"arch": arch, "device": device, "reference_bytes": reference_bytes, "rows": rows}
    return write_result(f"unquantized-modules-{device.split(':')[0]}-{arch}", payload, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="synthetic architecture (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from chatbot.engine.device_and_dtype import choose_device

    device = choose_device(args.device)
    for arch in args.arch or ["medium-opt", "medium-flan-t5"]:
        print(f"wrote {run(arch, device, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
