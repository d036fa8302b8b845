"""`blip2-chat describe`: alt text for whole folders, batched, written row by row, resumable.

Images are found first (no model is loaded for a typo), then fed to the engine `batch_size`
at a time. Each result is appended and flushed as soon as its batch is done, so a killed run
loses at most one batch; `--resume` skips images already in the output (same path, same
sha256). An unreadable image becomes an error row and the run goes on; a folder entry that
cannot even be looked at (a symlink loop) is left out and named on stderr. Identical files are
described once: the copies get the same text without running the model again. A full disk
ends the run with one sentence (the rows before it are whole, so `--resume` goes on), a closed
pipe quietly. File names reach stderr only through `visible`.

Just over 300 lines: finding the images, batching them and writing rows resumably are one run, whose
steps share the request and the writer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from chatbot.core.settings import Settings
from chatbot.engine.base import Engine, GenerationOptions
from chatbot.errors import ImageError, OptionError, UserError
from chatbot.frontends.describe.alt_text import DEFAULT_PROMPT, to_alt_text
from chatbot.frontends.describe.output import OutputError, OutputWriteError, Row, RowWriter, format_for, read_rows
from chatbot.frontends.describe.progress_line import ProgressLine, plural
from chatbot.images import IMAGE_SUFFIXES, LoadedImage, is_url, load_image
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


@dataclass
class Summary:
    """How a run went, said at its end."""

    described: int = 0
    skipped: int = 0  # already in the output (--resume)
    failed: int = 0

    def sentence(self) -> str:
        return (f"{self.described} described, {self.skipped} skipped (already in the output), "
                f"{self.failed} failed.")


class Unreadable(NamedTuple):
    """Something in a folder that could not be looked at, so it was left out."""

    path: str
    reason: str  # 'a loop of symbolic links', 'permission denied', ...


def find_images(
    paths: Sequence[str], recursive: bool = False, *, unreadable: list[Unreadable] | None = None,
) -> list[str]:
    """Absolute paths of the images PATHS name, in order, each file once (by its real path).

    A file named outright is tried whatever its suffix; inside folders only image suffixes
    count and hidden files and folders are left out. Symlinked folders are not followed.
    An entry that cannot be looked at (a symlink loop, a folder without permission) is left
    out and appended to `unreadable`, and the search goes on.

    Raises:
        UserError: a path that does not exist, a URL, or nothing found at all.
    """
    found: list[str] = []
    seen: set[str] = set()
    folders_below = False
    unreadable = [] if unreadable is None else unreadable
    for raw in paths:
        if is_url(raw):
            raise UserError(f"describe works on files and folders, not links ({visible(raw)}).",
                            "Download the images first, or use `blip2-chat caption URL` for one link.")
        path = Path(os.path.abspath(os.path.expanduser(raw)))
        if _is_folder(path):
            candidates, below = _images_in(path, recursive, unreadable)
            folders_below = folders_below or below
        elif os.path.lexists(path):
            candidates = [path]  # tried as a file: an unreadable one becomes a row saying why
        else:
            raise UserError(f"No file or folder at {visible(path)}.", "Check the path.")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                found.append(str(candidate))
    if not found:
        hint = "Add --recursive to look in its sub-folders." if folders_below and not recursive else \
            f"describe reads {', '.join(sorted(IMAGE_SUFFIXES))} files."
        raise UserError(f"No images found in {visible(', '.join(paths))}.", hint)
    return found


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. no permission to look: not a folder we can search
        return False


def _images_in(folder: Path, recursive: bool, unreadable: list[Unreadable]) -> tuple[list[Path], bool]:
    """Image files in `folder` (sorted by name) and whether it has sub-folders; what it cannot read: `unreadable`."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        unreadable.append(Unreadable(str(folder), _reason(error)))  # left out rather than ending the run
        return [], False
    images: list[Path] = []
    subfolders: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():  # follows a symlink
                images.append(Path(entry.path))
        except OSError as error:  # a symlink loop (a -> b -> a), a target we may not look at
            unreadable.append(Unreadable(entry.path, _reason(error)))
    if recursive:
        for sub in subfolders:
            images += _images_in(sub, True, unreadable)[0]
    return images, bool(subfolders)


_REASONS = {errno.ELOOP: "a loop of symbolic links", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno or 0) or visible(error.strerror or error).lower()


