"""`blip2-chat index --forget PATH...`: a folder gone for good leaves the index when asked, and only then.

A user probe found no clean way to take a deleted (or moved) folder's pictures out of the index: `index PATH`
refused the missing path with "Check the path." and its entries stayed in every search as gone results. The
index here is made by the real indexing run (`update_index`) with a fixed function of the pixels as the
embedder (tests/test_photo_index.py's): forgetting needs no model. The references are what each test made on
disk itself (paths, and the sha256 of the bytes, computed here with hashlib), never the code under test.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sqlite3
from pathlib import Path

import pytest

from chatbot.cli import main
from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.index_files import REBUILDING
from chatbot.core.photo_index.store import IndexStore
from tests.test_cli import run_cli_tracing_imports
from tests.test_photo_index import CHECKPOINT, picture, pixel_embed

MODEL_STACK = {"torch", "transformers", "bitsandbytes", "triton"}
UNTOUCHED = "the files themselves were not touched."


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pictures_in(folder: Path) -> dict[str, str]:
    """{path: sha256} of every file under `folder`, as the test made them (the index records absolute paths)."""
    return {str(path): sha(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def recorded(folder: Path) -> tuple[dict[str, str], set[str]]:
    """What the index in `folder` records, read with sqlite3 here: {path: sha256} and the embeddings' sha256."""
    with sqlite3.connect(folder / "index.sqlite") as db:
        files = dict(db.execute("SELECT path, sha256 FROM files").fetchall())
        embedded = {row[0] for row in db.execute("SELECT sha256 FROM embeddings")}
    return files, embedded


def index_into(folder: Path, roots: list[Path], checkpoint: str = CHECKPOINT) -> None:
    store = IndexStore.open(folder, checkpoint, create=True)
    try:
        update_index(store, roots, recursive=True, embed=pixel_embed, batch_size=4)
    finally:
        store.close()


@pytest.fixture
def collection(tmp_path: Path) -> dict[str, Path]:
    """photos2 (6 pictures, one in a sub-folder, one with the same bytes as a picture in photos), and folders
    whose names only look alike: photos2-old (photos2 is a prefix of its name) and Photos2 (another case)."""
    home = tmp_path / "home"
    folders = {name: home / name for name in ("photos", "photos2", "photos2-old", "Photos2")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["photos2"] / "trip").mkdir()
    for number in range(3):
        picture(folders["photos"] / f"{number}.png", number)
    for number in range(5):
        picture(folders["photos2"] / f"{number}.png", 10 + number)
    shutil.copy(folders["photos"] / "0.png", folders["photos2"] / "trip" / "same-as-photos-0.png")
    picture(folders["photos2-old"] / "old.png", 30)
    picture(folders["Photos2"] / "capital.png", 31)
    folders["index"] = tmp_path / "index"
    folders["elsewhere"] = tmp_path / "elsewhere"
    index_into(folders["index"], [folders[name] for name in ("photos", "photos2", "photos2-old", "Photos2")])
    return folders


def everything(collection: dict[str, Path]) -> dict[str, str]:
    return {path: digest for name in ("photos", "photos2", "photos2-old", "Photos2")
            for path, digest in pictures_in(collection[name]).items()}


def gone_for_good(collection: dict[str, Path]) -> tuple[dict[str, str], dict[str, str]]:
    """`mv photos2 elsewhere`: (what photos2 held, every other picture), by path as indexed."""
    before = pictures_in(collection["photos2"])
    kept = {path: digest for path, digest in everything(collection).items() if path not in before}
    collection["photos2"].rename(collection["elsewhere"])
    return before, kept


def test_forget_takes_a_gone_folder_out_and_nothing_else_without_the_model(collection: dict[str, Path]) -> None:
    folder = collection["index"]
    assert recorded(folder)[0] == everything(collection)  # the reference agrees with the index before
    moved, kept = gone_for_good(collection)
    on_disk = pictures_in(collection["elsewhere"])

    run, imported = run_cli_tracing_imports("index", "--forget", collection["photos2"], "--index", folder)

    assert run.returncode == 0, run.stderr
    assert not imported & MODEL_STACK, imported & MODEL_STACK
    assert run.stderr.splitlines() == [f"Forgot 6 pictures under {collection['photos2']}; {UNTOUCHED}"]
    assert run.stdout == ""
    files, embedded = recorded(folder)
    assert files == kept  # photos2-old and Photos2 only look alike: they stay
    # the embeddings no remaining file uses are dropped; the one photos/0.png shares with a forgotten copy stays
    assert embedded == set(kept.values())
    assert sha(collection["photos"] / "0.png") in embedded
    assert pictures_in(collection["elsewhere"]) == on_disk  # the files themselves, moved, are as they were
    assert len(on_disk) == len(moved) == 6


