"""Readers of the index while `index --rebuild` swaps a new one in: a search gives one whole index's results (the
new one's), never a mix; it never calls the intact index damaged nor sets it aside; a chat's Finder follows the
swap (and loads the new index's model when the rebuild used another).

The swap is made between a reader's steps by running the real command (`blip2-chat index ... --rebuild`) in this
process, so nothing waits on time. The embedder is a fixed function of the pixels (tests/test_photo_index.py's
`pixel_embed`), so no model loads; the reference is float32 MaxSim over the pictures on disk, computed here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.core.photo_index.folder import lock_for_writing
from chatbot.core.photo_index.index_files import REBUILDING
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.photo_index.swap import REPLACED, SWAP_MARK
from chatbot.core.photo_search import Finder
from chatbot.errors import PhotoIndexError
from chatbot.frontends.search import index_run
from chatbot.images import LoadedImage, load_image
from tests.test_photo_index import brute_force, picture, pixel_embed, same_ranking, unit

FIRST, OTHER = "someone/first-itm", "someone/other-itm"  # checkpoint names: recorded, never loaded here


@pytest.fixture(autouse=True)
def pixel_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """`index` embeds with `pixel_embed` instead of loading its model."""

    def call(lazy: index_run.LazyEmbedder, images: list[LoadedImage]) -> np.ndarray:
        return pixel_embed(images)

    monkeypatch.setattr(index_run.LazyEmbedder, "__call__", call)


def shelf(folder: Path, seeds: range) -> Path:
    """`folder`, made here, with one picture per seed (each its own bytes, so its own vectors)."""
    folder.mkdir()
    for seed in seeds:
        picture(folder / f"{seed}.png", seed)
    return folder


@pytest.fixture
def shelves(tmp_path: Path) -> dict[str, Path]:
    return {"few": shelf(tmp_path / "few", range(3)), "more": shelf(tmp_path / "more", range(100, 109))}


def index(*args: str | Path) -> None:
    assert main(["index", *map(str, args)]) == 0


def query(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(256).astype(np.float32))


def reference(folders: list[Path], text_vector: np.ndarray) -> dict[str, float]:
    """Every picture in `folders` by path, scored by float32 MaxSim of its pixels' vectors (not the index's)."""
    paths = sorted(str(path) for folder in folders for path in folder.glob("*.png"))
    vectors = pixel_embed([load_image(path) for path in paths])
    return dict(zip(paths, brute_force(vectors, text_vector).tolist(), strict=True))


def assert_whole_index(folder: Path, pictures: dict[str, float]) -> None:
    """The folder holds one index, intact, of exactly these pictures: nothing set aside, no swap left half-done."""
    assert not list(folder.glob("damaged-*"))
    assert not (folder / REBUILDING).exists() and not (folder / REPLACED).exists() and not (folder / SWAP_MARK).exists()
    store = IndexStore.open_existing(folder)
    try:
        assert set(store.all_states()) == set(pictures)
    finally:
        store.close()


@pytest.mark.parametrize(("before", "after"), [(["few"], ["more", "few"]), (["more", "few"], ["few"])],
                         ids=["more-pictures", "fewer-pictures"])
def test_a_search_opened_before_a_rebuild_swapped_in_gives_the_new_index_results(
    tmp_path: Path, shelves: dict[str, Path], before: list[str], after: list[str],
) -> None:
    """`search` opens the index, then loads its model (seconds) while the rebuild ends: its search reads the new
    index whole (it read the old database with the new matrix: other pictures' scores under wrong paths, or, with
    fewer pictures, "damaged")."""
    folder = tmp_path / "index"
    index(*(shelves[name] for name in before), "--model", FIRST, "--index", folder)
    reader = IndexStore.open_existing(folder)
    try:
        index(*(shelves[name] for name in after), "--rebuild", "--model", FIRST, "--index", folder)
        expected = reference([shelves[name] for name in after], query(5))
        top = len(expected)
        found = [hit.path for hit in reader.search(query(5), top=top)]
    finally:
        reader.close()
    same_ranking(found, expected, top)
    assert_whole_index(folder, expected)


def test_a_search_that_kept_its_matrix_mapped_reads_the_new_index(tmp_path: Path, shelves: dict[str, Path]) -> None:
    """A store that searched once (its matrix mapped, as a chat's is) and searches again after a rebuild."""
    folder = tmp_path / "index"
    index(shelves["more"], "--model", FIRST, "--index", folder)
    reader = IndexStore.open_existing(folder)
    try:
        first = reference([shelves["more"]], query(1))
        same_ranking([hit.path for hit in reader.search(query(1), top=4)], first, 4)
        index(shelves["few"], "--rebuild", "--model", FIRST, "--index", folder)
        second = reference([shelves["few"]], query(2))
        same_ranking([hit.path for hit in reader.search(query(2), top=3)], second, 3)
        assert reader.vectors_for([]) == {}
    finally:
        reader.close()
    assert_whole_index(folder, second)


def test_a_swap_while_the_index_opens_is_never_taken_for_damage(
    tmp_path: Path, shelves: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worst case the probe found: the swap ends between the reader's connect (the old database) and its look
    at the matrix (the new, shorter one). It set the fresh, intact index aside as damaged; now it opens that one."""
    folder = tmp_path / "index"
    index(shelves["more"], shelves["few"], "--model", FIRST, "--index", folder)
    real = IndexStore._check_intact
    swapped: list[bool] = []

    def rebuild_first(store: IndexStore) -> None:
        if store.folder == folder and not swapped:  # the reader's first look, not the rebuild's own stores
            swapped.append(True)
            index(shelves["few"], "--rebuild", "--model", FIRST, "--index", folder)
        real(store)

    monkeypatch.setattr(IndexStore, "_check_intact", rebuild_first)
    reader = IndexStore.open_existing(folder)
    monkeypatch.setattr(IndexStore, "_check_intact", real)
    expected = reference([shelves["few"]], query(3))
    try:
        assert swapped and reader.count() == len(expected)
        same_ranking([hit.path for hit in reader.search(query(3), top=3)], expected, 3)
    finally:
        reader.close()
    assert_whole_index(folder, expected)


def test_damage_of_the_index_in_place_is_still_set_aside(tmp_path: Path, shelves: dict[str, Path]) -> None:
    """The reader that is sure the files it has are the current ones still calls a short matrix damage."""
    folder = tmp_path / "index"
    index(shelves["more"], "--model", FIRST, "--index", folder)
    with open(folder / "vectors.f16", "r+b") as matrix:
        matrix.truncate(100)
    with pytest.raises(PhotoIndexError, match="is damaged; its files were moved to"):
        IndexStore.open_existing(folder)
    assert (folder / "damaged-1" / "index.sqlite").exists()


def test_a_reader_leaves_a_damaged_index_in_place_while_another_run_writes_to_it(
    tmp_path: Path, shelves: dict[str, Path],
) -> None:
    """A reader moves files only under the writer lock: a run holding it (a rebuild about to swap in) is never
    raced; the damage is said, and set aside by the next reader once the lock is free."""
    folder = tmp_path / "index"
    index(shelves["more"], "--model", FIRST, "--index", folder)
    with open(folder / "vectors.f16", "r+b") as matrix:
        matrix.truncate(100)
    lock = lock_for_writing(folder)
    try:
        with pytest.raises(PhotoIndexError, match="is damaged, and another blip2-chat is writing to it right now"):
            IndexStore.open_existing(folder)
        assert not list(folder.glob("damaged-*")) and (folder / "index.sqlite").exists()
    finally:
        assert lock is not None
        lock.close()
    with pytest.raises(PhotoIndexError, match="is damaged; its files were moved to"):
        IndexStore.open_existing(folder)
    assert (folder / "damaged-1" / "vectors.f16").stat().st_size == 100


class FakeEngine:
    """Stands in for the retrieval model: a query's vector is `query(len(text))`; loads are recorded."""

    def __init__(self, checkpoint: str, loads: list[str]) -> None:
        loads.append(checkpoint)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        return np.stack([query(len(text)) for text in texts])


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The checkpoints the Finder loaded, in order (the retrieval engine is FakeEngine)."""
    from chatbot.engine import retrieval

    loaded: list[str] = []

    def open_engine(checkpoint: str, **_: Any) -> FakeEngine:
        return FakeEngine(checkpoint, loaded)

    monkeypatch.setattr(retrieval, "open_retrieval_engine", open_engine)
    return loaded


@pytest.mark.parametrize("model", [FIRST, OTHER])
def test_a_chats_finder_searches_the_rebuilt_index(
    tmp_path: Path, shelves: dict[str, Path], loads: list[str], model: str,
) -> None:
    """/find, `index --rebuild`, /find: the second search is of the new index (it listed the old one's results
    until the chat restarted). A rebuild with another model loads that model, said as a first /find says it."""
    folder = tmp_path / "index"
    index(shelves["few"], "--model", FIRST, "--index", folder)
    finder = Finder(folder=folder)
    said: list[str] = []
    text = "a red square"
    first = [found.path for found in finder.find(text, top=3, rerank=False, progress=said.append)]
    same_ranking(first, reference([shelves["few"]], query(len(text))), 3)
    index(shelves["more"], shelves["few"], "--rebuild", "--model", model, "--index", folder)
    said.clear()
    second = [found.path for found in finder.find(text, top=5, rerank=False, progress=said.append)]
    expected = reference([shelves["more"], shelves["few"]], query(len(text)))
    same_ranking(second, expected, 5)
    assert loads == ([FIRST] if model == FIRST else [FIRST, OTHER])
    assert said == ([] if model == FIRST else [f"Loading the search model {OTHER} ..."])
    assert_whole_index(folder, expected)


def test_a_reader_that_finds_index_sqlite_gone_as_it_connects_makes_no_file_there(
    tmp_path: Path, shelves: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The swap moves the old database out first: a reader whose connect comes in that instant must not make an
    empty index.sqlite there (SQLite makes one when asked to open a missing file), which the swap's rename would
    otherwise have to replace, and which a set-aside at that moment would leave as the only index."""
    import sqlite3

    from chatbot.core.photo_index import store as store_module

    folder = tmp_path / "index"
    index(shelves["few"], "--model", FIRST, "--index", folder)
    real = sqlite3.connect
    moved_out = tmp_path / "moved-out.sqlite"

    def swapped_out_first(database: Any, *args: Any, **kwargs: Any) -> Any:
        if not moved_out.exists():  # the first connect: the old database leaves the folder just before
            (folder / "index.sqlite").rename(moved_out)
        return real(database, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", swapped_out_first)
    with pytest.raises(PhotoIndexError, match="There is no search index"):
        IndexStore.open_existing(folder)
    monkeypatch.setattr(store_module.sqlite3, "connect", real)
    assert not os.path.lexists(folder / "index.sqlite") and not list(folder.glob("damaged-*"))
