"""The index gives disk space back: rows of embeddings no file has any more are compacted away.

A scale probe forgot all 17,020 pictures of an index and found it still took 50 MB, and indexing 1,000 pictures
again grew the matrix to 21,020 rows. These tests fill indexes with vectors made here (small shapes, so
thousands of rows stay cheap), forget most of them, and check against what the test itself stored: the matrix
file's size, every file's vector, and search results and scores equal to the ones before the compaction. A
crash is stood in for by an exception at the step where a kill -9 would stop the run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.core.photo_index import compaction as compaction_module
from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.database import EXACT_LIMIT
from chatbot.core.photo_index.forget import forget_paths
from chatbot.core.photo_index.store import FileState, IndexStore
from chatbot.core.photo_index.vectors import COMPACTED
from tests.test_photo_index import CHECKPOINT, numbered_pictures, picture, pixel_embed

SHAPE = (4, 16)  # vectors per picture and their width: 128 bytes a row


class Crash(BaseException):
    """Stands in for a kill -9 at one step of a compaction (nothing after it runs)."""


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def made(n: int, seed: int = 0) -> np.ndarray:
    """`n` pictures' vectors around 40 concepts (clustered, like real embeddings), [n, 4, 16] float32."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((40, SHAPE[1])))
    picked = centres[rng.integers(0, 40, (n, SHAPE[0]))]
    return unit(picked + 0.3 * rng.standard_normal((n, *SHAPE)))


def path_of(i: int) -> str:
    return f"/p/{i // 1000}/{i}.png"


def filled(folder: Path, vectors: np.ndarray) -> IndexStore:
    store = IndexStore.open(folder, CHECKPOINT, create=True)
    for start in range(0, len(vectors), 500):
        part = range(start, min(start + 500, len(vectors)))
        store.add_batch([FileState(path_of(i), i, i, f"{i:064x}") for i in part],
                        {f"{i:064x}": vectors[i] for i in part})
    store.refresh_approximate()
    return store


def results(store: IndexStore, queries: np.ndarray, **how: object) -> list[list[tuple[str, float]]]:
    return [[(hit.path, hit.itc) for hit in store.search(q, 10, **how)] for q in queries]  # type: ignore[arg-type]


def every_vector_resolves(store: IndexStore, vectors: np.ndarray, kept: list[int]) -> None:
    """Every file the index records has the vector stored for it (float16 of what the test made)."""
    states = store.all_states()
    assert sorted(states) == sorted(path_of(i) for i in kept)
    found = store.vectors_for(state.sha256 for state in states.values())
    for i in kept:
        np.testing.assert_array_equal(found[f"{i:064x}"], vectors[i].astype(np.float16).astype(np.float32))


def test_forgetting_most_pictures_gives_the_space_back_and_search_ranks_as_before(tmp_path: Path) -> None:
    vectors = made(3_000)
    queries = unit(np.random.default_rng(9).standard_normal((8, SHAPE[1])))
    store = filled(tmp_path / "index", vectors)
    forgotten = [i for i in range(3_000) if i % 3]  # 2,000 of 3,000: more than half, and more than 1,000 rows
    store.remove_paths(path_of(i) for i in forgotten)
    kept = [i for i in range(3_000) if not i % 3]
    before = results(store, queries, exact=True)
    done = store.compact()
    assert done is not None and (done.rows_before, done.rows_after) == (3_000, 1_000)
    assert (tmp_path / "index" / "vectors.f16").stat().st_size == 1_000 * 2 * SHAPE[0] * SHAPE[1]
    assert done.freed >= 2_000 * 2 * SHAPE[0] * SHAPE[1]
    assert not (tmp_path / "index" / COMPACTED).exists()
    assert results(store, queries, exact=True) == before
    every_vector_resolves(store, vectors, kept)
    store.close()
    again = IndexStore.open_existing(tmp_path / "index")  # a fresh process reads the same
    assert results(again, queries) == before
    every_vector_resolves(again, vectors, kept)


