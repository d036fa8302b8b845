"""Decoding over a static KV cache, one CUDA-graph replay per new token on a GPU.

`generate` runs the language model's Python code for every new token: hundreds of small kernel
launches, each paid for on the CPU. At batch size 1 on a GPU that costs far more than reading the
weights (OPT-2.7B on an H200: about 27 ms a token, where the weights take 1.3 ms to read). Here the
decode step (one token in, the next token's logits out) is captured once as a CUDA graph over a
KV cache whose tensors never move (`StaticCache`), and each token is one replay.

`generate` itself still prepares everything: the generation config, the logits processors and the
stopping criteria are its own, and it runs the prefill. Only its decoding loop is ours, handed in
as `custom_generate` (transformers' documented hook for that): the same processors and the same
token choice (`argmax`, or `multinomial` on the softmax, consuming the random generator exactly as
`generate` does), so the tokens equal `generate`'s. The tests check it in float32 against plain
`generate` for both families, with every decoding option, on the CPU (where the step runs without a
graph: same code, same cache) and on a GPU with graphs.

- OPT: one cache of the model's full context. The engine rewinds it to the prefix the next turn
  shares with the last (`rewind`), so KV-prefix reuse works as before. A decode step captured over
  the whole 2048 positions would read all of them every token (0.67 GB at OPT-2.7B, an eighth of
  the weights); so a graph is captured per attention window (256, 512, 1024, 2048 positions) and
  each token replays the smallest that holds the sequence so far.
- FlanT5: a self-attention cache for the answer and a cross-attention cache of the encoder's 512
  positions. The encoder's output is padded to 512 and the padding masked out, so one graph serves
  every prompt length.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from transformers import EncoderDecoderCache, StaticCache
from transformers.cache_utils import Cache, StaticLayer
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

GRAPHS_ENV = "BLIP2_CHAT_CUDA_GRAPHS"  # "0" decodes with plain `generate` on GPUs too
T5_ANSWER_POSITIONS = 512  # decoder positions FlanT5's static cache holds: answers up to 511 tokens
WARMUP_STEPS = 3  # eager steps before capture: allocator, cuBLAS workspaces and autotuning settle
WINDOWS = (256, 512, 1024, 2048)  # attention spans OPT's decode graphs are captured for (capped at its context)
PREFILL_BUCKETS = (16, 32, 64, 128)  # new-token counts OPT's prefill graphs are captured for (padded up to)


def graphs_wanted() -> bool:
    """False when the user turned CUDA graphs off with BLIP2_CHAT_CUDA_GRAPHS=0."""
    return os.environ.get(GRAPHS_ENV, "1").strip() not in ("0", "false", "no", "off")


class StaticDecoding:
    """One decode step over a static cache, replayed from a CUDA graph where the model is on a GPU.

    Subclasses build the cache and say how one step calls the model; this class captures the step
    and runs the decoding loop that `generate` calls.
    """

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device, max_positions: int) -> None:
        self.model = language_model
        self.device = device
        self.dtype = dtype
        self.max_positions = max_positions  # positions the (self-attention) cache holds
        self.token = torch.zeros((1, 1), dtype=torch.long, device=device)  # the step's input
        vocab = language_model.get_output_embeddings().weight.shape[0]
        self.logits = torch.zeros((1, vocab), dtype=torch.float32, device=device)  # the step's output
        self.length = 0  # positions of the self-attention cache written so far (host-side count)
        self.graphs: dict[int, Any] = {}  # attention window -> torch.cuda.CUDAGraph, once captured
        self.cache: Any = None
        on_gpu = device.type == "cuda"
        self._host = torch.zeros(2, dtype=torch.long, pin_memory=on_gpu)  # this token and "done", read back
        self._copied = torch.cuda.Event() if on_gpu else None  # recorded once they are on their way

    # -- the step -----------------------------------------------------------------------------

    def _forward(self) -> Any:
        """The model call of one decode step: `self.token` at position `self.length`."""
        raise NotImplementedError

    def _eager_step(self) -> None:
        self.logits.copy_(self._forward().logits[:, -1])  # float32, as generate's copy of the last logits

    @property
    def captured(self) -> bool:
        return bool(self.graphs)

    def step(self) -> None:
        """Feed `self.token`; the next token's logits land in `self.logits` (a replay once captured)."""
        window = next((w for w in self.windows() if w > self.length), 0)  # the token goes to position `length`
        if window in self.graphs:
            self.graphs[window].replay()
        else:  # the same step, run eagerly over the same window (CPUs, and the tests of this path there)
            with self._attending(window):
                self._eager_step()
        self.length += 1

    def windows(self) -> list[int]:
        """The attention windows to capture a graph for (one: the whole cache, unless a subclass splits it)."""
        return [self.max_positions]

    def capture(self) -> None:
        """Record the step as CUDA graphs, one per window (after eager warm-up steps); the cache is rewound after."""
        for window in self.windows():
            self._prepare_capture()
            self.graphs[window] = self._record(self._eager_step, window)  # ascending: step() takes the first fit
        self.reset()

    def _record(self, run: Callable[[], None], window: int, before: Callable[[], None] | None = None) -> Any:
        """`run` (one model call over static buffers) captured as a CUDA graph attending over `window` positions.

        A few eager runs come first, on a side stream, as PyTorch's capture requires: they settle the
        allocator, cuBLAS's workspaces and Triton's autotuning, none of which may happen while capturing.
        `before` puts the cache back before each run (the runs write into it).
        """
        with self._attending(window):
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    if before:
                        before()
                    run()
            torch.cuda.current_stream(self.device).wait_stream(side)
            if before:
                before()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run()
        torch.cuda.synchronize(self.device)
        return graph

    def _attending(self, window: int) -> Any:
        """A context in which model calls attend over the first `window` positions only (default: all)."""
        return contextlib.nullcontext()

    def _prepare_capture(self) -> None:
        """Put the cache in a state a step can run from (the warm-up steps write into it)."""
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    # -- the decoding loop (generate's `custom_generate`) ---------------------------------------

    def _prefill(self, model: Any, input_ids: torch.Tensor, generation_config: Any, model_kwargs: Any) -> torch.Tensor:
        """The prompt's last logits (float32, as `generate` takes them): `generate`'s own prefill."""
        outputs = model._prefill(input_ids, generation_config, model_kwargs)
        self.length = int(input_ids.shape[1])  # OPT: the whole prompt is cached now; FlanT5: the start token
        return outputs.logits[:, -1].to(copy=True, dtype=torch.float32)

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        """Whether a turn of this size fits the static cache (else the engine uses plain generate)."""
        raise NotImplementedError

    def decode(
        self, model: Any, input_ids: torch.Tensor, logits_processor: Any, stopping_criteria: Any,
        generation_config: Any, token_sink: Any = None, **model_kwargs: Any,
    ) -> torch.Tensor:
        """`generate`'s sampling loop for one sequence, each step after the prefill run by `step`.

        Mirrors `GenerationMixin._sample` for batch size 1: prefill, then per token the logits
        processors, argmax or multinomial, the streamer, the stopping criteria. On a GPU the next step
        is launched before the host waits for this token, so the host's work overlaps the device's;
        a step launched after the last token is wasted, and the count of written positions says so.

        `token_sink` is the streamer: `generate` hands a custom loop only the arguments `_sample` does
        not have, so it travels under its own name (pass the same object as `streamer` too, which
        `generate` gives the prompt).
        """
        streamer = token_sink
        logits = self._prefill(model, input_ids, generation_config, model_kwargs)
        ahead = self.captured  # overlap only where the device runs on its own
        while True:
            scores = logits_processor(input_ids, logits)
            if generation_config.do_sample:
                chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                chosen = torch.argmax(scores, dim=-1)
            input_ids = torch.cat([input_ids, chosen[:, None]], dim=-1)
            done = stopping_criteria(input_ids, None)[0]
            if ahead and self.length < self.max_positions:
                self._host.copy_(torch.stack([chosen[0], done.long()]), non_blocking=True)
                self._copied.record()  # type: ignore[union-attr]
                self.token.copy_(chosen[:, None])
                self.step()  # speculative: runs while the host reads this token
                self._copied.synchronize()  # type: ignore[union-attr]
                token, finished = self._host.tolist()
            else:
                token, finished = int(chosen[0]), bool(done)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if finished:
                break
            if not ahead or self.length >= self.max_positions:
                self.token.copy_(chosen[:, None])
                self.step()
            logits = self.logits.clone()  # processors may change their input; the graph reuses the buffer
        return input_ids


