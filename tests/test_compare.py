"""`/compare PATH`: one question about the open image and another, each in its own context, side by side.

The other image's answer is checked against independent references: the engine answering that image
alone with the literal one-question prompt, and the tokens of plain `Blip2ForConditionalGeneration.generate`.
Then the core's commands (arming, errors, saving), the screen-reader lines, and the app (Pilot).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.core.commands import COMMANDS, compare_with, help_lines, run_command
from chatbot.core.comparison import due_comparison, image_labels
from chatbot.core.completion import complete_line
from chatbot.core.conversation import Conversation
from chatbot.core.session import ComparedAnswer, ImageRef, Session, SessionError, Turn
from chatbot.core.session_files import session_from_json, session_json
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from chatbot.tui.answering import QUESTION_WAITS
from chatbot.tui.palette import palette_entries
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.comparison_view import ComparisonView
from chatbot.tui.widgets.transcript import Transcript
from prompts import normalize_answer
from tests.tui_support import (
    SIZE,
    errors,
    idle,
    notices,
    pairs,
    pilot_test,
    ready,
    saved_turns,
    scripted_app,
    send,
    wait_until,
)

OPTIONS = GenerationOptions(max_new_tokens=6)


def prompt_alone(question: str) -> str:
    """The BLIP-2 one-question prompt, written out here (both families use it for chat)."""
    return f"Question: {question} Answer:"


def compared(chat: Conversation, path: Path) -> tuple[str, object]:
    """`/compare PATH` as a front end runs it: the command, the image loaded, the comparison streamed."""
    outcome = run_command(chat, f"/compare {path}")
    assert outcome.ok and outcome.compare_image == str(path), outcome.notices
    result = compare_with(chat, load_image(outcome.compare_image))
    assert result.ok and result.comparison is not None, result.notices
    return "".join(result.comparison.chunks), result.comparison


# --- the core, on synthetic checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("family", ["opt", "flan-t5"])
def test_compared_answer_is_the_other_image_asked_alone(engines, pictures, family) -> None:
    from tests.test_engine import reference_tokens

    engine = engines[family]
    red, green = load_image(pictures["red"]), load_image(pictures["green"])
    chat = Conversation.with_engine(engine, red, OPTIONS)
    "".join(chat.ask("What is in the picture?"))
    "".join(chat.ask("What colour is it?"))  # the open image's prompt now folds a turn in
    streamed, comparison = compared(chat, pictures["green"])
    tokens = list(engine.last_stats.token_ids)

    alone = engine.answer(green, prompt_alone("What colour is it?"), OPTIONS)
    assert tokens == reference_tokens(engine, green, prompt_alone("What colour is it?"), OPTIONS)
    turn = chat.session.turns[-1]
    assert turn.compared == [ComparedAnswer(ImageRef(str(pictures["green"]), green.sha256), normalize_answer(alone))]
    assert streamed.strip() == alone
    assert comparison.labels == ("red.png", "green.jpg")  # type: ignore[attr-defined]
    assert comparison.first_answer == turn.answer  # type: ignore[attr-defined]
    assert chat.image is red and chat.session.image == ImageRef(str(pictures["red"]), red.sha256)  # never switched


def test_the_chat_goes_on_about_the_open_image_as_if_nothing_was_compared(engines, pictures) -> None:
    red = load_image(pictures["red"])
    chats = [Conversation.with_engine(engines["opt"], red, OPTIONS) for _ in range(2)]
    answers = []
    for index, chat in enumerate(chats):
        "".join(chat.ask("What is in the picture?"))
        if index == 0:
            compared(chat, pictures["green"])  # another image through the engine's caches in between
        answers.append("".join(chat.ask("What colour is it?")))
    assert answers[0] == answers[1]
    assert chats[0].session.turns[-1].question == "What colour is it?" and not chats[0].session.turns[-1].compared


def test_compare_before_a_question_arms_it_for_the_next_one_only(engines, pictures) -> None:
    engine = engines["opt"]
    green = load_image(pictures["green"])
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), OPTIONS)
    outcome = compare_with(chat, green)
    assert outcome.comparison is None and [n.text for n in outcome.notices] == [
        "The next question will be answered about red.png and about green.jpg, side by side. /compare off cancels."]
    "".join(chat.ask("What is in the picture?"))
    comparison = due_comparison(chat)
    assert comparison is not None and comparison.question == "What is in the picture?"
    assert "".join(comparison.chunks).strip() == engine.answer(green, prompt_alone("What is in the picture?"), OPTIONS)
    "".join(chat.ask("And the colour?"))
    assert due_comparison(chat) is None  # armed once, for one question
    assert [len(turn.compared) for turn in chat.session.turns] == [1, 0]


def test_compare_off_and_an_image_switch_disarm(engines, pictures) -> None:
    chat = Conversation.with_engine(engines["opt"], load_image(pictures["red"]), OPTIONS)
    assert [n.text for n in run_command(chat, "/compare off").notices] == ["No comparison was waiting."]
    compare_with(chat, load_image(pictures["green"]))
    assert [n.text for n in run_command(chat, "/compare").notices] == [
        "The comparison is cancelled: the next question is about the open image only."]
    "".join(chat.ask("What is it?"))
    assert due_comparison(chat) is None and chat.session.turns[-1].compared == []

    chat = Conversation.with_engine(engines["opt"], load_image(pictures["red"]), OPTIONS)
    compare_with(chat, load_image(pictures["green"]))
    from chatbot.core.commands import switch_image

    notice = switch_image(chat, load_image(pictures["green"])).notices[0].text
    assert notice == f"Now talking about {pictures['green']}. The comparison with green.jpg is cancelled."
    assert chat.compare_next is None


def test_stopping_keeps_what_came_and_retry_keeps_the_comparison(engines, pictures) -> None:
    chat = Conversation.with_engine(engines["opt"], load_image(pictures["red"]), OPTIONS)
    "".join(chat.ask("What is in the picture?"))
    outcome = compare_with(chat, load_image(pictures["green"]))
    assert outcome.comparison is not None
    first = next(outcome.comparison.chunks)
    outcome.comparison.cancel.cancel()
    rest = "".join(outcome.comparison.chunks)
    (kept,) = chat.session.turns[-1].compared
    assert kept.stopped and kept.answer == normalize_answer(first + rest) and not chat.answering
    list(chat.retry())  # the open image's answer again: the other image's still answers the same question
    assert chat.session.turns[-1].compared == [kept]

    again = compare_with(chat, load_image(pictures["green"]))
    assert again.comparison is not None
    again.comparison.cancel.cancel()  # stopped before the first word: nothing recorded, the earlier one stays
    assert "".join(again.comparison.chunks) == "" and chat.session.turns[-1].compared == [kept]


def test_bad_compares_are_one_sentence_and_change_nothing(engines, pictures, tmp_path) -> None:
    no_image = Conversation.with_engine(engines["opt"], None, OPTIONS)
    assert [n.text for n in run_command(no_image, f"/compare {pictures['green']}").notices] == [
        "No image is open, so there is nothing to compare with. Open one first with /image PATH, then /compare OTHER."]

    chat = Conversation.with_engine(engines["opt"], load_image(pictures["red"]), OPTIONS)
    "".join(chat.ask("What is it?"))
    twin = Path(shutil.copy(pictures["red"], tmp_path / "twin.png"))  # another name, the same picture
    same = compare_with(chat, load_image(twin))
    assert not same.ok and [n.text for n in same.notices] == [
        "twin.png is the picture already open (the same content). Compare it with a different image."]
    assert run_command(chat, "/compare").notices[0].text == (
        "/compare needs the path or URL of another image. e.g. /compare other.jpg.")
    assert run_command(chat, "/compare", can_pick=True).effect == "pick_compare"

    stream = chat.ask("And now?")  # an answer is coming
    busy = run_command(chat, f"/compare {pictures['green']}")
    assert not busy.ok and busy.notices[0].text.startswith("An answer is still coming, so /compare has to wait.")
    assert not compare_with(chat, load_image(pictures["green"])).ok
    "".join(stream)
    assert [t.compared for t in chat.session.turns] == [[], []]


def test_labels_tell_alike_names_apart() -> None:
    assert image_labels("/a/x/cat.jpg", "/a/y/cat.jpg") == ("x/cat.jpg", "y/cat.jpg")
    assert image_labels("/pics/red.png", "https://example.com/g.jpg") == ("red.png", "https://example.com/g.jpg")


def test_listed_in_help_completion_and_palette(pictures, tmp_path) -> None:
    assert any(line.startswith("/compare PATH ") for line in help_lines())
    assert [spec.name for spec in COMMANDS].count("compare") == 1
    (tmp_path / "other.png").write_bytes(pictures["red"].read_bytes())
    assert complete_line("/compare oth", cwd=tmp_path) == ["/compare other.png"]
    assert complete_line("/comp") == ["/compare "]

    class Runner:
        def run_slash(self, line: str) -> bool:
            return True

        def prefill_input(self, text: str) -> None:
            pass

    assert "/compare" in [name for name, _, _ in palette_entries(Runner())]


# --- saved with the turn ---------------------------------------------------------------------------


def test_session_round_trip_with_a_compared_answer(pictures) -> None:
    ref = ImageRef(str(pictures["red"]), "a" * 64)
    other = ComparedAnswer(ImageRef(str(pictures["green"]), "b" * 64), "a green square", stopped=True)
    session = Session(model="m", turns=[Turn("q?", "red", ref, compared=[other]), Turn("r?", "x", ref)], image=ref)
    back = session_from_json(session_json(session), "test")
    assert back == session and back.turns[0].compared == [other]
    data = json.loads(session_json(session))
    assert "compared" not in data["turns"][1]  # a turn never compared is saved as before
    assert data["turns"][0]["compared"] == [{"image": {"source": str(pictures["green"]), "sha256": "b" * 64},
                                             "answer": "a green square", "stopped": True}]


@pytest.mark.parametrize(("compared", "message"), [
    ("nope", "turns[0].compared is not a list"),
    ([{"answer": "x"}], "turns[0].compared[0] has no image"),
    ([{"image": {"source": "a", "sha256": "b"}}], "turns[0].compared[0] has no answer"),
    ([{"image": {"source": "a", "sha256": "b"}, "answer": "x", "stopped": "yes"}],
     "turns[0].compared[0].stopped is not true or false"),
    ([{"image": {"source": "a", "sha256": "b"}, "answer": 3}], "turns[0].compared[0].answer is not text"),
    ([{"image": {"source": "a", "sha256": "b"}, "answer": "x"}] * 33, "turns[0].compared has more than 32 entries"),
])
def test_damaged_compared_answers_are_refused(compared, message) -> None:
    data = {"model": "m", "id": "x", "created": 1.0,
            "turns": [{"question": "q", "answer": "a", "image": None, "compared": compared}]}
    with pytest.raises(SessionError) as error:
        Session.from_dict(data)
    assert str(error.value) == message


# --- the screen-reader mode ---------------------------------------------------------------------------


def plain_chat(tmp_path: Path, engine: ScriptedEngine, image: Path, json_records: bool = False):
    out, notes = io.StringIO(), io.StringIO()
    conversation = Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=50)), None,
                                SessionStore(tmp_path / "sessions"), load_image(image), engine=engine)
    return PlainChat(conversation, out=out, notes=notes, json_records=json_records), out, notes


def test_plain_mode_prints_two_labelled_lines(tmp_path, pictures) -> None:
    engine = ScriptedEngine("a red square", "a green square", "red again", "a green box", "it is red")
    plain, out, notes = plain_chat(tmp_path, engine, pictures["red"])
    (tmp_path / "notes.jpg").write_text("not a picture")
    script = [f"/compare {pictures['green']}", "what is it?", "and the colour?", f'/compare "{pictures["green"]}"',
              f"/compare {tmp_path / 'missing.jpg'}", f"/compare {tmp_path / 'notes.jpg'}", "/compare off",
              "is it big?", "/quit"]
    assert plain.run(script) == 0
    assert out.getvalue().splitlines() == [
        f"You: /compare {pictures['green']}",
        "You: what is it?", "Assistant: a red square", "red.png: a red square", "green.jpg: a green square",
        "You: and the colour?", "Assistant: red again",
        f'You: /compare "{pictures["green"]}"', "red.png: red again", "green.jpg: a green box",
        f"You: /compare {tmp_path / 'missing.jpg'}", f"You: /compare {tmp_path / 'notes.jpg'}", "You: /compare off",
        "You: is it big?", "Assistant: it is red", "You: /quit"]
    said = notes.getvalue().splitlines()
    assert said[0] == "The next question will be answered about red.png and about green.jpg, side by side. " \
                      "/compare off cancels."
    assert said.count("Answering about green.jpg.") == 2
    problems = [line for line in said if line.startswith("blip2-chat: ")]
    assert len(problems) == 2 and problems[0].startswith(f"blip2-chat: No file at {tmp_path / 'missing.jpg'}.")
    assert "notes.jpg" in problems[1]
    assert "No comparison was waiting." in said
    assert engine.prompts == ["Question: what is it? Answer:", "Question: what is it? Answer:",
                              "Question: what is it? Answer: a red square. Question: and the colour? Answer:",
                              "Question: and the colour? Answer:",  # the other image: the question alone
                              "Question: what is it? Answer: a red square. Question: and the colour? Answer: red "
                              "again. Question: is it big? Answer:"]
    (saved,) = [json.loads(p.read_text()) for p in (tmp_path / "sessions").glob("*.json")]
    assert [[c["answer"] for c in t.get("compared", [])] for t in saved["turns"]] == [
        ["a green square"], ["a green box"], []]


def test_plain_mode_json_records_name_the_other_image(tmp_path, pictures, capsys) -> None:
    plain, _, _ = plain_chat(tmp_path, ScriptedEngine("red", "green"), pictures["red"], json_records=True)
    plain.run(["what is it?", f"/compare {pictures['green']}"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON goes to stdout itself
    green = load_image(pictures["green"])
    assert [(r["image"], r["image_sha256"], r["question"], r["answer"]) for r in records] == [
        (str(pictures["red"]), load_image(pictures["red"]).sha256, "what is it?", "red"),
        (str(pictures["green"]), green.sha256, "what is it?", "green")]


def test_plain_chat_compares_on_a_checkpoint(checkpoints, engines, pictures, tmp_path) -> None:
    lines = ["what is in the picture?", f"/compare {pictures['green']}"]
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--model", str(checkpoints["opt"]),
         "--max-new-tokens", "8", "--plain"], input="\n".join(lines) + "\n", capture_output=True, text=True,
        timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    options = GenerationOptions(max_new_tokens=8)
    green = engines["opt"].answer(load_image(pictures["green"]), prompt_alone("what is in the picture?"), options)
    red = result.stdout.splitlines()[1].removeprefix("Assistant: ")
    assert result.stdout.splitlines()[2:] == [f"You: /compare {pictures['green']}", f"red.png: {red}",
                                              f"green.jpg: {' '.join(green.split())}"]


# --- the app ---------------------------------------------------------------------------------------------


def settled(app) -> bool:
    return idle(app) and app.comparing is None and app._opening is None


@pilot_test
async def test_app_arms_then_shows_both_answers_side_by_side(home, pictures) -> None:
    engine = ScriptedEngine("a red square", "a green square", "still red")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, f"/compare {pictures['green']}")
        await wait_until(pilot, lambda: settled(app) and any("side by side" in n for n in notices(app)))
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: settled(app) and app.query(ComparisonView), what="the comparison")
        (view,) = app.query(ComparisonView)
        assert view.labels == ("red.png", "green.jpg")
        assert (view.first.text, view.second.text) == ("a red square", "a green square")
        assert view.first.region.y == view.second.region.y and view.first.region.x < view.second.region.x
        assert saved_turns()[0]["compared"][0]["answer"] == "a green square"
        await send(pilot, "And now?")  # the chat stays on the open image, and is not compared again
        await wait_until(pilot, lambda: settled(app) and len(pairs(app)) == 2)
        assert pairs(app)[-1] == ("And now?", "still red") and len(app.query(ComparisonView)) == 1
        assert engine.prompts[-1] == "Question: What is it? Answer: a red square. Question: And now? Answer:"


@pilot_test
async def test_app_escape_stops_the_comparison_and_keeps_it(home, pictures) -> None:
    long = " ".join(f"w{i}" for i in range(400))  # 20 s at this pace: Esc always comes first
    engine = ScriptedEngine("red", long, "next", delay=0.05)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)  # the scripted engine stops at max_new_tokens words
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: settled(app))
        await send(pilot, f"/compare {pictures['green']}")
        await wait_until(pilot, lambda: app.query(ComparisonView) and
                         len(app.query_one(ComparisonView).second.text.split()) >= 2, what="words of the comparison")
        await send(pilot, "Another?")  # it waits for the comparison, and is asked once it ends
        assert QUESTION_WAITS in notices(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: settled(app) and len(pairs(app)) == 2, what="the comparison to stop")
        view = app.query_one(ComparisonView)
        assert view.second.border_subtitle == "stopped" and long.startswith(view.second.text)
        assert 2 <= len(view.second.text.split()) < 400
        assert saved_turns()[0]["compared"][0] == {
            "image": {"source": str(pictures["green"]), "sha256": load_image(pictures["green"]).sha256},
            "answer": view.second.text, "stopped": True}
        assert pairs(app)[1][0] == "Another?"  # the waiting question, asked when the comparison stopped


@pilot_test
async def test_app_bad_compares_and_a_name_that_looks_like_markup(home, pictures, tmp_path) -> None:
    odd = Path(shutil.copy(pictures["green"], tmp_path / "[red on blue]x.jpg"))
    app = scripted_app(ScriptedEngine("red", "green"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, f"/compare {tmp_path / 'missing.jpg'}")
        await wait_until(pilot, lambda: settled(app) and errors(app))
        assert errors(app)[-1].startswith(f"No file at {tmp_path / 'missing.jpg'}.")
        await send(pilot, f"/compare {pictures['red']}")
        await wait_until(pilot, lambda: settled(app) and len(errors(app)) == 2)
        assert errors(app)[-1] == "red.png is the picture already open (the same content). " \
                                  "Compare it with a different image."
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: settled(app))
        await send(pilot, f'/compare "{odd}"')
        await wait_until(pilot, lambda: settled(app) and app.query(ComparisonView))
        view = app.query_one(ComparisonView)
        assert view.labels[1] == "[red on blue]x.jpg"
        title = view.second._border_title  # what the border shows
        assert title is not None and title.plain == "[red on blue]x.jpg"  # as typed, never read as markup
        assert view.second.text == "green"
        app.action_help()
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


@pilot_test
async def test_app_resumes_a_compared_turn_and_undo_removes_it(home, pictures) -> None:
    red, green = load_image(pictures["red"]), load_image(pictures["green"])
    ref = ImageRef(red.source, red.sha256)
    session = Session(model="scripted-opt", image=ref, turns=[Turn("q?", "red", ref, compared=[
        ComparedAnswer(ImageRef(green.source, green.sha256), "green")])])
    app = scripted_app(ScriptedEngine(), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: app.query(ComparisonView))
        view = app.query_one(ComparisonView)
        assert (view.labels, view.first.text, view.second.text) == (("red.png", "green.jpg"), "red", "green")
        await send(pilot, "/undo")
        await wait_until(pilot, lambda: not app.query(ComparisonView) and not app.query_one(Transcript).pairs)



def test_exports_carry_the_compared_answer_and_its_picture(pictures, work) -> None:
    import base64
    import re
    from urllib.parse import unquote

    chat = Conversation.with_engine(ScriptedEngine("red", "a *green* & <square>"), load_image(pictures["red"]))
    "".join(chat.ask("What is in the picture?"))
    compared(chat, pictures["green"])
    chat.export("md", "chat.md")
    text = (work / "chat.md").read_text()
    assert (f"**Compared with green.jpg** (`{pictures['green']}`, sha256 `{load_image(pictures['green']).sha256}`): "
            r"a \*green\* \& \<square\>") in text
    links = [unquote(link) for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)]
    assert [(work / link).read_bytes() for link in links] == [pictures["red"].read_bytes(),
                                                             pictures["green"].read_bytes()]
    chat.export("html", "chat.html")
    page = (work / "chat.html").read_text()
    green_uri = "data:image/jpeg;base64," + base64.b64encode(pictures["green"].read_bytes()).decode()
    assert ('<p><strong>Compared with green.jpg:</strong> <span lang="" dir="auto">a *green* &amp; &lt;square&gt;'
            "</span></p>"
            f'<img src="{green_uri}" alt="green.jpg">') in page
