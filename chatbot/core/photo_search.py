"""Searching the photo index by text: one rule for `blip2-chat search`, `/find` in the app and the plain mode.

The index records the retrieval checkpoint that made it, and only that checkpoint can search it (another
one's vectors mean nothing to it): without --model the index decides, and a different --model is refused
with the way forward. A query is ranked by the contrastive similarity (ITC, exact MaxSim over the 32 query
vectors of every picture, or the approximate path on a big index), then the best `rerank` candidates are
re-scored by the image-text matching head (ITM), as LAVIS does. A file gone since it was indexed is kept
in the list, marked missing, and never opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.errors import ImageError, PhotoIndexError, UserError
from chatbot.locations import index_dir
from chatbot.untrusted import visible

if TYPE_CHECKING:
    from chatbot.core.settings import Settings

TOP_LIMIT = 1000  # results a search may ask for: more is a listing, not a search


@dataclass(frozen=True)
class Found:
    """One search result."""

    path: str
    similarity: float  # ITC: the best of the picture's 32 query similarities with the text, -1..1
    match: float | None = None  # ITM: probability that picture and text match, 0..1; None when not re-scored
    missing: bool = False  # the file is gone since it was indexed

    def to_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "path": self.path, "similarity": round(self.similarity, 6),
                "match": None if self.match is None else round(self.match, 6), "missing": self.missing}


def found_line(rank: int, found: Found) -> str:
    """'3. /p/dog.jpg  match 0.93  similarity 0.412' (or '(missing)'): the one wording every front end shows."""
    scores = f"similarity {found.similarity:.3f}"
    if found.match is not None:
        scores = f"match {match_words(found.match)}  {scores}"
    gone = "  (missing: the file is gone since it was indexed)" if found.missing else ""
    return f"{rank}. {visible(found.path)}  {scores}{gone}"


def match_words(match: float) -> str:
    """A match probability for the result list: two decimals, or two significant digits under 0.01, so that
    results re-ranked by tiny probabilities do not all read 0.00 and look out of order."""
    return f"{match:.2f}" if match >= 0.01 or match <= 0 else f"{match:.1e}"


def check_top(top: int) -> int:
    """`--top` as given, when it is a sensible count."""
    if not 1 <= top <= TOP_LIMIT:
        raise UserError(f"--top must be between 1 and {TOP_LIMIT} (got {top}).", "Try --top 10.")
    return top


def index_folder(folder: Path | None) -> Path:
    """The index folder: --index DIR as given (~ expanded), else the data folder's."""
    return Path(os.path.expanduser(folder)) if folder is not None else index_dir()


