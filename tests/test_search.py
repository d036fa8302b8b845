"""`index`, `search`, `/find` and `/open` end to end, on a tiny synthetic retrieval checkpoint.

The reference is `Blip2ForImageTextRetrieval.forward` over every indexed picture, loaded separately and fed
by the checkpoint's processor: the search's ranking by similarity must be the forward's ITC ranking, and
with re-ranking the forward's ITM ranking (vectors are stored in float16, so scores agree to 2e-3 and
only pictures closer than that may swap).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from chatbot.cli import main
from chatbot.core.commands import run_command
from chatbot.core.conversation import Conversation
from chatbot.core.photo_index.build import update_index
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.photo_search import Finder, Found, found_line, result_to_open
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.retrieval import open_retrieval_engine
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import UserError
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from chatbot.tui.screens.find_results import FindResultsScreen
from tests.conftest import make_image
from tests.search_support import (
    COLOURS,
    QUERY,
    TOLERANCE,
    assert_ranked_like,
    build_index,
    draw_colours,
    forward_scores,
    pictures_in,
    search_json,
)
from tests.tui_support import pilot_test, ready, scripted_app, send, wait_until


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = draw_colours(tmp_path_factory.mktemp("photos"))
    (root / "broken.jpg").write_bytes(b"not a picture at all")
    return root


@pytest.fixture(scope="module")
def indexed(retrieval_checkpoint: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(photos, retrieval_checkpoint, tmp_path_factory.mktemp("index") / "index")


def test_search_ranks_like_the_forward_over_every_picture(
    indexed: Path, photos: Path, retrieval_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    paths = pictures_in(photos)
    itc, itm = forward_scores(retrieval_checkpoint, paths, QUERY)
    by_similarity = search_json(capsys, QUERY, "--index", str(indexed), "--top", "10", "--no-rerank")
    assert sorted(row["path"] for row in by_similarity) == paths  # every picture once, the broken file not
    reference = dict(zip(paths, itc.tolist(), strict=True))
    assert_ranked_like([row["path"] for row in by_similarity], reference)
    for row in by_similarity:
        assert row["similarity"] == pytest.approx(reference[row["path"]], abs=TOLERANCE)
        assert row["match"] is None and row["missing"] is False
    assert [row["rank"] for row in by_similarity] == list(range(1, len(paths) + 1))

    reranked = search_json(capsys, QUERY, "--index", str(indexed), "--top", "10")
    matches = dict(zip(paths, itm.tolist(), strict=True))
    assert [row["path"] for row in reranked] == sorted(paths, key=lambda path: -matches[path])
    for row in reranked:  # the pictures are read again, so the ITM head sees exactly what the forward saw
        assert row["match"] == pytest.approx(matches[row["path"]], abs=1e-5)


def test_top_keeps_the_best_and_text_lines_say_the_scores(
    indexed: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rows = search_json(capsys, QUERY, "--index", str(indexed), "--no-rerank")
    best_two = search_json(capsys, QUERY, "--index", str(indexed), "--no-rerank", "--top", "2")
    assert [row["path"] for row in best_two] == [row["path"] for row in rows[:2]]
    assert main(["search", QUERY, "--index", str(indexed), "--no-rerank", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [found_line(rank, Found(row["path"], row["similarity"])) for rank, row in enumerate(best_two, 1)]
    assert lines[0].startswith(f"1. {best_two[0]['path']}  similarity ")


@pytest.mark.parametrize(("args", "words"), [
    (["", "--top", "3"], "The search text is empty"),
    (["word " * 200], "tokens long, but the model reads at most"),
    (["a dog", "--top", "0"], "--top must be between 1 and 1000"),
])
def test_bad_queries_get_one_sentence(indexed: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                      words: str) -> None:
    assert main(["search", *args, "--index", str(indexed)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_no_index_another_model_and_a_damaged_index(
    indexed: Path, photos: Path, retrieval_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["search", "a dog", "--index", str(tmp_path / "none")]) == 2
    assert "There is no search index at" in capsys.readouterr().err
    other = shutil.copytree(retrieval_checkpoint, tmp_path / "other-itm")
    assert main(["search", "a dog", "--index", str(indexed), "--model", str(other)]) == 2
    err = capsys.readouterr().err
    assert "was made with" in err and "--rebuild" in err
    assert main(["index", str(photos), "--index", str(indexed), "--model", str(other)]) == 2
    assert "--rebuild" in capsys.readouterr().err

    damaged = shutil.copytree(indexed, tmp_path / "damaged")
    (damaged / "index.sqlite").write_bytes(b"this is not a database" * 100)
    assert main(["search", "a dog", "--index", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err.lower() and "blip2-chat index" in err
    assert not (damaged / "index.sqlite").exists()  # set aside, so the next `index` starts afresh
    assert main(["index", str(photos), "--index", str(damaged), "--model", str(retrieval_checkpoint)]) == 0
    assert len(search_json(capsys, "a dog", "--index", str(damaged), "--no-rerank")) == len(COLOURS)


def test_renamed_files_reuse_their_embeddings_and_vanished_ones_are_missing(
    retrieval_checkpoint: Path, photos: Path, tmp_path: Path,
) -> None:
    collection = Path(shutil.copytree(photos, tmp_path / "collection"))
    engine = open_retrieval_engine(str(retrieval_checkpoint), device="cpu")
    store = IndexStore.open(tmp_path / "index", str(retrieval_checkpoint), create=True)
    first = update_index(store, [collection], recursive=False, embed=engine.image_embeddings)
    assert (first.added, len(first.failed), engine.vision_calls) == (len(COLOURS), 1, len(COLOURS))
    (collection / "red.png").rename(collection / "renamed red.png")
    again = update_index(store, [collection], recursive=False, embed=engine.image_embeddings)
    assert engine.vision_calls == len(COLOURS)  # the same bytes under a new name: not embedded again
    assert (again.reused, again.removed, again.unchanged) == (1, 1, len(COLOURS) - 1)
    store.close()

    finder = Finder(device="cpu", folder=tmp_path / "index")
    found = finder.find(QUERY, top=10, rerank=False)
    assert str(collection / "renamed red.png") in [item.path for item in found]
    assert str(collection / "red.png") not in [item.path for item in found]
    (collection / "green.png").unlink()  # gone since it was indexed
    by_similarity = finder.find(QUERY, top=10, rerank=False)
    found = finder.find(QUERY, top=10)
    gone = [item.path for item in by_similarity].index(str(collection / "green.png"))
    # the gone file keeps its place in the similarity order (it may be the best match); the rest are
    # re-ordered among themselves by the matching head
    assert found[gone] == Found(str(collection / "green.png"), by_similarity[gone].similarity, None, missing=True)
    others = found[:gone] + found[gone + 1:]
    assert all(item.match is not None for item in others)
    assert [item.match for item in others] == sorted((item.match or 0.0 for item in others), reverse=True)
    assert sorted(item.path for item in found) == sorted(item.path for item in by_similarity)
    assert gone < len(found) - 1  # (so the old rule, missing last, would fail here)
    number = str(gone + 1)
    with pytest.raises(UserError, match=f"Result {number} is gone since it was indexed"):
        result_to_open(found, number)
    assert result_to_open(found, "1") == found[0].path


def test_top_counts_files_when_a_picture_is_in_two_places(
    retrieval_checkpoint: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The same bytes in two folders are two results, and --top N shows at most N of them."""
    collection = Path(shutil.copytree(photos, tmp_path / "collection"))
    (collection / "copies").mkdir()
    for name in COLOURS:
        shutil.copy(collection / f"{name}.png", collection / "copies" / f"{name}.png")
    folder = tmp_path / "index"
    assert main(["index", str(collection), "-r", "--model", str(retrieval_checkpoint), "--index", str(folder)]) == 0
    everything = search_json(capsys, QUERY, "--index", str(folder), "--top", "1000", "--no-rerank")
    assert len(everything) == 2 * len(COLOURS)  # every copy is a result of its own
    for top in (1, 3, len(COLOURS) + 1):
        for rerank in ([], ["--no-rerank"]):
            rows = search_json(capsys, QUERY, "--index", str(folder), "--top", str(top), *rerank)
            assert [row["rank"] for row in rows] == list(range(1, top + 1)), (top, rerank)
    best = search_json(capsys, QUERY, "--index", str(folder), "--top", "2", "--no-rerank")
    assert [row["path"] for row in best] == [row["path"] for row in everything[:2]]
    unquoted = search_json(capsys, *QUERY.split(), "--index", str(folder), "--top", "2", "--no-rerank")
    assert unquoted == best  # `search a red square ...` without quotes: the same words, the same search
    capsys.readouterr()
    assert main(["search", QUERY, "--index", str(folder), "--top", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_indexing_a_folder_without_pictures_says_so(
    retrieval_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    make_image(tmp_path / "empty" / "sub" / "deeper.png", (1, 2, 3))
    args = ["index", str(tmp_path / "empty"), "--model", str(retrieval_checkpoint), "--index", str(tmp_path / "i")]
    assert main(args) == 2  # nothing to index and no index yet: said, and nothing is made
    err = capsys.readouterr().err
    assert f"No images found in {tmp_path / 'empty'}. Add --recursive to look in its sub-folders." in err
    assert not (tmp_path / "i").exists()
    assert main([*args, "--recursive"]) == 0
    assert "No images found" not in capsys.readouterr().err


# --- /find and /open in the screen-reader mode and in the app --------------------------------------


def test_find_and_open_in_the_screen_reader_mode(indexed: Path, photos: Path, tmp_path: Path) -> None:
    finder = Finder(device="cpu", folder=indexed)
    expected = Finder(device="cpu", folder=indexed).find("a green square")
    out, notes = io.StringIO(), io.StringIO()
    conversation = Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=20)), None,
                                SessionStore(tmp_path / "sessions"), load_image(photos / "black.png"),
                                engine=ScriptedEngine("an answer"))
    chat = PlainChat(conversation, out=out, notes=notes, echo=False, finder=finder)
    chat.run(["/find a green square", "/open 1", "/open 99"])
    assert out.getvalue().splitlines() == [found_line(rank, item) for rank, item in enumerate(expected, 1)]
    assert conversation.image is not None and conversation.image.source == expected[0].path
    said = notes.getvalue()
    assert "Open one with /open N (e.g. /open 1)." in said
    assert f"/open takes a result's number, 1 to {len(expected)}" in said


