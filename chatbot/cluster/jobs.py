"""What the front ends call: a Ray run's results for `describe` and for `index`, as context managers.

Ray is started (or joined) only when there is something to do, and shut down at the end if this run started it.
The model's name or folder is checked here first (chatbot/cluster/model_check.py), so a typo fails in a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from chatbot.cluster.connection import LOCAL, ClusterOptions, connected, import_ray
from chatbot.cluster.model_check import check_model_here
from chatbot.cluster.pipelines import Notice, Result, caption_results, embedding_results
from chatbot.cluster.remote_files import list_storage_images
from chatbot.cluster.results import RemoteCaptions, RemoteEmbeddings
from chatbot.core.settings import Settings

__all__ = ["ClusterOptions", "list_storage_images", "remote_captions", "remote_embeddings"]


@contextmanager
def remote_captions(settings: Settings, paths: list[str], *, prompt: str, batch_size: int,
                    cluster: ClusterOptions, notice: Notice | None = None) -> Iterator[RemoteCaptions]:
    """Captions of `paths` (in this order) computed on Ray, for `describe(..., load=, sha256_of=)`.

    The first batch is awaited before this yields, so a run whose workers cannot start (a model that does not
    load) fails before the caller opens its output, as one machine fails while loading.

    Args:
        settings: the chat checkpoint and its precision and decoding options, as on one machine.
        paths: the images describe will read, in the order it reads them (skipped ones left out).
        prompt: the text each caption continues.
        batch_size: rows per model call.
        cluster: where and how wide.
        notice: says a sentence during the run (a worker that stopped); None: on stderr.
    """
    import_ray()  # says how to install it before anything else happens
    with ExitStack() as stack:
        results: Iterator[Result] = iter(())
        if paths:
            check_model_here(settings.model, "chat", local=cluster.address == LOCAL)
            ray = stack.enter_context(connected(cluster))
            running = caption_results(ray, paths, settings=settings, prompt=prompt, batch_size=batch_size,
                                      cluster=cluster, notice=notice)
            stack.callback(_close, running)  # stop the pipeline before Ray is shut down
            first = next(running, None)  # the workers start, load the model and answer the first batch
            results = itertools.chain([first] if first is not None else [], running)
        yield RemoteCaptions(results)


@contextmanager
def remote_embeddings(settings: Settings, model: str, *, batch_size: int, cluster: ClusterOptions,
                      notice: Notice | None = None,
                      on_start: Callable[[], None] | None = None) -> Iterator[RemoteEmbeddings]:
    """A reader and embedder for `update_index(..., embed=reader.embed, reader=reader)` that run on Ray.

    Ray starts only when the index has new or changed files to read; `on_start` is called just before
    (the model named is checked first).
    """
    import_ray()
    with ExitStack() as stack:

        def run(paths: list[str]) -> Iterator[Result]:
            if not paths:
                return iter(())
            check_model_here(model, "retrieval", local=cluster.address == LOCAL)
            if on_start is not None:
                on_start()
            ray = stack.enter_context(connected(cluster))
            results = embedding_results(ray, paths, model=model, settings=settings, batch_size=batch_size,
                                        cluster=cluster, notice=notice)
            stack.callback(_close, results)  # stop the pipeline before Ray is shut down
            return results

        yield RemoteEmbeddings(run, batch_size)


def _close(results: Iterator[Result]) -> None:
    close = getattr(results, "close", None)
    if close is not None:
        close()
