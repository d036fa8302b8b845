"""The BLIP-2 engine: encodes each image once, reuses the previous turn's KV cache, streams text.

Over 300 lines because its one class holds a turn and the background work on its model thread
(thinking ahead), which share its state; what needs none of it lives beside it: prefix_cache.py,
static/, streaming.py, batched.py.

Correctness first: for the same processor inputs and generation options, the tokens are
identical to `Blip2ForConditionalGeneration.generate`. We call the same language-model
`generate` with the same embeddings; we only skip work whose result we already hold:
the image's projected query embeddings (content-hash keyed) and, for OPT with greedy
or sampled decoding, the KV cache of the longest token prefix shared with the last turn
(chatbot/engine/prefix_cache.py). On a GPU, greedy and sampled answers decode over a static
KV cache, one CUDA-graph replay per token (chatbot/engine/static/).
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from transformers import DynamicCache, StoppingCriteriaList

from chatbot.engine import batched
from chatbot.engine.base import CancelToken, Engine, GenerationOptions, GenerationStats, ModelInfo
from chatbot.engine.cache import ImageEmbeddingCache
from chatbot.engine.loader import LoadedCheckpoint, Progress, ResolvedModel, is_out_of_memory, load_checkpoint
from chatbot.engine.prefix_cache import ConversationCache
from chatbot.engine.static import StaticDecoding, graphs_wanted, set_up_static_decoding
from chatbot.engine.streaming import END, StopWhenCancelled, TokenQueue, shown
from chatbot.errors import OutOfMemoryError
from chatbot.images import LoadedImage


class Blip2Engine(Engine):
    """Answers questions about images with a loaded BLIP-2 checkpoint."""

    def __init__(
        self, loaded: LoadedCheckpoint, image_cache_size: int = 8, reuse_prefix: bool = True,
        static_decoding: bool | None = None, progress: Progress | None = None,
    ) -> None:
        """`static_decoding`: decode over a static KV cache (None: on GPUs, where CUDA graphs replay each
        step; True also on a CPU, where the steps run eagerly: the tests use that to check the path)."""
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
        self.reuse_prefix = reuse_prefix and not self.is_encoder_decoder  # T5's encoder sees all input anyway
        self.prefix = ConversationCache(self._fresh_cache, self._rewind_cache)
        self.static: StaticDecoding | None = None
        self.decoding = "generate"  # how answers are decoded, in words (status lines and benchmarks show it)
        self._executor: ThreadPoolExecutor | None = None  # see _model_thread
        self._turn: Future[None] | None = None
        self._ahead: Future[None] | None = None  # the latest prepare_ahead's work
        self.ahead_seconds = 0.0  # how long that work took (benchmarks read it)
        self._numbers = itertools.count(1)  # numbers prepare_ahead and stream calls (next() is atomic)
        self._latest = 0  # the latest number: a queued prepare_ahead runs only if it is still the latest
        self._epoch = 0  # bumped by forget(): work started before it must not bring its cache back
        self.last_stats = GenerationStats()
        # transformers 5.2x renamed `past_key_values` to `cache` (generate and forward); use whichever it takes.
        prepare = self.model.language_model.prepare_inputs_for_generation
        self._cache_argument = "cache" if "cache" in inspect.signature(prepare).parameters else "past_key_values"
        eos = self.model.language_model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.device.type == "cuda":
            # PyTorch picks cuDNN's attention on Hopper GPUs, which builds an execution plan for every new
            # sequence length: 0.6-1.8 s of host time on a follow-up turn of OPT-2.7B on an H200
            # (benchmarks/profile_turns.py). Flash and memory-efficient attention need no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        if static_decoding is None:
            static_decoding = self.device.type == "cuda" and graphs_wanted()
        if static_decoding:
            self._model_thread().submit(self._set_up_static_decoding, progress).result()

    def _set_up_static_decoding(self, progress: Progress | None) -> None:
        """Allocate the static cache and, on a GPU, capture the decode step (on the model thread, once)."""
        self.static, self.decoding = set_up_static_decoding(self.model, self._compute_dtype(), self.device,
                                                            self.info.context_tokens, progress)

    def _compute_dtype(self) -> torch.dtype:
        """The dtype activations (and so the KV cache) have: the input embeddings'."""
        return self.model.get_input_embeddings().weight.dtype

    # -- inputs -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """What pixels go in as: the patch embedding's dtype (never quantized or packed)."""
        return self.model.vision_model.embeddings.patch_embedding.weight.dtype

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

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
        self._ahead = self._model_thread().submit(self._prepare, image, ids, request, self._epoch)

    def wait_until_prepared(self) -> float:
        """Wait for the latest prepare_ahead's work; returns the seconds that work took (0 if skipped or none)."""
        if self._ahead is None:
            return 0.0
        self._ahead.result()
        return self.ahead_seconds

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
            embeds = self._language_inputs(image, ids)["inputs_embeds"][:, keep:]
            mask = torch.ones((1, len(ids)), dtype=torch.long, device=self.device)
            self.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1,
                                      **{self._cache_argument: cache})
        if epoch == self._epoch:
            self.prefix.hold(image.sha256, ids, cache, covered=len(ids))

    def device_memory_bytes(self) -> int | None:
        """CUDA memory allocated on the model's device (None on the CPU, where process memory tells it)."""
        device = self.device
        return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None

    # -- generation -------------------------------------------------------------------------

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

    def _language_inputs(self, image: LoadedImage, ids: list[int]) -> dict[str, Any]:
        features = self.image_embeddings(image)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        mask = (input_ids == self.image_token_id).unsqueeze(-1).to(embeds.device)
        embeds = embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))
        inputs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": torch.ones_like(input_ids)}
        if not self.is_encoder_decoder:
            inputs["input_ids"] = input_ids
        return inputs

    def _fresh_cache(self) -> Any:
        """An empty KV cache: the static one rewound, else a new DynamicCache."""
        if self.static is not None:
            return self.static.rewind(0)  # type: ignore[attr-defined]
        return DynamicCache(config=self.model.language_model.config)

    def _rewind_cache(self, cache: Any, covered: int, keep: int) -> Any:
        """`cache` (holding `covered` positions) cut to its first `keep`."""
        if self.static is not None:
            return self.static.rewind(keep)  # type: ignore[attr-defined]
        cache.crop(keep - covered)  # crop takes minus the number of tokens to drop
        return cache

    def _uses_static(self, ids: list[int], options: GenerationOptions) -> bool:
        """Greedy and sampled answers that fit the static cache decode through it; beam search never."""
        return self.static is not None and options.num_beams == 1 and self.static.fits(len(ids), options.max_new_tokens)

    def _turn_cache(self, image: LoadedImage, ids: list[int], options: GenerationOptions,
                    static: bool) -> tuple[Any, int]:
        """The KV cache this turn continues, and how many of its prompt tokens it already holds (OPT).

        (None, 0) where `generate` must make its own: beam search keeps a cache per beam, and a turn
        too long for the static cache goes the plain way. `static`: this turn decodes through the
        static cache (`_uses_static`, decided once per turn by the caller).
        """
        if options.num_beams > 1 or (self.static is not None and not static):
            self.prefix.forget()
            return None, 0
        if not self.reuse_prefix:
            self.prefix.forget()
            return self._fresh_cache(), 0
        return self.prefix.take(image.sha256, ids, limit=len(ids) - 1)  # one token left to prefill gives the logits

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
        self._latest = next(self._numbers)  # a prepare_ahead still queued is stale: this turn does its work
        ids = self.input_ids(prompt)
        stats.prompt_tokens = len(ids)
        streamer = TokenQueue(stats) if options.num_beams == 1 else None
        outcome: dict[str, Any] = {}

        def work() -> None:  # on the model thread: every tensor operation of the turn happens here
            try:
                encodings_before = self.image_encodings
                with torch.inference_mode():
                    inputs = self._language_inputs(image, ids)  # may run the vision encoder
                    stats.image_encoded = self.image_encodings > encodings_before
                    kwargs = self.generate_kwargs(options)
                    kwargs["stopping_criteria"] = StoppingCriteriaList([StopWhenCancelled(cancel)])
                    outcome["static"] = self._uses_static(ids, options)
                    if self.is_encoder_decoder:
                        if outcome["static"]:
                            kwargs.update(self.static.generate_arguments(inputs, self._cache_argument))  # type: ignore
                            inputs = {}
                    else:
                        outcome["kv"], stats.reused_prefix_tokens = self._turn_cache(image, ids, options,
                                                                                          outcome["static"])
                        if outcome["kv"] is not None:
                            kwargs[self._cache_argument] = outcome["kv"]
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

        self._turn = self._model_thread().submit(work)
        try:
            if streamer is not None:
                yield from self._decode_stream(streamer, stats, started)
            self._turn.result()
        finally:
            if not self._turn.done():  # the reader stopped early: stop generating, then wait
                cancel.cancel()
                self._turn.result()
        self._finish(outcome, ids, image, stats, cancel, started)
        if streamer is None and stats.token_ids:  # beam search cannot stream: the answer comes whole
            stats.seconds_to_first_token = stats.seconds_total
            yield self._decode(stats.token_ids)

    def answer_batch(
        self, images: Sequence[LoadedImage], prompt: str | Sequence[str], options: GenerationOptions
    ) -> list[str]:
        """All images through one `generate` call (see chatbot/engine/batched.py); the chat's KV cache is untouched.

        A single image where static decoding runs (GPUs) is answered the chat's way instead, a CUDA-graph
        replay per token, several times faster than `generate` on a batch of one.
        """
        if len(images) == 1 and self.static is not None and options.num_beams == 1:
            return super().answer_batch(images, prompt, options)
        return self._model_thread().submit(batched.answer_batch, self, images, prompt, options).result()

    def _model_thread(self) -> ThreadPoolExecutor:
        """The one long-lived thread that runs the model.

        CUDA libraries keep per-thread state (cuBLAS handles and workspaces): on an H200, bfloat16
        decoding in a fresh thread per answer ran 5x slower than in the main thread
        (benchmarks/diag_decode_overhead.py). One thread for every turn pays that set-up once.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blip2-model")
        return self._executor

    @property
    def generating(self) -> bool:
        """True while a turn's model work is still running (after a cancel it ends within a token)."""
        return self._turn is not None and not self._turn.done()

    def _decode(self, token_ids: list[int]) -> str:
        kept = [t for t in token_ids if t not in self._eos_ids]
        return shown(str(self.tokenizer.decode(kept, skip_special_tokens=True)))

    def _decode_stream(self, streamer: TokenQueue, stats: GenerationStats, started: float) -> Iterator[str]:
        new_ids: list[int] = []
        shown = ""
        while (token := streamer.queue.get()) is not END:
            if not new_ids:
                stats.seconds_to_first_token = time.perf_counter() - started
            new_ids.append(token)
            text = self._decode(new_ids)
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


def open_engine(
    model: str | ResolvedModel, *, device: str = "auto", dtype: str = "auto", quantize: str = "auto",
    progress: Progress | None = None, static_decoding: bool | None = None,
) -> Blip2Engine:
    """Load a checkpoint (hub id, alias or directory) in a precision that fits, and wrap it in an engine."""
    loaded = load_checkpoint(model, device=device, dtype=dtype, quantize=quantize, progress=progress)
    return Blip2Engine(loaded, static_decoding=static_decoding, progress=progress)
