"""What a user probe of `index` and `search` found: an index without pictures, a --rebuild whose model does
not load (or that is stopped), a query that is not UTF-8, a file named as the index folder, a folder with
nothing to index, and failure lines that named the file twice. On the tiny synthetic retrieval checkpoint;
results are checked against the model's own forward (tests/search_support.py's reference)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.core.conversation import Conversation
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.photo_search import Finder
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine import retrieval
from chatbot.engine.retrieval import open_retrieval_engine
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import QueryError
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import IMAGE_SUFFIXES, load_image
from tests.conftest import make_image
from tests.search_support import (
    COLOURS,
    QUERY,
    assert_ranked_like,
    draw_colours,
    forward_scores,
    index_files,
    pictures_in,
    search_json,
)

NOT_UTF8 = "\udcff\udcfe"  # what Python makes of the argument bytes ff fe (surrogateescape)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    return draw_colours(root)


def one_sentence(err: str, words: str) -> None:
    assert words in err and "Traceback" not in err, err


# --- 1. an index that holds no picture ---------------------------------------------------------------


def test_searching_an_index_without_pictures_says_so(
    tmp_path: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """As a first index run leaves it while its model loads (made and stamped, no vector yet): the search
    model is not even loaded, and the store alone ranks nothing, whatever the query's width."""
    folder = tmp_path / "index"
    IndexStore.open(folder, str(retrieval_checkpoint), create=True).close()
    assert main(["search", "a red square", "--index", str(folder)]) == 2
    one_sentence(capsys.readouterr().err, f"The index at {folder} holds no pictures yet.")
    store = IndexStore.open_existing(folder)
    for width in (8, 128, 256):
        assert store.search(np.ones(width), top=3) == []
    store.close()


