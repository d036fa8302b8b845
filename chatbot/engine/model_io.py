"""The loaded BLIP-2 checkpoint and what goes in and out of it: the ground every answering path stands on.

In: a prompt becomes processor-style token ids (the query placeholders, then the tokenized text), an
image its projected query embeddings (each distinct image encoded once, kept in cache.py's
ImageEmbeddingCache), and both together the language model's input embeddings; decoding options
become `generate`'s keyword arguments. Out: new token ids become the text a terminal may show.
The one-image turn (blip2.py), the preparation ahead of a question (think_ahead.py) and the
batch (batched.py) all tokenize, encode images, set `generate`'s options and decode tokens here, so
they agree token for token.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from chatbot.engine.base import GenerationOptions, ModelInfo
from chatbot.engine.cache import ImageEmbeddingCache
from chatbot.engine.loader import LoadedCheckpoint
from chatbot.engine.streaming import shown
from chatbot.images import LoadedImage


class ModelIO:
    """A loaded checkpoint with its processor: builds the language model's inputs and reads its outputs."""

    def __init__(self, loaded: LoadedCheckpoint, image_cache_size: int = 8) -> None:
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        config = self.model.config
        self.is_encoder_decoder = not config.use_decoder_only_language_model
        self.image_token_id = int(config.image_token_id)
        self.num_query_tokens = int(config.num_query_tokens)
        text = config.text_config
        context = getattr(text, "n_positions", 512) if self.is_encoder_decoder else text.max_position_embeddings
        self.info = ModelInfo(
            model_id=loaded.resolved.requested, family=loaded.family, device=loaded.device,
            precision=loaded.precision, context_tokens=int(context), image_tokens=self.num_query_tokens,
            is_encoder_decoder=self.is_encoder_decoder, precision_reason=loaded.precision_reason,
        )
        self.load_seconds = loaded.seconds
        self.images = ImageEmbeddingCache(image_cache_size)
        self.image_encodings = 0  # how often the vision encoder ran (tests and benchmarks read it)
        # transformers 5.2x renamed `past_key_values` to `cache` (generate and forward); use whichever it takes.
        prepare = self.model.language_model.prepare_inputs_for_generation
        self.cache_argument = "cache" if "cache" in inspect.signature(prepare).parameters else "past_key_values"
        eos = self.model.language_model.generation_config.eos_token_id
        # The tokens that end an answer: never shown, and where a batch row's answer stops.
        self.end_token_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """What pixels go in as: the patch embedding's dtype (never quantized or packed)."""
        return self.model.vision_model.embeddings.patch_embedding.weight.dtype

    # -- in ---------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def unknown_tokens(self, text: str) -> tuple[int, int]:
        """`Engine.unknown_tokens`: the unknown token's share of `text`'s own tokens (no specials; SentencePiece's
        bare word-start piece, which an unreadable word leaves before its unknown token, not counted)."""
        unknown = self.tokenizer.unk_token_id
        if unknown is None:
            return 0, 0
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bare = self.tokenizer.convert_tokens_to_ids("▁")
        pieces = [token for token in ids if token != bare or bare == unknown]
        return sum(token == unknown for token in pieces), len(pieces)

    def input_ids(self, prompt: str) -> list[int]:
        """What `Blip2Processor(images, text)` produces: query placeholders, then the tokenized prompt."""
        return [self.image_token_id] * self.num_query_tokens + list(self.tokenizer(prompt)["input_ids"])

    def pixel_values(self, image: LoadedImage) -> torch.Tensor:
        pixels = self.processor.image_processor(image.image, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    @torch.inference_mode()
    def image_embeddings(self, image: LoadedImage) -> torch.Tensor:
        """Projected query embeddings [1, num_query_tokens, d_lm], computed once per distinct image."""
        cached = self.images.get(image.sha256)
        if cached is not None:
            return cached
        features = self.model.get_image_features(self.pixel_values(image), return_dict=True).pooler_output
        self.image_encodings += 1
        self.images.put(image.sha256, features)
        return features

    def language_inputs(self, image: LoadedImage, ids: list[int]) -> dict[str, Any]:
        """The language model's inputs for one prompt: its token embeddings, the image's in the placeholders."""
        features = self.image_embeddings(image)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        mask = (input_ids == self.image_token_id).unsqueeze(-1).to(embeds.device)
        embeds = embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))
        inputs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": torch.ones_like(input_ids)}
        if not self.is_encoder_decoder:
            inputs["input_ids"] = input_ids
        return inputs

    def generate_kwargs(self, options: GenerationOptions) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": options.max_new_tokens, "num_beams": options.num_beams,
            "do_sample": options.sampling,
        }
        if options.min_new_tokens:
            kwargs["min_new_tokens"] = options.min_new_tokens
        if options.sampling:
            kwargs.update(temperature=options.temperature, top_p=options.top_p)
        if options.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = options.repetition_penalty
        if options.num_beams > 1:
            kwargs["length_penalty"] = options.length_penalty
        return kwargs

    # -- out --------------------------------------------------------------------------------

    def decode_tokens(self, token_ids: list[int]) -> str:
        """New token ids as the text a terminal may show: end tokens and specials dropped, controls removed."""
        kept = [t for t in token_ids if t not in self.end_token_ids]
        return shown(str(self.tokenizer.decode(kept, skip_special_tokens=True)))
