"""The photo search index: rankings against a brute-force float32 MaxSim, incremental runs, crashes, bad indexes.

The embedder here is a fixed function of the pixels (not a model): these tests are about storage and
search; the model's own scores are tested with the engine.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chatbot.core.photo_index import store as store_module
from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.store import FileState, IndexStore
from chatbot.errors import PhotoIndexError
from chatbot.images import LoadedImage

CHECKPOINT = "synthetic/retrieval-tiny"
FLOAT16_SLACK = 1e-3  # two scores closer than this may swap places after float16 storage


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def pixel_embed(images: list[LoadedImage]) -> np.ndarray:
    """A deterministic [n, 32, 256] embedding of the pixels (8x8 thumbnail through a fixed projection)."""
    projection = np.random.default_rng(1234).standard_normal((192, 32 * 256)).astype(np.float32)
    pixels = np.stack([np.asarray(i.image.resize((8, 8)), np.float32).reshape(-1) / 255 - 0.5 for i in images])
    return unit((pixels @ projection).reshape(len(images), 32, 256))


class CountingEmbed:
    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images: list[LoadedImage]) -> np.ndarray:
        self.images += len(images)
        return pixel_embed(images)


def brute_force(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact MaxSim in float32, written independently of the store."""
    return np.einsum("nkd,d->nk", vectors.astype(np.float32), query.astype(np.float32)).max(axis=1)


def same_ranking(found: list[str], scores: dict[str, float], top: int) -> None:
    """`found` is the best `top` by `scores`, except where two scores are within float16 error."""
    ranked = sorted(scores, key=lambda key: -scores[key])
    assert len(found) == min(top, len(scores))
    for place, key in enumerate(found):
        expected = ranked[place]
        assert key == expected or abs(scores[key] - scores[expected]) < FLOAT16_SLACK, (place, key, expected)
    if len(ranked) > top:  # nothing left out scores clearly above the last one kept
        assert scores[ranked[top]] <= min(scores[key] for key in found) + FLOAT16_SLACK


def fill(folder: Path, vectors: np.ndarray) -> IndexStore:
    store = IndexStore.open(folder, CHECKPOINT, create=True)
    shas = [f"{i:064x}" for i in range(len(vectors))]
    for start in range(0, len(vectors), 500):
        part = range(start, min(start + 500, len(vectors)))
        store.add_batch([FileState(f"/p/{i}.png", 1, 1, shas[i]) for i in part], {shas[i]: vectors[i] for i in part})
    return store


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images around a few hundred concepts (like real embeddings), and queries near concepts."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((300, 256)))
    picks = np.take_along_axis(rng.integers(0, 300, (n, 4)), rng.integers(0, 4, (n, 32)), axis=1)
    vectors = unit(centres[picks] + 0.08 * rng.standard_normal((n, 32, 256)))
    queries = unit(centres[rng.integers(0, 300, 5)] + 0.08 * rng.standard_normal((5, 256)))
    return vectors, queries


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), top=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_exact_search_ranks_as_brute_force_maxsim(tmp_path_factory: pytest.TempPathFactory, n: int, top: int,
                                                   seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors, query = unit(rng.standard_normal((n, 32, 256))), unit(rng.standard_normal(256))
    store = fill(tmp_path_factory.mktemp("exact"), vectors)
    hits = store.search(query, top)
    scores = {f"/p/{i}.png": float(s) for i, s in enumerate(brute_force(vectors, query))}
    same_ranking([hit.path for hit in hits], scores, top)
    for hit in hits:  # the score itself is MaxSim within float16 error
        assert abs(hit.itc - scores[hit.path]) < 5e-4


def test_approximate_search_on_clustered_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "EXACT_LIMIT", 100)
    vectors, queries = clustered(1500, seed=5)
    store = fill(tmp_path / "index", vectors)
    store.refresh_approximate()
    assert (tmp_path / "index" / "centres.npy").exists()
    for query in queries:
        scores = {f"/p/{i}.png": float(s) for i, s in enumerate(brute_force(vectors, query))}
        every_list = store.search(query, 10, probes=10_000, candidates=1500)  # all lists: must equal exact
        same_ranking([hit.path for hit in every_list], scores, 10)
        default = store.search(query, 10)  # default probes: still the same ten here
        same_ranking([hit.path for hit in default], scores, 10)


