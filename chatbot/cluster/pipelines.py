"""The two Ray Data pipelines: paths -> (read, hash, decode as tasks) -> (the model, in actors) -> the driver.

Both stream: the driver iterates results while the cluster works, in input order (`preserve_order`, set by
`connection.connected`), and nothing but results comes back (no pixels). Batches of the model stage are
`batch_size` rows (a row that failed to decode rides along without pixels). Ray retries a batch whose
actor died (Ray Data's actor pool: `max_restarts=-1`, `max_task_retries=-1`); a retried batch's output
replaces the lost one, and the driver reads each row once, keyed by path, so nothing is written twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from chatbot.cluster.actors import CaptionActor, EmbeddingActor, FaultPlan
from chatbot.cluster.connection import DECODE_CPUS, ClusterOptions
from chatbot.cluster.decoding import decode_batch
from chatbot.core.settings import Settings

_PASSED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # how the driver asked models to be found


@dataclass(frozen=True)
class Result:
    """One file's outcome from the cluster."""

    path: str
    sha256: str  # "" when the file could not be read
    error: str  # the sentence a one-machine run would give, or ""
    caption: str = ""  # describe: the model's raw answer (the driver makes it alt text)
    embedding: Any = None  # index: float32 [queries, dim]


def caption_results(ray: ModuleType, paths: list[str], *, settings: Settings, prompt: str, batch_size: int,
                    cluster: ClusterOptions) -> Iterator[Result]:
    """The raw answer (or the error) for each path, in the order of `paths`."""
    model_stage = dict(fn_constructor_kwargs={"settings": settings, "prompt": prompt,
                                              "fault": FaultPlan.from_environment()})
    for batch in _run(ray, paths, CaptionActor, model_stage, batch_size, cluster):
        for path, sha, error, caption in zip(batch["path"], batch["sha256"], batch["error"], batch["caption"],
                                             strict=True):
            yield Result(str(path), str(sha), str(error), caption=str(caption))


def embedding_results(ray: ModuleType, paths: list[str], *, model: str, settings: Settings, batch_size: int,
                      cluster: ClusterOptions) -> Iterator[Result]:
    """The image embedding (or the error) for each path, in the order of `paths`."""
    model_stage = dict(fn_constructor_kwargs={"model": model, "settings": settings,
                                              "fault": FaultPlan.from_environment()})
    for batch in _run(ray, paths, EmbeddingActor, model_stage, batch_size, cluster):
        for path, sha, error, embedding in zip(batch["path"], batch["sha256"], batch["error"], batch["embedding"],
                                               strict=True):
            yield Result(str(path), str(sha), str(error), embedding=embedding)


def _run(ray: ModuleType, paths: list[str], actor: type, model_stage: dict[str, Any], batch_size: int,
         cluster: ClusterOptions) -> Iterator[dict[str, Any]]:
    if not paths:
        return
    environment = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
    dataset = ray.data.from_items([{"path": path} for path in paths],
                                  override_num_blocks=max(1, min(len(paths) // batch_size, 1000)))
    dataset = dataset.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=DECODE_CPUS)
    dataset = dataset.map_batches(
        actor, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cluster.workers),
        num_gpus=cluster.gpus_per_worker or None, num_cpus=_actor_cpus(ray, cluster),
        runtime_env={"env_vars": environment} if environment else None, **model_stage,
    )  # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1, max_task_retries=-1)
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def _actor_cpus(ray: ModuleType, cluster: ClusterOptions) -> float | None:
    """CPU actors take a core each, but leave room for the decoding tasks (all cores taken would deadlock)."""
    if cluster.gpus_per_worker:
        return None
    cores = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.1, min(1.0, (cores - DECODE_CPUS) / cluster.workers))
