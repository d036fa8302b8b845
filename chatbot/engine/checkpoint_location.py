"""Where a checkpoint is: a local folder, the shipped demo model, the local hub cache, or a download.

Offline-first: a folder or a cached copy is used without touching the network; only a hub id missing
from the cache (or the rest of an incomplete cached copy) is downloaded, and only the files a BLIP-2
checkpoint needs (safetensors weights, never pickles nor remote code). A folder or cached copy that
cannot be used is one user error that says how to get a complete one (`checkpoint_files` says what
is wrong with it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatbot.engine.checkpoint_files import FolderProblem, checkpoint_problem, error_summary, processor_files_problem
from chatbot.engine.registry import resolve_alias
from chatbot.errors import ModelNotFoundError, NotACheckpointError
from chatbot.locations import DEMO_MODEL, demo_model_dir

# Files a BLIP-2 checkpoint needs; weights in safetensors only (no pickles, no remote code).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]

Progress = Callable[[str], None]  # told short status sentences while finding and loading, for a front end to show


@dataclass(frozen=True)
class ResolvedModel:
    """Where a checkpoint lives on disk and how we found it."""

    requested: str  # what the user typed
    path: Path  # directory holding config.json, weights and processor files
    hub_id: str | None  # the hub id, when it came from the hub or its cache
    source: str  # "directory", "cache" or "download"


_OFFLINE_HINT = ("to try the app offline: blip2-chat demo, or --model demo with any command, a small model "
                 "trained here")
# Words in a download error that mean the network, not the name: said plainly instead of the library's chain.
_NO_NETWORK = ("ConnectError", "ConnectionError", "Name or service not known", "Temporary failure in name resolution",
               "Network is unreachable", "Connection refused", "nodename nor servname")


def _looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name`; anything rooted, relative or deeper is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_checkpoint_dir(path: Path) -> None:
    """Refuse a folder given by the user that is not a BLIP-2 checkpoint (its processor files come at load time)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise NotACheckpointError(f"The folder {path} {problem.what}.", problem.hint)


def cached_checkpoint(hub_id: str) -> tuple[Path | None, FolderProblem | None]:
    """The hub cache's snapshot of `hub_id` (None: not cached) and what is wrong with it (None: usable).

    Usable means complete: config.json of a BLIP-2 model, the safetensors weights (every shard), the tokenizer
    files and the image processor's settings. This never touches the network.
    """
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any miss in the cache means "not cached"
        partial = getattr(error, "snapshot_path", None)  # IncompleteSnapshotError: the download's listing says so
        if not partial:
            return None, None
        return Path(partial), FolderProblem("misses files that its download listed (an interrupted download?)", "",
                                            missing=True)
    return path, checkpoint_problem(path) or processor_files_problem(path)


def cached_copy_error(hub_id: str, path: Path, problem: FolderProblem, *, fetched: bool = False,
                      reason: str = "") -> NotACheckpointError:
    """The error for a cached copy that cannot be used, with how to fetch it again.

    `fetched`: a download just completed it and it still fails. `reason`: why downloading the rest failed.
    """
    if problem.missing:
        message = f"The cached copy of {hub_id} ({path}) is incomplete: it {problem.what}"
    else:
        message = f"The cached copy of {hub_id} ({path}) {problem.what}"
    message += f", and downloading the rest failed: {reason}." if reason else "."
    if problem.missing and not fetched:
        hint = (f"Fetch it again: run once with network access (HF_HUB_OFFLINE unset), or run "
                f"`hf download {hub_id}`; or pass --model with a local folder ({_OFFLINE_HINT}).")
    else:
        hint = (f"Fetch it again with `hf download {hub_id} --force-download`, or pass --model with a local folder "
                f"({_OFFLINE_HINT}).")
    return NotACheckpointError(message, hint)


