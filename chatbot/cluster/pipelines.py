"""The two Ray Data pipelines: paths -> (read, hash, decode as tasks) -> (the model, in actors) -> the driver.

Both stream: the driver iterates results while the cluster works, in input order (`preserve_order`, set by
`connection.connected`), and nothing but results comes back (no pixels). Batches of the model stage are
`batch_size` rows, or fewer where that gives every worker a batch (`plan`; a row that failed to decode rides
along without pixels). Ray retries a batch whose actor died (Ray Data's actor pool: `max_restarts=-1`,
`max_task_retries=-1`); a retried batch's output replaces the lost one, and the driver reads each row once,
keyed by path, so nothing is written twice. An exception in a worker (a model that cannot load, a bug) ends
the run with one sentence: the worker's own UserError as it is, anything else as "A Ray worker failed: ...".
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import chatbot.errors
from chatbot.cluster.actors import CaptionActor, EmbeddingActor, FaultPlan
from chatbot.cluster.connection import DECODE_CPUS, ClusterOptions
from chatbot.cluster.decoding import decode_batch
from chatbot.cluster.quiet import worker_stopped
from chatbot.core.settings import Settings
from chatbot.errors import UserError
from chatbot.untrusted import visible

_PASSED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # how the driver asked models to be found
MAX_BLOCKS = 1000  # Ray Data's blocks of paths: enough to spread any run, few enough to schedule cheaply
WORKER_STOPPED = "A Ray worker stopped; its batch was given to another."
LOGS = "Ray's logs are in /tmp/ray/session_latest/logs on each node"

Notice = Callable[[str], None]


@dataclass(frozen=True)
class Result:
    """One file's outcome from the cluster."""

    path: str
    sha256: str  # "" when the file could not be read
    error: str  # the sentence a one-machine run would give, or ""
    caption: str = ""  # describe: the model's raw answer (the driver makes it alt text)
    cut_short: bool = False  # describe: the answer ran to max_new_tokens before the model ended it
    embedding: Any = None  # index: float32 [queries, dim]


@dataclass(frozen=True)
class Plan:
    """How `rows` paths are cut up: `blocks` pieces of input, model batches of `batch` rows."""

    blocks: int
    batch: int


def plan(rows: int, batch_size: int, workers: int) -> Plan:
    """Batches of `batch_size`, smaller only where that gives each worker one (12 images at 8 for 6 workers: 6
    batches of 2, not one batch of 8 and 5 idle workers); at least one block per batch, so each can go to its own
    worker. Greedy answers do not depend on the batch (tests/test_describe.py), and the driver writes the rows in
    its own `--batch-size` order, so the rows are the same."""
    batch = max(1, min(batch_size, math.ceil(rows / max(1, workers))))
    return Plan(blocks=max(1, min(math.ceil(rows / batch), MAX_BLOCKS)), batch=batch)


def caption_results(ray: ModuleType, paths: list[str], *, settings: Settings, prompt: str, batch_size: int,
                    cluster: ClusterOptions, notice: Notice | None = None) -> Iterator[Result]:
    """The raw answer (or the error) for each path, in the order of `paths`."""
    model_stage = dict(fn_constructor_kwargs={"settings": settings, "prompt": prompt,
                                              "fault": FaultPlan.from_environment()})
    again = "The rows written so far are kept; with --out, --resume goes on from them."
    for batch in _run(ray, paths, CaptionActor, model_stage, batch_size, cluster, again, notice):
        for path, sha, error, caption, cut in zip(batch["path"], batch["sha256"], batch["error"], batch["caption"],
                                                  batch["cut_short"], strict=True):
            yield Result(str(path), str(sha), str(error), caption=str(caption), cut_short=bool(cut))


def embedding_results(ray: ModuleType, paths: list[str], *, model: str, settings: Settings, batch_size: int,
                      cluster: ClusterOptions, notice: Notice | None = None) -> Iterator[Result]:
    """The image embedding (or the error) for each path, in the order of `paths`."""
    model_stage = dict(fn_constructor_kwargs={"model": model, "settings": settings,
                                              "fault": FaultPlan.from_environment()})
    again = "Every finished batch is in the index; the same command again goes on."
    for batch in _run(ray, paths, EmbeddingActor, model_stage, batch_size, cluster, again, notice):
        for path, sha, error, embedding in zip(batch["path"], batch["sha256"], batch["error"], batch["embedding"],
                                               strict=True):
            yield Result(str(path), str(sha), str(error), embedding=embedding)


