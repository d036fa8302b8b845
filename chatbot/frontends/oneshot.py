"""One-shot commands: `ask` one question, `caption` images. Answers stream to stdout.

Everything that needs no model is checked before it loads: stdout is open, the question (or `--prompt`) is
UTF-8 text and the question is not an image, every image can be read. A model failure on one image is one
sentence and the others go on (exit status 1 at the end); a failure to write the answer (a full disk) is
never taken for the model's: it ends the run with one sentence (`AnswerNotWritten`, exit status 2).

With --json every image given gets one record, in the order given: its answer, or, for an image that could not
be read or that the model failed on, `failure_record` (`answer` null, `error` the sentence said on stderr).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from chatbot.core.answer_wording import cut_short_text
from chatbot.core.captioning import caption, caption_prompt
from chatbot.core.conversation import Conversation
from chatbot.core.prompt_checks import check_text
from chatbot.core.runtime import answer_record, failure_record, let_go_of_stdout, open_engine_for, print_json
from chatbot.core.settings import Settings
from chatbot.demo.start import of_its_world, outside_its_world
from chatbot.errors import ImageError, QuestionError, UserError, model_error_text
from chatbot.image_download import is_url
from chatbot.images import LoadedImage, load_image, recorded_source
from chatbot.locations import is_demo_model
from chatbot.untrusted import visible
from prompts import normalize_answer, normalize_question, spaced_stream

if TYPE_CHECKING:
    from chatbot.engine.base import Engine


class AnswerNotWritten(UserError):
    """stdout could not take the answer (a full disk, an I/O error): the user's to fix, not the model's."""

    def __init__(self, error: OSError) -> None:
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"Could not write the answer: {reason}.",
                         "Free some space, or send the output somewhere else, and run it again.")


@contextmanager
def answer_written() -> Iterator[None]:
    """Around a write of the answer to stdout: an OSError there (a full disk) becomes AnswerNotWritten, one
    sentence and never a model failure; a closed pipe stays a BrokenPipeError, so the CLI stops quietly then, as
    Unix tools do."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        let_go_of_stdout()
        raise AnswerNotWritten(error) from None


def write_out(text: str) -> None:
    """Write `text` to stdout now (flushed), as `answer_written` says."""
    with answer_written():
        sys.stdout.write(text)
        sys.stdout.flush()


def stream_to_stdout(chunks: Iterable[str]) -> str:
    """Print chunks as they arrive, spaced as the answer is stored (`prompts.spaced_stream`: what `ask` prints is
    what the chat shows and --json records); return the whole text. The model's failures come out of `chunks` as
    they are; stdout's come out as AnswerNotWritten (BrokenPipeError for a closed pipe)."""
    parts = []
    for chunk in spaced_stream(chunks):
        parts.append(chunk)
        write_out(visible(chunk))
    write_out("\n")
    return "".join(parts)


def _model_chunks(chunks: Iterable[str], failures: list[BaseException]) -> Iterator[str]:
    """`chunks`, with a model failure while they come kept in `failures` (and the chunks ending there), so
    that what writes them can tell the model's failure from its own."""
    try:
        yield from chunks
    except Exception as error:  # noqa: BLE001 - the model failed: the caller names the image and goes on
        failures.append(error)


def _names_an_image(text: str) -> bool:
    """Whether `text`, given as the question, is an existing file or an http(s) link (a lone word)."""
    stripped = text.strip()
    if is_url(stripped) and not any(ch.isspace() for ch in stripped):
        return True
    try:
        return os.path.isfile(os.path.expanduser(stripped)) if stripped else False
    except (ValueError, OSError):  # a NUL, a name too long: no file
        return False


def check_question_argument(sources: Sequence[str], question: str) -> str:
    """The question as it will be asked, or a QuestionError for what needs no model to see: it is empty, it
    is an image (`ask a.jpg b.jpg`: the question left out, or put first), or it is not UTF-8 text."""
    if not normalize_question(question):
        raise QuestionError("The question is empty.", "Put a question in quotes, e.g. \"What is in the picture?\"")
    if _names_an_image(question):
        kind = "a web address" if is_url(question.strip()) else "a file"
        first = sources[0] if sources else ""
        if not _names_an_image(first) and (" " in first.strip() or first.rstrip().endswith("?")):  # the order reversed
            example = shlex.join(["blip2-chat", "ask", *sources[1:], question, first])
            raise QuestionError(f"The image comes first, then the question (ask IMAGE... QUESTION): {question} is "
                                f"{kind}, and \"{first}\" is not.", f"e.g. {example}")
        example = shlex.join(["blip2-chat", "ask", *sources, question, "What is in the picture?"])
        raise QuestionError(f"The last argument is the question, and {question} is {kind}: ask IMAGE... QUESTION.",
                            f"Put the question last, in quotes, e.g. {example}")
    return check_text(question, "question")


Read = LoadedImage | UserError  # an image given, read; or why it could not be


def load_images(sources: Sequence[str], settings: Settings, question: str | None = None) -> list[Read]:
    """Every image, read before the model loads, in the order given: the image, or the UserError that says why
    it cannot be read. One image that cannot be read is the error; of several, each bad one is one sentence on
    stderr and the others go on (a messy folder still gets its answers). When none can be read, UserError
    (after the --json records of each, `question` being the one asked, None for a caption)."""
    read: list[Read] = []
    for source in sources:
        try:
            read.append(load_image(source))
        except UserError as error:
            if len(sources) > 1:
                print(visible(f"blip2-chat: {error}"), file=sys.stderr)
            read.append(error)
    if any(isinstance(item, LoadedImage) for item in read):
        return read
    if settings.json:
        for source, why in zip(sources, read, strict=True):
            write_record(failure_record(recorded_source(source), None, question, str(why), settings.model))
    if len(sources) == 1 and isinstance(read[0], UserError):
        raise read[0]
    raise ImageError(f"None of the {len(sources)} images could be read (each is named above).",
                     "Check the paths, or convert the files to JPEG or PNG.")


