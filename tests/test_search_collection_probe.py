"""What a user probe of `search` and `index` over a real collection found: the first result depended on
--top, a rebuild without --model changed the model, a stopped rebuild was deleted before the new one had
started, results whose files changed since they were indexed did not say so, `search --chat` on a demo
index opened the default chat model, suggested commands left out --index or named a chat checkpoint, match
scores printed two ways, and `index -r` left linked folders out without a word.

On the tiny synthetic retrieval checkpoint. The references are the model's own forward
(`tests/search_support.py`'s), what the test itself did to the files, and properties that must hold.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbot.cli import main
from chatbot.core.conversation import Conversation
from chatbot.core.photo_index.index_files import REBUILDING
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.photo_search import RERANK_POOL, Finder, Found, found_line, result_to_open
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine import retrieval
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import UserError
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from tests.conftest import make_image
from tests.search_support import (
    COLOURS,
    QUERY,
    assert_ranked_like,
    build_index,
    draw_colours,
    forward_scores,
    index_files,
    search_json,
)

MANY = 16  # pictures in the collection: more than the re-scored pool, so the pool and the rest both show
QUERIES = (QUERY, "a dog on a beach", "a green square")
AGAIN = "run `blip2-chat index` again"


def shade(number: int) -> tuple[int, int, int]:
    return (37 * number % 256, 91 * number % 256, 53 * number % 256)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    for number in range(MANY):
        make_image(root / f"picture-{number:02}.png", shade(number), (48 + 4 * number, 40))
    return root


@pytest.fixture(scope="module")
def big_index(retrieval_checkpoint: Path, collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(collection, retrieval_checkpoint, tmp_path_factory.mktemp("big") / "index")


@pytest.fixture(scope="module")
def finder(big_index: Path) -> Finder:
    return Finder(device="cpu", folder=big_index)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    return draw_colours(root)


def err_of(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# --- 1. the first results do not depend on --top -----------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(1, 2), (1, 10), (1, MANY), (2, MANY), (3, 11), (9, 12), (10, 11),
                                      (11, MANY), (15, MANY)])
def test_the_best_k_are_the_first_k_of_any_longer_list(finder: Finder, k: int, n: int) -> None:
    """With the matching head and without (--no-rerank, whose ranking is as it was), for a few queries."""
    for query in QUERIES:
        for rerank in (True, False):
            shorter, longer = finder.find(query, top=k, rerank=rerank), finder.find(query, top=n, rerank=rerank)
            assert len(shorter) == k and len(longer) == n
            assert shorter == longer[:k], (query, rerank)


def test_the_pool_is_re_scored_like_the_forward_then_the_rest_follow_by_similarity(
    finder: Finder, collection: Path, retrieval_checkpoint: Path,
) -> None:
    by_similarity = finder.find(QUERY, top=MANY, rerank=False)
    found = finder.find(QUERY, top=MANY)
    pool, rest = found[:RERANK_POOL], found[RERANK_POOL:]
    assert {item.path for item in pool} == {item.path for item in by_similarity[:RERANK_POOL]}
    assert rest == by_similarity[RERANK_POOL:]  # the rest as --no-rerank has them, not re-scored
    assert all(item.match is None for item in rest)
    paths = [item.path for item in pool]
    _, itm = forward_scores(retrieval_checkpoint, paths, QUERY)
    for item, probability in zip(pool, itm.tolist(), strict=True):
        assert item.match == pytest.approx(probability, abs=1e-5)
    assert [item.match for item in pool] == sorted((item.match or 0.0 for item in pool), reverse=True)
    # --no-rerank is as it was: every picture by the forward's similarity, nothing re-scored
    every = sorted(str(path) for path in collection.iterdir())
    itc, _ = forward_scores(retrieval_checkpoint, every, QUERY)
    assert sorted(item.path for item in by_similarity) == every
    assert_ranked_like([item.path for item in by_similarity], dict(zip(every, itc.tolist(), strict=True)))
    assert all(item.match is None for item in by_similarity)


def test_search_top_1_is_the_first_line_of_top_10_and_scores_print_alike(
    big_index: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ten = search_json(capsys, QUERY, "--index", str(big_index))
    assert search_json(capsys, QUERY, "--index", str(big_index), "--top", "1") == ten[:1]
    capsys.readouterr()
    assert main(["search", QUERY, "--index", str(big_index), "--top", str(MANY)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = search_json(capsys, QUERY, "--index", str(big_index), "--top", str(MANY))
    assert len(lines) == len(rows) == MANY
    for line, row in zip(lines, rows, strict=True):
        shown = re.fullmatch(r"\d+\. (\S+)  (?:match (\S+)  )?similarity (\S+)", line)
        assert shown is not None, line
        assert shown[1] == row["path"]
        assert shown[3] == f"{row['similarity']:.3f}"
        if row["match"] is None:
            assert shown[2] is None
        else:  # one way for every match: three decimals (never 9.9e-03 beside 0.93)
            assert re.fullmatch(r"[01]\.\d{3}", shown[2]) and float(shown[2]) == pytest.approx(row["match"], abs=5e-4)


# --- 2. --rebuild keeps the index's model; a stopped rebuild waits until the new one has started ---------


def test_a_rebuild_without_model_keeps_the_index_model(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    own = Path(shutil.copytree(retrieval_checkpoint, tmp_path / "own-itm"))  # not the default checkpoint
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(own)]) == 0
    capsys.readouterr()
    assert main(["index", str(photos), "--index", str(folder), "--rebuild", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["model"] == str(own.resolve()) and summary["added"] == len(COLOURS)
    assert IndexStore.open_existing(folder).checkpoint == str(own.resolve())


class StopAfter:
    """`RetrievalEngine.image_embeddings` that raises KeyboardInterrupt (Ctrl+C) after `batches` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, batches: int | None) -> None:
        self.batches, self.embedded = batches, []  # type: ignore[var-annotated]
        real = retrieval.RetrievalEngine.image_embeddings

        def embed(engine: retrieval.RetrievalEngine, images: list) -> object:  # type: ignore[type-arg]
            if self.batches is not None and len(self.embedded) >= self.batches:
                raise KeyboardInterrupt
            self.embedded.append(len(images))
            return real(engine, images)

        monkeypatch.setattr(retrieval.RetrievalEngine, "image_embeddings", embed)


