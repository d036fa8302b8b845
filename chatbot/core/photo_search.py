"""Searching the photo index by text: one rule for `blip2-chat search`, `/find` in the app and the plain mode.

The index records the retrieval checkpoint that made it, and only that checkpoint can search it (another
one's vectors mean nothing to it): without --model the index decides, and a different --model is refused
with the way forward. A query is ranked by the contrastive similarity (ITC, exact MaxSim over the 32 query
vectors of every picture, or the approximate path on a big index), then a fixed pool of the best RERANK_POOL
by similarity is re-scored by the image-text matching head (ITM), as LAVIS does with its k_test: the pool
comes first, by match, then the rest by similarity, cut to `top`. The pool does not depend on `top`, so the
best k results are the first k of any longer list. Each result says what became of its file since it was
indexed (the index keeps its size, mtime and sha256): gone, no longer a picture, unreadable (none of them
is ever opened), or changed (ranked by what it showed then); the way forward is `blip2-chat index` again.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.errors import ImageError, PhotoIndexError, UserError
from chatbot.locations import index_dir
from chatbot.untrusted import visible

if TYPE_CHECKING:
    from chatbot.core.settings import Settings

TOP_LIMIT = 1000  # results a search may ask for: more is a listing, not a search
# Pictures the matching head re-scores on every search, whatever --top is (LAVIS's k_test): each costs one
# image encode (about 5 s for ViT-g on a CPU), so 10 keeps the cost of the default --top 10 as it was.
RERANK_POOL = 10

# What became of a result's file since it was indexed (`Found.state`; `--json`'s "state")
OK, CHANGED, GONE, NOT_A_PICTURE, UNREADABLE = "ok", "changed", "gone", "not_a_picture", "unreadable"
CANNOT_OPEN = (GONE, NOT_A_PICTURE, UNREADABLE)
_STATE_WORDS = {
    GONE: "gone: deleted or moved since it was indexed",
    NOT_A_PICTURE: "no longer a picture: replaced since it was indexed",
    UNREADABLE: "cannot be read any more",
    CHANGED: "changed since it was indexed: its similarity is of what it showed then",
}
AGAIN = "run `blip2-chat index` again"


@dataclass(frozen=True)
class Found:
    """One search result."""

    path: str
    similarity: float  # ITC: the best of the picture's 32 query similarities with the text, -1..1
    match: float | None = None  # ITM: probability that picture and text match, 0..1; None when not re-scored
    missing: bool = False  # it cannot be opened: gone, no longer a picture, or unreadable (see `state`)
    state: str = ""  # OK, CHANGED, GONE, NOT_A_PICTURE or UNREADABLE; "" : GONE when `missing`, else OK
    indexed: tuple[int, int, str] | None = field(default=None, compare=False)  # (size, mtime_ns, sha256) as indexed

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", self.state or (GONE if self.missing else OK))
        object.__setattr__(self, "missing", self.state in CANNOT_OPEN)

    def to_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "path": self.path, "similarity": round(self.similarity, 6),
                "match": None if self.match is None else round(self.match, 6), "missing": self.missing,
                "state": self.state}


def found_line(rank: int, found: Found) -> str:
    """'3. /p/dog.jpg  match 0.930  similarity 0.412', and what became of the file when it is not as it was
    indexed ('  (gone: ...; run `blip2-chat index` again)'): the one wording every front end shows."""
    scores = f"similarity {found.similarity:.3f}"
    if found.match is not None:
        scores = f"match {match_words(found.match)}  {scores}"
    words = _STATE_WORDS.get(found.state)
    note = f"  ({words}; {AGAIN})" if words else ""
    return f"{rank}. {visible(found.path)}  {scores}{note}"


def match_words(match: float) -> str:
    """A match probability for the result list: three decimals, always (`0.930`, `0.010`, `0.000`), so that
    every line reads alike; results closer than that read as equal, as they are to the eye."""
    return f"{match:.3f}"


def check_top(top: int) -> int:
    """`--top` as given, when it is a sensible count."""
    if not 1 <= top <= TOP_LIMIT:
        raise UserError(f"--top must be between 1 and {TOP_LIMIT} (got {top}).", "Try --top 10.")
    return top


def index_folder(folder: Path | None) -> Path:
    """The index folder: --index DIR made absolute (~ expanded: what --json and the hints name works from any
    folder), else the data folder's."""
    return Path(os.path.abspath(os.path.expanduser(folder))) if folder is not None else index_dir()