def write_record(record: dict[str, object]) -> None:
    """One --json record on stdout, as `answer_written` says."""
    with answer_written():
        print_json(record)


def say_if_outside_the_demo_world(settings: Settings, images: Sequence[LoadedImage]) -> None:
    """With the demo model, say once (stderr) when a picture is not of its world: its answer would mean nothing."""
    outside = sum(not of_its_world(image.image) for image in images) if is_demo_model(settings.model) else 0
    if outside:
        print(outside_its_world(outside, len(images)), file=sys.stderr)


def say_if_cut_short(engine: Engine, settings: Settings, source: str = "") -> None:
    """After an answer that reached --max-new-tokens before the model ended it, say so on stderr (`source`: which
    image's answer, when there are several); --json says it in the record's `cut_short`."""
    if engine.last_stats.cut_short:
        text = cut_short_text(settings.options.max_new_tokens, command_line=True)
        print(visible(f"{source}: {text}" if source else text), file=sys.stderr)


def run_ask(settings: Settings, image_sources: str | Sequence[str], question: str) -> int:
    """Answer `question` about each image, each in its own fresh context: with one image the answer
    streams alone; with several, one `PATH: answer` line per image (or one JSON object each, in the order
    given, a failed image's too: see `failure_record`).

    Exit status 0; 2 when an image could not be read (also when the model failed on another: what the user
    can fix wins); else 1 when the model failed on one."""
    sources = [image_sources] if isinstance(image_sources, str) else list(image_sources)
    asked = check_question_argument(sources, question)
    read = load_images(sources, settings, normalize_question(asked))  # every file checked before the model loads
    images = [item for item in read if isinstance(item, LoadedImage)]
    say_if_outside_the_demo_world(settings, images)
    engine = open_engine_for(settings)
    failed = said_unreadable = False
    for source, image in zip(sources, read, strict=True):
        if not isinstance(image, LoadedImage):  # said on stderr already, before the model loaded
            if settings.json:
                write_record(failure_record(recorded_source(source), None, normalize_question(asked), str(image),
                                            engine.info.model_id))
            continue
        conversation = Conversation(settings, image=image, engine=engine)  # never saved
        stream = conversation.ask(question)  # a question too long for the model fails here, before generating
        if conversation.unreadable and not said_unreadable:  # once, before the first answer: one question
            print(conversation.unreadable, file=sys.stderr)
            said_unreadable = True
        failures: list[BaseException] = []  # the model's: writing the answer fails on its own (AnswerNotWritten)
        chunks = _model_chunks(stream, failures)
        if settings.json:
            answer = normalize_answer("".join(chunks))  # as the chat records it
            if not failures:
                write_record(answer_record(engine, image, conversation.question, answer))
        else:
            if len(sources) > 1:
                write_out(visible(f"{image.source}: "))
            stream_to_stdout(chunks)  # after a failure, its newline ends what came of the answer
            say_if_cut_short(engine, settings, image.source if len(sources) > 1 else "")
        if failures:  # the model failed on this image: say so, go on with the rest
            text = model_error_text(failures[0], chat=False)
            print(visible(f"blip2-chat: {image.source}: {text}"), file=sys.stderr)
            if settings.json:
                write_record(failure_record(image.source, image, conversation.question, text, engine.info.model_id))
            failed = True
    return exit_status(read, failed)


def exit_status(read: Sequence[Read], model_failed: bool) -> int:
    """2 when an image could not be read (the user's to fix: it wins), else 1 when the model failed on one, else 0."""
    return 2 if any(not isinstance(item, LoadedImage) for item in read) else 1 if model_failed else 0


def run_caption(settings: Settings, sources: Sequence[str], prefix: str = "") -> int:
    """Caption each image (`prefix`: text the caption continues, `--prompt`); with several, one `PATH: caption`
    line each (or one JSON object each, a failed image's too). A model failure on one image is one sentence on
    stderr and the others go on; exit status as `exit_status` says."""
    check_text(prefix, "prompt")
    read = load_images(sources, settings)  # every file checked before the model loads
    images = [item for item in read if isinstance(item, LoadedImage)]
    say_if_outside_the_demo_world(settings, images)
    engine = open_engine_for(settings)
    prompt = caption_prompt(engine, settings.options, prefix)  # too long: said once, before any image is answered
    failed = False
    for source, image in zip(sources, read, strict=True):
        if not isinstance(image, LoadedImage):  # said on stderr already, before the model loaded
            if settings.json:
                write_record(failure_record(recorded_source(source), None, None, str(image), engine.info.model_id))
            continue
        try:
            text = caption(engine, image, settings.options, prompt)
        except Exception as error:  # noqa: BLE001 - the model failed on this image: say so, go on with the rest
            said = model_error_text(error, chat=False)
            print(visible(f"blip2-chat: {image.source}: {said}"), file=sys.stderr)
            if settings.json:
                write_record(failure_record(image.source, image, None, said, engine.info.model_id))
            failed = True
            continue
        if settings.json:
            write_record(answer_record(engine, image, None, text))
        elif len(sources) == 1:
            write_out(visible(text) + "\n")
            say_if_cut_short(engine, settings)
        else:
            write_out(visible(f"{image.source}: {text}") + "\n")
            say_if_cut_short(engine, settings, image.source)
    return exit_status(read, failed)