def rebuild_files(folder: Path) -> dict[str, str]:
    """The stopped rebuild's own files (the lock file, which a run makes and removes, left out)."""
    return {name: sha for name, sha in index_files(folder / REBUILDING).items() if name != "writer.lock"}


def test_a_stopped_rebuild_is_kept_until_another_really_starts_and_a_plain_run_says_it_waits(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = build_index(photos, retrieval_checkpoint, tmp_path / "index")
    other = Path(shutil.copytree(retrieval_checkpoint, tmp_path / "other-itm")).resolve()
    stop = StopAfter(monkeypatch, batches=1)
    assert main(["index", str(photos), "--index", str(folder), "--rebuild", "--model", str(other),
                 "--batch-size", "2"]) == 130
    stopped = rebuild_files(folder)
    assert "index.sqlite" in stopped
    err_of(capsys)

    # a plain run says a rebuild waits, and the command that goes on with it
    stop.batches = None
    assert main(["index", str(photos), "--index", str(folder)]) == 0
    command = f"blip2-chat index {photos} --rebuild --model {other} --index {folder}"
    said = err_of(capsys)
    assert (f"A rebuild of this index with {other} was stopped before it was complete (2 pictures so far) and "
            f"waits; this run updates the index as it is. To go on with the rebuild: {command}.") in said
    assert rebuild_files(folder) == stopped

    # a rebuild with a third model that does not load leaves the stopped one as it was, and says so
    assert main(["index", str(photos), "--index", str(folder), "--rebuild", "--model", str(tmp_path / "no-such")]) == 2
    said = err_of(capsys)
    assert f"The stopped rebuild with {other} is kept, as it was; to go on with it: {command}." in said
    assert rebuild_files(folder) == stopped

    # ... and the command said goes on with it: only the pictures it did not hold yet are embedded
    stop.embedded.clear()
    assert main(shlex.split(command)[1:]) == 0
    assert sum(stop.embedded) == len(COLOURS) - 2
    assert not (folder / REBUILDING).exists()
    assert IndexStore.open_existing(folder).checkpoint == str(other)


def test_a_rebuild_with_another_model_replaces_a_stopped_one_once_it_holds_pictures(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = build_index(photos, retrieval_checkpoint, tmp_path / "index")
    other = Path(shutil.copytree(retrieval_checkpoint, tmp_path / "other-itm")).resolve()
    stop = StopAfter(monkeypatch, batches=1)
    rebuild = ["index", str(photos), "--index", str(folder), "--rebuild", "--batch-size", "2"]
    assert main([*rebuild, "--model", str(other)]) == 130
    stopped = rebuild_files(folder)
    # the index's own model (no --model), stopped before its first batch: the stopped rebuild is back
    stop.batches, stop.embedded = 0, []
    assert main(rebuild) == 130
    assert f"A stopped rebuild with {other} (2 pictures) is kept aside" in err_of(capsys)
    assert rebuild_files(folder) == stopped
    # the same, run to the end: the stopped one is replaced, and the index is rebuilt with its own model
    stop.batches = None
    assert main(rebuild) == 0
    assert sum(stop.embedded) == len(COLOURS)
    assert not (folder / REBUILDING).exists()
    assert IndexStore.open_existing(folder).checkpoint == str(retrieval_checkpoint)


# --- 3. each result says what became of its file since it was indexed --------------------------------


def test_results_say_what_became_of_their_files(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = build_index(photos, retrieval_checkpoint, tmp_path / "index")
    shutil.copy(photos / "blue.png", photos / "red.png")  # another picture in its place
    (photos / "green.png").write_text("a note, not a picture")
    (photos / "yellow.png").unlink()
    os.utime(photos / "black.png", ns=(10**18, 10**18))  # touched: the same bytes
    expected = {"red": "changed", "green": "not_a_picture", "yellow": "gone", "black": "ok", "white": "ok",
                "blue": "ok"}
    words = {"changed": "(changed since it was indexed: its similarity is of what it showed then; ",
             "not_a_picture": "(no longer a picture: replaced since it was indexed; ",
             "gone": "(gone: deleted or moved since it was indexed; "}
    for rerank in ([], ["--no-rerank"]):
        rows = search_json(capsys, QUERY, "--index", str(folder), *rerank)
        assert {Path(row["path"]).stem: row["state"] for row in rows} == expected
        for row in rows:
            assert row["missing"] == (row["state"] in ("not_a_picture", "gone"))
            assert (row["match"] is None) == (bool(rerank) or row["missing"])
        assert main(["search", QUERY, "--index", str(folder), *rerank]) == 0
        for line, row in zip(capsys.readouterr().out.splitlines(), rows, strict=True):
            note = words.get(row["state"])
            assert line.endswith(f"{note}{AGAIN})") if note else line.endswith(f"similarity {row['similarity']:.3f}")
    # the changed picture is re-scored as it is now: the forward's match of the blue picture's bytes
    reranked = {Path(row["path"]).stem: row for row in search_json(capsys, QUERY, "--index", str(folder))}
    _, itm = forward_scores(retrieval_checkpoint, [str(photos / "red.png")], QUERY)
    assert reranked["red"]["match"] == pytest.approx(float(itm[0]), abs=1e-5)
    # the way forward works: indexed again, every result is as it was indexed
    assert main(["index", str(photos), "--index", str(folder)]) == 0
    again = search_json(capsys, QUERY, "--index", str(folder), "--no-rerank")
    assert {Path(row["path"]).stem: row["state"] for row in again} == {"red": "ok", "black": "ok", "white": "ok",
                                                                      "blue": "ok"}


def test_open_says_when_a_result_changed_after_the_list_was_shown(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = build_index(photos, retrieval_checkpoint, tmp_path / "index")
    expected = Finder(device="cpu", folder=folder).find(QUERY)  # as /find lists them
    third, fourth = expected[2].path, expected[3].path
    other = next(str(photos / f"{name}.png") for name in COLOURS if str(photos / f"{name}.png") not in (third, fourth))
    out, notes = io.StringIO(), io.StringIO()
    conversation = Conversation(Settings(model="scripted"), None, SessionStore(tmp_path / "sessions"),
                                load_image(other), engine=ScriptedEngine("an answer"))
    chat = PlainChat(conversation, out=out, notes=notes, echo=False, finder=Finder(device="cpu", folder=folder))

    def typed() -> Iterator[str]:
        yield f"/find {QUERY}"
        shutil.copy(other, third)  # `cp other.png result.png` after the list was shown
        (Path(fourth)).write_bytes(b"GIF89a but not really")
        yield "/open 3"
        yield "/open 4"

    chat.run(typed())
    said = notes.getvalue()
    assert f"Result 3 ({third}) has changed since it was indexed, so it may not show what you searched for." in said
    assert f"Result 4 ({fourth}) is no longer a picture: it changed since it was indexed." in said
    assert conversation.image is not None and conversation.image.source == other  # neither was opened
    # a list that says the file changed: the user was told, and /open opens it
    found = Finder(device="cpu", folder=folder).find(QUERY, rerank=False)
    number = [item.path for item in found].index(third) + 1
    assert found[number - 1].state == "changed"
    assert result_to_open(found, str(number)) == third
    with pytest.raises(UserError, match="is no longer a picture"):
        result_to_open(found, str([item.path for item in found].index(fourth) + 1))
    assert "changed since it was indexed" in found_line(number, found[number - 1])


def test_a_result_is_as_indexed_when_the_index_did_not_record_its_file() -> None:
    """A Found made without the index's record (an older caller) is taken as it is: nothing to compare."""
    assert Found("/p/a.png", 0.5).state == "ok" and Found("/p/a.png", 0.5, missing=True).state == "gone"


# --- 4. search --chat: the index's model decides the chat model as --model does ------------------------


def test_search_chat_on_an_index_made_with_the_demo_opens_the_demo_chat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """The index's model decides as --model does: the demo's chat model after the demo's search model, else
    the configured (here the default) chat model."""
    import chatbot.cli
    import chatbot.frontends.search.search_run as search_run
    from chatbot.core.settings import DEFAULT_MODEL

    monkeypatch.delenv("BLIP2_CHAT_MODEL", raising=False)
    monkeypatch.setattr(search_run, "run_search", lambda settings, request: "/p/best.png")
    for made_with, chat_model in [("demo", "demo"), ("/some/retrieval/model", DEFAULT_MODEL)]:
        home = tmp_path / made_with.strip("/").replace("/", "-")
        monkeypatch.setenv("BLIP2_CHAT_HOME", str(home))
        IndexStore.open(home / "index", made_with, create=True).close()  # what `index --model` records
        opened: list[tuple[str, str]] = []
        monkeypatch.setattr(chatbot.cli, "run_chat_command",
                            lambda settings, image, opened=opened: opened.append((settings.model, image)) or 0)
        assert main(["search", "a red square", "--chat"]) == 0
        assert opened == [(chat_model, "/p/best.png")], made_with


# --- 5. the commands suggested can be followed ---------------------------------------------------------


def test_no_index_suggests_the_index_folder_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path / "home"))
    given = tmp_path / "nonexistent index"
    assert main(["search", "red", "--index", str(given)]) == 2
    assert f"Build it with `blip2-chat index PATH --index '{given}'` (PATH: your photos folder)." in err_of(capsys)
    assert main(["search", "red"]) == 2  # the default index: nothing to add
    assert "Build it with `blip2-chat index PATH` (PATH: your photos folder)." in err_of(capsys)


@pytest.mark.parametrize("command", [["search", "red"], ["index", "{photos}"]])
def test_a_chat_checkpoint_as_the_search_model_is_said_to_be_one(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, checkpoints: dict[str, Path],
    capsys: pytest.CaptureFixture[str], command: list[str],
) -> None:
    folder = build_index(photos, retrieval_checkpoint, tmp_path / "index")
    err_of(capsys)
    chat = checkpoints["opt"]
    args = [word.format(photos=photos) for word in command]
    assert main([*args, "--index", str(folder), "--model", str(chat)]) == 2
    said = err_of(capsys)
    assert f"{chat} is a BLIP-2 chat checkpoint, which has no image-text retrieval heads to search with." in said
    assert "was made with" not in said and "--rebuild --model" not in said
    assert IndexStore.open_existing(folder).checkpoint == str(retrieval_checkpoint)


# --- 7. index -r says which linked folders it left out ----------------------------------------------------


def test_index_recursive_says_how_many_linked_folders_it_left_out(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for number in range(3):
        make_image(outside / f"far-{number}.png", shade(number + 20))
    (photos / "sub").mkdir()
    make_image(photos / "sub" / "near.png", shade(40))
    link = photos / "sub" / "linked"
    link.symlink_to(outside, target_is_directory=True)
    folder = tmp_path / "index"
    capsys.readouterr()
    assert main(["index", str(photos), "-r", "--index", str(folder), "--model", str(retrieval_checkpoint),
                 "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["linked_folders"] == [str(link)] and summary["pictures"] == len(COLOURS) + 1
    suggested = f"blip2-chat index {outside} -r --index {folder}"
    assert (f"Left out 1 linked folder ({link}): links to folders are not followed; index it by its own path, "
            f"e.g. {suggested}.") in captured.err
    assert main(shlex.split(suggested)[1:]) == 0  # the way said works: the linked pictures are in now
    assert IndexStore.open_existing(folder).count() == len(COLOURS) + 1 + 3