def result_to_open(found: Sequence[Found], number: str) -> str:
    """The path `/open N` opens: result N (from 1) of the last search, when it can still be opened.

    Its file is looked at again now: one gone, no longer a picture or unreadable is refused, and so is one
    that changed since the list said it was as indexed (the list did not warn of it, so it is said first).

    Raises:
        UserError: no search yet, N is not one of its numbers, or that file is not what the list showed.
    """
    if not found:
        raise UserError("There are no search results to open yet.", "Search first, e.g. /find a dog on a beach.")
    digits = number.strip()
    # "²" is a digit to isdigit() but not to int(), and 5,000 digits are beyond int()'s limit: ASCII, short
    if not re.fullmatch(r"[0-9]{1,6}", digits) or not 1 <= int(digits) <= len(found):
        raise UserError(f"/open takes a result's number, 1 to {len(found)} (got {visible(number[:20])}).",
                        "e.g. /open 1 for the best match.")
    chosen = found[int(digits) - 1]
    n, shown = int(digits), visible(chosen.path)
    now = chosen.state if chosen.missing else file_state(chosen.path, chosen.indexed)[0]
    if now == GONE:
        raise UserError(f"Result {n} is gone since it was indexed ({shown}).",
                        "Open another, or run `blip2-chat index` again so the index forgets it.")
    if now in (NOT_A_PICTURE, UNREADABLE):
        what = "is no longer a picture" if now == NOT_A_PICTURE else "cannot be read any more"
        raise UserError(f"Result {n} ({shown}) {what}: it changed since it was indexed.",
                        "Open another, or run `blip2-chat index` again so the index sees it as it is now.")
    if now == CHANGED and chosen.state != CHANGED:
        raise UserError(f"Result {n} ({shown}) has changed since it was indexed, so it may not show what you "
                        "searched for.",
                        f"Open it anyway with /image {_typed(chosen.path)}, or run `blip2-chat index` again "
                        "and search again.")
    return chosen.path


