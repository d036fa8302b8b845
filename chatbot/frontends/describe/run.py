"""`blip2-chat describe`: alt text for whole folders, batched, written row by row, resumable.

Images are found first (no model is loaded for a typo), then fed to the engine `batch_size`
at a time. Each result is appended and flushed as soon as its batch is done, so a killed run
loses at most one batch; `--resume` skips images already in the output (same path, same
sha256). An unreadable image becomes an error row and the run goes on; a folder entry that
cannot even be looked at (a symlink loop) is left out and named on stderr. Identical files are
described once: the copies get the same text without running the model again. A full disk
ends the run with one sentence (the rows before it are whole, so `--resume` goes on), a closed
pipe quietly. Ctrl+C stops the run just after the row being written, and it leaves at once (a second
Ctrl+C while it stops is ignored: chatbot/frontends/describe/ctrl_c.py). File names reach stderr only
through `visible`.

Just over 300 lines: finding the images, batching them and writing rows resumably are one run, whose
steps share the request and the writer.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from chatbot.cluster.connection import ClusterOptions
from chatbot.core.answer_wording import MAX_NEW_TOKENS, more_tokens
from chatbot.core.captioning import caption_prompt
from chatbot.core.prompt_checks import check_text
from chatbot.core.runtime import check_batch_size, let_go_of_stdout, say
from chatbot.core.settings import Settings
from chatbot.demo.start import of_its_world, outside_its_world
from chatbot.engine.base import GenerationOptions
from chatbot.errors import ImageError, UserError, model_error_text
from chatbot.frontends.describe.alt_text import DEFAULT_PROMPT, to_alt_text
from chatbot.frontends.describe.ctrl_c import CtrlC
from chatbot.frontends.describe.out_file import check_out, held_alone
from chatbot.frontends.describe.output import (
    OutputError,
    Row,
    RowWriter,
    format_for,
    path_key,
    read_rows,
)
from chatbot.frontends.describe.parquet_output import PARQUET, ParquetRowWriter, parquet_refusals
from chatbot.frontends.progress_line import ProgressLine, plural
from chatbot.frontends.screen_reader import config_wants_plain, is_terminal
from chatbot.image_files import Unreadable, file_sha256, find_images, is_storage_uri, unreadable_sentence
from chatbot.images import LoadedImage, load_image
from chatbot.locations import is_demo_model
from chatbot.untrusted import visible

EMPTY_ANSWER = "The model gave no description for this image."


@dataclass(frozen=True)
class DescribeRequest:
    """What `describe` was asked to do (its flags, minus the model's)."""

    paths: tuple[str, ...]  # files and folders, as typed
    recursive: bool = False  # look inside sub-folders too
    fmt: str | None = None  # jsonl, csv or md; None: from the --out suffix, else jsonl
    out: Path | None = None  # None: rows go to stdout
    prompt: str = DEFAULT_PROMPT
    batch_size: int = 8
    resume: bool = False
    ray: str | None = None  # None: this machine; "local": a local Ray instance; else a Ray cluster's address
    workers: int = 1  # --ray: model-holding actors (one model each)
    gpus_per_worker: float = 0.0  # --ray: GPUs each actor holds (0: CPU)

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)  # OptionError: before anything is read or loaded
        check_text(self.prompt, "prompt")  # QuestionError: not UTF-8 text (its length is checked once the model loads)
        if self.ray is not None:  # --workers, --gpus-per-worker, the address: before a file is listed or hashed
            ClusterOptions(self.ray, self.workers, self.gpus_per_worker).check()


class BatchAnswerer(Protocol):
    """What describe needs of an engine: answers for a batch of images (an `Engine`, or a Ray run's results)."""

    def answer_batch(self, images: Sequence[LoadedImage], prompt: str | Sequence[str],
                     options: GenerationOptions) -> list[str]: ...


@dataclass
class Summary:
    """How a run went, said at its end."""

    described: int = 0
    skipped: int = 0  # already in the output (--resume)
    failed: int = 0
    cut_short: int = 0  # alt texts the model had not ended when max_new_tokens was reached (maybe mid-sentence)

    def sentence(self) -> str:
        return (f"{self.described} described, {self.skipped} skipped (already in the output), "
                f"{self.failed} failed.")