def test_a_search_while_the_first_index_run_loads_its_model(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The search runs at the moment the index run starts loading the (real) model, so no timing is involved."""
    folder = tmp_path / "index"
    during: list[int] = []

    def search_then_load(*args: object, **kwargs: object) -> retrieval.RetrievalEngine:
        if not during:  # once: a search that loads the model itself comes here too
            during.append(main(["search", "a red square", "--index", str(folder)]))
        return open_retrieval_engine(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retrieval, "open_retrieval_engine", search_then_load)
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    assert during == [2]
    one_sentence(capsys.readouterr().err, "holds no pictures yet")


# --- 2. --rebuild touches nothing until the new index is complete -------------------------------------


def test_a_rebuild_whose_model_does_not_load_leaves_the_index_as_it_was(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    before = index_files(folder)
    results = search_json(capsys, QUERY, "--index", str(folder), "--no-rerank")
    assert main(["index", str(photos), "--index", str(folder), "--rebuild", "--model", str(tmp_path / "no-such")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert index_files(folder) == before  # nothing touched, nothing left aside
    assert IndexStore.open_existing(folder).checkpoint == str(retrieval_checkpoint)  # the bogus model not recorded
    assert search_json(capsys, QUERY, "--index", str(folder), "--no-rerank") == results
    assert main(["index", str(photos), "--index", str(folder)]) == 0  # a plain run goes on with the index's model


def test_a_first_index_run_whose_model_does_not_load_makes_nothing(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "deeper" / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(tmp_path / "no-such")]) == 2
    assert not (tmp_path / "deeper").exists()
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    assert len(search_json(capsys, QUERY, "--index", str(folder), "--no-rerank")) == len(COLOURS)


def test_a_stopped_rebuild_keeps_the_old_index_and_goes_on_when_run_again(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl+C after the first batch of a rebuild with another model; then the same command again."""
    from chatbot.core.photo_index.index_files import REBUILDING
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    before = index_files(folder)
    old_results = search_json(capsys, QUERY, "--index", str(folder), "--no-rerank")
    other = Path(shutil.copytree(retrieval_checkpoint, tmp_path / "other-itm"))
    embedded: list[int] = []
    real = retrieval.RetrievalEngine.image_embeddings

    def stopped_after_one_batch(self: retrieval.RetrievalEngine, images: list) -> object:  # type: ignore[type-arg]
        if embedded and len(embedded) == 1 and stop:
            raise KeyboardInterrupt
        embedded.append(len(images))
        return real(self, images)

    stop = True
    monkeypatch.setattr(retrieval.RetrievalEngine, "image_embeddings", stopped_after_one_batch)
    rebuild = ["index", str(photos), "--index", str(folder), "--rebuild", "--model", str(other), "--batch-size", "2"]
    assert main(rebuild) == 130
    assert "is as it was" in capsys.readouterr().err
    assert {name: sha for name, sha in index_files(folder).items() if not name.startswith(REBUILDING)} == before
    assert search_json(capsys, QUERY, "--index", str(folder), "--no-rerank") == old_results  # still searchable

    stop = False
    assert main(rebuild) == 0
    assert sum(embedded) == len(COLOURS)  # the batch finished before Ctrl+C was not embedded again
    assert not (folder / REBUILDING).exists() and not (folder / "replaced-by-rebuild").exists()
    assert IndexStore.open_existing(folder).checkpoint == str(other)
    paths = pictures_in(photos)
    itc, _ = forward_scores(other, paths, QUERY)
    rows = search_json(capsys, QUERY, "--index", str(folder), "--no-rerank", "--model", str(other))
    assert sorted(row["path"] for row in rows) == paths
    reference = dict(zip(paths, itc.tolist(), strict=True))
    assert_ranked_like([row["path"] for row in rows], reference)
    for row in rows:
        assert row["similarity"] == pytest.approx(reference[row["path"]], abs=2e-3)


# --- 3. a query that is not UTF-8 --------------------------------------------------------------------


def test_a_query_that_is_not_utf8_gets_one_sentence_before_any_model_loads(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    capsys.readouterr()
    assert main(["search", NOT_UTF8, "--index", str(folder)]) == 2
    err = capsys.readouterr().err
    one_sentence(err, "The search text is not valid UTF-8 text.")
    assert "Loading" not in err
    engine = open_retrieval_engine(str(retrieval_checkpoint), device="cpu")
    with pytest.raises(QueryError, match="not valid UTF-8"):
        engine.text_embeddings(["a red " + NOT_UTF8])

    finder = Finder(device="cpu", folder=folder)  # /find in the screen-reader mode goes through the same check
    notes = io.StringIO()
    conversation = Conversation(Settings(model="scripted"), None, SessionStore(tmp_path / "sessions"),
                                load_image(photos / "red.png"), engine=ScriptedEngine("x"))
    PlainChat(conversation, out=io.StringIO(), notes=notes, echo=False, finder=finder).run([f"/find {NOT_UTF8}"])
    assert "blip2-chat: The search text is not valid UTF-8 text." in notes.getvalue()


# --- 4. a file where the index folder should be ------------------------------------------------------


def test_a_file_named_as_the_index_folder(tmp_path: Path, photos: Path, retrieval_checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    afile = make_image(tmp_path / "afile.jpg", (1, 2, 3))
    content = afile.read_bytes()
    assert main(["index", str(photos), "--index", str(afile), "--model", str(retrieval_checkpoint)]) == 2
    one_sentence(capsys.readouterr().err, f"{afile} is a file, not a folder for the search index.")
    for rebuild in ([], ["--rebuild"]):
        assert main(["index", str(photos), "--index", str(afile), *rebuild]) == 2
        one_sentence(capsys.readouterr().err, "is a file, not a folder")
    assert main(["search", "a dog", "--index", str(afile)]) == 2
    err = capsys.readouterr().err
    one_sentence(err, f"{afile} is a file, not a folder for the search index.")
    assert "There is no search index" not in err
    assert main(["index", str(photos), "--index", str(afile / "inside"), "--model", str(retrieval_checkpoint)]) == 2
    one_sentence(capsys.readouterr().err, f"Could not make the index folder {afile / 'inside'}:")
    assert afile.read_bytes() == content


# --- 5. nothing to index -----------------------------------------------------------------------------


def test_a_folder_with_nothing_to_index_gets_describes_sentence_and_makes_nothing(
    tmp_path: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    folder = tmp_path / "ix"
    args = ["index", str(empty), "--index", str(folder), "--model", str(retrieval_checkpoint)]
    assert main(args) == 2
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    assert capsys.readouterr().err == f"blip2-chat: No images found in {empty}. index reads {suffixes} files.\n"
    assert not folder.exists()
    (empty / "sub").mkdir()
    make_image(empty / "sub" / "deeper.png", (1, 2, 3))
    assert main(args) == 2
    assert capsys.readouterr().err == \
        f"blip2-chat: No images found in {empty}. Add --recursive to look in its sub-folders.\n"
    assert not folder.exists()
    assert main([*args, "--recursive"]) == 0
    assert "No images found" not in capsys.readouterr().err


def test_an_emptied_folder_leaves_the_index_and_a_rebuild_of_nothing_is_refused(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "ix"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    emptied = Path(shutil.copytree(photos, tmp_path / "emptied"))
    assert main(["index", str(emptied), "--index", str(folder)]) == 0
    before = index_files(folder)
    for picture in emptied.iterdir():
        picture.unlink()
    assert main(["index", str(emptied), "--index", str(folder), "--rebuild", "--model", str(retrieval_checkpoint)]) == 2
    assert capsys.readouterr().err.count("No images found") == 1
    assert index_files(folder) == before  # a rebuild with nothing to index touches nothing
    capsys.readouterr()
    assert main(["index", str(emptied), "--index", str(folder)]) == 0
    lines = capsys.readouterr().err.splitlines()
    firsts = [line.split(",")[0] for line in lines]
    assert firsts == [f"No images found in {emptied}. index reads .bmp", "Done: 0 added"]
    assert f"{len(COLOURS)} removed" in lines[1] and f"holds {len(COLOURS)} pictures" in lines[1]
    assert main(["index", str(emptied), "--index", str(folder)]) == 2  # now there is nothing to do there
    one_sentence(capsys.readouterr().err, "No images found")


# --- 6. a failure names the file once ----------------------------------------------------------------


def test_a_file_that_cannot_be_indexed_is_named_once(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "broken.png").write_bytes(b"not a picture")
    folder = tmp_path / "ix"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "empty.jpg" in line or "broken.png" in line]
    assert len(lines) == 2
    assert lines[1].startswith(f"Could not index {photos / 'empty.jpg'}: it is empty (0 bytes).")
    assert lines[0].startswith(f"Could not index {photos / 'broken.png'}: it is not an image")
    assert all(line.count(str(photos)) == 1 for line in lines)


@pytest.mark.parametrize(("reason", "line"), [
    ("/p/a.jpg is empty (0 bytes). Re-save it.", "Could not index /p/a.jpg: it is empty (0 bytes). Re-save it."),
    ("Permission denied reading /p/a.jpg. Check it.", "Permission denied reading /p/a.jpg. Check it."),
    ("a loop of symbolic links", "Could not index /p/a.jpg: a loop of symbolic links"),
    ("/p/a.jpgx is empty", "Could not index /p/a.jpg: /p/a.jpgx is empty"),
])
def test_failure_lines(reason: str, line: str) -> None:
    from chatbot.frontends.search.index_run import failure_line

    assert failure_line("/p/a.jpg", reason) == line
