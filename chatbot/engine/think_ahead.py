"""Thinking ahead: the engine's one model thread, and the next prompt's preparation on it while the person types.

Every tensor operation of the engine runs on one long-lived thread (`model_thread`). While the
person reads an answer or types the next question, `prepare_ahead` queues there the work every
prompt that begins with a known start needs: the image's embeddings and (OPT) the prefill of that
start into the conversation's KV cache. A question asked meanwhile waits for that work (it needs all
of it). Requests are numbered, and one that is no longer the latest when its turn comes (a newer
image, a question already asked: `skip_queued_preparation`) is skipped; `forget` opens a new epoch,
so that work started before it never brings its KV cache back.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from chatbot.engine.loader import LoadedCheckpoint, is_out_of_memory
from chatbot.engine.prefix_reuse import PrefixReuse
from chatbot.images import LoadedImage


class ThinkAhead(PrefixReuse):
    """A loaded checkpoint with its model thread, preparing the next prompt on it in the background."""

    def __init__(self, loaded: LoadedCheckpoint, image_cache_size: int = 8, reuse_prefix: bool = True) -> None:
        super().__init__(loaded, image_cache_size, reuse_prefix)
        self._executor: ThreadPoolExecutor | None = None  # see model_thread
        self._ahead: Future[None] | None = None  # the latest prepare_ahead's work
        self.ahead_seconds = 0.0  # how long that work took (benchmarks read it)
        self._numbers = itertools.count(1)  # numbers prepare_ahead and stream calls (next() is atomic)
        self._latest = 0  # the latest number: a queued prepare_ahead runs only if it is still the latest
        self._epoch = 0  # bumped by forget(): work started before it must not bring its cache back

    def model_thread(self) -> ThreadPoolExecutor:
        """The one long-lived thread that runs the model.

        CUDA libraries keep per-thread state (cuBLAS handles and workspaces): on an H200, bfloat16
        decoding in a fresh thread per answer ran 5x slower than in the main thread
        (benchmarks/diag_decode_overhead.py). One thread for every turn pays that set-up once.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blip2-model")
        return self._executor

    def close(self) -> None:
        """Skip queued work, wait for the running one, end the model thread, drop the caches and the model."""
        self.skip_queued_preparation()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.forget()
        self.images.clear()
        self.static = None
        self.__dict__.pop("model", None)  # what holds the weights: gone with the last reference to this engine

    def forget(self) -> None:
        """Drop the conversation's KV cache (the image embeddings stay)."""
        self._epoch += 1
        self.prefix.forget()

    def prepare_ahead(self, image: LoadedImage, prompt_start: str) -> None:
        """Encode the image and prefill `prompt_start` on the model thread, while the person types.

        A question asked meanwhile waits for this work (it needs all of it); requests that are no
        longer the latest when their turn comes (a newer image, a question already asked) are skipped.
        """
        ids = self.input_ids(prompt_start)  # tokenized here, like stream's prompts: never on two threads at once
        request = self._latest = next(self._numbers)
        self._ahead = self.model_thread().submit(self._prepare, image, ids, request, self._epoch)

    def wait_until_prepared(self) -> float:
        """Wait for the latest prepare_ahead's work; returns the seconds that work took (0 if skipped or none)."""
        if self._ahead is None:
            return 0.0
        self._ahead.result()
        return self.ahead_seconds

    def skip_queued_preparation(self) -> None:
        """Make a prepare_ahead still queued stale, so it is skipped: a turn about to start does its work itself."""
        self._latest = next(self._numbers)

    def _prepare(self, image: LoadedImage, ids: list[int], request: int, epoch: int) -> None:
        self.ahead_seconds = 0.0
        if request != self._latest:
            return
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                self.image_embeddings(image)
                if not self.reuse_prefix or request != self._latest:
                    return
                self._extend_prefix(image, ids, epoch)
        except Exception as error:  # noqa: BLE001 - background work: the next turn reports any real trouble
            self.prefix.forget()
            if is_out_of_memory(error) and self.device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            self.ahead_seconds = time.perf_counter() - started

    def _extend_prefix(self, image: LoadedImage, ids: list[int], epoch: int) -> None:
        """Make the KV cache cover `ids`: keep what it shares with them, prefill the rest."""
        cache, keep = self.prefix.take(image.sha256, ids, limit=len(ids))
        if keep < len(ids):
            embeds = self.language_inputs(image, ids)["inputs_embeds"][:, keep:]
            mask = torch.ones((1, len(ids)), dtype=torch.long, device=self.device)
            self.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1,
                                      **{self.cache_argument: cache})
        if epoch == self._epoch:
            self.prefix.hold(image.sha256, ids, cache, covered=len(ids))
