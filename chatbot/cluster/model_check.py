"""The model a Ray run names, checked on the driver before Ray starts: a typo fails in a second, as on one machine.

The checks are the one-machine path's before it loads (the name's kind, the folder's config.json and files),
without reading weights or downloading: a hub id is left to the workers, which find it in their cache or
download it. A folder is checked here when this machine is where the workers run (a local Ray instance) or
when it exists here; a cluster's workers may see a shared folder this machine does not (then a worker that
cannot load it says so, in the same sentence, once the run starts).
"""

from __future__ import annotations

from pathlib import Path

from chatbot.errors import NotACheckpointError
from chatbot.locations import DEMO_MODEL


def check_model_here(model: str, kind: str, *, local: bool) -> None:
    """Refuse a model name or folder that cannot be loaded, with the loader's own sentence.

    Args:
        model: what --model named (or the index's own retrieval checkpoint).
        kind: "chat" (describe) or "retrieval" (index).
        local: the workers run on this machine (a local Ray instance), so a folder must be here.

    Raises:
        ModelNotFoundError, NotACheckpointError: as one machine raises them before loading.
    """
    from chatbot.engine.checkpoint_files import processor_files_problem
    from chatbot.engine.checkpoint_kind import check_folder, check_known_name
    from chatbot.engine.checkpoint_location import names_hub_checkpoint, resolve_model

    name = model.strip()
    check_known_name(name, kind)  # a registry name of the other kind (before anything else, as one machine)
    folder = Path(name).expanduser()
    if name.lower() == DEMO_MODEL or folder.exists():
        pass  # the shipped demo model, or a folder or file here: checked below
    elif names_hub_checkpoint(name):
        return  # each worker finds it in its cache or downloads it
    elif not local:
        return  # perhaps a folder on the cluster's shared file system
    resolved = resolve_model(name, kind=kind)  # a folder (or demo): never a download
    try:
        check_folder(resolved.path, kind, name)
    except (OSError, ValueError):
        return  # config.json unreadable: resolve_model said what it could; the worker's loader says the rest
    problem = processor_files_problem(resolved.path)
    if problem is not None:
        raise NotACheckpointError(f"The folder {resolved.path} {problem.what}.", problem.hint)