def test_rows_added_after_training_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "EXACT_LIMIT", 100)
    vectors, queries = clustered(400, seed=6)
    store = fill(tmp_path / "index", vectors[:300])
    store.refresh_approximate()
    late = unit(queries[0] + 0.01 * np.random.default_rng(0).standard_normal((32, 256)))  # best for query 0
    store.add_batch([FileState("/late.png", 1, 1, "f" * 64)], {"f" * 64: late})
    assert store.search(queries[0], 1)[0].path == "/late.png"  # not filed yet: scanned exactly
    store.refresh_approximate()
    assert store.search(queries[0], 1)[0].path == "/late.png"  # filed in its list


def test_inverted_lists_match_the_lists_file_and_are_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inverted file holds each list's vector numbers (checked against the list number of every vector);
    searches over every list equal exact ones whether it is there, missing, garbage or behind the lists."""
    monkeypatch.setattr(store_module, "EXACT_LIMIT", 100)
    vectors, queries = clustered(1300, seed=8)
    folder = tmp_path / "index"
    store = fill(folder, vectors[:1000])
    store.refresh_approximate()
    (lists_file,), (inverted,) = folder.glob("lists-*.u16"), folder.glob("inverted-*.npy")
    assert inverted.name.removeprefix("inverted-").removesuffix(".npy") == lists_file.name[6:-4]

    def check_search(rows: int) -> None:
        for query in queries:
            scores = {f"/p/{i}.png": float(s) for i, s in enumerate(brute_force(vectors[:rows], query))}
            hits = store.search(query, 10, probes=10_000, candidates=rows)
            same_ranking([hit.path for hit in hits], scores, 10)

    def check(rows: int, covered: int) -> None:
        lists = np.fromfile(lists_file, np.uint16)
        data = np.load(inverted)
        k = int(lists.max()) + 1
        offsets, numbers = data[:len(data) - covered * 32], data[len(data) - covered * 32:]
        for number in range(k):  # each list: exactly the vectors whose list number says so, ascending
            expected = np.flatnonzero(lists[:covered * 32] == number)
            assert list(numbers[offsets[number]:offsets[number + 1]]) == list(expected)
        check_search(rows)

    check(1000, 1000)
    first = inverted.read_bytes()
    inverted.unlink()  # missing: searches scan the list numbers instead; the next refresh writes it again
    check_search(1000)
    store.refresh_approximate()
    assert inverted.read_bytes() == first
    inverted.write_bytes(b"not an array" * 50)  # garbage: ignored, then rebuilt
    check_search(1000)
    store.refresh_approximate()
    assert inverted.read_bytes() == first
    shas = [f"{i:064x}" for i in range(1000, 1300)]
    store.add_batch([FileState(f"/p/{i}.png", 1, 1, shas[i - 1000]) for i in range(1000, 1100)],
                    {shas[i - 1000]: vectors[i] for i in range(1000, 1100)})
    store.refresh_approximate()  # 100 rows filed after it: under an eighth, so the file stays; they are scanned
    assert inverted.read_bytes() == first
    check(1100, 1000)
    store.add_batch([FileState(f"/p/{i}.png", 1, 1, shas[i - 1000]) for i in range(1100, 1300)],
                    {shas[i - 1000]: vectors[i] for i in range(1100, 1300)})
    store.refresh_approximate()  # 300 behind: rebuilt to cover every row
    check(1300, 1300)


def test_same_content_under_two_paths_is_stored_once_and_both_found(tmp_path: Path) -> None:
    vector = unit(np.random.default_rng(0).standard_normal((32, 256)))
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    store.add_batch([FileState("/a.png", 1, 1, "a" * 64), FileState("/b.png", 1, 1, "a" * 64)], {"a" * 64: vector})
    assert store.vectors.rows == 1
    assert [(h.path, h.sha256) for h in store.search(vector[0], 1)] == [("/a.png", "a" * 64), ("/b.png", "a" * 64)]
    np.testing.assert_allclose(store.vectors_for(["a" * 64])["a" * 64], vector, atol=1e-3)


# ----- the indexing run


def picture(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def numbered_pictures(folder: Path, count: int) -> Path:
    """`folder`, made here, with `count` pictures: 0.png, 1.png, ..., picture i drawn from seed i."""
    folder.mkdir()
    for i in range(count):
        picture(folder / f"{i}.png", i)
    return folder


def indexed(store: IndexStore) -> dict[str, str]:
    return {path: state.sha256 for path, state in store.all_states().items()}


def test_incremental_runs(tmp_path: Path, pillow_loads: list[object]) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(5):
        picture(photos / f"{i}.png", i)
    picture(photos / "sub" / "deep.png", 99)
    (photos / "notes.png").write_text("not an image")
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    embed = CountingEmbed()

    first = update_index(store, [photos], recursive=False, embed=embed, batch_size=2)
    assert (first.added, embed.images, len(first.failed)) == (5, 5, 1)
    assert first.failed[0][0] == str(photos / "notes.png")
    assert set(indexed(store)) == {str(photos / f"{i}.png") for i in range(5)}

    pillow_loads.clear()
    again = update_index(store, [photos], recursive=False, embed=embed, batch_size=2)
    assert (again.unchanged, again.added, embed.images, pillow_loads) == (5, 0, 5, [])

    picture(photos / "1.png", 101)  # changed content
    os.utime(photos / "1.png", ns=(1, 1))
    (photos / "2.png").rename(photos / "two.png")  # renamed: its embedding is reused
    (photos / "3.png").unlink()  # deleted
    pillow_loads.clear()
    third = update_index(store, [photos], recursive=False, embed=embed, batch_size=2)
    assert (third.updated, third.reused, third.removed, third.unchanged) == (1, 1, 2, 2)
    assert embed.images == 6 and len({id(image) for image in pillow_loads}) == 1  # only the changed file decoded
    expected = {str(photos / name) for name in ("0.png", "1.png", "two.png", "4.png")}
    assert set(indexed(store)) == expected
    hits = store.search(pixel_embed([_load(photos / "two.png")])[0, 0], 1)
    assert hits[0].path == str(photos / "two.png")

    recursive = update_index(store, [photos], recursive=True, embed=embed, batch_size=2)
    assert recursive.added == 1 and str(photos / "sub" / "deep.png") in indexed(store)


def _load(path: Path) -> LoadedImage:
    from chatbot.images import load_image

    return load_image(path)


def test_cancel_keeps_finished_batches(tmp_path: Path) -> None:
    photos = numbered_pictures(tmp_path / "photos", 6)
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    asked = iter([False, True])
    summary = update_index(store, [photos], recursive=False, embed=CountingEmbed(), batch_size=2,
                           cancel=lambda: next(asked))
    assert summary.cancelled and summary.added == 2 and len(indexed(store)) == 2


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_photo_index import pixel_embed, CHECKPOINT
    from chatbot.core.photo_index.build import update_index
    from chatbot.core.photo_index.store import IndexStore
    calls = 0
    def embed(images):
        global calls
        calls += 1
        if calls == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # dies inside the third batch, before it is written
        return pixel_embed(images)
    store = IndexStore.open(Path(sys.argv[1]), CHECKPOINT, create=True)
    update_index(store, [Path(sys.argv[2])], recursive=False, embed=embed, batch_size=2)
""")