def file_state(path: str, indexed: tuple[int, int, str] | None) -> tuple[str, Any]:
    """(what became of the file since it was indexed, its LoadedImage when it had to be read to tell).

    One stat when its size and mtime are as indexed (or not known); otherwise it is read: the same bytes
    (touched, copied back) are OK, other bytes CHANGED, and bytes that are no picture NOT_A_PICTURE."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return GONE, None
    except OSError:
        return UNREADABLE, None
    if not stat.S_ISREG(info.st_mode):
        return NOT_A_PICTURE, None  # a folder, a pipe, ... in its place: never opened
    if indexed is None or (info.st_size, info.st_mtime_ns) == indexed[:2]:
        return OK, None
    return _read_state(path, indexed[2])


def _read_state(path: str, sha256: str) -> tuple[str, Any]:
    from chatbot.images import load_image

    try:
        image = load_image(path)
    except ImageError:
        return _unloadable(path), None
    return (OK if image.sha256 == sha256 else CHANGED), image


def _unloadable(path: str) -> str:
    """Why a file the image loader refused cannot be opened: gone, unreadable, or no picture (any more)."""
    if not os.path.lexists(path):
        return GONE
    return NOT_A_PICTURE if os.access(path, os.R_OK) else UNREADABLE


def _typed(path: str) -> str:
    """A path as /image takes it: in quotes when it has spaces."""
    return f'"{visible(path)}"' if any(char.isspace() for char in path) else visible(path)



class Finder:
    """An index and the retrieval model that made it, opened on the first search and kept for the next.

    Nothing is loaded when a Finder is made, so a chat can hold one at no cost until `/find`.
    """

    def __init__(
        self, *, device: str = "auto", dtype: str = "auto", quantize: str = "auto", model: str = "",
        folder: Path | None = None,
    ) -> None:
        self.device, self.dtype, self.quantize = device, dtype, quantize
        self.model = model  # "" : the checkpoint the index was made with
        self.folder = index_folder(folder)
        self._store: Any = None
        self._engine: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, model: str = "", folder: Path | None = None) -> Finder:
        """A Finder with the chat's device and precision; `model` names a retrieval checkpoint (not the chat's)."""
        return cls(device=settings.device, dtype=settings.dtype, quantize=settings.quantize, model=model,
                   folder=folder)

    def open(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Open the index, then the model it names (once). Raises the index's and the loader's UserErrors."""
        if self._store is None:
            from chatbot.core.photo_index.folder import index_flag
            from chatbot.core.photo_index.store import IndexStore

            store = IndexStore.open_existing(self.folder)  # PhotoIndexError: none yet, or damaged
            if store.is_empty():  # not kept: the next search looks again, once the pictures are in
                store.close()
                raise PhotoIndexError(
                    f"The index at {visible(self.folder)} holds no pictures yet.",
                    f"Add your photos with `blip2-chat index PATH{index_flag(self.folder)}` (PATH: your photos "
                    "folder); if an index run "
                    "has just started, wait until it has added some.")
            self._store = store
        if self._engine is None:
            checkpoint = self._store.checkpoint
            check_model_matches(self.model, checkpoint, self.folder)
            from chatbot.engine.retrieval import open_retrieval_engine  # imports torch: only now

            progress(f"Loading the search model {checkpoint} ...")
            self._engine = open_retrieval_engine(checkpoint, device=self.device, dtype=self.dtype,
                                                 quantize=self.quantize, progress=progress)

    def find(
        self, text: str, *, top: int = 10, rerank: bool = True, progress: Callable[[str], None] = lambda _: None,
    ) -> list[Found]:
        """The `top` indexed pictures that best match `text`, best first (see the module's docstring).

        `find(top=k)` is the first k of `find(top=n)` for k <= n: the re-scored pool is fixed. (Above
        EXACT_LIMIT pictures the approximate stage keeps at least 4 * top candidates, so there it holds for
        tops up to CANDIDATES / 4; a larger top looks at more candidates and may find better ones.)"""
        from chatbot.engine.retrieval import check_query_text  # no torch: says a bad query before a model loads

        check_top(top)
        check_query_text(text)  # QueryError: blank, or not text
        # The store gives every path of its best pictures; copies of one picture (the same bytes in two
        # folders) are results of their own here, and `top` counts results: no more lines than asked for.
        # The pool is the first RERANK_POOL results whatever `top` is, so a shorter list is a longer one's start.
        pool = RERANK_POOL if rerank else 0
        wanted = max(top, pool)
        found: list[Found] = []
        read: dict[str, Any] = {}  # the files read to tell what became of them, for the matching head
        for hit in self._hits(text, wanted, progress):
            indexed = (hit.size, hit.mtime_ns, hit.sha256) if hit.size >= 0 else None
            state, image = file_state(hit.path, indexed)
            if image is not None:
                read[hit.path] = image
            found.append(Found(hit.path, float(hit.itc), state=state, indexed=indexed))
        if not pool or not found:
            return found[:top]
        head = found[:pool]
        progress(f"Re-scoring the best {len(head)} by similarity with the image-text matching head ...")
        return (rerank_by_match(self._engine, text, head, read) + found[pool:])[:top]

    def _hits(self, text: str, wanted: int, progress: Callable[[str], None]) -> list[Any]:
        """The store's best `wanted` pictures for `text`. An index that `index --rebuild` swapped in since the
        store was opened is searched instead of the old one (the store follows it, saying nothing); when that
        rebuild used another model, that model is loaded (as on a first search) and the query embedded again."""
        from chatbot.core.photo_index.store import IndexRebuilt

        try:
            return self._search_once(text, wanted, progress)
        except IndexRebuilt:
            self._engine = None  # the store reads the new index now: its own model loads, once
            return self._search_once(text, wanted, progress)

    def _search_once(self, text: str, wanted: int, progress: Callable[[str], None]) -> list[Any]:
        self.open(progress)
        query = self._engine.text_embeddings([text])[0]  # QueryError: empty, or longer than the model reads
        return list(self._store.search(query, top=wanted)[:wanted])


def rerank_by_match(engine: Any, text: str, found: list[Found], read: dict[str, Any] | None = None) -> list[Found]:
    """Re-score the results by the image-text matching head, best first among themselves; a file that cannot
    be read again (gone, or changed into something that is not a picture) keeps its place in the similarity
    order, marked so (the best match may be one that is gone: it is not pushed below worse ones). `read`:
    pictures already read, by path."""
    from chatbot.images import LoadedImage, load_image

    read = read or {}
    images: list[LoadedImage] = []
    marked: list[Found] = []  # in the similarity order, the unreadable ones marked so
    for item in found:
        if not item.missing:
            try:
                images.append(read.get(item.path) or load_image(item.path))
            except ImageError:
                item = replace(item, state=_unloadable(item.path))
        marked.append(item)
    scored = [item for item in marked if not item.missing]
    if not scored:
        return marked
    probabilities = engine.match_probabilities(images, text)
    rescored = iter(sorted((replace(item, match=float(p)) for item, p in zip(scored, probabilities, strict=True)),
                           key=lambda item: -(item.match or 0.0)))
    return [item if item.missing else next(rescored) for item in marked]