def test_open_before_any_search_says_what_to_do(tmp_path: Path, photos: Path) -> None:
    conversation = Conversation(Settings(model="scripted"), None, SessionStore(tmp_path / "s"),
                                load_image(photos / "red.png"), engine=ScriptedEngine("x"))
    outcome = run_command(conversation, "/open 1")
    assert not outcome.ok and outcome.notices[0].text.startswith("There are no search results to open yet.")
    assert run_command(conversation, "/find").notices[0].text.startswith("/find needs more")


@pilot_test
async def test_find_in_the_app_shows_the_results_and_opens_the_chosen_one(indexed: Path, photos: Path) -> None:
    expected = Finder(device="cpu", folder=indexed).find("a blue square")
    app = scripted_app(ScriptedEngine("an answer"), photos / "black.png",
                       finder=Finder(device="cpu", folder=indexed))
    async with app.run_test(size=(110, 36)) as pilot:
        await ready(pilot)
        await send(pilot, "/find a blue square")
        await wait_until(pilot, lambda: isinstance(app.screen, FindResultsScreen), timeout=60, what="the results")
        screen = app.screen
        assert isinstance(screen, FindResultsScreen) and screen.found == expected
        await pilot.press("down", "enter")  # the second result
        await wait_until(pilot, lambda: app.conversation.image is not None
                         and app.conversation.image.source == expected[1].path, what="the chosen picture")
        assert [item.path for item in app.conversation.found] == [item.path for item in expected]
        await send(pilot, "/open 1")
        await wait_until(pilot, lambda: app.conversation.image is not None
                         and app.conversation.image.source == expected[0].path, what="/open 1")


