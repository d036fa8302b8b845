"""The driver's side of a Ray run: the cluster's results, offered the way one machine's code reads files.

`describe` and the index's `update_index` already decide everything (what is skipped, which copies reuse
an answer, which rows fail, the order rows are written in). These adapters let them run unchanged on
results that arrive in input order from the pipelines: `load(path)` hands over the worker's outcome for
that path (its pixels stayed on the worker), `answer_batch` and `embed` hand over the model's output.
Each result is taken once, keyed by path, so a batch Ray retried cannot give a row twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from chatbot.cluster.pipelines import Result
from chatbot.cluster.remote_files import sha256_any
from chatbot.errors import ImageError
from chatbot.images import LoadedImage

_NO_PIXELS = Image.new("RGB", (1, 1))  # what a result carries instead of the picture, which stayed on the worker


class _InOrder:
    """Results taken by path from a stream in the same order; a path must come when asked for."""

    def __init__(self, results: Iterator[Result]) -> None:
        self._results = results

    def take(self, path: str) -> Result:
        for result in self._results:
            if result.path == path:
                return result
            raise RuntimeError(f"the cluster answered for {result.path!r} where {path!r} was due")
        raise RuntimeError(f"the cluster gave no result for {path!r}")


def _as_loaded(result: Result) -> LoadedImage:
    if result.error:
        raise ImageError(result.error)  # no hint: the sentence already holds the worker's message and hint
    return LoadedImage(_NO_PIXELS, result.sha256, result.path, (0, 0))


class RemoteCaptions:
    """For `describe(...)`: `load`, `sha256_of` and `answer_batch` backed by `caption_results`."""

    def __init__(self, results: Iterator[Result]) -> None:
        self._results = _InOrder(results)
        self._captions: dict[str, str] = {}
        self._cut_short: set[str] = set()  # paths whose answer ran to max_new_tokens, as the workers counted
        self._hashes: dict[str, str] = {}
        self.last_cut_short: set[str] = set()  # the sha256 of each answer of the last batch that was cut off

    def load(self, path: str) -> LoadedImage:
        result = self._results.take(path)
        self._hashes[path] = result.sha256  # an error row's sha256, as the worker read it
        if not result.error:
            self._captions[path] = result.caption
            if result.cut_short:
                self._cut_short.add(path)
        return _as_loaded(result)

    def sha256_of(self, path: str) -> str:
        """A failed file's hash from its worker; otherwise (a --resume check) the file read here."""
        return self._hashes.pop(path) if path in self._hashes else sha256_any(path)

    def answer_batch(self, images: Sequence[LoadedImage], prompt: str | Sequence[str], options: object) -> list[str]:
        self.last_cut_short = {image.sha256 for image in images if image.source in self._cut_short}
        self._cut_short.difference_update(image.source for image in images)
        return [self._captions.pop(image.source) for image in images]


class RemoteEmbeddings:
    """For `update_index(...)`: a `FileReader` and an `embed` backed by `embedding_results`.

    `start` is given the files to look at and starts the pipeline; results are kept only for the batch in hand.
    """

    def __init__(self, run: Any, batch_size: int) -> None:
        self._run = run  # paths -> Iterator[Result]
        self._batch_size = batch_size
        self._results: _InOrder | None = None
        self._recent: OrderedDict[str, Result] = OrderedDict()

    def start(self, paths: list[str]) -> None:
        self._results = _InOrder(self._run(paths))

    def sha256(self, path: str) -> str:
        if self._results is None:
            raise RuntimeError("start() was not called")
        result = self._results.take(path)
        self._recent[path] = result
        while len(self._recent) > self._batch_size:  # update_index reads one batch at a time
            self._recent.popitem(last=False)
        return result.sha256

    def load(self, path: str) -> LoadedImage:
        return _as_loaded(self._recent[path])

    def embed(self, images: list[LoadedImage]) -> np.ndarray:
        return np.stack([self._recent[image.source].embedding for image in images]).astype(np.float32)