def test_a_missing_path_with_pictures_names_forget_and_the_command_it_names_works(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = collection["index"]
    _, kept = gone_for_good(collection)
    gone = collection["photos2"]

    assert main(["index", str(gone), "--index", str(folder)]) == 2
    err = capsys.readouterr().err
    command = f"blip2-chat index --forget {gone} --index {folder}"
    assert err == (f"blip2-chat: No file or folder at {gone}. The index still holds 6 pictures from there; if they "
                   f"are gone for good, `{command}` removes them.\n")
    assert len(recorded(folder)[0]) == len(kept) + 6  # refusing forgot nothing: an unplugged drive keeps its entries

    assert main(shlex.split(command)[1:]) == 0  # the command the sentence names, as a user would paste it
    assert recorded(folder)[0] == kept

    assert main(["index", str(gone), "--index", str(folder)]) == 2  # nothing recorded there any more
    assert capsys.readouterr().err.endswith(f"No file or folder at {gone}. Check the path.\n")


def test_the_suggestion_for_the_default_index_names_no_index_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path / "data"))
    photos = tmp_path / "photos"
    photos.mkdir()
    picture(photos / "a.png", 1)
    index_into(tmp_path / "data" / "index", [photos])
    shutil.rmtree(photos)

    assert main(["index", str(photos)]) == 2
    assert capsys.readouterr().err.endswith(
        f"The index still holds 1 picture from there; if they are gone for good, "
        f"`blip2-chat index --forget {photos}` removes them.\n")
    assert main(["index", "--forget", str(photos)]) == 0
    assert capsys.readouterr().err == f"Forgot 1 picture under {photos}; {UNTOUCHED}\n"
    assert recorded(tmp_path / "data" / "index")[0] == {}


