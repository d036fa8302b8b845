"""A scripted engine for UI tests: answers what it is told to, word by word, without a model.

Front ends are tested against it the way simonw/llm tests against its `MockModel`: enqueue
answers, drive the UI, read the screen. It honours `CancelToken` between chunks, fills
`last_stats` with deterministic numbers, and can be told to fail the next answer (e.g. with
`OutOfMemoryError`) so error paths are testable. It imports no torch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatbot.engine.base import CancelToken, Engine, GenerationOptions, GenerationStats, ModelInfo

if TYPE_CHECKING:
    from chatbot.images import LoadedImage

DEFAULT_ANSWER = "I cannot tell."


@dataclass
class _Failure:
    error: BaseException
    after_chunks: int  # chunks streamed before the error is raised


class ScriptedEngine(Engine):
    """Streams queued answers one word at a time; records every prompt it was given.

    Args:
        answers: answers to give, in order; when they run out it says DEFAULT_ANSWER.
        delay: seconds to wait before each chunk (real time, so tests can cancel mid-answer).
        speed: tokens per second reported in `last_stats` (simulated, so snapshots repeat exactly).
        model_id: what `info.model_id` says.
    """

    def __init__(
        self, *answers: str, delay: float = 0.0, speed: float = 25.0, model_id: str = "scripted-opt",
        device: str = "cpu", precision: str = "float32",
    ) -> None:
        self.info = ModelInfo(
            model_id=model_id, family="opt", device=device, precision=precision,
            context_tokens=2048, image_tokens=32, is_encoder_decoder=False,
        )
        self.delay = delay
        self.speed = speed
        self.last_stats = GenerationStats()
        self.prompts: list[str] = []  # every prompt streamed, oldest first (tests check the folding)
        self.memory_bytes: int | None = None  # what device_memory_bytes() reports
        self._answers: deque[str] = deque(answers)
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()  # tests enqueue from the test thread while a worker streams

    def enqueue(self, *answers: str) -> None:
        """Give these answers next, in order."""
        with self._lock:
            self._answers.extend(answers)

    def fail_next(self, error: BaseException, after_chunks: int = 0) -> None:
        """Raise `error` during the next answer, after `after_chunks` chunks of it have streamed.

        With `after_chunks=0` nothing streams and the queued answers stay for the questions after.
        """
        with self._lock:
            self._failures.append(_Failure(error, after_chunks))

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2  # words, plus BOS and a separator, like a real tokenizer's specials

    def device_memory_bytes(self) -> int | None:
        return self.memory_bytes

    def _wait(self, cancel: CancelToken) -> None:
        """Sleep `delay` seconds before a chunk, waking early when cancelled (as a real engine stops within a token)."""
        end = time.monotonic() + self.delay
        while not cancel.cancelled and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.01))

    def stream(
        self,
        image: LoadedImage,
        prompt: str,
        options: GenerationOptions,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]:
        cancel = cancel or CancelToken()
        stats = self.last_stats = GenerationStats(prompt_tokens=self.count_tokens(prompt) + self.info.image_tokens)
        if cancel.cancelled:
            stats.cancelled = True
            return
        with self._lock:
            self.prompts.append(prompt)
            failure = self._failures.popleft() if self._failures else None
            # A failure before the first chunk leaves the queued answer for the next question.
            if failure is not None and failure.after_chunks == 0:
                raise failure.error
            answer = self._answers.popleft() if self._answers else DEFAULT_ANSWER
        words = answer.split()[: options.max_new_tokens]  # one word stands for one token
        for index, word in enumerate(words):
            if failure is not None and index == failure.after_chunks:
                raise failure.error
            self._wait(cancel)
            if cancel.cancelled:
                break
            stats.new_tokens += 1
            yield word if index == 0 else " " + word
        else:
            if failure is not None:  # asked to fail after more chunks than the answer has
                raise failure.error
        stats.cancelled = cancel.cancelled
        stats.cut_short = not cancel.cancelled and len(answer.split()) > options.max_new_tokens
        stats.seconds_to_first_token = 1 / self.speed if stats.new_tokens else 0.0
        stats.seconds_total = stats.new_tokens / self.speed
