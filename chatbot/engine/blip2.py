"""The BLIP-2 engine: answers a question about an image as a stream of text, and many images at once.

Correctness first: for the same processor inputs and generation options, the tokens are
identical to `Blip2ForConditionalGeneration.generate`. We call the same language-model
`generate` with the same embeddings; we only skip work whose result we already hold:
the image's projected query embeddings (content-hash keyed) and, for OPT with greedy
or sampled decoding, the KV cache of the longest token prefix shared with the last turn.
On a GPU, greedy and sampled answers decode over a static KV cache, one CUDA-graph replay
per token (chatbot/engine/static/).

Here is a turn: `stream` runs `generate` on the model thread and hands its tokens to the reader
as text. What it stands on, one concern a module, each building on the one before:
model_io.py (the checkpoint's inputs and outputs), prefix_reuse.py (which KV cache a turn
continues), think_ahead.py (the model thread, and the next prompt prepared on it while the
person types). Beside them: batched.py (many images, one `generate` call), streaming.py (tokens
from the model thread to the reader), static/ (the static KV cache and its CUDA graphs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import torch
from transformers import StoppingCriteriaList

from chatbot.engine import batched
from chatbot.engine.base import (
    BatchStats,
    CancelToken,
    Engine,
    GenerationOptions,
    GenerationStats,
    prompt_per_image,
)
from chatbot.engine.checkpoint_location import Progress, ResolvedModel
from chatbot.engine.loader import LoadedCheckpoint, is_out_of_memory, load_checkpoint
from chatbot.engine.static import compile_wanted, graphs_wanted, set_up_static_decoding
from chatbot.engine.streaming import END, StopWhenCancelled, TokenQueue
from chatbot.engine.think_ahead import ThinkAhead
from chatbot.errors import OutOfMemoryError
from chatbot.images import LoadedImage


class Blip2Engine(ThinkAhead, Engine):
    """Answers questions about images with a loaded BLIP-2 checkpoint."""

    def __init__(
        self, loaded: LoadedCheckpoint, image_cache_size: int = 8, reuse_prefix: bool = True,
        static_decoding: bool | None = None, progress: Progress | None = None, compile_step: bool | None = None,
    ) -> None:
        """`static_decoding`: decode over a static KV cache (None: on GPUs, where CUDA graphs replay each
        step; True also on a CPU, where the steps run eagerly: the tests use that to check the path).
        `compile_step`: compile that decode step with TorchInductor first (None: as BLIP2_CHAT_COMPILE says)."""
        super().__init__(loaded, image_cache_size, reuse_prefix)
        self._turn: Future[None] | None = None
        self.last_stats = GenerationStats()
        if self.device.type == "cuda":
            # PyTorch picks cuDNN's attention on Hopper GPUs, which builds an execution plan for every new
            # sequence length: 0.6-1.8 s of host time on a follow-up turn of OPT-2.7B on an H200
            # (benchmarks/profile_turns.py). Flash and memory-efficient attention need no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        if static_decoding is None:
            static_decoding = self.device.type == "cuda" and graphs_wanted()
        if compile_step is None:
            compile_step = compile_wanted()
        if static_decoding:
            self.model_thread().submit(self._set_up_static_decoding, progress, compile_step).result()

    def _set_up_static_decoding(self, progress: Progress | None, compile_step: bool) -> None:
        """Allocate the static cache and, on a GPU, capture the decode step (on the model thread, once)."""
        self.static, self.decoding = set_up_static_decoding(self.model, self._compute_dtype(), self.device,
                                                            self.info.context_tokens, progress, compile_step)

    def _compute_dtype(self) -> torch.dtype:
        """The dtype activations (and so the KV cache) have: the input embeddings'."""
        return self.model.get_input_embeddings().weight.dtype

    def device_memory_bytes(self) -> int | None:
        """CUDA memory allocated on the model's device (None on the CPU, where process memory tells it)."""
        device = self.device
        return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None

    # -- one image: a turn ------------------------------------------------------------------

    def stream(
        self,
        image: LoadedImage,
        prompt: str,
        options: GenerationOptions,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]:
        cancel = cancel or CancelToken()
        stats = self.last_stats = GenerationStats()
        if cancel.cancelled:  # cancelled before it began: no work, no tokens
            stats.cancelled = True
            return
        started = time.perf_counter()
        self.skip_queued_preparation()  # a prepare_ahead still queued is stale: this turn does its work
        ids = self.input_ids(prompt)
        stats.prompt_tokens = len(ids)
        streamer = TokenQueue(stats) if options.num_beams == 1 else None
        outcome: dict[str, Any] = {}

        def work() -> None:  # on the model thread: every tensor operation of the turn happens here
            try:
                encodings_before = self.image_encodings
                with torch.inference_mode():
                    inputs = self.language_inputs(image, ids)  # may run the vision encoder
                    stats.image_encoded = self.image_encodings > encodings_before
                    kwargs = self.generate_kwargs(options)
                    kwargs["stopping_criteria"] = StoppingCriteriaList([StopWhenCancelled(cancel)])
                    outcome["static"] = self.uses_static(ids, options)
                    if self.is_encoder_decoder:
                        if outcome["static"]:
                            kwargs.update(self.static.generate_arguments(inputs, self.cache_argument))  # type: ignore
                            inputs = {}
                    else:
                        outcome["kv"], stats.reused_prefix_tokens = self.turn_cache(image, ids, options,
                                                                                         outcome["static"])
                        if outcome["kv"] is not None:
                            kwargs[self.cache_argument] = outcome["kv"]
                        if outcome["static"]:
                            kwargs["custom_generate"] = self.static.decode  # type: ignore[union-attr]
                    if outcome["static"]:
                        kwargs["token_sink"] = streamer  # what the custom loop streams to (see StaticDecoding.decode)
                    if options.seed is not None:
                        torch.manual_seed(options.seed)
                    outcome["ids"] = self.model.language_model.generate(**inputs, **kwargs, streamer=streamer)
            except BaseException as error:  # noqa: BLE001 - handed to the reading thread
                outcome["error"] = error
            finally:
                if streamer is not None:
                    streamer.queue.put(END)

        self._turn = self.model_thread().submit(work)
        try:
            if streamer is not None:
                yield from self._decode_stream(streamer, stats, started)
            self._turn.result()
        finally:
            if not self._turn.done():  # the reader stopped early: stop generating, then wait
                cancel.cancel()
                self._turn.result()
        self._finish(outcome, ids, image, stats, cancel, started)
        stats.cut_short = (not stats.cancelled and stats.new_tokens >= options.max_new_tokens
                           and stats.token_ids[-1] not in self.end_token_ids)
        if streamer is None and stats.token_ids:  # beam search cannot stream: the answer comes whole
            stats.seconds_to_first_token = stats.seconds_total
            yield self.decode_tokens(stats.token_ids)

    @property
    def generating(self) -> bool:
        """True while a turn's model work is still running (after a cancel it ends within a token)."""
        return self._turn is not None and not self._turn.done()

    def _decode_stream(self, streamer: TokenQueue, stats: GenerationStats, started: float) -> Iterator[str]:
        new_ids: list[int] = []
        shown = ""
        while (token := streamer.queue.get()) is not END:
            if not new_ids:
                stats.seconds_to_first_token = time.perf_counter() - started
            new_ids.append(token)
            text = self.decode_tokens(new_ids)
            if text.endswith("\ufffd") or len(text) <= len(shown):  # wait for the rest of a UTF-8 character
                continue
            chunk, shown = text[len(shown):], text
            yield chunk

    def _finish(
        self, outcome: dict[str, Any], ids: list[int], image: LoadedImage, stats: GenerationStats,
        cancel: CancelToken, started: float,
    ) -> None:
        stats.seconds_total = time.perf_counter() - started
        stats.cancelled = cancel.cancelled
        error = outcome.get("error")
        if error is not None:
            self.prefix.forget()
            self._raise_if_out_of_memory(error)
            raise error
        sequence = outcome["ids"][0].tolist()
        stats.token_ids = sequence[1:] if self.is_encoder_decoder else sequence[len(ids):]
        stats.new_tokens = len(stats.token_ids)
        cache = outcome.get("kv")
        if cache is not None:
            covered = self.static.length if outcome["static"] else cache.get_seq_length()  # type: ignore[union-attr]
            self.prefix.hold(image.sha256, ids + stats.token_ids, cache, covered)

    def _raise_if_out_of_memory(self, error: BaseException) -> None:
        """One clear error for running out of memory mid-answer; the memory is handed back for the next turn."""
        if not is_out_of_memory(error):
            return
        self.prefix.forget()  # the KV cache is the big thing a turn holds; image embeddings are a few hundred KB
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = {"float32": "--dtype bfloat16 or --quantize 8bit", "8bit": "--quantize 4bit", "4bit": ""}.get(
            self.info.precision, "--quantize 8bit")
        raise OutOfMemoryError(
            f"{self.info.device} ran out of memory while answering; the conversation is kept.",
            "Try a shorter --max-new-tokens or /clear the conversation"
            + (f", or load the model with {smaller}." if smaller else "."),
        ) from None

    # -- many images ------------------------------------------------------------------------

    def answer_batch(
        self, images: Sequence[LoadedImage], prompt: str | Sequence[str], options: GenerationOptions
    ) -> list[str]:
        """All images through one `generate` call (see chatbot/engine/batched.py); the chat's KV cache is untouched.

        A single image where static decoding runs (GPUs) is answered the chat's way instead, a CUDA-graph
        replay per token, several times faster than `generate` on a batch of one.
        """
        if len(images) == 1 and self.static is not None and options.num_beams == 1:
            return super().answer_batch(images, prompt, options)
        prompts = prompt_per_image(images, prompt)
        stats = self.last_batch_stats = BatchStats(images=len(images))
        return self.model_thread().submit(batched.answer_batch, self, images, prompts, options, stats).result()


def open_engine(
    model: str | ResolvedModel, *, device: str = "auto", dtype: str = "auto", quantize: str = "auto",
    progress: Progress | None = None, static_decoding: bool | None = None, compile_step: bool | None = None,
    dtype_from: str | None = None,
) -> Blip2Engine:
    """Load a checkpoint (hub id, alias or directory) in a precision that fits, and wrap it in an engine."""
    loaded = load_checkpoint(model, device=device, dtype=dtype, quantize=quantize, progress=progress,
                             dtype_from=dtype_from)
    return Blip2Engine(loaded, static_decoding=static_decoding, progress=progress, compile_step=compile_step)
