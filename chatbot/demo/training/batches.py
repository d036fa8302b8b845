"""Training batches: generated pictures as pixel values, prompts and answers as token ids with labels.

The inputs are built the way the engine builds them at answer time (chatbot/engine/model_io.py): the
query placeholders, then the tokenized prompt (which opens with `</s>`), then, for training, the answer's
words and `</s>`. Only the answer and its end token carry labels: the loss teaches answering, not
predicting the question.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chatbot.demo.examples import Example
from chatbot.demo.world import COLOURS, POSITIONS, SHAPES, SIZES, Scene, render

IGNORE = -100  # label of positions the loss skips


@dataclass
class Batch:
    """Tensors for one training step: `scene_index[i]` is the picture row that sequence i is about."""

    pixel_values: Any  # [pictures, 3, H, W]
    input_ids: Any  # [sequences, length], right-padded
    attention_mask: Any
    labels: Any  # IGNORE except on answer tokens and the end token
    scene_index: Any  # [sequences]
    cells: Any  # [pictures, 4, 3]: each grid cell's shape (0 empty, 1.. SHAPES), colour and size (IGNORE if empty)
    cell_words: Any = None  # [pictures, 4, 5]: token ids of the words that say what and where each cell is


def encode_example(tokenizer: Any, example: Example, num_query_tokens: int, image_token_id: int) -> tuple[
        list[int], list[int]]:
    """Token ids and labels of one example: placeholders, prompt, answer, end token; labels on the answer."""
    prompt = [image_token_id] * num_query_tokens + list(tokenizer(example.prompt)["input_ids"])
    answer = list(tokenizer(example.answer, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    return prompt + answer, [IGNORE] * len(prompt) + answer


def make_batch(processor: Any, scenes: Sequence[Scene], examples: Sequence[Sequence[Example]],
               num_query_tokens: int, image_token_id: int) -> Batch:
    """One batch from `scenes` and the examples about each (examples[i] are about scenes[i])."""
    import torch

    pixels = processor.image_processor([render(scene) for scene in scenes], return_tensors="pt")["pixel_values"]
    rows, targets, owners = [], [], []
    for index, about in enumerate(examples):
        for example in about:
            ids, answer_labels = encode_example(processor.tokenizer, example, num_query_tokens, image_token_id)
            rows.append(ids)
            targets.append(answer_labels)
            owners.append(index)
    width = max(len(row) for row in rows)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    labels = torch.tensor([row + [IGNORE] * (width - len(row)) for row in targets])
    words = [[processor.tokenizer.convert_tokens_to_ids(cell) + [IGNORE] * (5 - len(cell)) for cell in cell_words(s)]
             for s in scenes]
    return Batch(pixels, input_ids, mask, labels, torch.tensor(owners), torch.tensor([cell_labels(s) for s in scenes]),
                 torch.tensor(words))


def cell_words(scene: Scene) -> list[list[str]]:
    """The words that say what is in each grid cell and where: "small red circle top left", "nothing bottom
    right" (the word-grounding loss's targets)."""
    out = []
    for cell, position in enumerate(POSITIONS):
        thing = scene.at(cell)
        what = ["nothing"] if thing is None else [thing.size, thing.colour, thing.shape]
        out.append(what + position.split())
    return out


def word_grounding_loss(model: Any, picture_features: Any, cell_word_ids: Any) -> Any:
    """Query i's projected output, read through the language model's own word embeddings, should name cell
    i's words (its size, colour and shape, or "nothing", and its place): a cross-entropy for each word.

    This puts what each query carries in the language model's word space, so finding "the square" among
    the queries is matching a word the question holds, and saying its colour or place is copying a word;
    a separate classifier head taught the queries the same facts in a space the language model then had
    to learn to read (single questions stayed near 60% after 800 steps).
    """
    import torch.nn.functional as F

    embeddings = model.get_input_embeddings().weight  # [vocabulary, hidden] (OPT ties the output head to it)
    logits = picture_features[:, :4] @ embeddings.T  # [pictures, 4, vocabulary]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    known = cell_word_ids != IGNORE
    picked = log_probs.gather(-1, cell_word_ids.clamp(min=0))
    return -(picked * known).sum() / known.sum()


