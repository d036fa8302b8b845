"""How tokens travel from `generate` (on the model thread) to the reader, and what of them reaches a terminal."""

from __future__ import annotations

import queue
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from chatbot.engine.base import CancelToken, GenerationStats

END = object()
# C0/C1 control characters (ESC among them) never reach the terminal from model output.
CONTROL: dict[int, str | None] = {c: None for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}
CONTROL.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})


class TokenQueue(BaseStreamer):
    """Receives new token ids from `generate` (in its thread) and queues them for the reader."""

    def __init__(self, stats: GenerationStats) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.stats = stats  # new_tokens counts up live, so a canceller can see how far generation got
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt itself
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.stats.new_tokens += 1
            self.queue.put(token)

    def end(self) -> None:
        pass  # the worker signals the end itself, also on errors


class StopWhenCancelled(StoppingCriteria):
    """Tells `generate` (and our decoding loop) to stop once the token is cancelled: within one token."""

    def __init__(self, cancel: CancelToken) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancel.cancelled, dtype=torch.bool, device=input_ids.device)


def shown(text: str) -> str:
    """Decoded model text as it may reach a terminal: control characters dropped, line breaks as spaces."""
    return text.translate(CONTROL).lstrip()