def test_paths_are_matched_as_index_records_them(
        collection: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, kept = gone_for_good(collection)
    home = collection["photos"].parent
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(collection["photos"])  # relative and ~ paths, `..` and a trailing slash, as `index` takes them

    assert main(["index", "--forget", "../photos2/trip/", "--index", str(collection["index"])]) == 0
    assert capsys.readouterr().err == f"Forgot 1 picture under {home / 'photos2' / 'trip'}; {UNTOUCHED}\n"
    assert main(["index", "--forget", "~/photos2/3.png", "--index", str(collection["index"])]) == 0
    assert capsys.readouterr().err == f"Forgot 1 picture at {home / 'photos2' / '3.png'}; {UNTOUCHED}\n"
    left = {path for path in recorded(collection["index"])[0] if path not in kept}
    assert left == {str(home / "photos2" / f"{number}.png") for number in (0, 1, 2, 4)}


def test_json_counts_each_path_and_a_path_with_nothing_is_said_and_exits_2(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, kept = gone_for_good(collection)
    nowhere = collection["photos"].parent / "never-indexed"
    trip = collection["photos2"] / "trip"

    status = main(["index", "--forget", str(collection["photos2"]), str(nowhere), str(trip), "--json",
                   "--index", str(collection["index"])])

    out, err = capsys.readouterr()
    assert status == 2  # one PATH had nothing: said, and the others are forgotten all the same
    assert json.loads(out) == {
        "forgotten": 6, "paths": [{"path": str(collection["photos2"]), "forgotten": 6},
                                  {"path": str(nowhere), "forgotten": 0}, {"path": str(trip), "forgotten": 1}],
        "stopped_rebuild": 0, "index": str(collection["index"]), "model": CHECKPOINT, "pictures": len(kept),
        "freed_bytes": 0}
    assert err.splitlines() == [
        f"Forgot 6 pictures (6 under {collection['photos2']} and 1 under {trip}); {UNTOUCHED}",
        f"blip2-chat: The index at {collection['index']} holds no picture recorded at or under {nowhere}."]
    assert recorded(collection["index"])[0] == kept


def test_json_names_the_index_folder_absolute_when_given_relative(
        collection: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # a README walk-through: `--index idx --json` said "index": "idx", where every other path in JSON is absolute
    gone_for_good(collection)
    monkeypatch.chdir(collection["index"].parent)
    main(["index", "--forget", str(collection["photos2"]), "--json", "--index", collection["index"].name])
    assert json.loads(capsys.readouterr().out)["index"] == str(collection["index"])


def test_when_no_path_had_anything_nothing_changes_and_it_exits_2(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = recorded(collection["index"])
    typo = collection["photos"].parent / "photo2"

    assert main(["index", "--forget", str(typo), "--index", str(collection["index"])]) == 2
    assert capsys.readouterr().err == (
        f"blip2-chat: The index at {collection['index']} holds no picture recorded at or under {typo}. "
        "Give each PATH as it was indexed (as search results show it).\n")
    assert recorded(collection["index"]) == before


def test_forget_waits_its_turn_behind_another_writer(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = recorded(collection["index"])
    writer = IndexStore.open(collection["index"], CHECKPOINT, create=True)  # as an `index` run holds it
    try:
        assert main(["index", "--forget", str(collection["photos2"]), "--index", str(collection["index"])]) == 2
    finally:
        writer.close()
    assert capsys.readouterr().err == (f"blip2-chat: Another blip2-chat is indexing into {collection['index']} right "
                                       "now. Wait for it to finish, or stop it, then run this again.\n")
    assert recorded(collection["index"]) == before


@pytest.mark.parametrize(("flags", "named"), [
    (["-r"], "-r"), (["--rebuild"], "--rebuild"), (["--model", "demo"], "--model"),
    (["--batch-size", "4", "--device", "cpu"], "--batch-size or --device"), (["--ray"], "--ray")])
def test_flags_that_mean_nothing_with_forget_are_refused_in_one_sentence(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str], flags: list[str], named: str) -> None:
    before = recorded(collection["index"])
    assert main(["index", "--forget", str(collection["photos2"]), "--index", str(collection["index"]), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"blip2-chat: index --forget takes no {named} (it forgets everything recorded at or under")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert recorded(collection["index"]) == before


def test_no_index_and_links_are_said_in_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "--forget", str(tmp_path / "photos"), "--index", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith(
        f"blip2-chat: There is no search index at {tmp_path / 'none'}, so there is nothing to forget.")
    assert not (tmp_path / "none").exists()  # nothing made
    for link in ("https://example.org/photos", "s3://bucket/photos"):
        assert main(["index", "--forget", link, "--index", str(tmp_path / "none")]) == 2
        assert capsys.readouterr().err.startswith("blip2-chat: index --forget works on files and folders of this "
                                                  "machine, not ")


def test_a_stopped_rebuild_forgets_them_too(collection: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Going on with a rebuild that still holds them would bring them back once it replaces the index."""
    aside = collection["index"] / REBUILDING
    index_into(aside, [collection["photos"], collection["photos2"]], checkpoint="other/checkpoint")
    rebuild_kept = pictures_in(collection["photos"])
    _, kept = gone_for_good(collection)

    assert main(["index", "--forget", str(collection["photos2"]), "--json",
                 "--index", str(collection["index"])]) == 0

    out, err = capsys.readouterr()
    assert json.loads(out)["stopped_rebuild"] == 6
    assert err == (f"Forgot 6 pictures under {collection['photos2']}, from the index and from the stopped rebuild "
                   f"that waits beside it; {UNTOUCHED}\n")
    assert recorded(collection["index"])[0] == kept
    assert recorded(aside) == (rebuild_kept, set(rebuild_kept.values()))


def test_indexing_a_folder_leaves_a_folder_named_alike_in_another_case_alone(collection: dict[str, Path]) -> None:
    """`index Photos2` once took photos2's pictures out (SQLite's LIKE ignores ASCII case), as if deleted."""
    store = IndexStore.open(collection["index"], CHECKPOINT, create=True)
    try:
        summary = update_index(store, [collection["Photos2"]], recursive=True, embed=pixel_embed)
    finally:
        store.close()
    assert (summary.removed, summary.unchanged) == (0, 1)
    assert recorded(collection["index"])[0] == everything(collection)


def test_a_stopped_rebuild_that_cannot_be_opened_is_said_not_passed_over(
        collection: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped rebuild it may not write (permissions, a full disk) is no damaged one to pass over: forgetting
    without it would let it bring the pictures back once it replaces the index. One sentence, nothing forgotten."""
    from chatbot.core.photo_index import forget
    from chatbot.core.photo_index.access_errors import IndexAccessError

    aside = collection["index"] / REBUILDING
    index_into(aside, [collection["photos"], collection["photos2"]], checkpoint="other/checkpoint")
    _, _ = gone_for_good(collection)
    before = recorded(collection["index"])
    opened = IndexStore.open

    def open_index(folder: Path, *args: object, **kwargs: object) -> IndexStore:
        if folder == aside:
            raise IndexAccessError(f"The search index at {aside} could not be opened: the disk it is on is full.",
                                   "Free some space, then run the command again (nothing was moved or changed).")
        return opened(folder, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forget.IndexStore, "open", staticmethod(open_index))
    assert main(["index", "--forget", str(collection["photos2"]), "--index", str(collection["index"])]) == 2
    assert capsys.readouterr().err.startswith(f"blip2-chat: The search index at {aside} could not be opened: ")
    assert recorded(collection["index"]) == before
