"""Answer prompts about many images in one language-model `generate` call (`describe` uses it).

The batch follows the one-image path of `Blip2Engine.stream` exactly, through the same ModelIO
(model_io.py): the same image embeddings (the per-image cache is reused; images not in it are
encoded in one batched vision pass), the same processor-style input ids, the same `generate`
options, the same decoding of tokens to text. Rows of different lengths are padded with the
tokenizer's pad id and masked: on the left for OPT (a decoder continues from the end of each row),
on the right for FlanT5 (its encoder sees the whole row, its relative positions do not care where
the padding sits). With greedy decoding every row's tokens equal what the image alone would give;
the tests check it for both families.

The chat's KV cache (`Blip2Engine.prefix`) is neither read nor changed here.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import torch

from chatbot.engine.base import BatchStats, GenerationOptions
from chatbot.engine.model_io import ModelIO
from chatbot.errors import OutOfMemoryError, QuestionError
from chatbot.images import LoadedImage


@torch.inference_mode()
def answer_batch(
    model_io: ModelIO, images: Sequence[LoadedImage], prompts: Sequence[str], options: GenerationOptions,
    stats: BatchStats,
) -> list[str]:
    """Answers for each image (stripped), in order; per-image token ids and the cost land in `stats`.

    Args:
        model_io: the loaded checkpoint whose model, processor and image cache are used (the engine).
        images: the pictures; the same picture twice is encoded once.
        prompts: one prompt per image (rows of different lengths are padded).
        options: decoding options; sampling with a seed draws from one generator for the whole batch,
            so sampled answers differ from one-at-a-time ones (greedy and beam answers do not).
        stats: where the batch's cost goes (the engine's `last_batch_stats`).
    """
    if not images:
        return []
    started = time.perf_counter()
    try:
        features = image_embeddings(model_io, images, stats)
        inputs = padded_inputs(model_io, [model_io.input_ids(text) for text in prompts], features)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        output = model_io.model.language_model.generate(**inputs, **model_io.generate_kwargs(options))
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(
            f"The device ran out of memory answering {len(images)} images at once.",
            "Use a smaller --batch-size (or --max-new-tokens).",
        ) from None
    width = 1 if model_io.is_encoder_decoder else inputs["attention_mask"].shape[1]  # T5 starts with its start token
    for row in output.tolist():
        stats.token_ids.append(until_end(row[width:], model_io.end_token_ids))
    stats.new_tokens = sum(len(ids) for ids in stats.token_ids)
    stats.seconds_total = time.perf_counter() - started
    # Like the stream, which never shows a character whose UTF-8 bytes did not all arrive.
    return [model_io.decode_tokens(ids).rstrip("\ufffd").strip() for ids in stats.token_ids]


def image_embeddings(model_io: ModelIO, images: Sequence[LoadedImage], stats: BatchStats) -> torch.Tensor:
    """Projected query embeddings [B, num_query_tokens, d_lm]: cached ones reused, the rest in one vision pass."""
    found: dict[str, torch.Tensor] = {}
    for image in images:
        cached = model_io.images.get(image.sha256)
        if cached is not None:
            found[image.sha256] = cached
    missing = list({image.sha256: image for image in images if image.sha256 not in found}.values())
    if missing:
        pixels = model_io.processor.image_processor([image.image for image in missing], return_tensors="pt")
        pixels = pixels["pixel_values"].to(model_io.device, model_io.dtype)
        encoded = model_io.model.get_image_features(pixels, return_dict=True).pooler_output
        for index, image in enumerate(missing):
            one = encoded[index:index + 1].clone()  # a copy: the cache must not pin the whole batch's tensor
            model_io.images.put(image.sha256, one)
            found[image.sha256] = one
        model_io.image_encodings += len(missing)
        stats.images_encoded = len(missing)
    return torch.cat([found[image.sha256] for image in images])


def padded_inputs(model_io: ModelIO, rows: list[list[int]], features: torch.Tensor) -> dict[str, Any]:
    """Language-model inputs for rows of token ids: padded, masked, image embeddings in the placeholders."""
    pad = model_io.tokenizer.pad_token_id
    if pad is None:
        pad = model_io.model.language_model.generation_config.pad_token_id or 0
    width = max(len(row) for row in rows)
    left = not model_io.is_encoder_decoder
    ids, mask = [], []
    for row in rows:
        filler = [pad] * (width - len(row))
        ids.append(filler + row if left else row + filler)
        ones, zeros = [1] * len(row), [0] * len(filler)
        mask.append(zeros + ones if left else ones + zeros)
        if row.count(model_io.image_token_id) != model_io.num_query_tokens:
            raise QuestionError("The prompt contains the image placeholder token.", "Remove '<image>' from it.")
    input_ids = torch.tensor(ids, dtype=torch.long, device=model_io.device)
    attention_mask = torch.tensor(mask, dtype=torch.long, device=model_io.device)
    embeds = model_io.model.get_input_embeddings()(input_ids)
    slots = (input_ids == model_io.image_token_id).unsqueeze(-1).to(embeds.device)
    embeds = embeds.masked_scatter(slots, features.to(embeds.device, embeds.dtype))  # row-major: row b gets image b
    inputs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": attention_mask}
    if left:
        inputs["input_ids"] = input_ids  # as in the one-image path: generate returns prompt + new tokens
    return inputs


def until_end(tokens: list[int], end_ids: Collection[int]) -> list[int]:
    """A row's new tokens up to and including its first end token: what follows is batch padding."""
    for index, token in enumerate(tokens):
        if token in end_ids:
            return tokens[:index + 1]
    return tokens
