"""What every front end needs around the model: opening it for the settings, describing an answer as a
JSON record, and leaving at once when everything is saved.

Opening imports torch (through the engine), so it happens only when a model is needed. Leaving:
with a model loaded, Python's exit frees gigabytes of tensors one by one and waits for the model
thread's background work (thinking ahead), seconds on a CPU with nothing left to do for the person.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from chatbot.core.settings import Settings
from chatbot.engine.base import Engine
from chatbot.images import LoadedImage
from chatbot.untrusted import visible

_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def say_on_terminal(message: str) -> None:
    """Progress for people watching a terminal; silent when stderr is piped."""
    if sys.stderr.isatty():
        print(visible(message), file=sys.stderr, flush=True)


def open_engine_for(settings: Settings, progress: Callable[[str], None] = say_on_terminal) -> Engine:
    """Load the model the settings name (imports torch, so only when a model is needed).

    `progress` receives short status sentences (the chat app shows them in its status line).
    """
    from chatbot.engine.loader import resolve_model

    resolved = resolve_model(settings.model, progress=progress)  # a wrong name fails before torch is imported
    progress(f"Loading model {settings.model} ...")
    from chatbot.engine.blip2 import open_engine

    return open_engine(resolved, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                       progress=progress)


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
    })
    return record


def print_json(record: dict[str, Any]) -> None:
    """One answer record as one line of JSON on stdout (JSON escapes C0 controls itself; C1 controls and
    bidirectional overrides, which it would leave raw, are escaped as \\uXXXX too)."""
    print(json_line(record), flush=True)


def json_line(record: dict[str, Any]) -> str:
    """`record` as one line of JSON that is safe on a terminal and still valid JSON."""
    text = json.dumps(record, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def exit_now(code: int, *, loaded: bool | None = None) -> int:
    """End the process with `code` now if a model is (or is being) loaded; else return `code`.

    Call it only once every file is written and closed. `loaded` overrides the check for torch.
    """
    if not (loaded if loaded is not None else "torch" in sys.modules):
        return code
    from chatbot.core.session_lock import let_go_of_everything

    let_go_of_everything()  # os._exit skips the exit handlers: the chat's lock file goes now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