def describe(
    engine: BatchAnswerer, paths: Sequence[str], write: Callable[[Row], None], *, options: GenerationOptions,
    prompt: str = DEFAULT_PROMPT, batch_size: int = 8, done: Sequence[Row] = (), progress: ProgressLine | None = None,
    load: Callable[[str], LoadedImage] = load_image, sha256_of: Callable[[str], str] = file_sha256,
    ctrl_c: CtrlC | None = None,
) -> Summary:
    """Describe each image in `paths`, handing every row to `write` as soon as it exists.

    Args:
        engine: answers batches (`answer_batch`).
        paths: absolute image paths, each once.
        write: called once per image described or failed (not for skipped ones).
        options: decoding options (describe's defaults: see chatbot.frontends.describe.alt_text).
        prompt: the text the model continues; "" for a plain caption.
        batch_size: images per `generate` call.
        done: rows already in the output: an image with the same path and sha256 is skipped.
        progress: told about every image; None: silent.
        load: reads one image (a Ray run passes its workers' results, in the same order).
        sha256_of: the sha256 of a file's bytes ("" when unreadable).
        ctrl_c: the run's Ctrl+C handler (installed by the caller): it holds a Ctrl+C while a row is written.
    """
    summary = Summary()
    ctrl_c = ctrl_c or CtrlC()
    done_keys = DoneKeys.of(done)
    texts = {row.sha256: row.alt_text for row in done if not row.failed and row.sha256}  # identical bytes, same text
    batch: list[LoadedImage] = []
    # Since the batch began, in input order: rows ready now, and (path, sha256, worked) for the batch's answers,
    # so the rows are written in the order the images came (an unreadable image waits for the one before it).
    waiting: list[Row | tuple[str, str, bool]] = []

    def write_row(row: Row, worked: bool) -> None:
        if row.failed:
            summary.failed += 1
        else:
            summary.described += 1
            texts[row.sha256] = row.alt_text
        with ctrl_c.held():  # a row written is a row counted: the count said at a stop is the rows saved
            write(row)
            if progress:
                progress.advance(worked)  # the speed shown is the model's: copies and errors cost next to nothing

    def now_or_after_batch(row: Row) -> None:
        if batch:
            waiting.append(row)
        else:
            write_row(row, worked=False)

    def run_batch() -> None:
        cut: set[str] = set()
        answers = _answers(engine, batch, prompt, options, any_answered=summary.described > 0, cut=cut)
        for item in waiting:
            if isinstance(item, Row):
                write_row(item, worked=False)
                continue
            path, sha256, worked = item
            answer = answers[sha256]
            if isinstance(answer, Exception):
                write_row(Row(path, error=model_error_text(answer, chat=False), sha256=sha256), worked)
            else:  # empty alt text would tell a screen reader the image is decorative
                text = to_alt_text(answer)
                summary.cut_short += bool(text) and sha256 in cut
                write_row(Row(path, alt_text=text, sha256=sha256) if text else
                          Row(path, error=EMPTY_ANSWER, sha256=sha256), worked)
        waiting.clear()
        batch.clear()

    for path in paths:
        if already_done(path, done_keys, sha256_of):
            summary.skipped += 1
            if progress:
                progress.advance(worked=False)
            continue
        try:
            image = load(path)
        except ImageError as error:
            now_or_after_batch(Row(path, error=str(error), sha256=sha256_of(path)))
            continue
        if image.sha256 in texts:
            now_or_after_batch(Row(path, alt_text=texts[image.sha256], sha256=image.sha256))
        elif any(queued.sha256 == image.sha256 for queued in batch):
            waiting.append((path, image.sha256, False))  # the same bytes: the same answer, at no cost
        else:
            batch.append(image)
            waiting.append((path, image.sha256, True))
            if len(batch) >= batch_size:
                run_batch()
    if batch:
        run_batch()
    return summary


class ModelFailedError(UserError):
    """The model failed on every image so far: the run stops (its rows are kept; --resume goes on)."""


def _reached_the_limit(engine: BatchAnswerer, images: Sequence[LoadedImage], options: GenerationOptions) -> set[str]:
    """The sha256 of each image whose answer in the last `answer_batch` ran to max_new_tokens before the model ended
    it (cut off, maybe mid-sentence): counted here from the tokens, or by the workers of a Ray run (its results
    say which, `last_cut_short`); none where the answerer does not count tokens."""
    counted = getattr(engine, "last_cut_short", None)
    if counted is not None:
        return set(counted)
    token_ids = getattr(getattr(engine, "last_batch_stats", None), "token_ids", None)
    if not token_ids or len(token_ids) != len(images):
        return set()
    return {image.sha256 for image, ids in zip(images, token_ids, strict=True) if len(ids) >= options.max_new_tokens}


