"""Connecting to Ray: a local instance or a running cluster, with one sentence when Ray is missing or unreachable.

Ray is imported here, inside functions only: `blip2-chat --help` and every run without `--ray` never load it.
While connected, Ray is kept quiet (chatbot/cluster/quiet.py): what goes wrong is said in our own sentences.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from chatbot.cluster.quiet import quiet_init, quiet_ray
from chatbot.errors import OptionError, UserError
from chatbot.untrusted import visible

LOCAL = "local"  # `--ray` without an address: a Ray instance on this machine
INSTALL_HINT = "Install it with: pip install 'blip2-chat[cluster]' (in a source checkout: pip install -e '.[cluster]')"
DECODE_CPUS = 0.5  # reading and decoding a batch: light work, so it can share a core with a CPU model actor
CONNECT_SECONDS = 5.0  # a cluster address that does not answer a plain TCP connection in this time is down
ADDRESS_HINT = "Check the address (`ray status` on the head node prints it)."
CLIENT_HINT = ("Run blip2-chat on a node of the cluster with --ray auto (ray attach, kubectl exec, or ray job submit "
               "-- blip2-chat ...), or give the head's address (head:6379) from a machine the cluster can reach.")
TOKEN_HINT = ("Copy the cluster's token (`ray get-auth-token` on the head node prints it) to ~/.ray/auth_token on "
              "this machine, or set RAY_AUTH_TOKEN.")


MAX_WORKERS = 1024  # each holds a whole model: more than a cluster of this size would use is a typo
MAX_GPUS_PER_WORKER = 16  # more than one machine holds; a BLIP-2 model fits on one GPU


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide a Ray run is (`--ray [ADDRESS]`, `--workers`, `--gpus-per-worker`)."""

    address: str = LOCAL  # LOCAL, or a cluster's address (host:6379, auto)
    workers: int = 1  # model-holding actors, each with its own copy of the model
    gpus_per_worker: float = 0.0  # GPUs each actor holds; 0: the model runs on CPU cores

    def check(self) -> None:
        """Refuse values Ray cannot use, naming the flag."""
        if not 1 <= self.workers <= MAX_WORKERS:
            raise OptionError(f"--workers must be from 1 to {MAX_WORKERS} (got {self.workers}).", "Try 1 per GPU.")
        if self.address.lower().startswith("ray://"):  # Ray Data needs a driver that is part of the cluster
            raise OptionError(f"--ray {visible(self.address)} would connect through Ray Client, with which Ray Data "
                              "does not run.", CLIENT_HINT)
        if self.address not in (LOCAL, "auto") and ":" not in self.address:
            raise OptionError(f"--ray takes a cluster address such as head:6379, or auto "
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


def host_and_port(address: str) -> tuple[str, int] | None:
    """The TCP host and port of a `host:port` address (None: `auto`, or no port written)."""
    if "://" in address or "/" in address:
        return None
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    if not colon or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def check_reachable(address: str, where: str = "", hint: str = ADDRESS_HINT) -> None:
    """Refuse a cluster address where nothing answers, in seconds: Ray itself would wait for it forever.

    `where`: how the sentence names it (default: 'the Ray cluster at ADDRESS').
    """
    target = host_and_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_SECONDS).close()
    except OSError as error:
        host, port = target
        if isinstance(error, socket.gaierror):
            reason = f"the host name {visible(host)} is not known here"
        elif isinstance(error, ConnectionRefusedError):
            reason = f"nothing accepts connections at port {port} of {visible(host)}"
        elif isinstance(error, TimeoutError):
            reason = f"{visible(host)} did not answer within {CONNECT_SECONDS:g} seconds"
        else:
            reason = visible(error.strerror or str(error)).rstrip(".")
        raise UserError(f"Could not start or reach {where or f'the Ray cluster at {visible(address)}'}: {reason}.",
                        hint) from None


def check_address_ray_uses(address: str | None) -> None:
    """`check_reachable` for the address `ray.init` will connect to: the one given, else (`--ray`, `--ray auto`)
    RAY_ADDRESS, else the cluster `ray start` recorded on this machine, which outlives a head that was killed."""
    if address is not None and address != "auto":
        check_reachable(address)
        return
    from_environment = os.environ.get("RAY_ADDRESS", "").strip()
    if from_environment.lower().startswith("ray://"):
        raise UserError(f"RAY_ADDRESS is {visible(from_environment)}, a Ray Client address, with which Ray Data "
                        "does not run.", "Unset it, or set it to the head's address (head:6379).")
    if from_environment:
        check_reachable(from_environment, f"the Ray cluster at {visible(from_environment)} (RAY_ADDRESS)",
                        "Check RAY_ADDRESS, or unset it.")
        return
    try:
        from ray._private.utils import read_ray_address  # where `ray start` records its head (Ray 2.60)

        recorded = read_ray_address()
    except Exception:  # noqa: BLE001 - another Ray layout: Ray finds it itself
        return
    if recorded:
        check_reachable(recorded, f"the Ray instance recorded as running on this machine ({visible(recorded)})",
                        "It stopped without `ray stop`: run `ray stop` to clear the record, then try again.")


_ROOT_CAUSE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


def failure_words(error: BaseException) -> tuple[str, str]:
    """What went wrong when Ray could not start or connect, without its traceback: (reason, hint).

    Ray wraps the real cause (a refused authentication token, a version mismatch) in a generic "Failed to
    connect" whose `__cause__` holds a traceback as text; the last `SomeError: message` line of it is the reason.
    """
    texts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    everything = "\n".join(texts)
    if "AuthenticationError" in everything or "InvalidAuthToken" in everything:
        return "it refused this machine's authentication token (missing or incorrect)", TOKEN_HINT
    for text in reversed(texts):  # the innermost first
        causes = [match.group(2) for line in text.splitlines() if (match := _ROOT_CAUSE.match(line.strip()))]
        if causes:
            return _first_sentence(causes[-1]), ADDRESS_HINT
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return _first_sentence(lines[0] if lines else type(error).__name__), ADDRESS_HINT


def _first_sentence(text: str, limit: int = 300) -> str:
    """The text up to its first full stop (Ray's messages run on over several sentences), without that stop."""
    text = visible(text.strip())
    cut = re.search(r"\.(\s|$)", text)
    if cut is not None:
        text = text[:cut.start()]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " [...]"


@contextmanager
def connected(options: ClusterOptions) -> Iterator[ModuleType]:
    """Ray, initialised for this run: reuses a running connection, else starts or joins one and ends it after.

    Results keep the input order (`preserve_order`), so the driver writes rows in the order of a one-machine run.
    """
    options.check()
    ray = import_ray()
    with quiet_ray():
        started = False
        if not ray.is_initialized():
            address = None if options.address == LOCAL else options.address
            check_address_ray_uses(address)
            try:
                with quiet_init():
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as error:  # noqa: BLE001 - Ray raises many kinds for a cluster it cannot use
                where = "a local Ray instance" if address is None else f"the Ray cluster at {visible(address)}"
                reason, hint = failure_words(error)
                raise UserError(f"Could not start or reach {where}: {reason}.", hint) from None
            started = True
        try:
            check_gpus(ray, options)
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False  # our own progress line says how far it is
            context.print_on_execution_start = False
            context.execution_options.verbose_progress = False
            yield ray
        finally:
            if started:
                ray.shutdown()