def canonical_model(name: str) -> str:
    """How an index records the checkpoint that made it: a known alias as its hub id, a folder as its real path,
    the demo's as `demo`."""
    from chatbot.engine.registry import resolve_alias
    from chatbot.locations import DEMO_MODEL, is_demo_model

    if is_demo_model(name):
        return DEMO_MODEL
    expanded = os.path.expanduser(name)
    return os.path.realpath(expanded) if os.path.isdir(expanded) else resolve_alias(name)


def check_search_model(model: str) -> None:
    """A --model for index or search that names a chat checkpoint (a known chat name, or a folder whose
    config.json says so) is refused as that, before any index is compared with it (no torch is imported)."""
    from chatbot.engine.checkpoint_kind import check_known_name, checkpoint_kind, wrong_kind
    from chatbot.locations import is_demo_model

    if not model or is_demo_model(model):
        return
    check_known_name(model, "retrieval")  # NotACheckpointError: a chat model's hub id or alias
    config = Path(os.path.expanduser(model)) / "config.json"
    try:
        kind = checkpoint_kind(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return  # not a folder with a readable config: the loader says what it is, if it is used
    if kind == "chat":
        raise wrong_kind(visible(model), "chat")


def index_model(folder: Path | None) -> str | None:
    """The checkpoint the index in `folder` (None: the data folder's) was made with, read without opening it
    for writing; None when there is no index, or it cannot be read."""
    from chatbot.core.photo_index.index_files import recorded

    return recorded(index_folder(folder))[0]


def choose_index_model(model: str, folder: Path, *, rebuild: bool = False) -> str:
    """The checkpoint `index` embeds with: --model when given, else the one the index was made with (also for
    a --rebuild: it starts afresh with the same model), else the default retrieval checkpoint. A --model other
    than the index's own is refused unless `rebuild`; one that names a chat checkpoint always."""
    from chatbot.core.photo_index.index_files import recorded
    from chatbot.core.photo_index.store import IndexStore
    from chatbot.engine.registry import DEFAULT_SEARCH_MODEL

    check_search_model(model)
    made_by = None
    if rebuild:
        made_by = recorded(folder)[0]  # never set aside here: a rebuild replaces a damaged index too
    elif (folder / "index.sqlite").exists():
        store = IndexStore.open_existing(folder)  # a damaged index is set aside here, with the sentence saying so
        made_by = store.checkpoint
        store.close()
    if not model:
        return made_by or DEFAULT_SEARCH_MODEL
    chosen = canonical_model(model)
    if not rebuild and made_by is not None and not _same_checkpoint(chosen, made_by):
        raise UserError(
            f"The index at {visible(folder)} was made with {visible(made_by)}, not {visible(model)}.",
            f"Index without --model to go on with {visible(made_by)}, or start the index afresh with this "
            "model: add --rebuild.",
        )
    return chosen


def check_model_matches(model: str, checkpoint: str, folder: Path) -> None:
    """A --model other than the index's checkpoint is refused: its vectors would mean nothing to the index.
    A chat checkpoint is refused as that first (a rebuild with it would fail too)."""
    from chatbot.core.photo_index.folder import index_flag

    check_search_model(model)
    if not model or _same_checkpoint(model, checkpoint):
        return
    raise UserError(
        f"The index at {visible(folder)} was made with {visible(checkpoint)}, not {visible(model)}; "
        "one model cannot search another's index.",
        f"Search without --model (it uses {visible(checkpoint)}), or rebuild the index with the other model: "
        f"blip2-chat index PATH --rebuild --model {visible(model)}{index_flag(folder)}.",
    )


def _same_checkpoint(a: str, b: str) -> bool:
    from chatbot.engine.registry import resolve_alias

    return resolve_alias(a).lower() == resolve_alias(b).lower() or \
        os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