@pilot_test
async def test_a_result_gone_since_the_list_was_shown_is_refused_in_the_app_as_open_refuses_it(
        tmp_path: Path, photos: Path) -> None:
    """A probe: Enter on a result deleted meanwhile said "No file at ... drag the file into the terminal", where
    /open N said it is gone since it was indexed. Both now say the same sentence, and the list stays."""
    gone = tmp_path / "gone.png"
    shutil.copy(photos / "red.png", gone)
    found = [Found(str(gone), 0.5)]
    app = scripted_app(ScriptedEngine("x"), photos / "black.png")
    async with app.run_test(size=(110, 36)) as pilot:
        await ready(pilot)
        chosen: list[str | None] = []
        app.push_screen(FindResultsScreen("red", found), chosen.append)
        await wait_until(pilot, lambda: isinstance(app.screen, FindResultsScreen), what="the results")
        gone.unlink()
        with pytest.raises(UserError) as said:
            result_to_open(found, "1")
        await pilot.press("enter")
        await wait_until(pilot, lambda: str(said.value) in [note.message for note in app._notifications],
                         what="the sentence /open 1 says")
        assert isinstance(app.screen, FindResultsScreen) and chosen == []


def test_when_no_result_can_be_opened_the_chat_says_why(tmp_path: Path, photos: Path) -> None:
    from chatbot.core.commands import found_outcome

    conversation = Conversation(Settings(model="scripted"), None, SessionStore(tmp_path / "s"),
                                load_image(photos / "red.png"), engine=ScriptedEngine("x"))
    outcome = found_outcome(conversation, [Found("/p/a.png", 0.4, state="gone"),
                                           Found("/p/b.png", 0.3, state="not_a_picture")])
    assert [notice.text for notice in outcome.notices] == [
        "None of the results can be opened: their files are gone or changed since they were indexed. Run "
        "`blip2-chat index` again over your folders."]