class WindowedStaticLayer(StaticLayer):
    """A static cache layer whose keys and values are shown to attention up to `window` positions only.

    `window` is 0 (everything) except while a decode graph is captured: the graph keeps the slice it was
    recorded with, and every eager call (prefill, thinking ahead) sees the whole cache.
    """

    window = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if self.window:
            return keys[:, :, :self.window], values[:, :, :self.window]
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        length, offset = super().get_mask_sizes(query_length)
        return (self.window or length), offset


class WindowedStaticCache(StaticCache):
    """transformers' StaticCache for a model of full-attention layers only, made of `WindowedStaticLayer`s."""

    def __init__(self, config: Any, max_cache_len: int) -> None:
        Cache.__init__(self, layers=[WindowedStaticLayer(max_cache_len=max_cache_len)
                                     for _ in range(config.num_hidden_layers)])


class DecoderOnlyDecoding(StaticDecoding):
    """OPT: one static cache of the model's full context, rewound to the prefix the next turn reuses."""

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device) -> None:
        config = language_model.config
        super().__init__(language_model, dtype, device, int(config.max_position_embeddings))
        self.cache = WindowedStaticCache(config, max_cache_len=self.max_positions)
        heads = config.num_attention_heads
        self.cache.early_initialization(1, heads, config.hidden_size // heads, dtype, device)
        self.layers = list(self.cache.layers)
        # All ones: the causal mask comes from the cache's own position counter; passing a mask keeps
        # OPT from building one of a length read off the device (a host sync a graph cannot hold).
        self.mask = torch.ones((1, self.max_positions), dtype=torch.long, device=device)
        # The prefill's static inputs: the new tokens' embeddings (padded with zeros up to the bucket) and
        # which row is the last real one; the positions count from the cache's own length.
        widest = max(PREFILL_BUCKETS)
        self.prefill_embeds = torch.zeros((1, widest, config.word_embed_proj_dim), dtype=dtype, device=device)
        self.prefill_last = torch.zeros(1, dtype=torch.long, device=device)
        self.positions = torch.arange(self.max_positions, dtype=torch.long, device=device)
        self.prefill_graphs: dict[tuple[int, int], Any] = {}  # (bucket, window) -> CUDAGraph
        self.prefill_note = ""  # why the prefill runs eagerly on a GPU, if it does

    def _forward(self) -> Any:
        position = self.layers[0].cumulative_length.view(1, 1)  # where this token goes: the cache's length
        return self.model(input_ids=self.token, attention_mask=self.mask, position_ids=position, cache=self.cache,
                          use_cache=True, logits_to_keep=1)

    def windows(self) -> list[int]:
        return sorted({min(window, self.max_positions) for window in WINDOWS})

    # -- the prefill, in buckets of new tokens ------------------------------------------------------

    def capture(self) -> None:
        """The decode graphs, then a prefill graph per bucket of new tokens and attention window."""
        super().capture()
        try:
            for bucket, window in self._prefill_shapes():
                self.prefill_graphs[(bucket, window)] = self._record(lambda b=bucket: self._eager_prefill(b), window,
                                                                     before=self.reset)
        except Exception as error:  # noqa: BLE001 - the prefill then runs eagerly; decoding keeps its graphs
            self.prefill_graphs.clear()
            self.prefill_note = f"prefill eager ({type(error).__name__}: {str(error)[:100]})"
            torch.cuda.synchronize(self.device)
        self.reset()

    def _prefill_shapes(self) -> list[tuple[int, int]]:
        """(bucket, window) pairs, smallest first: a window holds the positions the bucket writes from 0."""
        return [(b, w) for b in PREFILL_BUCKETS for w in self.windows() if b <= w <= self.max_positions]

    def _eager_prefill(self, bucket: int) -> None:
        """`bucket` rows of `prefill_embeds` at the cache's length on; the last real row's logits to `logits`.

        The rows after the real ones are zeros: they come later in the sequence, so no real row attends
        to them, and the cache positions they fill are overwritten by the tokens that follow.
        """
        window = self.layers[0].window or self.max_positions
        positions = (self.layers[0].cumulative_length + self.positions[:bucket]).view(1, bucket)
        mask = (self.positions[:window].view(1, window) <= positions.view(bucket, 1)).view(1, 1, bucket, window)
        hidden = self.model.model.decoder(inputs_embeds=self.prefill_embeds[:, :bucket], attention_mask=mask,
                                          position_ids=positions, cache=self.cache, use_cache=True).last_hidden_state
        self.logits.copy_(self.model.lm_head(hidden.index_select(1, self.prefill_last))[:, -1])

    def _prefill(self, model: Any, input_ids: torch.Tensor, generation_config: Any, model_kwargs: Any) -> torch.Tensor:
        """Prefill what the cache does not hold yet (the engine rewound it to `self.length`) in a bucket.

        On a GPU a captured graph runs it (an eager prefill of OPT-2.7B is about 800 kernel launches,
        tens of milliseconds of host time, where the device needs a few); elsewhere the same code runs
        eagerly. Prompts longer than the largest bucket go `generate`'s way.
        """
        start, total = self.length, int(input_ids.shape[1])
        new = total - start
        shape = next(((b, w) for b, w in self._prefill_shapes() if b >= new and w >= start + b), None)
        embeds = model_kwargs.get("inputs_embeds")
        if shape is None or embeds is None or new < 1:
            return super()._prefill(model, input_ids, generation_config, model_kwargs)
        bucket, window = shape
        self.prefill_embeds[:, new:].zero_()
        self.prefill_embeds[:, :new].copy_(embeds[:, start:])
        self.prefill_last.fill_(new - 1)
        if shape in self.prefill_graphs:
            self.prefill_graphs[shape].replay()
        else:
            with self._attending(window):
                self._eager_prefill(bucket)
        self.rewind(total)  # the padding rows moved the cache's count past the prompt
        return self.logits.clone()

    @contextlib.contextmanager
    def _attending(self, window: int) -> Any:
        for layer in self.layers:
            layer.window = window
        try:
            yield
        finally:
            for layer in self.layers:
                layer.window = 0

    def rewind(self, length: int) -> Any:
        """Keep the first `length` positions (the rest is overwritten as the next tokens arrive)."""
        for layer in self.layers:
            layer.cumulative_length.fill_(length)
        self.length = length
        return self.cache

    def reset(self) -> None:
        self.rewind(0)

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens + max_new_tokens <= self.max_positions


class EncoderDecoderDecoding(StaticDecoding):
    """FlanT5: static self-attention and cross-attention caches; the encoder output padded to 512 positions."""

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device, encoder_positions: int) -> None:
        super().__init__(language_model, dtype, device, T5_ANSWER_POSITIONS)
        config = language_model.decoder.config
        self.encoder_positions = encoder_positions
        caches = []
        for length in (self.max_positions, encoder_positions):
            cache = StaticCache(config=config, max_cache_len=length)
            cache.early_initialization(1, config.num_heads, config.d_kv, dtype, device)
            caches.append(cache)
        self.cache = EncoderDecoderCache(*caches)
        self.encoded = torch.zeros((1, encoder_positions, config.d_model), dtype=dtype, device=device)
        self.encoder_mask = torch.zeros((1, encoder_positions), dtype=torch.long, device=device)
        # The cross-attention mask in the form the decoder uses it, built on the host once per prompt: its
        # library function reads the mask's values (a sync), which a graph cannot hold.
        self.cross_mask = self._cross_mask().clone()
        self.config = config

    def _cross_mask(self) -> torch.Tensor:
        mask = create_bidirectional_mask(config=self.model.decoder.config, inputs_embeds=self.encoded[:, :1],
                                         attention_mask=self.encoder_mask, encoder_hidden_states=self.encoded)
        return mask

    def _forward(self) -> Any:
        return self.model(decoder_input_ids=self.token, encoder_outputs=(self.encoded,), attention_mask=self.cross_mask,
                          cache=self.cache, use_cache=True)

    def reset(self) -> None:
        self.cache.reset()  # zeroes the position counters and marks the cross-attention cache stale
        self.length = 0

    def _prepare_capture(self) -> None:
        self.reset()
        self.load_encoder_output(torch.zeros_like(self.encoded[:, :1]))
        self.token.fill_(int(self.model.config.decoder_start_token_id or 0))
        self._eager_step()  # the first step fills the cross-attention cache, which later steps read

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens <= self.encoder_positions and max_new_tokens < self.max_positions

    def load_encoder_output(self, hidden: torch.Tensor) -> None:
        """Copy one prompt's encoder output into the padded buffer and mask the padding out."""
        length = hidden.shape[1]
        self.encoded.zero_()
        self.encoded[:, :length] = hidden
        self.encoder_mask.zero_()
        self.encoder_mask[:, :length] = 1
        mask = self._cross_mask()
        if mask is None:  # nothing padded (a 512-token prompt): every position takes part
            self.cross_mask.copy_(torch.ones_like(self.cross_mask) if self.cross_mask.dtype == torch.bool
                                  else torch.zeros_like(self.cross_mask))
        else:
            self.cross_mask.copy_(mask)

    def generate_arguments(self, inputs: dict[str, Any], cache_argument: str) -> dict[str, Any]:
        """Run the encoder on `inputs` and return what `generate` then needs to decode through this object."""
        hidden = self.model.get_encoder()(**inputs, return_dict=True).last_hidden_state
        self.reset()
        self.load_encoder_output(hidden)
        return {
            "encoder_outputs": BaseModelOutput(last_hidden_state=self.encoded), "attention_mask": self.encoder_mask,
            cache_argument: self.cache, "custom_generate": self.decode,
        }


def graph_blocker(model: Any) -> str | None:
    """Why this model's decode step cannot be captured as a CUDA graph, or None when it can.

    bitsandbytes' 8-bit layers split each input's outlier columns off (threshold 6), whose number
    depends on the values: the host must read it, which a graph cannot do.
    """
    for module in model.modules():
        state = getattr(module, "state", None)
        if type(module).__name__ == "Linear8bitLt" and getattr(state, "threshold", 0.0) > 0:
            return "bitsandbytes 8-bit layers read their outliers on the host, which CUDA graphs cannot hold"
    return None


def static_decoding_for(model: Any, dtype: torch.dtype, device: torch.device, encoder_positions: int) -> StaticDecoding:
    """The static decoding of this BLIP-2 model's language model (OPT or FlanT5)."""
    language_model = model.language_model
    if model.config.use_decoder_only_language_model:
        return DecoderOnlyDecoding(language_model, dtype, device)
    return EncoderDecoderDecoding(language_model, dtype, device, encoder_positions)
