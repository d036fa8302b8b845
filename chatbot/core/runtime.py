"""What every front end needs around the model: opening it for the settings, describing an answer as a
JSON record, saying what happens on stderr, the limit of a batch, and leaving at once when everything is saved.

Opening imports torch (through the engine), so it happens only when a model is needed. Leaving:
with a model loaded, Python's exit frees gigabytes of tensors one by one and waits for the model
thread's background work (thinking ahead), seconds on a CPU with nothing left to do for the person.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from chatbot.core.settings import Settings
from chatbot.engine.base import Engine
from chatbot.errors import OptionError
from chatbot.images import LoadedImage
from chatbot.untrusted import json_line, visible

# The signals that end a chat or a long job as the person's own stop does, with everything kept: a shutdown or
# `kill` (SIGTERM) and the terminal window closed (SIGHUP); where a platform has no such signal it is left out.
ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

# Images per model call (`describe` and `index` --batch-size). Throughput still grows at 64 on an H200
# (docs/benchmarks.md), so the limit is well above that; a batch's decoded pictures (up to 1024 pixels a side,
# ~3 MB each) and the vision encoder's activations stay in memory together, so 1024 is already gigabytes, and a
# larger number is a typo that would only fail later, with the model loaded, out of memory.
MAX_BATCH_SIZE = 1024


def check_batch_size(batch_size: int) -> int:
    """`--batch-size` as given, when it is from 1 to MAX_BATCH_SIZE (the one rule for describe and index).

    Raises:
        OptionError: naming the flag and the range.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise OptionError(f"--batch-size must be at least 1 and at most {MAX_BATCH_SIZE} (got {batch_size}).",
                          "Try 8.")
    return batch_size


def say(message: str) -> None:
    """A sentence for people on stderr (what is loading, what was left out, what was done): the one status
    writer of the front ends, so outside text in it (a file or model name) is shown, never emitted."""
    print(visible(message), file=sys.stderr, flush=True)


def say_on_terminal(message: str) -> None:
    """Progress for people watching a terminal; silent when stderr is piped."""
    if sys.stderr.isatty():
        say(message)


def find_chat_model(settings: Settings, progress: Callable[[str], None] = say_on_terminal) -> Any:
    """Where the chat model the settings name is (a folder, the cache, the hub: see the loader), without loading
    it or importing torch; UserError, one sentence, for a name that names none (or a search checkpoint)."""
    from chatbot.engine.checkpoint_location import resolve_model

    check_chat_model_name(settings.model)
    return resolve_model(settings.model, progress=progress)


def check_chat_model_name(name: str) -> None:
    """What can be told of a chat model's name at once (no network, no cache, no torch): UserError, one sentence,
    for a search checkpoint's name, a path that leads nowhere, or a name that is neither a folder nor a hub id.
    /model checks this before it lets go of the loaded model."""
    from chatbot.engine.checkpoint_kind import check_known_name
    from chatbot.engine.checkpoint_location import find_locally

    check_known_name(name, "chat")  # a search checkpoint's name: said so, before any download
    find_locally(name)


def open_engine_for(settings: Settings, progress: Callable[[str], None] = say_on_terminal) -> Engine:
    """Load the model the settings name (imports torch, so only when a model is needed).

    `progress` receives short status sentences (the chat app shows them in its status line).
    """
    resolved = find_chat_model(settings, progress)  # a wrong name fails before torch is imported
    progress(f"Loading model {settings.model} ...")
    from chatbot.engine.blip2 import open_engine

    return open_engine(resolved, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                       progress=progress, dtype_from=settings.sources.get("dtype"))


def answer_record(engine: Engine, image: LoadedImage, question: str | None, answer: str) -> dict[str, Any]:
    """The JSON object printed per answer with --json (ask, caption, the screen-reader chat)."""
    stats = engine.last_stats
    record: dict[str, Any] = {"image": image.source, "image_sha256": image.sha256}
    if question is not None:
        record["question"] = question
    record.update({
        "answer": answer, "model": engine.info.model_id, "device": engine.info.device,
        "precision": engine.info.precision, "precision_reason": engine.info.precision_reason,
        "timings": {
            "load_seconds": round(getattr(engine, "load_seconds", 0.0), 4),
            "first_token_seconds": round(stats.seconds_to_first_token, 4),
            "total_seconds": round(stats.seconds_total, 4),
            "tokens_per_second": round(stats.tokens_per_second, 2),
        },
        "tokens": {"prompt": stats.prompt_tokens, "new": stats.new_tokens},
        "image_encoded": stats.image_encoded,
        "cut_short": stats.cut_short,  # it reached max_new_tokens before the model ended it
    })
    return record


def failure_record(source: str | None, image: LoadedImage | None, question: str | None, error: str,
                   model: str) -> dict[str, Any]:
    """The --json record of a question or image with no answer: an image that could not be read (`image` None,
    `source` named by `chatbot.images.recorded_source`), one the model failed on, or a question refused (`source`
    None when no image is open). The
    answer record's `image`, `image_sha256` (null when unread or none open), `question` (None for a caption:
    left out) and `model`, with `answer` null and `error`, the sentence said on stderr (without the program's
    name). `ask`, `caption` and the screen-reader chat all write it."""
    record: dict[str, Any] = {"image": source, "image_sha256": image.sha256 if image is not None else None}
    if question is not None:
        record["question"] = question
    record.update({"answer": None, "error": error, "model": model})
    return record


def print_json(record: dict[str, Any]) -> None:
    """One record as one line of JSON on stdout, written by `chatbot.untrusted.json_line` (valid UTF-8, every
    control character, lone surrogate and bidi override as a `\\u` escape)."""
    print(json_line(record), flush=True)


def let_go_of_stdout() -> None:
    """Point stdout at /dev/null after a write to it failed (a full disk, a reader gone), so that Python's flush
    at exit does not fail again on what is left in its buffer: every command does this, then says one sentence."""
    try:
        target = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing flushes at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)


def exit_now(code: int, *, loaded: bool | None = None) -> int:
    """End the process with `code` now if a model is (or is being) loaded; else return `code`.

    Call it only once every file is written and closed. `loaded` overrides the check for torch.
    """
    if not (loaded if loaded is not None else "torch" in sys.modules):
        return code
    from chatbot.core.session_lock import let_go_of_everything

    let_go_of_everything()  # os._exit skips the exit handlers: the chat's lock file goes now
    for stream in (sys.stdout, sys.stderr):  # None when closed (`>&-`); failing when the reader or terminal is gone
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()  # type: ignore[union-attr]
    os._exit(code)