def cell_labels(scene: Scene) -> list[list[int]]:
    """What is in each grid cell, as class indices: the grounding loss's targets."""
    out = []
    for cell in range(4):
        thing = scene.at(cell)
        out.append([0, IGNORE, IGNORE] if thing is None else
                   [1 + SHAPES.index(thing.shape), list(COLOURS).index(thing.colour), SIZES.index(thing.size)])
    return out


GROUNDING_CLASSES = (1 + len(SHAPES), len(COLOURS), len(SIZES))  # per cell: shape or empty, colour, size


def grounding_head(lm_hidden: int) -> Any:
    """A linear read-out, shared by the first four queries, of grid cell i's shape, colour and size from
    query i's projected output.

    Used only while training (not saved, not part of the model): like BLIP-2's first stage, it makes the
    vision encoder and Q-Former carry what is in the picture before the language model learns to use it,
    instead of the language model settling on answers that ignore the picture. One query per cell (rather
    than a read-out of all queries together) gives each query's cross-attention a direct reason to look at
    its cell; the other queries are free.
    """
    import torch

    return torch.nn.Linear(lm_hidden, sum(GROUNDING_CLASSES))


def grounding_loss(head: Any, picture_features: Any, cells: Any) -> Any:
    """Cross-entropy of the head's per-cell shape, colour and size (cell i read from query i) against `cells`."""
    import torch.nn.functional as F

    logits = head(picture_features[:, :4])
    total: Any = 0.0
    start = 0
    for part, classes in enumerate(GROUNDING_CLASSES):
        chunk = logits[:, :, start:start + classes]
        total = total + F.cross_entropy(chunk.flatten(0, 1), cells[:, :, part].flatten(), ignore_index=IGNORE)
        start += classes
    return total


def picture_features(model: Any, batch: Batch) -> Any:
    """Projected query outputs [pictures, Q, D]: each picture through the vision encoder and Q-Former once."""
    return model.get_image_features(batch.pixel_values, return_dict=True).pooler_output


def answer_loss(model: Any, batch: Batch, features: Any = None, pieces: int = 2) -> tuple[Any, float]:
    """Mean cross-entropy over the answer tokens, and the share of sequences whose every answer token is
    the most likely one (teacher forcing: a gauge while training; the held-out score runs through the
    engine). `features` are the pictures' query outputs
    (computed here when None). The language model runs on `pieces` groups of similar length, so short
    sequences (captions, single questions) are not padded to the longest dialogue."""
    import torch
    import torch.nn.functional as F

    features = (picture_features(model, batch) if features is None else features)[batch.scene_index]
    lengths = batch.attention_mask.sum(dim=1)
    order = torch.argsort(lengths)
    total: Any = 0.0
    tokens, right = 0, 0
    for rows in torch.tensor_split(order, pieces):
        if len(rows) == 0:
            continue
        width = int(lengths[rows].max())
        ids, mask, labels = (t[rows, :width] for t in (batch.input_ids, batch.attention_mask, batch.labels))
        embeds = model.get_input_embeddings()(ids)
        placeholders = (ids == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(placeholders, features[rows].to(embeds.dtype))
        logits = model.language_model(inputs_embeds=embeds, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        counted = int((target != IGNORE).sum())
        losses = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="none")
        total = total + losses.sum()  # (summed here, not by cross_entropy: the shipped run summed it so)
        tokens += counted
        right += int(((logits.argmax(-1) == target) | (target == IGNORE)).all(dim=1).sum())
    return total / max(tokens, 1), right / len(order)


def chunks(items: Iterator[Scene], size: int) -> Iterator[list[Scene]]:
    """Consecutive lists of `size` scenes from an endless stream."""
    while True:
        yield [next(items) for _ in range(size)]
