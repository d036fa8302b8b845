"""Training batches and losses of the demo retrieval model: contrastive (ITC), matching (ITM), grounding.

The model's parts are called the way `Blip2ForImageTextRetrieval.forward` and our `RetrievalEngine` call
them (vision encoder, then the Q-Former's queries for a picture, its text path alone for a text, and
queries and text together, cross-attending the picture, for a match), so what is trained is what
search runs. Each picture brings two texts: its caption and a short query true of it (see
`chatbot/demo/search_queries.py`), and one hard negative text, the same text with one word changed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatbot.demo.search_queries import Query, caption_query, one_word_off, short_query
from chatbot.demo.training.batches import cell_labels
from chatbot.demo.world import Scene, render


@dataclass
class SearchBatch:
    """Tensors for one step. Texts 0..T-1 are the pictures' own (`owner[t]` is the picture text t was made
    from); rows T.. of `input_ids` are the one-word-off negatives, `wrong_source[w]` the own text each
    was changed from."""

    pixel_values: Any  # [B, 3, H, W]
    cells: Any  # [B, 4, 3]: each grid cell's shape (0 empty), colour and size (IGNORE when empty)
    input_ids: Any  # [T + W, L], right-padded
    attention_mask: Any
    owner: Any  # [T]
    truth: Any  # [B, T] bool: text t is true of picture b (so never a negative for it)
    wrong_source: Any  # [W]
    texts: list[str]  # the T + W texts, for logs

    @property
    def own_texts(self) -> int:
        return len(self.owner)

    def to(self, device: str) -> SearchBatch:
        for name in ("pixel_values", "cells", "input_ids", "attention_mask", "owner", "truth", "wrong_source"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def make_batch(processor: Any, scenes: Sequence[Scene], rng: random.Random, short: bool = True) -> SearchBatch:
    """One batch from `scenes`: each picture's caption, (when `short`) a short query, and their one-word-off
    negatives (a text for which none is found is simply left without one)."""
    import torch

    pixels = processor.image_processor([render(scene) for scene in scenes], return_tensors="pt")["pixel_values"]
    own: list[Query] = []
    owner: list[int] = []
    for index, scene in enumerate(scenes):
        for query in (caption_query(scene), short_query(scene, rng)) if short else (caption_query(scene),):
            own.append(query)
            owner.append(index)
    wrong: list[Query] = []
    wrong_source: list[int] = []
    for text, (query, index) in enumerate(zip(own, owner, strict=True)):
        changed = one_word_off(query, scenes[index], rng)
        if changed is not None:
            wrong.append(changed)
            wrong_source.append(text)
    texts = [query.text for query in (*own, *wrong)]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    truth = torch.tensor([[query.holds(scene) for query in own] for scene in scenes])
    return SearchBatch(pixels, torch.tensor([cell_labels(scene) for scene in scenes]), tokens["input_ids"],
                       tokens["attention_mask"], torch.tensor(owner), truth,
                       torch.tensor(wrong_source, dtype=torch.long), texts)


# --- the model's two sides, as the engine runs them ------------------------------------------------------

def vision_states(model: Any, pixel_values: Any) -> Any:
    """The vision encoder's last hidden state [B, P, H]."""
    return model.vision_model(pixel_values=pixel_values).last_hidden_state


def _ones(states: Any) -> Any:
    import torch

    return torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)


def query_states(model: Any, vision: Any) -> Any:
    """The Q-Former's query outputs [B, Q, H] (cross-attending the picture): what the grounding head reads."""
    queries = model.query_tokens.expand(vision.shape[0], -1, -1)
    return model.qformer(query_embeds=queries, encoder_hidden_states=vision,
                         encoder_attention_mask=_ones(vision)).last_hidden_state


def image_embeddings(model: Any, queries: Any) -> Any:
    """[B, Q, D], L2-normalised per query (`RetrievalEngine.image_embeddings`)."""
    from torch.nn.functional import normalize

    return normalize(model.vision_projection(queries), dim=-1)


