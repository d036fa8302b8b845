"""The interface front ends use to talk to a model: text in, text chunks out.

This module imports no torch, so front ends and tests can depend on it cheaply.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatbot.images import LoadedImage


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode an answer. Defaults follow LAVIS / the BLIP-2 demo where sensible."""

    max_new_tokens: int = 30  # LAVIS default answer length
    min_new_tokens: int = 0  # > 0 forces longer answers (benchmarks use min == max)
    num_beams: int = 1  # 1 = greedy (or sampling when temperature > 0)
    temperature: float = 0.0  # > 0 samples; 0 decodes deterministically
    top_p: float = 0.9  # nucleus sampling mass, used only when sampling
    repetition_penalty: float = 1.0  # > 1 discourages repeats (the demo uses 1.5)
    length_penalty: float = 1.0  # beam search only; the paper uses -1 for short VQA answers
    seed: int | None = None  # fixes sampling so a run can be repeated

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationStats:
    """What the last answer cost; front ends show it, benchmarks record it."""

    prompt_tokens: int = 0  # language-model input length, image tokens included
    new_tokens: int = 0
    image_encoded: bool = False  # False when the image embedding came from the cache
    reused_prefix_tokens: int = 0  # KV-cache positions reused from the previous turn
    seconds_to_first_token: float = 0.0
    seconds_total: float = 0.0
    cancelled: bool = False
    cut_short: bool = False  # it reached max_new_tokens before the model ended it (the answer may stop mid-sentence)
    token_ids: list[int] = field(default_factory=list)  # the new tokens, for equivalence checks

    @property
    def tokens_per_second(self) -> float:
        """Decoding speed: the tokens after the first over the time after it; an answer that came whole (beam
        search cannot stream) is its tokens over the whole time."""
        decode = self.seconds_total - self.seconds_to_first_token
        if self.new_tokens > 1 and decode > 0:
            return (self.new_tokens - 1) / decode
        return self.new_tokens / self.seconds_total if self.new_tokens and self.seconds_total > 0 else 0.0


@dataclass
class BatchStats:
    """What the last `answer_batch` cost: `describe` and its benchmark report images per second from it."""

    images: int = 0
    images_encoded: int = 0  # vision-encoder runs; images already in the embedding cache cost none
    new_tokens: int = 0  # all images together
    seconds_total: float = 0.0
    token_ids: list[list[int]] = field(default_factory=list)  # per image, for equivalence checks

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds_total if self.seconds_total > 0 else 0.0


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model that front ends show and prompts need."""

    model_id: str  # what the user asked for (hub id, alias or directory)
    family: str  # "opt" or "flan-t5"
    device: str  # e.g. "cpu", "cuda:0"
    precision: str  # e.g. "float32", "bfloat16", "8bit", "4bit"
    context_tokens: int  # OPT: positions for image + prompt + answer; T5: input tokens
    image_tokens: int  # num_query_tokens
    is_encoder_decoder: bool
    precision_reason: str = ""  # why this precision, e.g. "Using 8-bit: bfloat16 needs 15.5 GB but ..."


class CancelToken:
    """Set from any thread to stop the answer in progress within one token."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def prompt_per_image(images: Sequence[LoadedImage], prompt: str | Sequence[str]) -> list[str]:
    """`answer_batch`'s prompt, one per image: the one prompt repeated, or the list (as many as there are images)."""
    prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    return prompts


class Engine(ABC):
    """A loaded image-language model that streams answers as text."""

    info: ModelInfo
    last_stats: GenerationStats
    last_batch_stats: BatchStats  # set by answer_batch

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Language-model tokens for `text` as the processor would encode it (specials included, image tokens not)."""

    def unknown_tokens(self, text: str) -> tuple[int, int]:
        """How many of `text`'s tokens are the tokenizer's unknown token, and how many tokens it has (specials left
        out): a tokenizer with no pieces for a script (FlanT5's for Chinese, Hindi, Arabic) reads it as unknowns.
        (0, 0) where the engine cannot tell."""
        return 0, 0

    @abstractmethod
    def stream(
        self,
        image: LoadedImage,
        prompt: str,
        options: GenerationOptions,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]:
        """Yield the answer to `prompt` about `image` as text chunks; stats land in `last_stats`."""

    def answer(self, image: LoadedImage, prompt: str, options: GenerationOptions) -> str:
        """The whole answer at once, stripped."""
        return "".join(self.stream(image, prompt, options)).strip()

    def answer_batch(
        self, images: Sequence[LoadedImage], prompt: str | Sequence[str], options: GenerationOptions
    ) -> list[str]:
        """Answer `prompt` (one for all, or one per image) about each image; stats land in `last_batch_stats`.

        Engines that can run several images through the model at once override this; the default
        answers one at a time, so every engine serves `describe`.
        """
        prompts = prompt_per_image(images, prompt)
        stats = self.last_batch_stats = BatchStats(images=len(images))
        started = time.perf_counter()
        answers = []
        for image, text in zip(images, prompts, strict=True):
            answers.append(self.answer(image, text, options))
            stats.images_encoded += int(self.last_stats.image_encoded)
            stats.new_tokens += self.last_stats.new_tokens
            stats.token_ids.append(list(self.last_stats.token_ids))
        stats.seconds_total = time.perf_counter() - started
        return answers

    def prepare_ahead(self, image: LoadedImage, prompt_start: str) -> None:
        """Start, in the background, the work every prompt that begins with `prompt_start` needs.

        Called while the person reads the answer or types the next question: the image's
        embeddings and (where the engine reuses its KV cache) the prefill of `prompt_start`.
        It never changes what a later `stream` returns, only how soon. The default does nothing.
        """
        return None

    def device_memory_bytes(self) -> int | None:
        """Accelerator memory the model holds now, for status lines; None where there is no such device."""
        return None

    def close(self) -> None:
        """Stop the engine's background work and drop what it keeps between turns, before it is let go of (the
        caller then drops its reference and calls `free_unused_memory`). It answers nothing after."""
        return None


def free_unused_memory() -> None:
    """Give back what let-go models held: collect them now, and return the GPU's cached blocks to the device
    (torch only where it is already imported: this never loads it)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
