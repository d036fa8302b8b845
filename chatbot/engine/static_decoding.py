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
  shares with the last (`rewind`), so KV-prefix reuse works as before.
- FlanT5: a self-attention cache for the answer and a cross-attention cache of the encoder's 512
  positions. The encoder's output is padded to 512 and the padding masked out, so one graph serves
  every prompt length.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import EncoderDecoderCache, StaticCache
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

GRAPHS_ENV = "BLIP2_CHAT_CUDA_GRAPHS"  # "0" decodes with plain `generate` on GPUs too
T5_ANSWER_POSITIONS = 512  # decoder positions FlanT5's static cache holds: answers up to 511 tokens
WARMUP_STEPS = 3  # eager steps before capture: allocator, cuBLAS workspaces and autotuning settle


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
        self.graph: Any = None  # torch.cuda.CUDAGraph once captured
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

    def step(self) -> None:
        """Feed `self.token`; the next token's logits land in `self.logits` (a replay once captured)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._eager_step()
        self.length += 1

    def capture(self) -> None:
        """Record the step as a CUDA graph (after a few eager warm-up steps); the cache is rewound after."""
        self._prepare_capture()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._eager_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._eager_step()
        torch.cuda.synchronize(self.device)
        self.graph = graph
        self.reset()

    def _prepare_capture(self) -> None:
        """Put the cache in a state a step can run from (the warm-up steps write into it)."""
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    # -- the decoding loop (generate's `custom_generate`) ---------------------------------------

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
        outputs = model._prefill(input_ids, generation_config, model_kwargs)
        self.length = int(input_ids.shape[1])  # OPT: the whole prompt is cached now; FlanT5: the start token
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        del outputs
        ahead = self.graph is not None  # overlap only where the device runs on its own
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


class DecoderOnlyDecoding(StaticDecoding):
    """OPT: one static cache of the model's full context, rewound to the prefix the next turn reuses."""

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device) -> None:
        config = language_model.config
        super().__init__(language_model, dtype, device, int(config.max_position_embeddings))
        self.cache = StaticCache(config=config, max_cache_len=self.max_positions)
        heads = config.num_attention_heads
        self.cache.early_initialization(1, heads, config.hidden_size // heads, dtype, device)
        self.layers = list(self.cache.layers)
        # All ones: the causal mask comes from the cache's own position counter; passing a mask keeps
        # OPT from building one of a length read off the device (a host sync a graph cannot hold).
        self.mask = torch.ones((1, self.max_positions), dtype=torch.long, device=device)

    def _forward(self) -> Any:
        position = self.layers[0].cumulative_length.view(1, 1)  # where this token goes: the cache's length
        return self.model(input_ids=self.token, attention_mask=self.mask, position_ids=position, cache=self.cache,
                          use_cache=True, logits_to_keep=1)

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
