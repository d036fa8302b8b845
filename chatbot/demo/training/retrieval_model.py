"""The demo retrieval model's shape, its word-level BERT-style tokenizer and its processor (torch and transformers).

A real `Blip2ForImageTextRetrieval`, only small: the chat model's ViT over 64-pixel pictures and a
two-layer Q-Former with its text input, the two projections and the image-text matching head. The
tokenizer is word-level over the world's vocabulary with BERT's conventions, which is what the
engine's retrieval path feeds the Q-Former (`RetrievalEngine.text_embeddings` reads the first token):
lower-cased, `[CLS] words [SEP]`, `[PAD]` 0 (the Q-Former's pad id), `[UNK]` for any word the world
does not use. Saved with `save_pretrained`, it loads through `load_checkpoint(kind="retrieval")` like
the hub's `Salesforce/blip2-itm-vit-g`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatbot.demo.examples import vocabulary
from chatbot.demo.training.model import IMAGE_MEAN, IMAGE_STD, PictureArch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # ids 0..3, as in BERT's order of the ones we need
EXTRA_WORDS = ("with", "picture", "in", "on")  # words people put in a search that the prompts never use


@dataclass(frozen=True)
class SearchArch(PictureArch):
    """The demo retrieval model's dimensions: the picture side, the Q-Former's text input and the projections."""

    qformer_positions: int = 64  # [CLS] + the longest caption (4 shapes: 19 words) + [SEP], with room to spare
    image_text_dim: int = 128  # `image_text_hidden_size`: the width ITC compares in


def search_vocabulary() -> list[str]:
    """The tokenizer's words: everything the demo's captions and questions use, and a few search words."""
    return sorted({*vocabulary(), *EXTRA_WORDS})


def build_tokenizer(max_tokens: int) -> Any:
    """The word-level tokenizer: the special tokens, then the words in sorted order; `max_tokens` positions."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIAL_TOKENS, *search_vocabulary()]
    tok = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                   cls_token="[CLS]", model_max_length=max_tokens)


def build_processor(arch: SearchArch) -> Any:
    """A `Blip2Processor` with the word-level tokenizer and an image processor for `arch.image_size`.

    No `num_query_tokens`: as in the hub's retrieval checkpoints, the text carries no image placeholders.
    """
    from transformers import Blip2Processor, BlipImageProcessorPil

    images = BlipImageProcessorPil(size={"height": arch.image_size, "width": arch.image_size},
                                   image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    return Blip2Processor(image_processor=images, tokenizer=build_tokenizer(arch.qformer_positions))


def build_model(arch: SearchArch, tokenizer: Any) -> Any:
    """A freshly initialised `Blip2ForImageTextRetrieval` of shape `arch` for `tokenizer`, ready to train."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2QFormerConfig, Blip2VisionConfig

    from chatbot.demo.training.model import start_for_training

    vision = Blip2VisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size, patch_size=arch.patch_size,
        initializer_range=0.02,  # the default (1e-10) suits loading pretrained weights, not training: a dead ViT
    )
    qformer = Blip2QFormerConfig(
        vocab_size=len(tokenizer), hidden_size=arch.qformer_hidden, num_hidden_layers=arch.qformer_layers,
        num_attention_heads=arch.qformer_heads, intermediate_size=arch.qformer_mlp,
        encoder_hidden_size=arch.vision_hidden, cross_attention_frequency=1,
        max_position_embeddings=arch.qformer_positions, pad_token_id=tokenizer.pad_token_id,
        use_qformer_text_input=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # too little training to need dropout
    )
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         num_query_tokens=arch.num_query_tokens, image_text_hidden_size=arch.image_text_dim)
    model = Blip2ForImageTextRetrieval(config)
    start_for_training(model)  # the same attribute names as the chat model's: vision_model, query_tokens, qformer
    start_for_matching(model)
    return model


def start_for_matching(model: Any) -> None:
    """The Q-Former's self-attention weights N(0, 0.08) instead of N(0, 0.02), as `start_for_training` does
    for its cross-attention. Here the self-attention is what joins the text to the queries (ITM) and the
    words to each other (the text path of ITC); at 0.02 its attention is nearly uniform and what it mixes
    in is a few percent of the residual stream. Measured, 300 steps from scratch: caption recall@1 on the
    training gauge 56% with the default, 66% with only query and key at 0.08, 76% with all four matrices.
    """
    import re

    import torch

    with torch.no_grad():
        for name, weight in model.qformer.named_parameters():
            if re.search(r"layer\.\d+\.attention\.", name) and weight.dim() == 2:
                weight.normal_(0.0, 0.08)