def test_above_the_exact_limit_the_approximate_stage_is_refiled_and_finds_the_same(tmp_path: Path) -> None:
    vectors = made(6_000, seed=1)
    queries = unit(np.random.default_rng(10).standard_normal((8, SHAPE[1])))
    store = filled(tmp_path / "index", vectors)
    assert store._coarse is not None
    lists = len(store._coarse.centres)
    store.remove_paths(path_of(i) for i in range(0, 6_000, 2))
    store.remove_paths(path_of(i) for i in range(1, 600, 2))  # 3,300 forgotten, 2,700 kept: approximate still
    kept = list(range(601, 6_000, 2))
    assert len(kept) > EXACT_LIMIT
    exact = results(store, queries, exact=True)
    every_list = results(store, queries, exact=False, probes=lists)
    assert store.compact() is not None
    assert store._coarse is not None and len(store._coarse.centres) == lists  # the same centres, refiled
    filing = np.fromfile(store._coarse.lists_path, np.uint16).reshape(-1, SHAPE[0])  # the lists file, in row order
    nearest = (vectors[kept].astype(np.float16).astype(np.float32) @ store._coarse.centres.T).argmax(axis=2)
    np.testing.assert_array_equal(filing, nearest)  # each kept row filed under its vectors' nearest centres
    assert results(store, queries, exact=True) == exact
    assert results(store, queries, exact=False, probes=lists) == every_list == exact
    every_vector_resolves(store, vectors, kept)


def test_a_few_unused_rows_or_a_minority_are_left_alone(tmp_path: Path) -> None:
    store = filled(tmp_path / "index", made(1_500))
    store.remove_paths(path_of(i) for i in range(900))  # 900 unused rows: more than half, fewer than 1,000
    assert store.compact() is None
    store.remove_paths(path_of(i) for i in range(900, 1_000))  # 1,000 of 1,500
    assert store.compact() is not None and store.vectors.rows == 500
    store2 = filled(tmp_path / "other", made(3_000))
    store2.remove_paths(path_of(i) for i in range(1_400))  # 1,400 unused rows, but fewer than half
    assert store2.compact() is None and store2.vectors.rows == 3_000


def test_forgetting_everything_leaves_an_empty_matrix_and_indexing_again_starts_from_row_zero(tmp_path: Path) -> None:
    vectors = made(2_500)
    store = filled(tmp_path / "index", vectors)
    store.remove_paths(path_of(i) for i in range(2_500))
    assert store.compact() is not None
    assert store.is_empty() and (tmp_path / "index" / "vectors.f16").stat().st_size == 0
    assert not list((tmp_path / "index").glob("lists-*")) and not (tmp_path / "index" / "centres.npy").exists()
    store.add_batch([FileState(path_of(i), i, i, f"{i:064x}") for i in range(10)],
                    {f"{i:064x}": vectors[i] for i in range(10)})
    assert store.vectors.rows == 10
    every_vector_resolves(store, vectors, list(range(10)))


