"""`blip2-chat index PATH...`: build or update the search index, with progress and a summary on stderr.

Cheap checks come first (the paths, the index and which model made it), and the model loads only when
there is something new to embed, so re-running over an unchanged collection takes seconds. The run
itself (what is unchanged, reused, re-embedded, removed) is `chatbot.core.photo_index.build`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.cluster.connection import ClusterOptions
from chatbot.core.photo_search import choose_index_model, index_folder
from chatbot.core.runtime import ENDING_SIGNALS, check_batch_size, say
from chatbot.core.settings import Settings
from chatbot.errors import UserError
from chatbot.frontends.progress_line import ProgressLine, plural
from chatbot.frontends.screen_reader import config_wants_plain
from chatbot.frontends.stop_signals import SignalStop, StopSignals, stop_status
from chatbot.image_download import is_address
from chatbot.image_files import refuse_other_schemes
from chatbot.images import LoadedImage, is_url, public_url
from chatbot.untrusted import json_line, visible

if TYPE_CHECKING:
    from chatbot.core.photo_index.forget import Forgotten
    from chatbot.core.photo_index.rebuild import RebuildPlan

MOST_FAILURES_NAMED = 10


@dataclass(frozen=True)
class IndexRequest:
    """What `index` was asked to do (its flags, minus the model's)."""

    paths: tuple[str, ...]
    recursive: bool = False
    folder: Path | None = None  # --index DIR; None: the data folder's index
    rebuild: bool = False  # start afresh (the old index's files are removed)
    batch_size: int = 8
    json: bool = False  # the summary as one JSON object on stdout
    ray: str | None = None  # None: this machine; "local": a local Ray instance; else a Ray cluster's address
    workers: int = 1  # --ray: model-holding actors
    gpus_per_worker: float = 0.0  # --ray: GPUs each actor holds

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)  # OptionError: before anything is read or loaded
        if self.ray is not None:  # --workers, --gpus-per-worker, the address: before a file is listed or hashed
            ClusterOptions(self.ray, self.workers, self.gpus_per_worker).check()


def run_index(settings: Settings, request: IndexRequest) -> int:
    """The `index` command; `settings.model` is the retrieval checkpoint asked for ("" : the index's own).

    Ctrl+C, SIGTERM and SIGHUP stop it alike (`StopSignals`): every finished batch is kept, "Stopped. ..." is
    said, --json prints the finished batches' summary with `cancelled` true, and the exit status is 130, 143 or
    129. None of them cuts short the end of the run (a rebuild swapped in, an index that made nothing removed);
    one that comes then is taken as coming after it.

    Nothing is made when there is nothing to index. A run that makes an index (the first, or a --rebuild,
    which is made aside while the old index stays as it was) and ends with no picture in it leaves nothing
    behind, so a model that failed to load is never recorded; a --rebuild replaces the old index only
    once it is complete.

    Raises:
        UserError: a path that does not exist, nothing to index there, a bad --batch-size, an --index that
            is a file, another model's index, a damaged one, one that cannot be written (a full disk, no
            permission: nothing is moved).
    """
    stops = StopSignals((signal.SIGINT, *ENDING_SIGNALS))
    with stops.installed():
        try:
            return _run_index(settings, request, stops)
        except SignalStop as stop:  # before the run began: nothing was written (Ctrl+C: the CLI's own 130)
            return stop.status


