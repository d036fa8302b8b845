"""The model-holding stage: callable classes that Ray Data keeps alive as actors, one model each.

Each actor loads its model once, in its constructor, through our own loader (so `--dtype`, `--quantize`
8-bit/4-bit and `--device` apply on the worker as on one machine), then answers batch after batch. A batch
keeps its rows in order and hands back what the driver needs to write them: the path, the sha256, the
error sentence, and the caption or the embedding. Torch comes in only through the engine.

Fault injection for the tests (and for trying a cluster's recovery): `BLIP2_CHAT_FAULT_AFTER=N` with
`BLIP2_CHAT_FAULT_MARKER=FILE` makes the actor that reaches its N-th batch first end its own process
(`os._exit(1)`, as a kill or the out-of-memory killer would) unless FILE exists; it creates FILE first, so
it happens once per run. Ray then restarts the actor and retries the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatbot.cluster.decoding import Batch, pictures_of
from chatbot.core.settings import Settings

FAULT_AFTER = "BLIP2_CHAT_FAULT_AFTER"
FAULT_MARKER = "BLIP2_CHAT_FAULT_MARKER"


@dataclass(frozen=True)
class FaultPlan:
    """Die on the `after`-th batch of an actor, once per `marker` file (read from the driver's environment)."""

    after: int
    marker: str

    @classmethod
    def from_environment(cls) -> FaultPlan | None:
        after, marker = os.environ.get(FAULT_AFTER, ""), os.environ.get(FAULT_MARKER, "")
        return cls(int(after), marker) if after.isdigit() and marker else None

    def maybe_die(self, batches: int) -> None:
        if batches != self.after:
            return
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # it happened already in this run
        os.close(descriptor)
        os._exit(1)


class _Actor:
    def __init__(self, fault: FaultPlan | None) -> None:
        self.fault = fault
        self.batches = 0

    def _count_batch(self) -> None:
        self.batches += 1
        if self.fault is not None:
            self.fault.maybe_die(self.batches)


class CaptionActor(_Actor):
    """Answers `prompt` about each decoded picture with the chat checkpoint of `settings` (greedy by default)."""

    def __init__(self, settings: Settings, prompt: str, fault: FaultPlan | None = None) -> None:
        super().__init__(fault)
        from chatbot.core.runtime import open_engine_for

        self.settings, self.prompt = settings, prompt
        self.engine = open_engine_for(settings, progress=lambda _message: None)

    def __call__(self, batch: Batch) -> Batch:
        self._count_batch()
        rows, images = pictures_of(batch)
        captions = np.full(len(batch["path"]), "", dtype=object)
        cut_short = np.zeros(len(batch["path"]), dtype=bool)
        if images:
            answers = self.engine.answer_batch(images, self.prompt, self.settings.options)
            lengths = [len(ids) for ids in self.engine.last_batch_stats.token_ids]
            if len(lengths) != len(images):  # an engine that does not count its tokens: none counted as cut off
                lengths = [0] * len(images)
            for row, caption, length in zip(rows, answers, lengths, strict=True):
                captions[row] = caption
                cut_short[row] = length >= self.settings.options.max_new_tokens  # as one machine counts them
        return {"path": batch["path"], "sha256": batch["sha256"], "error": batch["error"], "caption": captions,
                "cut_short": cut_short}


class EmbeddingActor(_Actor):
    """The retrieval checkpoint's image embeddings ([32, 256] float32 per picture; zeros for a failed row)."""

    def __init__(self, model: str, settings: Settings, fault: FaultPlan | None = None) -> None:
        super().__init__(fault)
        from chatbot.engine.retrieval import open_retrieval_engine

        self.engine: Any = open_retrieval_engine(model, device=settings.device, dtype=settings.dtype,
                                                 quantize=settings.quantize)

    def __call__(self, batch: Batch) -> Batch:
        self._count_batch()
        rows, images = pictures_of(batch)
        vectors = self.engine.image_embeddings(images) if images else None
        shape = (len(batch["path"]), self.engine.query_tokens, self.engine.embedding_dim)
        embeddings = np.zeros(shape, np.float32)
        if vectors is not None:
            embeddings[rows] = vectors
        return {"path": batch["path"], "sha256": batch["sha256"], "error": batch["error"], "embedding": embeddings}