def test_result_lines_never_carry_control_characters() -> None:
    line = found_line(1, Found("/p/\x1b[31mred\x07.png", 0.5, 0.25, missing=True))
    assert "\x1b" not in line and "\x07" not in line
    assert line.endswith("match 0.250  similarity 0.500  (gone: deleted or moved since it was indexed; "
                         "run `blip2-chat index` again)")
    assert os.sep in line


def test_match_probabilities_read_alike_and_in_order() -> None:
    """Three decimals for every match (no `9.9e-03` beside `0.93`); pictures closer than that read as equal."""
    lines = [found_line(rank, Found(f"/p/{rank}.png", 0.3, match)) for rank, match in
             enumerate([0.97, 0.0102, 0.0099, 2.7e-05, 8.1e-06, 0.0], start=1)]
    assert [line.split("  ")[1] for line in lines] == [
        "match 0.970", "match 0.010", "match 0.010", "match 0.000", "match 0.000", "match 0.000"]


@pytest.mark.parametrize("model, chat_model", [("demo", "demo"), ("DEMO", "demo"), ("/some/retrieval/model", None)])
def test_search_chat_opens_the_chat_with_a_chat_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      model: str, chat_model: str | None) -> None:
    """--model names the retrieval checkpoint; the chat gets the configured chat model, or the demo's."""
    import chatbot.cli
    import chatbot.frontends.search.search_run as search_run
    from chatbot.core.settings import DEFAULT_MODEL

    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path))  # no config file
    monkeypatch.delenv("BLIP2_CHAT_MODEL", raising=False)
    searched: list[str] = []
    opened: list[tuple[str, str]] = []

    def search(settings: Settings, request: object) -> str:
        searched.append(settings.model)
        return "/p/best.png"

    def chat(settings: Settings, image: str) -> int:
        opened.append((settings.model, image))
        return 0

    monkeypatch.setattr(search_run, "run_search", search)
    monkeypatch.setattr(chatbot.cli, "run_chat_command", chat)
    assert main(["search", "a red square", "--model", model, "--chat"]) == 0
    assert searched == [model] and opened == [(chat_model or DEFAULT_MODEL, "/p/best.png")]


@pytest.mark.parametrize("number", ["²", "٣", "9" * 5000, "-1", "0", "3", " 1x", ""])
def test_open_refuses_what_is_no_result_number_in_one_sentence(number: str) -> None:
    """"²" is a digit to str.isdigit() but not to int(), and 5,000 digits are past int()'s limit: both were
    a ValueError that ended the plain chat."""
    found = [Found("/pictures/a.png", 0.5, None), Found("/pictures/b.png", 0.4, None)]
    with pytest.raises(UserError) as caught:
        result_to_open(found, number)
    assert caught.value.message == f"/open takes a result's number, 1 to 2 (got {number[:20]})."