def result_to_open(found: Sequence[Found], number: str) -> str:
    """The path `/open N` opens: result N (from 1) of the last search, when it is still there.

    Raises:
        UserError: no search yet, N is not one of its numbers, or that file is gone since it was indexed.
    """
    if not found:
        raise UserError("There are no search results to open yet.", "Search first, e.g. /find a dog on a beach.")
    digits = number.strip()
    # "²" is a digit to isdigit() but not to int(), and 5,000 digits are beyond int()'s limit: ASCII, short
    if not re.fullmatch(r"[0-9]{1,6}", digits) or not 1 <= int(digits) <= len(found):
        raise UserError(f"/open takes a result's number, 1 to {len(found)} (got {visible(number[:20])}).",
                        "e.g. /open 1 for the best match.")
    chosen = found[int(digits) - 1]
    if chosen.missing or not os.path.isfile(chosen.path):
        raise UserError(f"Result {int(digits)} is gone since it was indexed ({visible(chosen.path)}).",
                        "Open another, or run `blip2-chat index` again so the index forgets it.")
    return chosen.path



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
            from chatbot.core.photo_index.store import IndexStore

            store = IndexStore.open_existing(self.folder)  # PhotoIndexError: none yet, or damaged
            if store.is_empty():  # not kept: the next search looks again, once the pictures are in
                store.close()
                raise PhotoIndexError(
                    f"The index at {visible(self.folder)} holds no pictures yet.",
                    "Add your photos with `blip2-chat index PATH` (PATH: your photos folder); if an index run "
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
        """The `top` indexed pictures that best match `text`, best first (see the module's docstring)."""
        from chatbot.engine.retrieval import check_query_text  # no torch: says a bad query before a model loads

        check_top(top)
        check_query_text(text)  # QueryError: blank, or not text
        self.open(progress)
        query = self._engine.text_embeddings([text])[0]  # QueryError: empty, or longer than the model reads
        # The store gives every path of its best `top` pictures; copies of one picture (the same bytes in two
        # folders) are results of their own here, and `top` counts results: no more lines than asked for.
        hits = self._store.search(query, top=top)[:top]
        found = [Found(hit.path, float(hit.itc), missing=not os.path.isfile(hit.path)) for hit in hits]
        if not rerank or not found:
            return found
        progress(f"Re-scoring the best {len(found)} with the image-text matching head ...")
        return rerank_by_match(self._engine, text, found)


def rerank_by_match(engine: Any, text: str, found: list[Found]) -> list[Found]:
    """Re-score the results by the image-text matching head, best first among themselves; a file that cannot
    be read again (gone, or changed into something that is not a picture) keeps its place in the similarity
    order, marked missing (the best match may be one that is gone: it is not pushed below worse ones)."""
    from chatbot.images import LoadedImage, load_image

    images: list[LoadedImage] = []
    marked: list[Found] = []  # in the similarity order, the unreadable ones marked missing
    for item in found:
        if not item.missing:
            try:
                images.append(load_image(item.path))
            except ImageError:
                item = replace(item, missing=True)
        marked.append(item)
    scored = [item for item in marked if not item.missing]
    if not scored:
        return marked
    probabilities = engine.match_probabilities(images, text)
    rescored = iter(sorted((replace(item, match=float(p)) for item, p in zip(scored, probabilities, strict=True)),
                           key=lambda item: -(item.match or 0.0)))
    return [item if item.missing else next(rescored) for item in marked]


def canonical_model(name: str) -> str:
    """How an index records the checkpoint that made it: a known alias as its hub id, a folder as its real path."""
    from chatbot.engine.registry import resolve_alias

    expanded = os.path.expanduser(name)
    return os.path.realpath(expanded) if os.path.isdir(expanded) else resolve_alias(name)


def choose_index_model(model: str, folder: Path, *, rebuild: bool = False) -> str:
    """The checkpoint `index` embeds with: --model when given, else the one the index was made with, else the
    default retrieval checkpoint. A --model other than the index's own is refused unless `rebuild`."""
    from chatbot.core.photo_index.store import IndexStore
    from chatbot.engine.registry import DEFAULT_SEARCH_MODEL

    made_by = None
    if not rebuild and (folder / "index.sqlite").exists():
        store = IndexStore.open_existing(folder)  # a damaged index is set aside here, with the sentence saying so
        made_by = store.checkpoint
        store.close()
    if not model:
        return made_by or DEFAULT_SEARCH_MODEL
    chosen = canonical_model(model)
    if made_by is not None and not _same_checkpoint(chosen, made_by):
        raise UserError(
            f"The index at {visible(folder)} was made with {visible(made_by)}, not {visible(model)}.",
            f"Index without --model to go on with {visible(made_by)}, or start the index afresh with this "
            "model: add --rebuild.",
        )
    return chosen


def check_model_matches(model: str, checkpoint: str, folder: Path) -> None:
    """A --model other than the index's checkpoint is refused: its vectors would mean nothing to the index."""
    if not model or _same_checkpoint(model, checkpoint):
        return
    raise UserError(
        f"The index at {visible(folder)} was made with {visible(checkpoint)}, not {visible(model)}; "
        "one model cannot search another's index.",
        f"Search without --model (it uses {visible(checkpoint)}), or rebuild the index with the other model: "
        f"blip2-chat index PATH --rebuild --model {visible(model)}.",
    )


def _same_checkpoint(a: str, b: str) -> bool:
    from chatbot.engine.registry import resolve_alias

    return resolve_alias(a).lower() == resolve_alias(b).lower() or \
        os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
