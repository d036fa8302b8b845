"""The writer side of `index --rebuild`: a stopped rebuild names its own paths, a rebuild of other paths is refused
rather than mixed in, a swap a crash cut short is finished on the next open (and a search meanwhile waits for a
swap in progress), and SIGTERM or SIGHUP stop `index` as Ctrl+C does.

The embedder is a fixed function of the pixels (tests/test_photo_index.py's `pixel_embed`), so no model loads; the
references are the files the test drew and that function's own vectors.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.core.photo_index import swap as swap_module
from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.folder import lock_for_writing
from chatbot.core.photo_index.index_files import REBUILD_RECORD, REBUILDING, index_files
from chatbot.core.photo_index.rebuild import RebuildPlan, open_rebuild
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.photo_index.swap import REPLACED, SWAP_MARK
from chatbot.errors import PhotoIndexError
from chatbot.frontends.search import index_run
from chatbot.images import LoadedImage, load_image
from tests.test_photo_index import numbered_pictures, pixel_embed

FIRST, OTHER = "someone/first-itm", "someone/other-itm"  # checkpoint names: recorded, never loaded here


def err_of(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


class Embedder:
    """Stands in for the model (`LazyEmbedder.__call__`): `pixel_embed`, and Ctrl+C after `batches` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: int | None = None
        self.calls = 0
        embedder = self

        def call(lazy: index_run.LazyEmbedder, images: list[LoadedImage]) -> np.ndarray:
            if embedder.batches is not None and embedder.calls >= embedder.batches:
                raise KeyboardInterrupt
            embedder.calls += 1
            return pixel_embed(images)

        monkeypatch.setattr(index_run.LazyEmbedder, "__call__", call)


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> Embedder:
    return Embedder(monkeypatch)


@pytest.fixture
def shelves(tmp_path: Path) -> dict[str, Path]:
    """'one': 3 pictures; 'three': 4 pictures and 2 more in a sub-folder (indexed only with -r)."""
    one = numbered_pictures(tmp_path / "one", 3)
    three = tmp_path / "three dir"  # a space: the command said must quote it
    three.mkdir()
    for number in range(4):
        _draw(three / f"{number}.png", 10 + number)
    (three / "sub").mkdir()
    for number in range(2):
        _draw(three / "sub" / f"{number}.png", 20 + number)
    return {"one": one, "three": three}