def _answers(engine: BatchAnswerer, batch: Sequence[LoadedImage], prompt: str, options: GenerationOptions, *,
             any_answered: bool, cut: set[str]) -> dict[str, str | Exception]:
    """Each image's answer by sha256, or the error the model raised on it; `cut` gets the sha256 of each answer
    that was cut off at max_new_tokens.

    When the batch fails, each image is tried alone, so one picture that defeats the model costs one error row.
    When they all fail and no image of the run has been answered, the model itself is at fault (a broken
    checkpoint, a device error): `ModelFailedError`, and the batch's rows are not written, so --resume tries
    them again. Running out of memory is said as it is (a smaller --batch-size).
    """
    try:
        answered = engine.answer_batch(batch, prompt, options)
        cut |= _reached_the_limit(engine, batch, options)
        return dict(zip((image.sha256 for image in batch), answered, strict=True))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the model raised: tried again one image at a time
        failure: Exception = error
    answers: dict[str, str | Exception] = {}
    for image in batch:
        try:
            answers[image.sha256] = engine.answer_batch([image], prompt, options)[0]
            cut |= _reached_the_limit(engine, [image], options)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - this image's row says it
            answers[image.sha256] = failure = error
    if not any_answered and all(isinstance(answer, Exception) for answer in answers.values()):
        raise ModelFailedError(model_error_text(failure, chat=False),
                               "Nothing was written for these images: fix the model or its options, then run the "
                               "same command (with --resume if rows were written).")
    return answers


@dataclass(frozen=True)
class DoneKeys:
    """The rows already in the output (--resume), as the keys that tell an image is done."""

    pairs: frozenset[tuple[str, str]]  # (path, sha256)
    paths: frozenset[str]  # hash only files whose path is there already

    @classmethod
    def of(cls, done: Sequence[Row]) -> DoneKeys:
        return cls(frozenset((row.path, row.sha256) for row in done), frozenset(row.path for row in done))


def as_found(done: Sequence[Row], paths: Sequence[str], fmt: str) -> list[Row]:
    """Rows read back from the output, each under the path of every image it may stand for.

    CSV and Markdown cannot hold some names exactly (bytes that are not UTF-8 are written `\\x9b`), so a row
    is matched by `path_key`; where two names read back alike, the sha256 in the skip rule tells which image the
    row was.
    """
    found: dict[str, list[str]] = {}
    for path in paths:
        found.setdefault(path_key(path, fmt), []).append(path)
    return [replace(row, path=path) for row in done for path in found.get(row.path, [row.path])]


def already_done(path: str, keys: DoneKeys, sha256_of: Callable[[str], str] = file_sha256) -> bool:
    """Whether the output holds this image already: the same path with the same bytes (the one skip rule)."""
    return path in keys.paths and (path, sha256_of(path)) in keys.pairs


def run_describe(settings: Settings, request: DescribeRequest) -> int:
    """The `describe` command: check everything cheap, load the model, describe, summarise on stderr.

    Raises:
        UserError: bad input (before the model loads), or the output could not be written (a full disk).
        BrokenPipeError: whoever read stdout went away (`| head`); the CLI stops quietly.
    """
    fmt = format_for(request.out, request.fmt)
    if fmt == PARQUET:
        parquet_refusals(request.out, request.resume)
    if request.resume and request.out is None:
        raise OutputError("--resume needs the output file to continue.", "Pass --out FILE with it.")
    paths = _images_in(request)
    if request.out is not None:
        check_out(request.out, fmt)  # a link, a folder, a path under a file: said now, not once the model has loaded
    if request.resume and request.out is not None and os.path.exists(request.out) and not request.out.is_file():
        raise OutputError(f"--resume reads --out back, and {visible(request.out)} is not a regular file.",
                          "Give --out a file, or leave out --resume to write into it.")  # a named pipe would hang
    with held_alone(request.out, fmt) as held:  # a second run into the same file is refused now, before it reads it
        return _describe_into(settings, request, fmt, paths, held)


