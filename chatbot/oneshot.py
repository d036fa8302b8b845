"""One-shot commands: `ask` one question, `caption` images. Answers stream to stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chatbot.chat import Chat, caption
from chatbot.config import Settings
from chatbot.engine.base import Engine
from chatbot.errors import QuestionError
from chatbot.images import LoadedImage, load_image
from prompts import normalize_question


def say(message: str) -> None:
    """Progress for people watching a terminal; silent when stderr is piped."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def open_engine_for(settings: Settings, progress: Callable[[str], None] = say) -> Engine:
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
    """The JSON object printed per answer with --json."""
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
    print(json.dumps(record, ensure_ascii=False), flush=True)


def stream_to_stdout(chunks: Any) -> str:
    """Print chunks as they arrive; return the whole text."""
    parts = []
    for chunk in chunks:
        parts.append(chunk)
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts).strip()


def run_ask(settings: Settings, image_source: str, question: str) -> int:
    if not normalize_question(question):  # cheap checks before the slow model load
        raise QuestionError("The question is empty.", "Put a question in quotes, e.g. \"What is in the picture?\"")
    image = load_image(image_source)
    engine = open_engine_for(settings)
    chat = Chat(engine, image, settings.options)
    chat.prepare(question)  # a question too long for the model fails here, before generating
    if settings.json:
        answer = "".join(chat.ask(question)).strip()
        print_json(answer_record(engine, image, normalize_question(question), answer))
    else:
        stream_to_stdout(chat.ask(question))
    return 0


def run_caption(settings: Settings, sources: Sequence[str], prefix: str = "") -> int:
    images = [load_image(source) for source in sources]  # every file checked before the model loads
    engine = open_engine_for(settings)
    for image in images:
        text = caption(engine, image, settings.options, prefix)
        if settings.json:
            print_json(answer_record(engine, image, None, text))
        elif len(images) == 1:
            print(text, flush=True)
        else:
            print(f"{image.source}: {text}", flush=True)
    return 0
