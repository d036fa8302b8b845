"""The decode step over a static KV cache, its CUDA graphs, and the decoding loop `generate` hands over to.

See chatbot/engine/static/__init__.py for why; the model-family parts are decoder_only.py (OPT) and
encoder_decoder.py (FlanT5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

WARMUP_STEPS = 3  # eager steps before capture: allocator, cuBLAS workspaces and autotuning settle


class StaticDecoding:
    """One decode step over a static cache, replayed from a CUDA graph where the model is on a GPU.

    Subclasses build the cache and say how one step calls the model; this class captures the step
    and runs the decoding loop that `generate` calls.
    """

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device, max_positions: int) -> None:
        self.model = language_model
        self.device = device
        self.max_positions = max_positions  # positions the (self-attention) cache holds
        self.windows: tuple[int, ...] = (max_positions,)  # attention windows, ascending (a subclass may split)
        self.compiled_windows: tuple[int, ...] | None = None  # fewer windows for a compiled step (a subclass may set)
        self.token = torch.zeros((1, 1), dtype=torch.long, device=device)  # the step's input
        vocab = language_model.get_output_embeddings().weight.shape[0]
        self.logits = torch.zeros((1, vocab), dtype=torch.float32, device=device)  # the step's output
        self.length = 0  # positions of the self-attention cache written so far (host-side count)
        self.graphs: dict[int, Any] = {}  # attention window -> torch.cuda.CUDAGraph, once captured
        self.cache: Any = None
        self._compiled_call: Callable[[], Any] | None = None  # `_forward` compiled, once `compile` succeeded
        on_gpu = device.type == "cuda"
        self._host = torch.zeros(2, dtype=torch.long, pin_memory=on_gpu)  # this token and "done", read back
        self._copied = torch.cuda.Event() if on_gpu else None  # recorded once they are on their way

    # -- the step -----------------------------------------------------------------------------

    def _forward(self) -> Any:
        """The model call of one decode step: `self.token` at position `self.length`."""
        raise NotImplementedError

    def _eager_step(self) -> None:
        call = self._compiled_call or self._forward
        self.logits.copy_(call().logits[:, -1])  # float32, as generate's copy of the last logits

    @property
    def captured(self) -> bool:
        return bool(self.graphs)

    @property
    def compiled(self) -> bool:
        return self._compiled_call is not None

    def compile(self) -> None:
        """Compile the step's model call with TorchInductor, paying for it now: one step per attention window.

        Inductor fuses the step's small element-wise kernels (layer norms with their residual adds,
        biases, activations, masks, cache writes) into a few generated ones; on a GPU the CUDA graphs
        then capture the compiled step. The warm-up runs in the grad mode of a turn (inference mode,
        as the engine's turns run), so the turns find the compiled code ready and never recompile.
        Each window costs a compile of its own, so a compiled step may attend over fewer, wider windows
        (`compiled_windows`). Raises what compiling raises (no compiler, an operation it cannot trace):
        the caller falls back.
        """
        uncompiled_windows = self.windows
        self.windows = self.compiled_windows or self.windows
        self._compiled_call = torch.compile(self._forward, fullgraph=False)
        with torch.inference_mode(), torch.no_grad():
            try:
                for window in self.windows:
                    self._prepare_capture()
                    with self._attending(window):
                        self._eager_step()
            except BaseException:
                self._compiled_call, self.windows = None, uncompiled_windows
                raise
            finally:
                self.reset()

    def step(self) -> None:
        """Feed `self.token`; the next token's logits land in `self.logits` (a replay once captured)."""
        window = next((w for w in self.windows if w > self.length), 0)  # the token goes to position `length`
        if window in self.graphs:
            self.graphs[window].replay()
        else:  # the same step, run eagerly over the same window (CPUs, and the tests of this path there)
            with self._attending(window):
                self._eager_step()
        self.length += 1

    def capture(self) -> None:
        """Record the step as CUDA graphs, one per window (after eager warm-up steps); the cache is rewound after."""
        for window in self.windows:
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
