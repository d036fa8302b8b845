"""One-shot commands: `ask` one question, `caption` images. Answers stream to stdout."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from chatbot.core.conversation import Conversation, caption
from chatbot.core.runtime import answer_record, open_engine_for, print_json
from chatbot.core.settings import Settings
from chatbot.errors import ImageError, QuestionError, UserError, model_error_text
from chatbot.images import LoadedImage, load_image
from chatbot.untrusted import visible
from prompts import normalize_question


def stream_to_stdout(chunks: Iterable[str]) -> str:
    """Print chunks as they arrive; return the whole text."""
    parts = []
    for chunk in chunks:
        parts.append(chunk)
        sys.stdout.write(visible(chunk))
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts).strip()


def load_images(sources: Sequence[str]) -> tuple[list[LoadedImage], int]:
    """Every image, read before the model loads. One image that cannot be read is the error; of several,
    each bad one is one sentence on stderr and the others go on (a messy folder still gets its answers).
    Returns the images and how many could not be read; UserError when none could."""
    if len(sources) == 1:
        return [load_image(sources[0])], 0
    images: list[LoadedImage] = []
    for source in sources:
        try:
            images.append(load_image(source))
        except UserError as error:
            print(visible(f"blip2-chat: {error}"), file=sys.stderr)
    if not images:
        raise ImageError(f"None of the {len(sources)} images could be read (each is named above).",
                         "Check the paths, or convert the files to JPEG or PNG.")
    return images, len(sources) - len(images)


def run_ask(settings: Settings, image_sources: str | Sequence[str], question: str) -> int:
    """Answer `question` about each image, each in its own fresh context: with one image the answer
    streams alone; with several, one `PATH: answer` line per image (or one JSON object each)."""
    sources = [image_sources] if isinstance(image_sources, str) else list(image_sources)
    if not normalize_question(question):  # cheap checks before the slow model load
        raise QuestionError("The question is empty.", "Put a question in quotes, e.g. \"What is in the picture?\"")
    images, unreadable = load_images(sources)  # every file checked before the model loads
    engine = open_engine_for(settings)
    failed = False
    for image in images:
        conversation = Conversation(settings, image=image, engine=engine)  # never saved
        stream = conversation.ask(question)  # a question too long for the model fails here, before generating
        try:
            if settings.json:
                answer = "".join(stream).strip()
                print_json(answer_record(engine, image, conversation.question, answer))
            elif len(sources) == 1:
                stream_to_stdout(stream)
            else:
                sys.stdout.write(visible(f"{image.source}: "))
                stream_to_stdout(stream)
        except Exception as error:  # noqa: BLE001 - the model failed on this image: say so, go on with the rest
            if not settings.json:
                sys.stdout.write("\n")  # ends what came of the answer
                sys.stdout.flush()
            print(visible(f"blip2-chat: {image.source}: {model_error_text(error, chat=False)}"), file=sys.stderr)
            failed = True
    return 2 if unreadable else 1 if failed else 0


def run_caption(settings: Settings, sources: Sequence[str], prefix: str = "") -> int:
    images, unreadable = load_images(sources)  # every file checked before the model loads
    engine = open_engine_for(settings)
    for image in images:
        text = caption(engine, image, settings.options, prefix)
        if settings.json:
            print_json(answer_record(engine, image, None, text))
        elif len(sources) == 1:
            print(visible(text), flush=True)
        else:
            print(visible(f"{image.source}: {text}"), flush=True)
    return 2 if unreadable else 0
