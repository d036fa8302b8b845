"""`blip2-chat describe`: alt text for whole folders, batched, written row by row, resumable.

Images are found first (no model is loaded for a typo), then fed to the engine `batch_size`
at a time. Each result is appended and flushed as soon as its batch is done, so a killed run
loses at most one batch; `--resume` skips images already in the output (same path, same
sha256). An unreadable image becomes an error row and the run goes on. Identical files are
described once: the copies get the same text without running the model again.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.settings import Settings
from chatbot.engine.base import Engine, GenerationOptions
from chatbot.errors import ImageError, OptionError, UserError
from chatbot.frontends.describe.alt_text import DEFAULT_PROMPT, to_alt_text
from chatbot.frontends.describe.output import OutputError, Row, RowWriter, format_for, read_rows
from chatbot.frontends.describe.progress_line import ProgressLine
from chatbot.images import IMAGE_SUFFIXES, LoadedImage, is_url, load_image

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


def find_images(paths: Sequence[str], recursive: bool = False) -> list[str]:
    """Absolute paths of the images PATHS name, in order, each file once (by its real path).

    A file named outright is tried whatever its suffix; inside folders only image suffixes
    count and hidden files and folders are left out. Symlinked folders are not followed.

    Raises:
        UserError: a path that does not exist, a URL, or nothing found at all.
    """
    found: list[str] = []
    seen: set[str] = set()
    folders_below = False
    for raw in paths:
        if is_url(raw):
            raise UserError(f"describe works on files and folders, not links ({raw}).",
                            "Download the images first, or use `blip2-chat caption URL` for one link.")
        path = Path(os.path.abspath(os.path.expanduser(raw)))
        if path.is_dir():
            candidates, below = _images_in(path, recursive)
            folders_below = folders_below or below
        elif os.path.lexists(path):
            candidates = [path]
        else:
            raise UserError(f"No file or folder at {path}.", "Check the path.")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                found.append(str(candidate))
    if not found:
        hint = "Add --recursive to look in its sub-folders." if folders_below and not recursive else \
            f"describe reads {', '.join(sorted(IMAGE_SUFFIXES))} files."
        raise UserError(f"No images found in {', '.join(paths)}.", hint)
    return found


def _images_in(folder: Path, recursive: bool) -> tuple[list[Path], bool]:
    """Image files in `folder` (sorted by name), and whether it has sub-folders."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return [], False  # an unreadable sub-folder is left out rather than ending the run
    images = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_file()
              and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    subfolders = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    if recursive:
        for sub in subfolders:
            images += _images_in(sub, True)[0]
    return images, bool(subfolders)


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
    """The `describe` command: check everything cheap, load the model, describe, summarise on stderr."""
    fmt = format_for(request.out, request.fmt)
    if request.batch_size < 1:
        raise OptionError(f"--batch-size must be at least 1 (got {request.batch_size}).", "Try 8.")
    if request.resume and request.out is None:
        raise OutputError("--resume needs the output file to continue.", "Pass --out FILE with it.")
    paths = find_images(request.paths, request.recursive)
    done: list[Row] = []
    if request.out is not None and request.out.is_file() and request.out.stat().st_size > 0:
        if not request.resume:
            raise OutputError(f"{request.out} already exists.",
                              "Pass --resume to continue it, or choose another --out.")
        done = read_rows(request.out, fmt)
    from chatbot.core.runtime import open_engine_for  # imports the model stack: only now

    def status(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    engine = open_engine_for(settings, progress=status)
    writer = RowWriter.open(request.out, fmt) if request.out is not None else RowWriter(sys.stdout, fmt)
    progress = ProgressLine(len(paths), sys.stderr, noun="images")
    progress.start(f"Describing {len(paths)} images, {request.batch_size} at a time.")
    try:
        summary = describe(engine, paths, writer.write, options=settings.options, prompt=request.prompt,
                           batch_size=request.batch_size, done=done, progress=progress)
    except KeyboardInterrupt:
        progress.finish()
        status("Stopped. What was described so far is saved; run the same command with --resume to go on.")
        return 130
    finally:
        writer.close()
    progress.finish()
    where = f" Results in {request.out}." if request.out is not None else ""
    status(f"Done: {summary.sentence()}{where}")
    return 0