def test_a_crash_after_the_commit_is_finished_by_the_next_writer_and_read_right_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = made(3_000)
    queries = unit(np.random.default_rng(11).standard_normal((6, SHAPE[1])))
    store = filled(tmp_path / "index", vectors)
    store.remove_paths(path_of(i) for i in range(2_000))
    kept = list(range(2_000, 3_000))
    before = results(store, queries, exact=True)

    def killed(*_: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(compaction_module.os, "replace", killed)  # stopped before the new matrix is renamed into place
        with pytest.raises(Crash):
            store.compact()
    store._db.close()
    store._writer_lock.close()  # type: ignore[union-attr]
    assert (tmp_path / "index" / COMPACTED).exists()
    reader = IndexStore.open_existing(tmp_path / "index")  # reads the renumbered rows in the new matrix
    assert results(reader, queries, exact=True) == before
    every_vector_resolves(reader, vectors, kept)
    writer = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    assert not (tmp_path / "index" / COMPACTED).exists()
    assert (tmp_path / "index" / "vectors.f16").stat().st_size == 1_000 * 2 * SHAPE[0] * SHAPE[1]
    assert results(writer, queries, exact=True) == before == results(reader, queries, exact=True)
    every_vector_resolves(writer, vectors, kept)


def test_a_crash_before_the_commit_leaves_the_index_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = made(3_000)
    queries = unit(np.random.default_rng(12).standard_normal((6, SHAPE[1])))
    store = filled(tmp_path / "index", vectors)
    store.remove_paths(path_of(i) for i in range(2_000))
    before = results(store, queries, exact=True)

    def killed(*_: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(compaction_module, "remove_approximate", killed)  # the new matrix written, nothing committed
        with pytest.raises(Crash):
            store.compact()
    store._db.close()
    store._writer_lock.close()  # type: ignore[union-attr]
    assert (tmp_path / "index" / COMPACTED).exists()
    writer = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    assert not (tmp_path / "index" / COMPACTED).exists() and writer.vectors.rows == 3_000
    assert results(writer, queries, exact=True) == before
    every_vector_resolves(writer, vectors, list(range(2_000, 3_000)))


def test_a_store_kept_open_by_a_chat_reads_the_compacted_matrix(tmp_path: Path) -> None:
    vectors = made(3_000)
    queries = unit(np.random.default_rng(13).standard_normal((6, SHAPE[1])))
    writer = filled(tmp_path / "index", vectors)
    writer.remove_paths(path_of(i) for i in range(2_000))
    reader = IndexStore.open_existing(tmp_path / "index")  # a chat app's Finder keeps its store open
    before = results(reader, queries, exact=True)  # maps the old matrix
    assert writer.compact() is not None
    assert results(reader, queries, exact=True) == before
    every_vector_resolves(reader, vectors, list(range(2_000, 3_000)))


def embeddings_held(folder: Path) -> int:
    with sqlite3.connect(folder / "index.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def test_an_index_run_compacts_and_says_so_and_forget_and_index_again_do_not_grow_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction_module, "COMPACT_MIN_ROWS", 5)  # a handful of pictures stands in for thousands
    photos = numbered_pictures(tmp_path / "photos", 12)
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    update_index(store, [photos], recursive=False, embed=pixel_embed)
    for edit in (1, 2):  # 8 of 12 edited twice: their old bytes are no file's any more
        for number in range(8):
            picture(photos / f"{number}.png", 100 * edit + number)
        summary = update_index(store, [photos], recursive=False, embed=pixel_embed)
        assert summary.updated == 8 and embeddings_held(tmp_path / "index") == 12  # the old ones are dropped
        if edit == 1:  # 8 unused rows of 20: not most of the matrix yet
            assert store.vectors.rows == 20 and summary.freed_bytes == 0 and "gave back" not in summary.sentence()
    assert (tmp_path / "index" / "vectors.f16").stat().st_size == 12 * 32 * 256 * 2  # 16 rows of 16 KB gone
    assert summary.freed_bytes >= 16 * 32 * 256 * 2
    assert f"The index gave back {round(summary.freed_bytes / 1000)} KB of disk space." in summary.sentence()
    assert store.vectors.rows == 12 == embeddings_held(tmp_path / "index")
    store.close()
    done = forget_paths(tmp_path / "index", [str(photos)])
    assert done.forgotten == 12 and done.freed_bytes > 0
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    assert store.vectors.rows == 0 and (tmp_path / "index" / "vectors.f16").stat().st_size == 0
    update_index(store, [photos], recursive=False, embed=pixel_embed)
    assert store.vectors.rows == 12 == embeddings_held(tmp_path / "index")


def test_forget_says_what_it_gave_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compaction_module, "COMPACT_MIN_ROWS", 5)
    photos = numbered_pictures(tmp_path / "photos", 10)
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    update_index(store, [photos], recursive=False, embed=pixel_embed)
    store.close()
    size = (tmp_path / "index" / "vectors.f16").stat().st_size
    assert main(["index", "--forget", str(photos), "--index", str(tmp_path / "index"), "--json"]) == 0
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["freed_bytes"] >= size and record["pictures"] == 0
    assert "The index gave back" in err and "KB of disk space." in err
    assert (tmp_path / "index" / "vectors.f16").stat().st_size == 0


def test_touched_files_count_as_unchanged_and_renamed_ones_as_reused(tmp_path: Path) -> None:
    photos = numbered_pictures(tmp_path / "photos", 6)
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    update_index(store, [photos], recursive=False, embed=pixel_embed)
    for number in range(3):  # touched: a new time, the same bytes
        os.utime(photos / f"{number}.png", ns=(1_000_000_000_000, 1_000_000_000_000 + number))
    (photos / "5.png").rename(photos / "five.png")  # the same bytes under a new name
    summary = update_index(store, [photos], recursive=False, embed=pixel_embed)
    assert (summary.added, summary.updated, summary.reused, summary.unchanged, summary.touched, summary.removed) == (
        0, 0, 1, 5, 3, 1)
    assert "1 reused, 5 unchanged (3 of them touched, same bytes), 1 removed" in summary.sentence()
    assert store.all_states()[str(photos / "0.png")].mtime_ns == 1_000_000_000_000  # the new time is recorded
    again = update_index(store, [photos], recursive=False, embed=pixel_embed)
    assert (again.unchanged, again.touched, again.reused) == (6, 0, 0)
