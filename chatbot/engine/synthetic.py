"""Random-weight BLIP-2 checkpoints built locally, for tests and benchmarks.

No weights can be downloaded where the tests run, so we build checkpoints of both chat
families, and retrieval checkpoints (`Blip2ForImageTextRetrieval`, for search), with random
weights and a tokenizer trained here with `tokenizers`, and save them with `save_pretrained`:
the loader then treats them exactly like a downloaded checkpoint. Tiny architectures make tests
fast; the real dimensions of the hub checkpoints make benchmarks honest about compute and memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chatbot.engine.synthetic_tokenizers import train_bert_tokenizer, train_opt_tokenizer, train_t5_tokenizer

_train_opt_tokenizer = train_opt_tokenizer  # the name benchmarks/diag_decode_overhead.py imports


@dataclass(frozen=True)
class SyntheticArch:
    """The shape of a synthetic BLIP-2 checkpoint; field names follow the HF configs."""

    family: str  # "opt", "flan-t5", or "retrieval" (no language model: the lm_* fields are unused)
    vocab_size: int = 1000  # tokenizer vocabulary trained here (the model adds the image token)
    model_vocab_size: int = 0  # rows in the LM embedding; 0 = tokenizer size + image token
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 128
    qformer_hidden: int = 64
    qformer_layers: int = 2
    qformer_heads: int = 4
    qformer_mlp: int = 128
    num_query_tokens: int = 8
    lm_hidden: int = 64
    lm_layers: int = 2  # OPT decoder layers; T5 encoder and decoder layers each
    lm_heads: int = 4
    lm_ffn: int = 128
    max_positions: int = 2048  # OPT positions (T5 uses relative positions)
    t5_positions: int = 512  # FlanT5's input length (`n_positions`): the context the engine plans prompts for
    init_std: float = 0.3  # wide random weights make tiny models' answers vary with image and prompt
    qformer_positions: int = 512  # retrieval: the Q-Former text encoder's positions (BERT's 512)
    image_text_dim: int = 256  # retrieval: the width both projections map to (`image_text_hidden_size`)


ARCHITECTURES: dict[str, SyntheticArch] = {
    # Tiny: fast tests. Widths of 64 so bitsandbytes 4-bit can quantize every layer.
    "tiny-opt": SyntheticArch(family="opt"),
    "tiny-flan-t5": SyntheticArch(family="flan-t5"),
    # Medium: quick benchmarks on a laptop-class CPU.
    "medium-opt": SyntheticArch(
        family="opt", vocab_size=8000, image_size=224, patch_size=14, vision_hidden=384, vision_layers=6,
        vision_heads=6, vision_mlp=1536, qformer_hidden=384, qformer_layers=4, qformer_heads=6, qformer_mlp=1536,
        num_query_tokens=32, lm_hidden=768, lm_layers=8, lm_heads=12, lm_ffn=3072, init_std=0.02,
    ),
    "medium-flan-t5": SyntheticArch(
        family="flan-t5", vocab_size=8000, image_size=224, patch_size=14, vision_hidden=384, vision_layers=6,
        vision_heads=6, vision_mlp=1536, qformer_hidden=384, qformer_layers=4, qformer_heads=6, qformer_mlp=1536,
        num_query_tokens=32, lm_hidden=768, lm_layers=6, lm_heads=12, lm_ffn=2048, init_std=0.02,
    ),
}

# The real hub checkpoints' dimensions (ViT-g/14, 12-layer Q-Former, 32 queries).
_REAL_VISION = dict(
    init_std=0.02,  # the HF default: realistic activations for speed and memory figures
    image_size=224, patch_size=14, vision_hidden=1408, vision_layers=39, vision_heads=16, vision_mlp=6144,
    qformer_hidden=768, qformer_layers=12, qformer_heads=12, qformer_mlp=3072, num_query_tokens=32,
)
ARCHITECTURES.update({
    "blip2-opt-2.7b": SyntheticArch(family="opt", vocab_size=50265, model_vocab_size=50304, lm_hidden=2560,
                                    lm_layers=32, lm_heads=32, lm_ffn=10240, **_REAL_VISION),  # type: ignore[arg-type]
    "blip2-opt-6.7b": SyntheticArch(family="opt", vocab_size=50265, model_vocab_size=50304, lm_hidden=4096,
                                    lm_layers=32, lm_heads=32, lm_ffn=16384, **_REAL_VISION),  # type: ignore[arg-type]
    "blip2-flan-t5-xl": SyntheticArch(family="flan-t5", vocab_size=32100, model_vocab_size=32128, lm_hidden=2048,
                                      lm_layers=24, lm_heads=32, lm_ffn=5120, **_REAL_VISION),  # type: ignore[arg-type]
    "blip2-flan-t5-xxl": SyntheticArch(family="flan-t5", vocab_size=32100, model_vocab_size=32128, lm_hidden=4096,
                                       lm_layers=24, lm_heads=64, lm_ffn=10240, **_REAL_VISION),  # type: ignore[arg-type]
})


# Retrieval checkpoints, kept apart from ARCHITECTURES (whose users build chat models from them).
RETRIEVAL_ARCHITECTURES: dict[str, SyntheticArch] = {
    # 8 queries and 64 text positions (not 32 and 512): tests see that nothing assumes the real numbers.
    "tiny-itm": SyntheticArch(family="retrieval", qformer_positions=64, init_std=0.1),
    "medium-itm": SyntheticArch(
        family="retrieval", vocab_size=8000, image_size=224, patch_size=14, vision_hidden=384, vision_layers=6,
        vision_heads=6, vision_mlp=1536, qformer_hidden=384, qformer_layers=4, qformer_heads=6, qformer_mlp=1536,
        num_query_tokens=32, init_std=0.02,
    ),
    "blip2-itm-vit-g": SyntheticArch(family="retrieval", vocab_size=30522, **_REAL_VISION),  # type: ignore[arg-type]
    "blip2-itm-vit-g-coco": SyntheticArch(family="retrieval", vocab_size=30522,
                                          **{**_REAL_VISION, "image_size": 364}),  # type: ignore[arg-type]
}


def _retrieval_config(arch: SyntheticArch, vocab: int) -> Any:
    """The config of the hub's itm checkpoints: a Q-Former with its text input, no language model."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size, patch_size=arch.patch_size,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=vocab, hidden_size=arch.qformer_hidden, num_hidden_layers=arch.qformer_layers,
        num_attention_heads=arch.qformer_heads, intermediate_size=arch.qformer_mlp,
        encoder_hidden_size=arch.vision_hidden, max_position_embeddings=arch.qformer_positions,
        use_qformer_text_input=True,
    )
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                       num_query_tokens=arch.num_query_tokens, image_text_hidden_size=arch.image_text_dim)


