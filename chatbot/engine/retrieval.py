"""Image-text retrieval with BLIP-2's own heads (`Blip2ForImageTextRetrieval`): embeddings and match scores.

Search needs the two sides apart: images are embedded once, when a folder is indexed, and a query's
text later, without the images. `Blip2ForImageTextRetrieval.forward` always runs both, so this engine
calls the same submodules the way that forward does, one side at a time:

- image: vision encoder -> Q-Former queries (cross-attending the image) -> `vision_projection`,
  L2-normalised: one vector per query token, [B, 32, 256] for the hub checkpoints;
- text: the Q-Former's text path alone -> first token -> `text_projection`, normalised: [T, 256];
- ITC score (`use_image_text_matching_head=False`): the best of the query similarities, no temperature
  (`itc_scores`, numpy: the index and search code reuse it without torch);
- ITM probability (`=True`): queries and text through the Q-Former together, cross-attending the image;
  the 2-way head averaged over the queries, softmax[:, 1] = "match". It needs the image again, so it is
  the re-ranking step for a few candidates.

Every result is a float32 numpy array, so the core never touches torch. Tests check every score against
the model's own forward (tests/test_retrieval_engine.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chatbot.engine.checkpoint_location import Progress
from chatbot.engine.loader import LoadedCheckpoint, load_checkpoint
from chatbot.errors import QueryError
from chatbot.images import LoadedImage

WORDS_PER_TOKEN = 0.75  # English averages about 4 tokens for 3 words in BERT's WordPiece
DEFAULT_BATCH = 16  # images per forward: bounds the vision encoder's activations


def itc_scores(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """Image-text contrastive scores [B, T]: for each image and text, the best query's cosine similarity.

    `image_embeds` is [B, Q, D] and `text_embeds` [T, D], both L2-normalised (as the engine returns them),
    so a dot product is a cosine. This is MaxSim with a one-vector query, exactly what
    `Blip2ForImageTextRetrieval` returns as `logits_per_image` without the ITM head.
    """
    similarities = np.matmul(image_embeds, np.asarray(text_embeds).T)  # [B, Q, T]
    return similarities.max(axis=1).astype(np.float32, copy=False)


def check_query_text(text: str) -> None:
    """A `QueryError` for search text no model can read: blank, or not valid UTF-8 (a command-line argument
    in another encoding arrives with its bytes as lone surrogates, which no tokenizer takes). Needs no model,
    so a search says it before one loads."""
    if not text.strip():
        raise QueryError("The search text is empty.",
                         'Describe what the picture shows in a few words, for example "a dog on a beach".')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("The search text is not valid UTF-8 text.",
                         "Type it again in UTF-8 (check your terminal's character encoding).") from None


class RetrievalEngine:
    """A loaded retrieval checkpoint: image and text embeddings, ITC scores, ITM match probabilities."""

    def __init__(self, loaded: LoadedCheckpoint, batch_size: int = DEFAULT_BATCH) -> None:
        self.model: Any = loaded.model
        self.processor: Any = loaded.processor
        config = self.model.config
        tokenizer = self.processor.tokenizer
        self.checkpoint_id: str = loaded.resolved.hub_id or str(loaded.resolved.path)  # recorded in an index
        self.device: str = loaded.device
        self.precision: str = loaded.precision
        self.precision_reason: str = loaded.precision_reason
        self.image_size: int = int(config.vision_config.image_size)
        self.query_tokens: int = int(config.num_query_tokens)
        self.embedding_dim: int = int(config.image_text_hidden_size)
        # Positions of the Q-Former's text embeddings, [CLS] and [SEP] included; a tokenizer may say less.
        self.max_text_tokens: int = min(int(config.qformer_config.max_position_embeddings),
                                        int(getattr(tokenizer, "model_max_length", 10**9) or 10**9))
        self.batch_size = batch_size
        self.vision_calls = 0  # images that went through the vision encoder (the expensive part)
        # The dtype images enter in: that of the patch convolution, which quantization never converts.
        self._pixel_dtype = self.model.vision_model.embeddings.patch_embedding.weight.dtype

    # --- images ------------------------------------------------------------------------------------

    def image_embeddings(self, images: Sequence[LoadedImage]) -> np.ndarray:
        """[B, Q, D] float32, L2-normalised per query: what an index stores for each image (no text needed)."""
        import torch
        from torch.nn.functional import normalize

        out = [np.zeros((0, self.query_tokens, self.embedding_dim), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                vision = self._vision_states(images[start:start + self.batch_size])
                queries = self.model.query_tokens.expand(vision.shape[0], -1, -1)
                states = self.model.qformer(
                    query_embeds=queries, encoder_hidden_states=vision, encoder_attention_mask=self._mask(vision),
                ).last_hidden_state
                states = states.to(self.model.vision_projection.weight.dtype)
                out.append(normalize(self.model.vision_projection(states), dim=-1).float().cpu().numpy())
        return np.concatenate(out)

    def _vision_states(self, images: Sequence[LoadedImage]) -> Any:
        """The vision encoder's last hidden state for a batch of images, counted in `vision_calls`."""
        pixels = self.processor.image_processor(images=[image.image for image in images], return_tensors="pt")
        self.vision_calls += len(images)
        return self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device, self._pixel_dtype)
                                       ).last_hidden_state

    @staticmethod
    def _mask(vision: Any) -> Any:
        import torch

        return torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device)

    # --- text --------------------------------------------------------------------------------------

    def check_query(self, text: str) -> int:
        """The query's length in tokens; a `QueryError` when it is blank, not text (`check_query_text`) or longer
        than the text encoder reads."""
        check_query_text(text)
        count = len(self.processor.tokenizer(text)["input_ids"])
        if count > self.max_text_tokens:
            words = int(self.max_text_tokens * WORDS_PER_TOKEN)
            raise QueryError(
                f"The search text is {count} tokens long, but the model reads at most {self.max_text_tokens} "
                f"tokens (about {words} words).",
                "Shorten it to a few words that describe the picture.",
            )
        return count

    def _tokens(self, texts: Sequence[str]) -> Any:
        for text in texts:
            self.check_query(text)
        return self.processor.tokenizer(list(texts), padding=True, return_tensors="pt").to(self.device)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """[T, D] float32, L2-normalised: the Q-Former text encoder's first token through `text_projection`.

        Raises:
            QueryError: a text is blank or longer than `max_text_tokens`.
        """
        import torch
        from torch.nn.functional import normalize

        if not texts:
            return np.zeros((0, self.embedding_dim), np.float32)
        tokens = self._tokens(texts)
        with torch.inference_mode():
            embedded = self.model.embeddings(input_ids=tokens["input_ids"])
            states = self.model.qformer(
                query_embeds=embedded, query_length=0, attention_mask=tokens["attention_mask"],
            ).last_hidden_state
            first = states[:, 0, :].to(self.model.text_projection.weight.dtype)
            return normalize(self.model.text_projection(first), dim=-1).float().cpu().numpy()

    # --- scores ------------------------------------------------------------------------------------

    itc_scores = staticmethod(itc_scores)

    def match_probabilities(self, images: Sequence[LoadedImage], text: str) -> np.ndarray:
        """[B] float32: the ITM head's probability that each image matches `text` (runs the images again).

        Raises:
            QueryError: the text is blank or longer than `max_text_tokens`.
        """
        import torch

        tokens = self._tokens([text])
        out = [np.zeros((0,), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                vision = self._vision_states(images[start:start + self.batch_size])
                count = vision.shape[0]
                queries = self.model.query_tokens.expand(count, -1, -1)
                query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=queries.device)
                input_ids = tokens["input_ids"].expand(count, -1)
                states = self.model.qformer(
                    query_embeds=self.model.embeddings(input_ids=input_ids, query_embeds=queries),
                    query_length=queries.shape[1],
                    attention_mask=torch.cat([query_mask, tokens["attention_mask"].expand(count, -1)], dim=1),
                    encoder_hidden_states=vision, encoder_attention_mask=self._mask(vision),
                ).last_hidden_state
                states = states.to(self.model.itm_head.weight.dtype)
                logits = self.model.itm_head(states[:, : queries.shape[1], :]).mean(dim=1)
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out)


def open_retrieval_engine(
    model: str, *, device: str = "auto", dtype: str = "auto", quantize: str = "auto",
    progress: Progress | None = None,
) -> RetrievalEngine:
    """Load a retrieval checkpoint (hub id, alias such as itm-vit-g, or folder) through the common loader.

    Args:
        model: what to load; a chat checkpoint is refused with a sentence naming a retrieval one.
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "auto", "float32", "bfloat16" or "float16".
        quantize: "auto", "none", "int8", "8bit" or "4bit" (the same policy as chat, see precision.py).
        progress: called with short status sentences while loading.
    """
    return RetrievalEngine(load_checkpoint(model, device=device, dtype=dtype, quantize=quantize, progress=progress,
                                           kind="retrieval"))