def text_embeddings(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """[T, D], L2-normalised: the text path's first token through `text_projection` (`text_embeddings`)."""
    from torch.nn.functional import normalize

    states = model.qformer(query_embeds=model.embeddings(input_ids=input_ids), query_length=0,
                           attention_mask=attention_mask).last_hidden_state
    return normalize(model.text_projection(states[:, 0, :]), dim=-1)


def similarities(images: Any, texts: Any) -> Any:
    """ITC [B, T]: each picture's best query's cosine with each text (the forward's max over queries)."""
    import torch

    return torch.einsum("bqd,td->bqt", images, texts).max(dim=1).values


def match_logits(model: Any, vision: Any, input_ids: Any, attention_mask: Any) -> Any:
    """ITM logits [N, 2] of N (picture, text) pairs: queries and text through the Q-Former together,
    cross-attending the picture, the head averaged over the queries (`RetrievalEngine.match_probabilities`)."""
    import torch

    queries = model.query_tokens.expand(vision.shape[0], -1, -1)
    states = model.qformer(
        query_embeds=model.embeddings(input_ids=input_ids, query_embeds=queries), query_length=queries.shape[1],
        attention_mask=torch.cat([_ones(queries), attention_mask], dim=1),
        encoder_hidden_states=vision, encoder_attention_mask=_ones(vision),
    ).last_hidden_state
    return model.itm_head(states[:, : queries.shape[1], :]).mean(dim=1)


# --- losses ----------------------------------------------------------------------------------------------

def contrastive_loss(sim: Any, batch: SearchBatch, temperature: Any) -> Any:
    """Symmetric in-batch ITC: each own text against every picture it is false of, and each picture against
    every text false of it; a text true of another picture (a shared short text, an equal caption) is
    left out of the negatives, never pushed away."""
    import torch
    import torch.nn.functional as F

    logits = sim / temperature  # [B, T]
    texts = torch.arange(batch.own_texts, device=sim.device)
    others_true = batch.truth.clone()
    others_true[batch.owner, texts] = False  # each text's own picture stays in (as the positive)
    to_pictures = logits.t().masked_fill(others_true.t(), float("-inf"))  # [T, B]: text -> which picture
    to_texts = logits[batch.owner].masked_fill(batch.truth[batch.owner], float("-inf"))  # [T, T]: picture -> text
    to_texts[texts, texts] = logits[batch.owner, texts]  # ... with its own text as the positive
    return (F.cross_entropy(to_pictures, batch.owner) + F.cross_entropy(to_texts, texts)) / 2


def matching_loss(model: Any, vision: Any, sim: Any, batch: SearchBatch, temperature: Any) -> tuple[Any, float]:
    """ITM cross-entropy over four pairs per picture: the picture with one of its own texts (drawn at random)
    as a match; that text with a picture it is false of drawn at random (an easy negative, which is what gets
    a from-scratch matching head off the ground) and another drawn in proportion to ITC similarity (BLIP-2's
    hard negative); and the picture with the text's one-word-off version, or, when the text has none, with a
    text false of the picture drawn by ITC similarity. Also the share of pairs the head gets right."""
    import torch
    import torch.nn.functional as F

    pictures = len(batch.pixel_values)
    own = batch.own_texts
    everyone = torch.arange(pictures, device=sim.device)
    with torch.no_grad():
        picks = torch.zeros(pictures, own, device=sim.device)
        picks[batch.owner, torch.arange(own, device=sim.device)] = 1.0
        chosen = torch.multinomial(picks, 1).squeeze(1)  # [B]: one own text per picture
        false = ~batch.truth  # [B, T]
        usable = false[:, chosen].any(dim=0)  # chosen texts false of some picture in the batch
        easy_picture = torch.multinomial(false[:, chosen].t()[usable].float(), 1).squeeze(1)
        closeness = (torch.softmax(sim.float() / temperature, dim=0) + 1e-12) * false  # [B, T]
        hard_picture = torch.multinomial(closeness[:, chosen].t()[usable], 1).squeeze(1)
        one_word = torch.full((pictures,), -1, dtype=torch.long, device=sim.device)
        sources = batch.wrong_source
        for row in range(len(sources)):  # the one-word-off version of each chosen text, where there is one
            if chosen[batch.owner[sources[row]]] == sources[row]:
                one_word[batch.owner[sources[row]]] = own + row
        by_text = (torch.softmax(sim.float() / temperature, dim=1) + 1e-12) * false  # [B, T]
        has_false = false.any(dim=1)
        drawn = torch.multinomial(by_text + ~has_false[:, None], 1).squeeze(1)  # (rows with no false text: unused)
        hard_text = torch.where(has_false, drawn, -1)
        wrong_text = torch.where(one_word >= 0, one_word, hard_text)
    texted = wrong_text >= 0
    picture_rows = torch.cat([everyone, easy_picture, hard_picture, everyone[texted]])
    text_rows = torch.cat([chosen, chosen[usable], chosen[usable], wrong_text[texted]])
    labels = torch.zeros(len(text_rows), dtype=torch.long, device=sim.device)
    labels[:pictures] = 1
    width = int(batch.attention_mask[text_rows].sum(dim=1).max())
    logits = match_logits(model, vision[picture_rows], batch.input_ids[text_rows, :width],
                          batch.attention_mask[text_rows, :width])
    right = float((logits.argmax(dim=-1) == labels).float().mean())
    return F.cross_entropy(logits, labels), right
