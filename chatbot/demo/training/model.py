"""The demo chat model's shape, its word-level tokenizer and its processor (torch and transformers).

A real `Blip2ForConditionalGeneration` of the OPT family, only small: a ViT over 64-pixel pictures, a
two-layer Q-Former, a small OPT. The tokenizer is word-level over the world's vocabulary (lower-cased,
split like tokenizers' `Whitespace`), with OPT's conventions: `</s>` (id 2) opens every prompt and ends
every answer. Saved with `save_pretrained`, it loads through `chatbot.engine.loader.load_checkpoint` like
any checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from chatbot.demo.examples import vocabulary
from chatbot.demo.world import IMAGE_SIZE

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # OPT's ids 0..3
IMAGE_TOKEN = "<image>"
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]  # BLIP-2's (CLIP's) normalisation
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class PictureArch:
    """The picture side both demo models share (a ViT over 64-pixel pictures, a Q-Former); field names
    follow the HF configs."""

    image_size: int = IMAGE_SIZE
    patch_size: int = 16  # 16 patches: 2x2 for each grid cell
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 512
    qformer_hidden: int = 128
    qformer_layers: int = 2
    qformer_heads: int = 4
    qformer_mlp: int = 512
    num_query_tokens: int = 8  # the first four read one grid cell each (the grounding loss), four are free

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class DemoArch(PictureArch):
    """The demo chat model's dimensions: the picture side and a small OPT."""

    lm_hidden: int = 128
    lm_layers: int = 3
    lm_heads: int = 4
    lm_ffn: int = 512
    max_positions: int = 128  # image tokens + a 4-turn dialogue + answer, with room to spare


def build_tokenizer() -> Any:
    """The word-level tokenizer: the special tokens, then the world's words in sorted order, then `<image>`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIAL_TOKENS, *vocabulary()]
    tok = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return fast


def build_processor(arch: DemoArch) -> Any:
    """A `Blip2Processor` with the word-level tokenizer and an image processor for `arch.image_size`."""
    from transformers import Blip2Processor, BlipImageProcessorPil

    images = BlipImageProcessorPil(size={"height": arch.image_size, "width": arch.image_size},
                                   image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    return Blip2Processor(image_processor=images, tokenizer=build_tokenizer(), num_query_tokens=arch.num_query_tokens)


def build_model(arch: DemoArch, tokenizer: Any) -> Any:
    """A freshly initialised `Blip2ForConditionalGeneration` (OPT) of shape `arch` for `tokenizer`."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = Blip2VisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size, patch_size=arch.patch_size,
        initializer_range=0.02,  # the default (1e-10) suits loading pretrained weights, not training: a dead ViT
    )
    qformer = Blip2QFormerConfig(
        hidden_size=arch.qformer_hidden, num_hidden_layers=arch.qformer_layers,
        num_attention_heads=arch.qformer_heads, intermediate_size=arch.qformer_mlp,
        encoder_hidden_size=arch.vision_hidden, cross_attention_frequency=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # too little training to need dropout
    )
    text = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=arch.lm_hidden, num_hidden_layers=arch.lm_layers,
        num_attention_heads=arch.lm_heads, ffn_dim=arch.lm_ffn, word_embed_proj_dim=arch.lm_hidden,
        max_position_embeddings=arch.max_positions, bos_token_id=2, eos_token_id=2, pad_token_id=1,
        dropout=0.0, attention_dropout=0.0,
    )
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=arch.num_query_tokens, image_token_index=image_token_id)
    model = Blip2ForConditionalGeneration(config)
    start_for_training(model)
    return model


def start_for_training(model: Any) -> None:
    """Initial values that let a model this small learn from scratch in minutes (transformers' defaults suit
    loading pretrained weights). Measured on the grounding read-out alone (`training/batches.py`), 300 steps:
    with the defaults the Q-Former's outputs hardly depend on the picture (their spread across pictures is
    1% of their size) and shape, colour and size per cell stay near the commonest class (46%, 58%, 75%);
    with these, 82%, 99.7%, 99%.

    - The ViT's position embeddings N(0, 1) instead of N(0, 0.02): the queries find a grid cell by its
      position, and at 0.02 the position is lost beside the patch's content.
    - The query tokens N(0, 1) (transformers zeroes them; they are always loaded).
    - The Q-Former's cross-attention weights N(0, 0.08) instead of N(0, 0.02): at 0.02 what a query reads
      from the picture is a few percent of its residual stream.
    """
    import torch

    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.normal_(0.0, 1.0)
        model.query_tokens.normal_(0.0, 1.0)
        for name, weight in model.qformer.named_parameters():
            if "crossattention" in name and weight.dim() == 2:
                weight.normal_(0.0, 0.08)