def _configs(arch: SyntheticArch, image_token_id: int, tokenizer) -> Any:  # type: ignore[no-untyped-def]
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig, T5Config

    vocab = max(arch.model_vocab_size, image_token_id + 1)
    vision = Blip2VisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size, patch_size=arch.patch_size,
    )
    qformer = Blip2QFormerConfig(
        hidden_size=arch.qformer_hidden, num_hidden_layers=arch.qformer_layers,
        num_attention_heads=arch.qformer_heads, intermediate_size=arch.qformer_mlp,
        encoder_hidden_size=arch.vision_hidden,
    )
    text: Any
    if arch.family == "opt":
        newline = tokenizer.convert_tokens_to_ids("Ċ")  # OPT-BLIP-2 stops at the newline token
        text = OPTConfig(
            vocab_size=vocab, hidden_size=arch.lm_hidden, num_hidden_layers=arch.lm_layers,
            num_attention_heads=arch.lm_heads, ffn_dim=arch.lm_ffn, word_embed_proj_dim=arch.lm_hidden,
            max_position_embeddings=arch.max_positions, bos_token_id=2, eos_token_id=newline, pad_token_id=1,
        )
    else:
        text = T5Config(
            vocab_size=vocab, d_model=arch.lm_hidden, d_kv=arch.lm_hidden // arch.lm_heads, d_ff=arch.lm_ffn,
            num_layers=arch.lm_layers, num_decoder_layers=arch.lm_layers, num_heads=arch.lm_heads,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        )
        text.n_positions = arch.t5_positions  # read by the engine as the context (not a constructor argument in v5)
        text.tie_word_embeddings = False  # as in the FlanT5 checkpoints (not a constructor argument in v5)
        text.decoder_start_token_id = 0
    return Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text,
        num_query_tokens=arch.num_query_tokens, image_token_index=image_token_id,
    )


