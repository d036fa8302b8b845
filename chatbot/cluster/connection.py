"""Connecting to Ray: a local instance or a running cluster, with one sentence when Ray is missing.

Ray is imported here, inside functions only: `blip2-chat --help` and every run without `--ray` never load it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from chatbot.errors import OptionError, UserError
from chatbot.untrusted import visible

LOCAL = "local"  # `--ray` without an address: a Ray instance on this machine
INSTALL_HINT = "Install it with: pip install 'blip2-chat[cluster]' (in a source checkout: pip install -e '.[cluster]')"
DECODE_CPUS = 0.5  # reading and decoding a batch: light work, so it can share a core with a CPU model actor


MAX_WORKERS = 1024  # each holds a whole model: more than a cluster of this size would use is a typo
MAX_GPUS_PER_WORKER = 16  # more than one machine holds; a BLIP-2 model fits on one GPU


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide a Ray run is (`--ray [ADDRESS]`, `--workers`, `--gpus-per-worker`)."""

    address: str = LOCAL  # LOCAL, or a cluster's address (ray://host:10001, host:6379, auto)
    workers: int = 1  # model-holding actors, each with its own copy of the model
    gpus_per_worker: float = 0.0  # GPUs each actor holds; 0: the model runs on CPU cores

    def check(self) -> None:
        """Refuse values Ray cannot use, naming the flag."""
        if not 1 <= self.workers <= MAX_WORKERS:
            raise OptionError(f"--workers must be from 1 to {MAX_WORKERS} (got {self.workers}).", "Try 1 per GPU.")
        if self.address not in (LOCAL, "auto") and ":" not in self.address:
            raise OptionError(f"--ray takes a cluster address such as ray://head:10001 "
                              f"(got '{visible(self.address)}').",
                              "Put --ray after the paths, or write --ray=ADDRESS.")
        if not 0 <= self.gpus_per_worker <= MAX_GPUS_PER_WORKER:  # nan too: no comparison with it is true
            raise OptionError(f"--gpus-per-worker must be from 0 to {MAX_GPUS_PER_WORKER} "
                              f"(got {self.gpus_per_worker}).", "Use 1 for one GPU per worker, or 0 for CPU.")


def import_ray() -> ModuleType:
    """The `ray` module with Ray Data, or one sentence saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra brings it; plain `pip install ray` does not
    except ImportError:
        raise UserError("--ray needs Ray Data, which is not installed.", INSTALL_HINT) from None
    return ray


def check_gpus(ray: ModuleType, options: ClusterOptions) -> None:
    """Refuse, before anything is scheduled, workers that need more GPUs than the cluster has: Ray would wait
    for them forever (it only warns that the job may hang)."""
    needed = options.gpus_per_worker * options.workers
    if not needed:
        return
    has = float(ray.cluster_resources().get("GPU", 0.0))
    if has < needed:
        workers = f"{options.workers} worker{'s' if options.workers != 1 else ''}"
        verb, gpus = "needs" if options.workers == 1 else "need", f"GPU{'s' if needed != 1 else ''}"
        where = ("the local Ray instance" if options.address == LOCAL
                 else f"the Ray cluster at {visible(options.address)}")
        raise UserError(f"{workers} with --gpus-per-worker {options.gpus_per_worker:g} {verb} {needed:g} {gpus}, "
                        f"and {where} has {has:g}.",
                        "Use --gpus-per-worker 0 to run on CPU cores, fewer --workers, or a cluster with GPUs.")


@contextmanager
def connected(options: ClusterOptions) -> Iterator[ModuleType]:
    """Ray, initialised for this run: reuses a running connection, else starts or joins one and ends it after.

    Results keep the input order (`preserve_order`), so the driver writes rows in the order of a one-machine run.
    """
    options.check()
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        address = None if options.address == LOCAL else options.address
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = "a local Ray instance" if address is None else f"the Ray cluster at {visible(address)}"
            raise UserError(f"Could not start or reach {where}: {visible(str(error).splitlines()[0])}.",
                            "Check the address (`ray status` on the head node prints it).") from None
        started = True
    try:
        check_gpus(ray, options)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # our own progress line says how far it is
        context.print_on_execution_start = False
        yield ray
    finally:
        if started:
            ray.shutdown()
