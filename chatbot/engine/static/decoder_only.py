"""OPT's static decoding: one cache of the full context, decode graphs per attention window, prefill graphs
per bucket of new tokens."""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

import torch
from transformers import StaticCache
from transformers.cache_utils import Cache, StaticLayer

from chatbot.engine.static.base import StaticDecoding

WINDOWS = (256, 512, 1024, 2048)  # attention spans the decode graphs are captured for (capped at the context)
# A compiled step compiles once per window, and a window that is the whole cache once more (Dynamo
# specializes a slice to the full length): two windows, two compiles. Attending over 512 positions
# where a short chat needs 256 reads 84 MB more a token at OPT-2.7B, about 0.02 ms on an H200.
COMPILED_WINDOWS = (512, 2048)
PREFILL_BUCKETS = (16, 32, 64, 128)  # new-token counts the prefill graphs are captured for (padded up to)


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
        self.windows = tuple(sorted({min(window, self.max_positions) for window in WINDOWS}))
        self.compiled_windows = tuple(sorted({min(window, self.max_positions) for window in COMPILED_WINDOWS}))
        # (bucket, window) pairs of the prefill graphs, smallest first: a window holds what the bucket writes from 0
        self.prefill_shapes = tuple((b, w) for b in PREFILL_BUCKETS for w in self.windows if b <= w)
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

    # -- the prefill, in buckets of new tokens ------------------------------------------------------

    def capture(self) -> None:
        """The decode graphs, then a prefill graph per bucket of new tokens and attention window."""
        super().capture()
        try:
            for bucket, window in self.prefill_shapes:
                self.prefill_graphs[(bucket, window)] = self._record(partial(self._eager_prefill, bucket), window,
                                                                     before=self.reset)
        except Exception as error:  # noqa: BLE001 - the prefill then runs eagerly; decoding keeps its graphs
            self.prefill_graphs.clear()
            self.prefill_note = f"prefill eager ({type(error).__name__}: {str(error)[:100]})"
            torch.cuda.synchronize(self.device)
        self.reset()

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
        shape = next(((b, w) for b, w in self.prefill_shapes if b >= new and w >= start + b), None)
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