def test_killed_run_then_second_run_has_every_file_once(tmp_path: Path) -> None:
    photos = numbered_pictures(tmp_path / "photos", 7)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN.format(tests=str(Path(__file__).parent)))
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "index"), str(photos)], check=False)
    assert run.returncode == -signal.SIGKILL
    store = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    assert len(indexed(store)) == 4  # two whole batches survived
    embed = CountingEmbed()
    summary = update_index(store, [photos], recursive=False, embed=embed, batch_size=2)
    assert (summary.unchanged, summary.added, embed.images) == (4, 3, 3)
    rows = sqlite3.connect(tmp_path / "index" / "index.sqlite").execute("SELECT path FROM files").fetchall()
    assert sorted(path for (path,) in rows) == sorted(str(photos / f"{i}.png") for i in range(7))
    assert store.vectors.rows == 7
    for i in range(7):  # each file's stored embedding is its own
        want = pixel_embed([_load(photos / f"{i}.png")])[0]
        got = store.vectors_for([indexed(store)[str(photos / f"{i}.png")]])
        np.testing.assert_allclose(next(iter(got.values())), want, atol=1e-3)


# ----- bad indexes


def test_missing_index_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(PhotoIndexError, match="blip2-chat index PATH"):
        IndexStore.open(tmp_path / "none", CHECKPOINT, create=False)