def find_locally(requested: str, kind: str = "chat") -> ResolvedModel | str:
    """What `resolve_model` can tell at once, without the network or the cache: the checkpoint folder `requested`
    names (or the demo model), else the hub id it names (an alias resolved) for the cache or a download.

    Raises:
        ModelNotFoundError: a path that leads nowhere, or a name that is neither a folder nor a hub id.
        NotACheckpointError: a file, or a directory that is not a BLIP-2 checkpoint.
    """
    name = requested.strip()
    if name.lower() == DEMO_MODEL and not Path(name).is_dir():  # the shipped demo model (chatbot/demo)
        return ResolvedModel(requested, demo_model_dir(kind), None, "directory")
    local = Path(name).expanduser()
    if local.is_dir():
        _check_checkpoint_dir(local)
        return ResolvedModel(requested, local.resolve(), None, "directory")
    if local.exists():
        raise NotACheckpointError(
            f"{local} is a file, not a checkpoint folder.", "Pass the folder that holds config.json and the weights."
        )
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"No checkpoint folder at {local}.", "Check the path, or pass a hub id such as Salesforce/blip2-opt-2.7b."
        )
    hub_id = resolve_alias(name)
    if not _is_hub_id(hub_id):
        raise ModelNotFoundError(
            f"'{requested}' is neither a folder nor a hub id.",
            "Use a hub id like Salesforce/blip2-opt-2.7b, an alias from `blip2-chat models`, or a folder path.",
        )
    return hub_id


def resolve_model(requested: str, progress: Progress | None = None, kind: str = "chat") -> ResolvedModel:
    """Locate a checkpoint: directory first, then the local cache, then a download.

    `kind` ("chat" or "retrieval") only chooses which shipped demo model the name `demo` means.

    Raises:
        ModelNotFoundError: nowhere to be found (names the fix).
        NotACheckpointError: a directory that is not a BLIP-2 checkpoint.
    """
    found = find_locally(requested, kind)
    if isinstance(found, ResolvedModel):
        return found
    hub_id = found
    from huggingface_hub import snapshot_download

    cached, problem = cached_checkpoint(hub_id)
    if cached is not None and problem is None:
        return ResolvedModel(requested, cached, hub_id, "cache")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if cached is not None and problem is not None and (offline or not problem.missing):
        raise cached_copy_error(hub_id, cached, problem)  # fetching again would not change it, or cannot now
    if offline:
        raise ModelNotFoundError(
            f"The model {hub_id} is not in the local cache and downloads are off (HF_HUB_OFFLINE is set).",
            "Run once with network access and HF_HUB_OFFLINE unset, or pass --model with a local checkpoint folder "
            f"({_OFFLINE_HINT}).",
        )
    if progress:
        progress(f"Downloading {hub_id} (first use only)" if cached is None
                 else f"Downloading the rest of {hub_id} (the cached copy is incomplete)")
    try:
        path = Path(snapshot_download(hub_id, allow_patterns=CHECKPOINT_FILES))
    except Exception as error:  # noqa: BLE001 - network, auth and not-found all end the same way
        reason = error_summary(error)
        if any(words in f"{type(error).__name__}: {error}" for words in _NO_NETWORK):
            reason = "the Hugging Face hub could not be reached (no network connection?)"
        if cached is not None and problem is not None:
            raise cached_copy_error(hub_id, cached, problem, reason=reason) from None
        raise ModelNotFoundError(
            f"Could not download {hub_id}: {reason}.",
            "Check the name (see `blip2-chat models`) and your network, or pass --model with a local folder "
            f"({_OFFLINE_HINT}).",
        ) from None
    problem = checkpoint_problem(path) or processor_files_problem(path)
    if problem is not None:
        raise cached_copy_error(hub_id, path, problem, fetched=True)
    return ResolvedModel(requested, path, hub_id, "download")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def names_hub_checkpoint(name: str) -> bool:
    """Whether `resolve_model` looks `name` up on the hub (an `owner/name` id or an alias of one) when no folder
    of that name is here: the loader's rule, for checks made before it runs (`chatbot.cluster.model_check`)."""
    name = name.strip()
    return not _looks_like_path(name) and _is_hub_id(resolve_alias(name))