def _describe_into(settings: Settings, request: DescribeRequest, fmt: str, paths: list[str], held: int | None) -> int:
    """The rest of `run_describe`, while --out is held (`held`: Parquet's NAME.partial, opened): read what it holds
    (--resume), load, describe, summarise."""
    done: list[Row] = []
    if fmt == PARQUET and request.out is not None and os.path.lexists(request.out):
        raise OutputError(f"{visible(request.out)} already exists, and a Parquet file is never written over.",
                          "Choose another --out, or move that file away first.")
    if request.out is not None and request.out.is_file() and request.out.stat().st_size > 0:
        if not request.resume:
            raise OutputError(f"{visible(request.out)} already exists.",
                              "Pass --resume to continue it, or choose another --out.")
        done = as_found(read_rows(request.out, fmt), paths, fmt)
    hashed = functools.cache(file_sha256)  # the skip rule reads each file once, here and in `describe`
    if done and request.ray is None and _all_done(paths, done, hashed):  # every image is in the output: no model
        say(f"Nothing left to describe: {plural(len(paths), 'image')} {'is' if len(paths) == 1 else 'are'} in "
            f"{visible(request.out)} already, with the same bytes; the model was not loaded.")
        say(f"Done: {Summary(skipped=len(paths)).sentence()} Results in {visible(request.out)}.")
        return 0
    rows_on_screen = request.out is None and is_terminal(sys.stdout)  # a bar on stderr would run into the rows
    progress = ProgressLine(len(paths), sys.stderr, noun="image", bar=not rows_on_screen, plain=config_wants_plain())
    ctrl_c = CtrlC()
    try:
        with ctrl_c.installed(), _answerer_for(settings, request, paths, done, hashed) as (engine, load, sha256_of), \
                _writer_for(request.out, fmt, held) as writer:
            progress.start(f"Describing {plural(len(paths), 'image')}, {request.batch_size} at a time.",
                           measure_after=request.batch_size if request.ray is not None else 0)
            noted = _Noted(writer.write, load, demo=is_demo_model(settings.model))
            summary = describe(engine, paths, noted.write, options=settings.options, prompt=request.prompt,
                               batch_size=request.batch_size, done=done, progress=progress, load=noted.load,
                               sha256_of=sha256_of, ctrl_c=ctrl_c)
    except KeyboardInterrupt:
        progress.finish()  # the bar shows the last row written, as the sentence does
        say(_stopped_sentence(progress, request.out, fmt))
        from chatbot.core.runtime import exit_now

        # every row is written and the file closed: leave now, not after the model thread's batch (at exit Python
        # waits for it, seconds with a large model); Ray's run has shut down its workers on the way out already
        return exit_now(130, loaded=ctrl_c.pressed and request.ray is None and "torch" in sys.modules)
    except BrokenPipeError:
        progress.finish()
        raise  # the reader went away (`| head`): the CLI stops quietly, as Unix tools do
    except ModelFailedError as error:
        progress.finish()
        say(f"blip2-chat: {error}")
        return 1
    except OutputError:  # a full disk, or (Parquet) a file that appeared under --out meanwhile
        progress.finish()
        if request.out is None:
            let_go_of_stdout()
        raise  # the CLI says why in one sentence (a full disk); the rows written so far are whole
    progress.finish()
    for sentence in noted.sentences():
        say(sentence)
    if summary.cut_short:
        say(_cut_short_sentence(summary.cut_short, settings.options.max_new_tokens))
    where = f" Results in {visible(request.out)}." if request.out is not None else ""
    say(f"Done: {summary.sentence()}{where}")
    return 0


class _Noted:
    """What the run's end says besides the counts: which images failed, by name (the rows hold why; a listener
    should not have to open the file to learn it), and, with the demo model, how many pictures are not of its
    world (their alt text means nothing, and a blind user cannot check the picture)."""

    def __init__(self, write: Callable[[Row], None], load: Callable[[str], LoadedImage], *, demo: bool) -> None:
        self._write, self._load, self._demo = write, load, demo
        self.failed: list[Row] = []
        self.loaded = 0
        self.outside: list[str] = []  # with the demo model: pictures not drawn by its world

    def write(self, row: Row) -> None:
        self._write(row)
        if row.failed:
            self.failed.append(row)

    def load(self, path: str) -> LoadedImage:
        image = self._load(path)
        self.loaded += 1
        if self._demo and not of_its_world(image.image):
            self.outside.append(path)
        return image

    def sentences(self) -> list[str]:
        said = [f"Not described: {row.error}" for row in self.failed[:MOST_FAILURES_NAMED]]
        if len(self.failed) > MOST_FAILURES_NAMED:
            said.append(f"... and {plural(len(self.failed) - MOST_FAILURES_NAMED, 'more image')}: their rows say why.")
        if self.outside:
            said.append(outside_its_world(len(self.outside), self.loaded))
        return said


MOST_FAILURES_NAMED = 10  # failed images named at the end; the rest are counted