def build_checkpoint(
    arch: str | SyntheticArch, out_dir: str | Path, seed: int = 0, save_dtype: str = "float32",
    build_device: str = "cpu",
) -> Path:
    """Build a random-weight BLIP-2 checkpoint with its processor and save it to `out_dir`.

    Args:
        arch: a name from `ARCHITECTURES` or `RETRIEVAL_ARCHITECTURES`, or a `SyntheticArch`.
        out_dir: directory to write (created); it then loads like any local checkpoint.
        seed: fixes the weights, so the same call always gives the same checkpoint.
        save_dtype: "float32", or "bfloat16" to halve memory and disk for real-dimension builds.
        build_device: where the random weights are drawn ("cuda" is much faster for billions of them;
            the weights then differ from a CPU build with the same seed).
    """
    from chatbot.engine.loader import quiet_transformers

    quiet_transformers()
    import torch
    from transformers import (
        Blip2ForConditionalGeneration,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    spec = _named(arch) if isinstance(arch, str) else arch
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = BlipImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    model_class: Any
    if spec.family == "retrieval":  # as the hub conversion does: BERT's tokenizer, no image tokens in the text
        tokenizer = train_bert_tokenizer(spec.vocab_size, spec.qformer_positions)
        processor = Blip2Processor(image_processor=images, tokenizer=tokenizer)
        config, model_class = _retrieval_config(spec, len(tokenizer)), Blip2ForImageTextRetrieval
    else:
        tokenizer = (train_opt_tokenizer if spec.family == "opt" else train_t5_tokenizer)(spec.vocab_size)
        processor = Blip2Processor(image_processor=images, tokenizer=tokenizer, num_query_tokens=spec.num_query_tokens)
        image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        config, model_class = _configs(spec, image_token_id, tokenizer), Blip2ForConditionalGeneration
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, save_dtype))  # build in the saved dtype: no float32 copy in memory
    try:
        with torch.device(build_device):
            model = model_class(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() >= 2:  # matrices and embeddings; norms and biases keep their init
                weight.normal_(0.0, spec.init_std)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _named(arch: str) -> SyntheticArch:
    return ARCHITECTURES[arch] if arch in ARCHITECTURES else RETRIEVAL_ARCHITECTURES[arch]


def scaled(arch: str, **changes: int) -> SyntheticArch:
    """A named architecture with some fields changed (e.g. fewer layers for a quick benchmark)."""
    return replace(_named(arch), **changes)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """`python -m chatbot.engine.synthetic ARCH DIR`: build a checkpoint to try the tool offline."""
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight BLIP-2 checkpoint (answers are gibberish).")
    parser.add_argument("arch", choices=sorted([*ARCHITECTURES, *RETRIEVAL_ARCHITECTURES]),
                        help="architecture to build (*-itm*: a retrieval checkpoint for index and search)")
    parser.add_argument("out_dir", help="folder to write; pass it to blip2-chat --model (or index/search --model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_checkpoint(args.arch, args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