def _run(ray: ModuleType, paths: list[str], actor: type, model_stage: dict[str, Any], batch_size: int,
         cluster: ClusterOptions, again: str, notice: Notice | None) -> Iterator[dict[str, Any]]:
    if not paths:
        return
    environment = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
    cut = plan(len(paths), batch_size, cluster.workers)
    dataset = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=cut.blocks)
    dataset = dataset.map_batches(decode_batch, batch_size=cut.batch, batch_format="numpy", num_cpus=DECODE_CPUS)
    dataset = dataset.map_batches(
        actor, batch_size=cut.batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cluster.workers),
        num_gpus=cluster.gpus_per_worker or None, num_cpus=_actor_cpus(ray, cluster),
        runtime_env={"env_vars": environment} if environment else None, **model_stage,
    )  # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1, max_task_retries=-1)
    said = False
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            if not said and worker_stopped():
                said = True
                _say(notice, WORKER_STOPPED)
            yield batch
    except Exception as error:  # noqa: BLE001 - Ray raises its own kinds, wrapping the worker's exception
        raise worker_error(error, again) from None
    if not said and worker_stopped():
        _say(notice, WORKER_STOPPED)


def _say(notice: Notice | None, sentence: str) -> None:
    if notice is None:
        from chatbot.core.runtime import say

        notice = say
    notice(sentence)


def worker_error(error: BaseException, again: str) -> UserError:
    """One sentence for an exception that came out of a Ray worker: its UserError as it is (a model that could not
    load says so as on one machine), anything else 'A Ray worker failed: ...' with what to do."""
    found = find_user_error(error)
    if found is not None:
        return found
    return UserError(f"A Ray worker failed: {root_cause(error)}.", f"{again} ({LOGS}.)")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything Ray keeps inside it: causes, contexts, `cause`, and exceptions among its args."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "cause", None), *current.args]
        todo += [item for item in inner if isinstance(item, BaseException)]


# A traceback's last line, as Ray keeps a worker's traceback as text: `chatbot.errors.ModelNotFoundError: No ...`
_RAISED = re.compile(r"^(?:([\w.]+)\.)?(\w+): (.+)$")
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def _raised_lines(error: BaseException) -> Iterator[tuple[str, str, str]]:
    """(module, class, message) of every `module.Class: message` line in the text of the error and what it holds."""
    for inner in _chain(error):
        for line in _COLOURS.sub("", str(inner)).splitlines():
            match = _RAISED.match(line.strip())
            if match is not None:
                yield match.group(1) or "", match.group(2), match.group(3)


def find_user_error(error: BaseException) -> UserError | None:
    """The chatbot UserError a worker raised, from the exceptions Ray wraps it in, or from their text when Ray
    kept only a traceback as text."""
    for inner in _chain(error):
        if isinstance(inner, UserError):
            return inner
    for module, name, message in _raised_lines(error):
        kind = getattr(chatbot.errors, name, None) if module == "chatbot.errors" else None
        if isinstance(kind, type) and issubclass(kind, UserError):
            return kind(message)  # its message and hint, as str() gave them
    return None


def _is_ray(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] == "ray" or isinstance(error, StopIteration)


def root_cause(error: BaseException) -> str:
    """What a worker raised, inside Ray's wrappers, as 'FileNotFoundError: [Errno 2] ...' (its first line)."""
    inner = next((inner for inner in _chain(error) if not _is_ray(inner)), None)
    if inner is not None:
        lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
        text = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
    else:
        raised = [f"{name}: {message}" for module, name, message in _raised_lines(error)
                  if module.split(".")[0] != "ray" and name.endswith(("Error", "Exception", "Interrupt", "Exit"))]
        lines = [line.strip() for line in _COLOURS.sub("", str(error)).splitlines() if line.strip()]
        text = raised[0] if raised else lines[0] if lines else type(error).__name__
    text = visible(text).rstrip(".")
    return text if len(text) <= 300 else text[:300].rsplit(" ", 1)[0] + " [...]"


def _actor_cpus(ray: ModuleType, cluster: ClusterOptions) -> float | None:
    """CPU actors take a core each, but leave room for the decoding tasks (all cores taken would deadlock)."""
    if cluster.gpus_per_worker:
        return None
    cores = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.1, min(1.0, (cores - DECODE_CPUS) / cluster.workers))