def _cut_short_sentence(count: int, limit: int) -> str:
    """Alt texts that may end mid-sentence are not whole descriptions: said, with the way to give them room."""
    which = "1 alt text was" if count == 1 else f"{count} alt texts were"
    them = "it" if count == 1 else "them"
    room = (f" {more_tokens(limit, command_line=True)} (and another --out) gives {them} room."
            if limit < MAX_NEW_TOKENS else "")
    return f"{which} cut off at {plural(limit, 'token')}, perhaps mid-sentence.{room}"


def _all_done(paths: Sequence[str], done: Sequence[Row], sha256_of: Callable[[str], str]) -> bool:
    """Whether every image is in the output already (the skip rule: the same path with the same bytes)."""
    keys = DoneKeys.of(done)
    return all(already_done(path, keys, sha256_of) for path in paths)


def _stopped_sentence(progress: ProgressLine, out: Path | None, fmt: str) -> str:
    """'Stopped after 6 of 33 images. ...': the count is of images with a row in the output (each is advanced
    right after its row is written), skipped ones included. A Parquet file gets its name only when the run ends,
    and cannot be resumed: the sentence says that nothing was written under the name, and how to go on."""
    stopped = f"Stopped after {progress.done} of {plural(progress.total, 'image')}."
    if out is None:
        return f"{stopped} Pass --out FILE to write a file that --resume can go on from."
    if fmt == PARQUET:
        return (f"{stopped} A Parquet file is named only once the run ends, so {visible(out)} was not written; run "
                "the same command again to describe them all (Parquet cannot be resumed; JSON Lines can, with "
                "--out FILE.jsonl).")
    return f"{stopped} What was described so far is saved; run the same command with --resume to go on."


def _images_in(request: DescribeRequest) -> list[str]:
    """The image paths to describe; with --ray, `s3://`/`gs://` URIs are listed through pyarrow as well."""
    local = list(request.paths)
    stored: list[str] = []
    if request.ray is not None:
        from chatbot.cluster.jobs import list_storage_images

        stored = [path for path in local if is_storage_uri(path)]
        local = [path for path in local if not is_storage_uri(path)]
    unreadable: list[Unreadable] = []
    try:
        found = find_images(local, request.recursive, unreadable=unreadable) if local or not stored else []
    finally:
        if unreadable:  # said even when nothing was found, before the error saying so
            say(unreadable_sentence(unreadable))
    return found + (list_storage_images(stored, request.recursive) if stored else [])


Answerer = tuple[BatchAnswerer, Callable[[str], LoadedImage], Callable[[str], str]]


@contextmanager
def _answerer_for(settings: Settings, request: DescribeRequest, paths: list[str],
                  done: list[Row], sha256_of: Callable[[str], str]) -> Iterator[Answerer]:
    """The engine here (and this machine's files), or a Ray run's results for the paths not already done."""
    if request.ray is None:
        from chatbot.core.runtime import open_engine_for  # imports the model stack: only now

        engine = open_engine_for(settings, progress=say)
        caption_prompt(engine, settings.options, request.prompt)  # too long for the model: before any image is answered
        yield engine, load_image, sha256_of
        return
    from chatbot.cluster.connection import import_ray
    from chatbot.cluster.jobs import ClusterOptions, remote_captions
    from chatbot.cluster.remote_files import sha256_any

    import_ray()  # not installed: one sentence now, before any line says Ray is at work
    keys, hashed = DoneKeys.of(done), dict[str, str]()  # hashed: files read here for the --resume skip rule
    todo = [path for path in paths if not already_done(path, keys, lambda p: hashed.setdefault(p, sha256_any(p)))]
    cluster = ClusterOptions(request.ray, request.workers, request.gpus_per_worker)
    say(f"Describing on Ray ({'a local instance' if request.ray == 'local' else visible(request.ray)}, "
           f"{plural(request.workers, 'worker')}).")
    with remote_captions(settings, todo, prompt=request.prompt, batch_size=request.batch_size,
                         cluster=cluster) as remote:
        # describe asks again for the skip rule (hashed already: not read twice), then for failed files (the worker's)
        yield remote, remote.load, lambda path: hashed.pop(path) if path in hashed else remote.sha256_of(path)


def _writer_for(out: Path | None, fmt: str, held: int | None) -> RowWriter | ParquetRowWriter:
    """Appends to --out (a header if it is new), else writes to stdout (a header first, then the rows); Parquet
    into the NAME.partial `held_alone` holds."""
    if fmt == PARQUET and out is not None:
        return ParquetRowWriter(out, held)
    return RowWriter.open(out, fmt) if out is not None else RowWriter.to_stdout(sys.stdout, fmt)