def unreadable_sentence(unreadable: Sequence[Unreadable], most: int = 10) -> str:
    """'Left out 1 entry that could not be read: /p/a.png (a loop of symbolic links).' Names are `visible`."""
    named = [f"{visible(entry.path)} ({entry.reason})" for entry in unreadable[:most]]
    if len(unreadable) > most:
        named.append(f"and {len(unreadable) - most} more")
    return f"Left out {plural(len(unreadable), 'entry', 'entries')} that could not be read: {', '.join(named)}."


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes, "" when it cannot be read (matches LoadedImage.sha256)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def describe(
    engine: Engine, paths: Sequence[str], write: Callable[[Row], None], *, options: GenerationOptions,
    prompt: str = DEFAULT_PROMPT, batch_size: int = 8, done: Sequence[Row] = (), progress: ProgressLine | None = None,
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
    """
    summary = Summary()
    recorded = {(row.path, row.sha256) for row in done}
    recorded_paths = {row.path for row in done}  # hash only files whose path is there already
    texts = {row.sha256: row.alt_text for row in done if not row.failed and row.sha256}  # identical bytes, same text
    batch: list[LoadedImage] = []
    copies: dict[str, list[str]] = {}  # sha256 of an image in the batch -> later paths with the same bytes

    def record(path: str, sha256: str, text: str, worked: bool = True) -> None:
        if text:
            texts[sha256] = text
            summary.described += 1
            write(Row(path, alt_text=text, sha256=sha256))
        else:  # empty alt text would tell a screen reader the image is decorative
            summary.failed += 1
            write(Row(path, error=EMPTY_ANSWER, sha256=sha256))
        if progress:
            progress.advance(worked)  # the speed shown is the model's: copies and errors cost next to nothing

    def run_batch() -> None:
        captions = engine.answer_batch(batch, prompt, options)
        for image, caption in zip(batch, captions, strict=True):
            record(image.source, image.sha256, to_alt_text(caption))
            for copy in copies.pop(image.sha256, []):
                record(copy, image.sha256, to_alt_text(caption), worked=False)
        batch.clear()

    for path in paths:
        if path in recorded_paths and (path, file_sha256(path)) in recorded:
            summary.skipped += 1
            if progress:
                progress.advance(worked=False)
            continue
        try:
            image = load_image(path)
        except ImageError as error:
            summary.failed += 1
            write(Row(path, error=str(error), sha256=file_sha256(path)))
            if progress:
                progress.advance(worked=False)
            continue
        if image.sha256 in texts:
            record(path, image.sha256, texts[image.sha256], worked=False)
        elif any(queued.sha256 == image.sha256 for queued in batch):
            copies.setdefault(image.sha256, []).append(path)
        else:
            batch.append(image)
            if len(batch) >= batch_size:
                run_batch()
    if batch:
        run_batch()
    return summary


def run_describe(settings: Settings, request: DescribeRequest) -> int:
    """The `describe` command: check everything cheap, load the model, describe, summarise on stderr.

    Raises:
        UserError: bad input (before the model loads), or the output could not be written (a full disk).
        BrokenPipeError: whoever read stdout went away (`| head`); the CLI stops quietly.
    """
    fmt = format_for(request.out, request.fmt)
    if request.batch_size < 1:
        raise OptionError(f"--batch-size must be at least 1 (got {request.batch_size}).", "Try 8.")
    if request.resume and request.out is None:
        raise OutputError("--resume needs the output file to continue.", "Pass --out FILE with it.")

    def status(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    unreadable: list[Unreadable] = []
    try:
        paths = find_images(request.paths, request.recursive, unreadable=unreadable)
    finally:
        if unreadable:  # said even when nothing was found, before the error saying so
            status(unreadable_sentence(unreadable))
    done: list[Row] = []
    if request.out is not None and request.out.is_file() and request.out.stat().st_size > 0:
        if not request.resume:
            raise OutputError(f"{visible(request.out)} already exists.",
                              "Pass --resume to continue it, or choose another --out.")
        done = read_rows(request.out, fmt)
    from chatbot.core.runtime import open_engine_for  # imports the model stack: only now

    engine = open_engine_for(settings, progress=status)
    progress = ProgressLine(len(paths), sys.stderr, noun="image")
    try:
        with _writer_for(request.out, fmt) as writer:
            progress.start(f"Describing {plural(len(paths), 'image')}, {request.batch_size} at a time.")
            summary = describe(engine, paths, writer.write, options=settings.options, prompt=request.prompt,
                               batch_size=request.batch_size, done=done, progress=progress)
    except KeyboardInterrupt:
        progress.finish()
        status("Stopped. What was described so far is saved; run the same command with --resume to go on.")
        return 130
    except BrokenPipeError:
        progress.finish()
        raise  # the reader went away (`| head`): the CLI stops quietly, as Unix tools do
    except OutputWriteError:
        progress.finish()
        if request.out is None:
            _let_go_of_stdout()
        raise  # the CLI says why in one sentence (a full disk); the rows written so far are whole
    progress.finish()
    where = f" Results in {visible(request.out)}." if request.out is not None else ""
    status(f"Done: {summary.sentence()}{where}")
    return 0


def _writer_for(out: Path | None, fmt: str) -> RowWriter:
    """Appends to --out (a header if it is new), else writes to stdout (a header first, then the rows)."""
    return RowWriter.open(out, fmt) if out is not None else RowWriter.to_stdout(sys.stdout, fmt)


def _let_go_of_stdout() -> None:
    """Point stdout at /dev/null after a write to it failed, so Python's flush at exit does not fail again
    on the row left in its buffer (as chatbot.cli.main does after a closed pipe)."""
    try:
        target = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing flushes at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)