def _draw(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def pictures_under(root: Path, recursive: bool) -> set[str]:
    return {str(path) for path in (root.rglob("*.png") if recursive else root.glob("*.png"))}


def held(folder: Path) -> set[str]:
    store = IndexStore.open_existing(folder)
    try:
        return set(store.all_states())
    finally:
        store.close()


def stopped_rebuild(shelves: dict[str, Path], folder: Path, embedder: Embedder,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """An index of 'one' made with FIRST, and a rebuild of 'three' -r with OTHER stopped after its first batch."""
    assert main(["index", str(shelves["one"]), "--model", FIRST, "--index", str(folder)]) == 0
    embedder.batches = embedder.calls + 1
    assert main(["index", str(shelves["three"]), "-r", "--rebuild", "--model", OTHER, "--index", str(folder),
                 "--batch-size", "2"]) == 130
    embedder.batches = None
    err_of(capsys)


# --- 5. a stopped rebuild names its own paths; other paths are refused, not mixed in ----------------------


def test_a_plain_run_names_the_stopped_rebuilds_own_paths_and_that_command_rebuilds_them_alone(
    tmp_path: Path, shelves: dict[str, Path], embedder: Embedder, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "index"
    stopped_rebuild(shelves, folder, embedder, capsys)
    assert main(["index", str(shelves["one"]), "--index", str(folder)]) == 0  # a plain run of other paths
    command = (f"blip2-chat index {shlex.quote(str(shelves['three']))} -r --rebuild --model {OTHER} "
               f"--index {folder}")
    assert (f"(2 pictures so far) and waits; this run updates the index as it is. To go on with the rebuild: "
            f"{command}.") in err_of(capsys)
    assert main(shlex.split(command)[1:]) == 0  # following it: the rebuild's own pictures, nothing of 'one'
    assert held(folder) == pictures_under(shelves["three"], recursive=True)
    assert IndexStore.open_existing(folder).checkpoint == OTHER
    assert not (folder / REBUILDING).exists()


def test_a_rebuild_of_other_paths_is_refused_naming_both_ways_and_changes_nothing(
    tmp_path: Path, shelves: dict[str, Path], embedder: Embedder, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "index"
    stopped_rebuild(shelves, folder, embedder, capsys)
    before = {path.name: path.read_bytes() for path in index_files(folder / REBUILDING)}
    for other_paths in ([str(shelves["one"])], [str(shelves["three"])]):  # other paths; the same without -r
        assert main(["index", *other_paths, "--rebuild", "--model", OTHER, "--index", str(folder)]) == 2
        said = err_of(capsys)
        assert "it was started with other paths, so going on with it here would mix the two" in said
        assert (f"To go on with it: blip2-chat index {shlex.quote(str(shelves['three']))} -r --rebuild --model "
                f"{OTHER} --index {folder}; or, to start afresh with these paths, delete it first "
                f"(rm -r -- {folder / REBUILDING})") in said
        assert {path.name: path.read_bytes() for path in index_files(folder / REBUILDING)} == before
    assert held(folder) == pictures_under(shelves["one"], recursive=False)  # the index itself as it was
    # the two ways said work: the paths in another order go on with it ...
    assert main(["index", str(shelves["three"]), "--rebuild", "-r", "--model", OTHER, "--index", str(folder)]) == 0
    assert held(folder) == pictures_under(shelves["three"], recursive=True)


@pytest.mark.parametrize("record", [b"{", b"\xff\xfe{}", b"[]", b'{"paths": "/x", "recursive": true}',
                                    b'{"paths": ["relative/dir"], "recursive": false}',
                                    b'{"paths": ["/a"], "recursive": "yes"}', b'{"paths": [], "recursive": true}'])
def test_a_record_that_cannot_be_trusted_says_the_paths_are_not_known(
    tmp_path: Path, shelves: dict[str, Path], embedder: Embedder, capsys: pytest.CaptureFixture[str],
    record: bytes,
) -> None:
    folder = tmp_path / "index"
    stopped_rebuild(shelves, folder, embedder, capsys)
    (folder / REBUILDING / REBUILD_RECORD).write_bytes(record)
    assert main(["index", str(shelves["one"]), "--index", str(folder)]) == 0
    assert ("To go on with the rebuild, give the paths it was started with (they were not recorded): "
            f"blip2-chat index PATH... --rebuild --model {OTHER} --index {folder}.") in err_of(capsys)
    # paths whose pictures it does not hold all: refused; ones that hold all it has: gone on with
    assert main(["index", str(shelves["one"]), "--rebuild", "--model", OTHER, "--index", str(folder)]) == 2
    assert "the paths it was started with were not recorded, and it holds pictures these paths do not" in \
        err_of(capsys)
    assert main(["index", str(shelves["three"]), "-r", "--rebuild", "--model", OTHER, "--index", str(folder)]) == 0
    assert held(folder) == pictures_under(shelves["three"], recursive=True)


def test_a_stopped_rebuild_kept_aside_names_its_own_paths_when_it_is_put_back(
    tmp_path: Path, shelves: dict[str, Path], embedder: Embedder, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "index"
    stopped_rebuild(shelves, folder, embedder, capsys)
    embedder.batches = embedder.calls  # a rebuild with a third model, of other paths, stopped before any batch
    assert main(["index", str(shelves["one"]), "--rebuild", "--model", "someone/third-itm",
                 "--index", str(folder)]) == 130
    said = err_of(capsys)
    assert (f"The stopped rebuild with {OTHER} is kept, as it was; to go on with it: blip2-chat index "
            f"{shlex.quote(str(shelves['three']))} -r --rebuild --model {OTHER} --index {folder}.") in said


# --- 6. a swap cut short is finished on the next open ----------------------------------------------------


class Crash(BaseException):
    """A process that dies here: nothing after it runs (no `except Exception` takes it)."""


def old_and_new(tmp_path: Path) -> tuple[Path, IndexStore, Path, Path]:
    """(index folder holding 'old' pictures made with FIRST, a complete rebuild of 'new' with OTHER, old, new)."""
    old, new = numbered_pictures(tmp_path / "old", 3), tmp_path / "new"
    new.mkdir()
    for number in range(5):
        _draw(new / f"{number}.png", 40 + number)
    folder = tmp_path / "index"
    store = IndexStore.open(folder, FIRST, create=True)
    update_index(store, [old], recursive=False, embed=pixel_embed, batch_size=2)
    store.close()
    rebuild = open_rebuild(folder, OTHER, RebuildPlan((str(new),), False))
    update_index(rebuild, [new], recursive=False, embed=pixel_embed, batch_size=2)
    return folder, rebuild, old, new


def crash_after(monkeypatch: pytest.MonkeyPatch, renames: int) -> None:
    """os.replace and os.rename work `renames` times, then the process 'dies'."""
    count = {"done": 0}
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def renaming(source: object, target: object, *args: object, real: object = real) -> None:
            if count["done"] >= renames:
                raise Crash
            count["done"] += 1
            real(source, target, *args)  # type: ignore[operator]

        monkeypatch.setattr(os, name, renaming)


def assert_is_the_index_of(folder: Path, photos: Path, checkpoint: str) -> None:
    """The index in `folder` is whole and holds exactly `photos`' pictures, each with its own vectors."""
    store = IndexStore.open_existing(folder)
    try:
        assert store.checkpoint == checkpoint
        states = store.all_states()
        assert set(states) == pictures_under(photos, recursive=False)
        for path, state in states.items():
            want = pixel_embed([load_image(path)])[0]
            np.testing.assert_allclose(store.vectors_for([state.sha256])[state.sha256], want, atol=1e-3)
        best = store.search(want[0], top=1)[0]  # the last picture's own first vector finds it first
        assert best.path == path
    finally:
        store.close()


def count_renames(tmp_path: Path) -> int:
    """How many renames a whole swap makes (a clean run, counted)."""
    (tmp_path / "count").mkdir()
    folder, rebuild, _, _ = old_and_new(tmp_path / "count")
    seen = {"n": 0}
    real_replace, real_rename = os.replace, os.rename
    try:
        os.replace = lambda *a, **k: (seen.__setitem__("n", seen["n"] + 1), real_replace(*a, **k))[1]  # type: ignore[assignment]
        os.rename = lambda *a, **k: (seen.__setitem__("n", seen["n"] + 1), real_rename(*a, **k))[1]  # type: ignore[assignment]
        rebuild.swap_in()
    finally:
        os.replace, os.rename = real_replace, real_rename  # type: ignore[assignment]
    return seen["n"]


def test_a_swap_cut_short_after_any_rename_leaves_a_whole_index_that_the_next_open_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    total = count_renames(tmp_path)
    assert total >= 4  # the mark, the old database out, the new vectors and database in
    for renames in range(total):
        run = tmp_path / f"cut-{renames}"
        run.mkdir()
        folder, rebuild, old, new = old_and_new(run)
        with monkeypatch.context() as patch:
            crash_after(patch, renames)
            with pytest.raises(Crash):
                rebuild.swap_in()
        err_of(capsys)
        if renames == 0:  # died before the mark was written: nothing moved, the old index and the rebuild stand
            assert_is_the_index_of(folder, old, FIRST)
            assert_is_the_index_of(folder / REBUILDING, new, OTHER)
            continue
        assert_is_the_index_of(folder, new, OTHER)  # the first open finishes the swap ...
        assert "that is finished now, and the rebuilt index (5 pictures) is in place" in err_of(capsys)
        assert not any((folder / name).exists() for name in (REBUILDING, REPLACED, SWAP_MARK))
        assert main(["index", str(new), "--index", str(folder), "--json"]) == 0  # ... and an index run goes on as usual
        assert json.loads(capsys.readouterr().out)["unchanged"] == 5


def test_a_swap_whose_new_index_is_not_whole_puts_the_old_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    folder, rebuild, old, _ = old_and_new(tmp_path)
    with monkeypatch.context() as patch:
        crash_after(patch, 2)  # the mark, then the old database out: the folder holds no index now
        with pytest.raises(Crash):
            rebuild.swap_in()
    assert not (folder / "index.sqlite").exists()
    (folder / REBUILDING / "vectors.f16").unlink()  # and the new index lost a file
    assert_is_the_index_of(folder, old, FIRST)
    assert "the new index was not whole, so the old one (3 pictures) is back in place" in err_of(capsys)
    assert not (folder / SWAP_MARK).exists()


def test_a_search_during_a_swap_waits_for_it_rather_than_finding_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, rebuild, _, new = old_and_new(tmp_path)
    with monkeypatch.context() as patch:
        crash_after(patch, 2)  # half-way: no index.sqlite in the folder
        with pytest.raises(Crash):
            rebuild.swap_in()
    swapping = lock_for_writing(folder)  # ... while the run that swaps holds the lock, as it does
    waiting = threading.Event()
    real_sleep = swap_module.time.sleep

    def sleep(seconds: float) -> None:
        waiting.set()
        real_sleep(seconds)

    monkeypatch.setattr(swap_module.time, "sleep", sleep)
    opened: list[object] = []
    reader = threading.Thread(target=lambda: opened.append(_open_or_error(folder)))
    reader.start()
    assert waiting.wait(30)  # the reader is waiting for the swap
    swap = swap_module._recorded_swap(folder)
    assert swap is not None
    swap_module._finish_swap(folder, swap)  # the swapping run goes on and lets go of the lock
    assert swapping is not None
    swapping.close()
    reader.join(30)
    assert opened and isinstance(opened[0], IndexStore), opened
    assert opened[0].checkpoint == OTHER and set(opened[0].all_states()) == pictures_under(new, recursive=False)


def _open_or_error(folder: Path) -> object:
    try:
        return IndexStore.open_existing(folder)
    except PhotoIndexError as error:
        return error


# --- 8. SIGTERM and SIGHUP stop `index` as Ctrl+C does -------------------------------------------------

STOPPED_RUN = textwrap.dedent("""
    import signal, sys
    sys.path.insert(0, {root!r})
    from tests.test_photo_index import pixel_embed
    from chatbot.cli import main
    from chatbot.frontends.search import index_run
    calls = 0
    def embed(lazy, images):
        global calls
        calls += 1
        if calls == 2:  # the first batch is in the index: the parent signals now; the model works on meanwhile
            print("SECOND BATCH", file=sys.stderr, flush=True)
            signal.pause()
        return pixel_embed(images)
    index_run.LazyEmbedder.__call__ = embed
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture
def stopped_run_script(tmp_path: Path) -> Path:
    script = tmp_path / "stopped_run.py"
    script.write_text(STOPPED_RUN.format(root=str(Path(__file__).resolve().parent.parent)))
    return script


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("rebuild", [False, True])
def test_sigterm_and_sighup_stop_index_as_ctrl_c_does(
    tmp_path: Path, stopped_run_script: Path, signum: int, status: int, rebuild: bool,
) -> None:
    photos = numbered_pictures(tmp_path / "photos", 7)
    folder = tmp_path / "index"
    command = [sys.executable, str(stopped_run_script), "index", str(photos), "--model", FIRST, "--index",
               str(folder), "--batch-size", "2", "--json"]
    if rebuild:
        assert subprocess.run([*command[:-3]], capture_output=True, check=False).returncode == 0  # whole, then afresh
        command += ["--rebuild", "--model", OTHER]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    lines = []
    for line in child.stderr:
        lines.append(line)
        if line.startswith("SECOND BATCH"):
            break
    else:
        pytest.fail("".join(lines))
    child.send_signal(signum)
    out, rest = child.communicate(timeout=60)
    said = "".join(lines) + rest
    assert child.returncode == status, said
    assert "Traceback" not in said
    summary = json.loads(out.splitlines()[-1])
    assert summary["cancelled"] is True and summary["added"] == 2, summary
    if rebuild:  # the old index as it was, the first batch kept aside for the next run
        assert f"Stopped. The index at {folder} is as it was; run the same command again" in said
        assert len(held(folder)) == 7 and IndexStore.open_existing(folder).checkpoint == FIRST
        assert len(held(folder / REBUILDING)) == 2
    else:
        assert "Stopped. Every finished batch is in the index; run the same command again to go on." in said
        assert len(held(folder)) == 2


@pytest.fixture
def own_signals() -> Iterator[None]:
    """The test process's handlers come back afterwards (a run stopped by a signal keeps ignoring later ones)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_during_the_swap_does_not_cut_it_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Embedder, own_signals: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = numbered_pictures(tmp_path / "photos", 3)
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--model", FIRST, "--index", str(folder)]) == 0
    real_replace = os.replace
    sent: list[int] = []

    def replace(source: object, target: object) -> None:
        if not sent and Path(str(target)).parent.name == REPLACED:  # the old database leaves: SIGTERM comes now
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    assert main(["index", str(photos), "--rebuild", "--model", OTHER, "--index", str(folder)]) == 0
    assert sent
    assert IndexStore.open_existing(folder).checkpoint == OTHER and len(held(folder)) == 3
    assert not any((folder / name).exists() for name in (REBUILDING, REPLACED, SWAP_MARK))