def _run_index(settings: Settings, request: IndexRequest, stops: StopSignals) -> int:
    from chatbot.core.photo_index.build import IndexSummary, update_index
    from chatbot.core.photo_index.files import find_image_files, nothing_found_words
    from chatbot.core.photo_index.folder import check_index_folder, restore_superseded, waiting_rebuild
    from chatbot.core.photo_index.index_files import REBUILDING, has_index
    from chatbot.core.photo_index.rebuild import RebuildPlan, going_on_words, open_rebuild, read_plan
    from chatbot.core.photo_index.store import IndexStore

    folder = index_folder(request.folder)
    roots = checked_roots(request.paths, folder)
    check_index_folder(folder)
    found = find_image_files(roots, request.recursive)
    nothing = not found.files and not found.unreadable
    fresh = request.rebuild or not has_index(folder)  # this run makes the index it writes to
    if nothing and fresh:
        raise UserError(*nothing_found_words(list(request.paths), roots, request.recursive))
    model = choose_index_model(settings.model, folder, rebuild=request.rebuild)
    made_folders = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    plan = RebuildPlan(tuple(dict.fromkeys(found.roots)), request.recursive)  # as recorded: the way on after a stop
    store = open_rebuild(folder, model, plan) if request.rebuild else IndexStore.open(folder, model, create=True)
    # the store holds the index's writer lock now, so a rebuild found waiting is one that was stopped
    if store.superseded is not None:
        say(f"A stopped rebuild with {visible(store.superseded[0])} ({plural(store.superseded[1], 'picture')}) "
            f"is kept aside; this rebuild, with {visible(model)}, replaces it once its first pictures are in.")
    elif request.rebuild and store.count():
        say(f"Going on with the stopped rebuild ({plural(store.count(), 'picture')} in it already).")
    elif not request.rebuild and (waiting := waiting_rebuild(folder)) is not None:
        say(waiting_words(waiting, read_plan(folder / REBUILDING), folder))
    if found.linked_folders:
        say(linked_words(found.linked_folders, folder))
    progress: ProgressLine | None = None

    def advanced(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:
            progress = ProgressLine(total, sys.stderr, noun="file", plain=config_wants_plain())
            # on Ray, the speed is measured after the first batch, which waited for the workers' models to load
            progress.start(f"Indexing {plural(total, 'new or changed file')}, {request.batch_size} at a time.",
                           measure_after=request.batch_size if request.ray is not None else 0)
        while progress.done < done:
            progress.advance()

    def loaded() -> None:  # the speed shown is the model's, measured from when it is ready
        if progress is not None:
            progress.start()

    def notice(message: str) -> None:  # a sentence during a Ray run, below the progress bar as it stands
        if progress is not None:
            progress.note(message)
        else:
            say(message)

    finished = False
    held = 0
    try:
        with ExitStack() as stack:
            embed, reader = _embedder_for(settings, model, request, loaded, stack, notice)
            summary = update_index(store, roots, recursive=request.recursive, embed=embed,
                                   batch_size=request.batch_size, on_progress=advanced, reader=reader, found=found)
        held = store.count()
        finished = not summary.cancelled
    except KeyboardInterrupt as stop:  # Ctrl+C, SIGTERM or SIGHUP (`StopSignals`)
        if progress is not None:
            progress.finish()
        with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone; the summary may still go to a file
            say(f"Stopped. The index at {folder} is as it was; run the same command again to go on with the "
                "rebuild." if request.rebuild else
                "Stopped. Every finished batch is in the index; run the same command again to go on.")
        if request.json:  # the summary of the finished batches, `cancelled`: a script sees what was done
            with contextlib.suppress(Exception):  # the store as it stands (a rolled-back batch is not in it)
                held = store.count()
            done = getattr(stop, "finished", None) or IndexSummary(cancelled=True)  # update_index's finished batches
            print(json_line(summary_record(done, folder, model, held, found.linked_folders)), flush=True)
        return stop_status(stop)
    except UserError:  # the index or the model refused (a full disk, no permission): said on a line of its own
        if progress is not None:
            progress.finish()
        raise
    finally:
        with stops.deferred():  # the end of the run: no signal cuts a swap or a removal short
            made_nothing = fresh and _holds_nothing(store)
            if made_nothing:
                _remove_made_index(store, made_folders)
                if request.rebuild and (kept := restore_superseded(folder)) is not None and kept[0]:
                    say(f"The stopped rebuild with {visible(kept[0])} is kept, as it was; "
                        f"{going_on_words(kept[0], read_plan(folder / REBUILDING), folder)}.")
            elif request.rebuild and finished:
                store.swap_in()
            else:
                store.close()
    if progress is not None:
        progress.finish()
    if nothing and summary.removed == 0:  # an index that held nothing from there either: nothing was done
        raise UserError(*nothing_found_words(list(request.paths), roots, request.recursive))
    for path, reason in summary.failed[:MOST_FAILURES_NAMED]:
        say(failure_line(path, reason))
    if len(summary.failed) > MOST_FAILURES_NAMED:
        say(f"... and {len(summary.failed) - MOST_FAILURES_NAMED} more that could not be indexed.")
    if nothing:  # an emptied folder: its pictures left the index
        sentence, hint = nothing_found_words(list(request.paths), roots, request.recursive)
        say(f"{sentence} {hint}")
    if not made_nothing:
        where = f"The index at {visible(folder)} holds {plural(held, 'picture')}."
    elif request.rebuild:
        where = f"Nothing could be indexed, so the index at {visible(folder)} is as it was."
    else:
        where = f"Nothing could be indexed, so no index was made at {visible(folder)}."
    say(f"Done: {summary.sentence()} {where}")
    if request.json:
        print(json_line(summary_record(summary, folder, model, held, found.linked_folders)), flush=True)
    return 130 if summary.cancelled else 0


def waiting_words(waiting: tuple[str, int], plan: RebuildPlan | None, folder: Path) -> str:
    """The sentence for a plain `index` run while a stopped rebuild waits beside the index: the command that goes
    on with that rebuild (`plan`: its own paths and -r, as it recorded them; None: not known)."""
    from chatbot.core.photo_index.rebuild import going_on_words

    model, pictures = waiting
    return (f"A rebuild of this index with {visible(model)} was stopped before it was complete "
            f"({plural(pictures, 'picture')} so far) and waits; this run updates the index as it is. "
            f"{going_on_words(model, plan, folder, 'the rebuild', first=True)}.")


def linked_words(links: list[str], folder: Path, most: int = 3) -> str:
    """'Left out 2 linked folders (/p/a, /p/b): ...': links to folders are not followed, with the way to
    index one by its own path."""
    from chatbot.core.photo_index.folder import index_flag

    named = ", ".join(visible(link) for link in links[:most]) + (", ..." if len(links) > most else "")
    target = os.path.realpath(links[0])
    flag = index_flag(folder)
    return (f"Left out {plural(len(links), 'linked folder')} ({named}): links to folders are not followed; "
            f"index {'it' if len(links) == 1 else 'each'} by its own path, e.g. "
            f"blip2-chat index {_quoted(target)} -r{flag}.")


def _quoted(text: str) -> str:
    shown = visible(text)
    return shlex.quote(shown) if shown == text else repr(shown)


def failure_line(path: str, reason: str) -> str:
    """'Could not index /p/a.jpg: it is empty (0 bytes). ...': the file named once, though most reasons
    (the image loader's sentences) name it too."""
    shown = visible(path)
    if reason.startswith(shown + " "):
        return f"Could not index {shown}: it{reason[len(shown):]}"
    if re.search(re.escape(shown) + r"(?=[\s:,;)]|\.\s|\.?$)", reason):
        return reason  # 'Permission denied reading /p/a.jpg. ...', 'Could not read /p/a.jpg: ...'
    return f"Could not index {shown}: {reason}"


def _holds_nothing(store: Any) -> bool:
    """Whether the index this run made holds no picture; False when that cannot be read now (it is kept: the
    error being said is the first one)."""
    try:
        return bool(store.is_empty())
    except UserError:
        return False


def _remove_made_index(store: Any, made_folders: list[Path]) -> None:
    """Close and delete an index this run made that holds nothing, and the folders the run made for it."""
    from chatbot.core.photo_index.index_files import REBUILD_RECORD, remove_index_files

    store.close()
    remove_index_files(store.folder)
    (store.folder / REBUILD_RECORD).unlink(missing_ok=True)  # a rebuild's record of what it was to index
    for path in [store.folder, *made_folders]:
        (path / "writer.lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.rmdir()  # only when nothing else is in it (an index folder given may hold other things)


def _embedder_for(settings: Settings, model: str, request: IndexRequest, loaded: Callable[[], None],
                  stack: ExitStack, notice: Callable[[str], None] = say,
                  ) -> tuple[Callable[[list[LoadedImage]], Any], Any]:
    """The model here (loaded on the first new file), or a Ray run's reader and embeddings (started likewise)."""
    if request.ray is None:
        return LazyEmbedder(settings, model, on_loaded=loaded), None
    from chatbot.cluster.jobs import ClusterOptions, remote_embeddings

    cluster = ClusterOptions(request.ray, request.workers, request.gpus_per_worker)
    where = "a local instance" if request.ray == "local" else visible(request.ray)
    remote = stack.enter_context(remote_embeddings(
        settings, model, batch_size=request.batch_size, cluster=cluster, notice=notice,
        on_start=lambda: say(f"Indexing on Ray ({where}, {plural(request.workers, 'worker')}).")))
    return remote.embed, remote


def summary_record(summary: Any, folder: Path, model: str, held: int,
                   linked_folders: Sequence[str] = ()) -> dict[str, Any]:
    record = asdict(summary)
    record["failed"] = [{"path": path, "reason": reason} for path, reason in summary.failed]
    record.update({"index": str(folder), "model": model, "pictures": held, "linked_folders": list(linked_folders)})
    return record


def checked_roots(paths: Sequence[str], folder: Path | None = None) -> list[Path]:
    """The files and folders to index, as absolute paths; a URL or a path that is not there is refused (with
    `index --forget` named when the index in `folder` still holds pictures from there)."""
    roots = []
    for raw in paths:
        if is_url(raw):
            raise UserError(f"index works on files and folders, not links ({visible(public_url(raw))}).",
                            "Download the images first.")
        refuse_other_schemes(raw, "index", ray_reads_storage=False)  # only describe --ray reads s3://
        path = Path(raw).expanduser().absolute()
        if not path.exists():
            raise UserError(f"No file or folder at {visible(path)}.", _forget_hint(raw, folder))
        roots.append(path)
    return roots


def _forget_hint(raw: str, folder: Path | None) -> str:
    """What to do about a PATH that is not there: check it, or, when the index still holds pictures from
    there, forget them if they are gone for good (never done unasked: a drive may only be unplugged)."""
    from chatbot.core.photo_index.folder import index_flag
    from chatbot.core.photo_index.forget import recorded_form
    from chatbot.core.photo_index.recorded_paths import recorded_under

    root = recorded_form(raw)
    if folder is None or not (held := recorded_under(folder, root)):
        return "Check the path."
    return (f"The index still holds {plural(held, 'picture')} from there; if they are gone for good, "
            f"`blip2-chat index --forget {_quoted(root)}{index_flag(folder)}` removes them.")


# --- index --forget PATH...

FORGET_FLAGS_HELP = "it forgets everything recorded at or under each PATH, sub-folders included, without " \
                    "reading a file or loading a model"


@dataclass(frozen=True)
class ForgetRequest:
    """`index --forget PATH...`: the paths whose pictures leave the index."""

    paths: tuple[str, ...]
    folder: Path | None = None  # --index DIR; None: the data folder's index
    json: bool = False  # the summary as one JSON object on stdout


def refuse_with_forget(flags: Sequence[str]) -> None:
    """UserError naming the flags given with --forget that have nothing to do with it (none: nothing happens)."""
    if flags:
        raise UserError(f"index --forget takes no {_and(list(flags), 'or')} ({FORGET_FLAGS_HELP}).",
                        f"Leave {'it' if len(flags) == 1 else 'them'} out: "
                        "blip2-chat index --forget PATH... [--index DIR] [--json].")


def run_forget(request: ForgetRequest) -> int:
    """The `index --forget` command: exit 0 when every PATH had pictures recorded at or under it; 2 when one
    had none (said, and the others forgotten all the same) or when none had any.

    Raises:
        UserError: an empty PATH or a link; no index, a damaged one, another run writing to it.
    """
    from chatbot.core.photo_index.forget import forget_paths

    for raw in request.paths:
        if not raw.strip():
            raise UserError("index --forget was given an empty PATH.",
                            "Name the folder or file whose pictures the index should forget.")
        if is_address(raw):  # https://, s3://, ftp://: never recorded
            raise UserError(f"index --forget works on files and folders of this machine, not "
                            f"{visible(public_url(raw))}.", "The index records only those.")
    folder = index_folder(request.folder)
    done = forget_paths(folder, request.paths)
    if request.json:
        print(json_line(forget_record(done)), flush=True)
    if done.forgotten:
        say(forgotten_words(done))
    empty = [entry.path for entry in done.paths if not entry.forgotten]
    for path in empty:
        sentence = f"The index at {visible(folder)} holds no picture recorded at or under {visible(path)}."
        if not done.forgotten and path == empty[-1]:
            sentence += " Give each PATH as it was indexed (as search results show it)."
        print(f"blip2-chat: {sentence}", file=sys.stderr, flush=True)
    return 2 if empty else 0


def forgotten_words(done: Forgotten) -> str:
    """'Forgot 6 pictures under /p; the files themselves were not touched.' (the index's and, where one waits,
    the stopped rebuild's)."""
    had = [entry for entry in done.paths if entry.forgotten]
    where = [f"{'at' if entry.file else 'under'} {visible(entry.path)}" for entry in had]
    what = plural(done.forgotten, "picture")
    if len(had) == 1:
        what += f" {where[0]}"
    else:  # a picture under two PATHs given counts once in all
        what += f" ({_and([f'{entry.forgotten} {words}' for entry, words in zip(had, where, strict=True)])})"
    if done.in_rebuild and done.in_index:
        what += ", from the index and from the stopped rebuild that waits beside it"
    elif done.in_rebuild:
        what += ", from the stopped rebuild that waits beside the index"
    from chatbot.core.photo_index.build import freed_words

    freed = f" {freed_words(done.freed_bytes)}" if done.freed_bytes else ""
    return f"Forgot {what}; the files themselves were not touched.{freed}"


def forget_record(done: Forgotten) -> dict[str, Any]:
    """`index --forget --json`: one object; `paths` lists each PATH given (as recorded) with its count."""
    return {"forgotten": done.forgotten, "paths": [{"path": e.path, "forgotten": e.forgotten} for e in done.paths],
            "stopped_rebuild": done.in_rebuild, "index": str(done.folder), "model": done.checkpoint,
            "pictures": done.pictures, "freed_bytes": done.freed_bytes}


def _and(words: list[str], last: str = "and") -> str:
    """'a', 'a and b', 'a, b and c' (or 'a, b or c')."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


class LazyEmbedder:
    """The model's image side, loaded on the first batch that has new content (never, when nothing changed)."""

    def __init__(self, settings: Settings, model: str, on_loaded: Callable[[], None] = lambda: None) -> None:
        self.settings, self.model, self.on_loaded = settings, model, on_loaded
        self.engine: Any = None

    def __call__(self, images: list[LoadedImage]) -> Any:
        if self.engine is None:
            from chatbot.engine.retrieval import open_retrieval_engine  # imports torch: only now

            say(f"Loading the search model {self.model} ...")
            self.engine = open_retrieval_engine(self.model, device=self.settings.device, dtype=self.settings.dtype,
                                                quantize=self.settings.quantize, progress=say)
            self.on_loaded()
        return self.engine.image_embeddings(images)