def test_index_of_another_checkpoint_is_refused(tmp_path: Path) -> None:
    IndexStore.open(tmp_path / "index", CHECKPOINT, create=True).close()
    with pytest.raises(PhotoIndexError, match="--rebuild") as raised:
        IndexStore.open(tmp_path / "index", "other/model", create=False)
    assert CHECKPOINT in str(raised.value)
    assert IndexStore.open_existing(tmp_path / "index").checkpoint == CHECKPOINT
    rebuilt = IndexStore.open(tmp_path / "index", "other/model", create=True, rebuild=True)
    assert rebuilt.count() == 0


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    writer = IndexStore.open(tmp_path / "index", CHECKPOINT, create=True)
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from chatbot.core.photo_index.store import IndexStore
        from chatbot.errors import PhotoIndexError
        try:
            IndexStore.open(Path({str(tmp_path / "index")!r}), {CHECKPOINT!r}, create=True)
        except PhotoIndexError as error:
            print(error)
        print(IndexStore.open(Path({str(tmp_path / "index")!r}), {CHECKPOINT!r}, create=False).count())
        """)], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == [
        f"Another blip2-chat is indexing into {tmp_path / 'index'} right now. "
        "Wait for it to finish, or stop it, then run this again.", "0"]  # reading is still allowed
    writer.close()
    IndexStore.open(tmp_path / "index", CHECKPOINT, create=True).close()  # free again


@pytest.mark.parametrize("damage", ["garbage database", "truncated matrix"])
def test_damaged_index_is_set_aside(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "index"
    vectors = unit(np.random.default_rng(0).standard_normal((3, 32, 256)))
    fill(folder, vectors).close()
    (folder / "my notes.txt").write_text("not the index's")  # --index may name a folder that holds more
    if damage == "garbage database":
        (folder / "index.sqlite").write_bytes(b"this is not a database" * 100)
        for extra in ("index.sqlite-wal", "index.sqlite-shm"):
            (folder / extra).unlink(missing_ok=True)
    else:
        with open(folder / "vectors.f16", "r+b") as handle:
            handle.truncate(100)
    with pytest.raises(PhotoIndexError, match="damaged.*blip2-chat index PATH") as refused:
        IndexStore.open(folder, CHECKPOINT, create=False)
    # the fix names the model that made the index when its record could still be read (without --model a
    # new index would take the default retrieval model), and the index folder when it is not the default one
    # (without --index the command would build the default index)
    named = f"`blip2-chat index PATH --model {CHECKPOINT} --index {folder}`" if damage != "garbage database" else \
        f"`blip2-chat index PATH --index {folder}`"
    assert refused.value.hint == f"Build it again with {named} (PATH: your photos folder)."
    assert (folder / "damaged-1" / "index.sqlite").is_file() and (folder / "damaged-1" / "vectors.f16").is_file()
    assert not (folder / "index.sqlite").exists() and (folder / "my notes.txt").read_text() == "not the index's"
    assert IndexStore.open(folder, CHECKPOINT, create=True).count() == 0
