"""The chat app says and does what the core decides, as the screen-reader mode does.

The `//` escape for questions that start with a slash, the one "an answer is still coming" refusal, the
one "earlier turns were left out" sentence, the one rule for a web address, a pasted web address opening
as `/image URL` does, and text from a session file (a draft, saved questions) entering the input box made
visible. Each expected sentence is written out here (or in tests/tui_support.py), so a front end that words
it its own way fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from textual import events

from chatbot.core import commands
from chatbot.core.commands import compare_with, load_chosen_image, run_command
from chatbot.core.comparison import compare_last, image_labels
from chatbot.core.conversation import Conversation
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import ImageError, UserError
from chatbot.images import load_image
from chatbot.tui.answering import QUESTION_WAITS
from chatbot.tui.screens.file_picker import ImagePickerScreen
from chatbot.tui.widgets.chat_input import ChatInput, image_source_in
from chatbot.tui.widgets.transcript import image_label
from tests.tui_support import (
    SIZE,
    STOP_HINT,
    ask,
    errors,
    idle,
    input_value,
    notices,
    numbered_words,
    pairs,
    pilot_test,
    preview_source,
    ready,
    scripted_app,
    send,
    wait_until,
)

LONG = numbered_words(200)
pytestmark = pytest.mark.usefixtures("home")


def shown_in_box(field: ChatInput) -> str:
    """The characters the input box sends to the terminal for its line."""
    return "".join(segment.text for segment in field.render_line(0))


# -- 1. `//` asks a question that starts with a slash -------------------------------------------------


@pilot_test
async def test_two_slashes_ask_a_question_that_starts_with_one(pictures) -> None:
    engine = ScriptedEngine("yes, a folder", "too late", delay=0.0)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "//etc is a folder?")
        assert pairs(app) == [("/etc is a folder?", "yes, a folder")]
        assert engine.prompts[-1] == "Question: /etc is a folder? Answer:"
        assert [turn.question for turn in app.conversation.session.turns] == ["/etc is a folder?"]
        assert errors(app) == []  # not run as the command /etc


@pilot_test
async def test_a_question_given_back_or_recalled_keeps_its_two_slashes(pictures) -> None:
    """Stopped before its first word, `//x` comes back as typed; a resumed chat's `/x` is recalled as `//x`:
    Enter asks it again instead of running the command /x."""
    red = pictures["red"]
    session = Session(model="scripted-opt", turns=[Turn("/usr is big?", "it is", ImageRef(str(red), "0" * 64))])
    app = scripted_app(ScriptedEngine("too late", delay=5), red, session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("up")
        assert input_value(app) == "//usr is big?"
        await send(pilot, "//etc is a folder?")
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app), what="the answer to stop")
        assert input_value(app) == "//etc is a folder?" and len(app.conversation.session.turns) == 1


# -- 2. a session file's text enters the input box made visible ---------------------------------------


@pilot_test
async def test_a_resumed_draft_and_questions_never_put_escapes_on_the_screen(pictures) -> None:
    red = pictures["red"]
    session = Session(model="scripted-opt", draft="\x1b]0;owned\x1b\\", turns=[
        Turn("q1\x1b[2J", "a1", ImageRef(str(red), "0" * 64)),
        Turn("q2\x9b31m", "a2", ImageRef(str(red), "0" * 64)),
    ])
    app = scripted_app(ScriptedEngine("fine"), red, session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        field = app.query_one(ChatInput)
        assert field.value == "\\x1b]0;owned\\x1b\\"
        assert "\x1b" not in shown_in_box(field) and "\\x1b]0;owned" in shown_in_box(field)
        field.value = ""
        await pilot.press("up")
        assert field.value == "q2\\x9b31m" and "\x9b" not in shown_in_box(field)
        await pilot.press("up")
        assert field.value == "q1\\x1b[2J" and "\x1b" not in shown_in_box(field)


@pilot_test
async def test_a_pasted_line_with_escapes_is_shown_as_text(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        field = app.query_one(ChatInput)
        field.focus()
        field.post_message(events.Paste("what\x1b[2J is it?"))
        await wait_until(pilot, lambda: field.value, what="the paste")
        assert field.value == "what\\x1b[2J is it?" and "\x1b" not in shown_in_box(field)


# -- 3. one refusal while an answer is still coming ----------------------------------------------------


@pilot_test
async def test_every_refusal_while_an_answer_comes_is_the_same_sentence(pictures) -> None:
    engine = ScriptedEngine(LONG, delay=0.05)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.conversation.with_options(max_new_tokens=500)
        await send(pilot, "Tell me everything")
        await wait_until(pilot, lambda: app.answer is not None, what="the answer to start")
        await send(pilot, "Another?")
        await send(pilot, "/clear")
        await send(pilot, f"/compare {pictures['green']}")
        app.query_one(ChatInput).value = ""
        app.query_one(ChatInput).post_message(events.Paste(str(pictures["green"])))
        await wait_until(pilot, lambda: input_value(app) == str(pictures["green"]), what="the path kept")
        said = notices(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app), what="the answer to stop")
    for waiting in ("/clear", "/compare", "switching the image"):
        assert f"An answer is still coming, so {waiting} has to wait. {STOP_HINT}" in said, (waiting, said)
    assert QUESTION_WAITS in said  # a question is not refused: it waits its turn


def test_the_core_says_the_same_refusal(pictures) -> None:
    chat = Conversation.with_engine(ScriptedEngine("red", "more"), load_image(pictures["red"]),
                                    GenerationOptions(max_new_tokens=5))
    "".join(chat.ask("What is it?"))
    stream = chat.ask("And now?")
    next(stream)  # an answer is coming
    assert [n.text for n in run_command(chat, "/undo").notices] == [
        f"An answer is still coming, so /undo has to wait. {STOP_HINT}"]
    # the other image has loaded already and is dropped: this one says to /compare again
    dropped = f"An answer is still coming, so /compare has to wait. {STOP_HINT[:-1]}; then /compare again."
    assert [n.text for n in compare_with(chat, load_image(pictures["green"])).notices] == [dropped]
    with pytest.raises(UserError) as error:
        compare_last(chat, load_image(pictures["green"]))
    assert str(error.value) == dropped
    "".join(stream)


# -- 4. one sentence for the turns left out of the prompt ----------------------------------------------


LEFT_OUT = ("The model no longer sees the earlier turns of this chat: they do not fit its context, where "
            "max_new_tokens sets aside 1000 positions for the answer (a lower /set max_new_tokens leaves more for the "
            "chat). The session keeps every turn.")


@pilot_test
async def test_the_app_says_left_out_turns_as_the_screen_reader_mode_does(pictures, tmp_path) -> None:
    engine = ScriptedEngine("one two three four five six seven eight nine ten", "fine")
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 1000 + 16)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "first?")
        await send(pilot, "/set max_new_tokens 1000")  # leaves 16 prompt tokens: the first turn no longer fits
        await ask(pilot, "second?")
        assert engine.prompts[-1] == "Question: second? Answer:"
        assert LEFT_OUT in notices(app)


# -- 5. one rule for a web address ---------------------------------------------------------------------


def test_a_web_address_is_one_whatever_the_case_of_its_scheme() -> None:
    url = "HTTPS://example.com/a/cat.png"  # as load_image takes it (a download)
    assert image_label(url) == url
    assert image_labels(url, "/photos/a/cat.png") == (url, "cat.png")


@pilot_test
async def test_the_picker_never_starts_in_a_web_address_taken_for_a_folder(pictures, tmp_path) -> None:
    (tmp_path / "HTTPS:" / "example.com").mkdir(parents=True)  # what Path(url).parent would name
    image = replace(load_image(pictures["red"]), source="HTTPS://example.com/cat.png")
    app = scripted_app(ScriptedEngine("fine"), None)
    app.conversation.set_image(image)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
        assert app.screen.start == Path.cwd()  # type: ignore[attr-defined]


# -- 6. a pasted or typed web address opens the image -------------------------------------------------


class _PictureHandler(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def green_url(pictures) -> Iterator[str]:
    _PictureHandler.body = Path(pictures["green"]).read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PictureHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/green.png"
    httpd.shutdown()
    httpd.server_close()


def test_a_web_address_alone_names_an_image_to_open(pictures) -> None:
    assert image_source_in("  https://example.com/cat.png ") == "https://example.com/cat.png"
    assert image_source_in(str(pictures["red"])) == str(pictures["red"])
    for text in ("https://example.com/cat.png what is it?", "what is https://example.com/cat.png?", "ftp://x/y.png"):
        assert image_source_in(text) is None, text


@pilot_test
async def test_a_typed_or_pasted_web_address_opens_the_image(pictures, green_url) -> None:
    green = load_image(pictures["green"])
    app = scripted_app(ScriptedEngine("red", "green"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What colour?")
        await send(pilot, green_url)
        await wait_until(pilot, lambda: preview_source(app) == green_url, what="the download")
        assert app.conversation.image is not None and app.conversation.image.sha256 == green.sha256
        assert pairs(app) == [("What colour?", "red")] and input_value(app) == ""
        await send(pilot, f"/image {pictures['red']}")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["red"]))
        field = app.query_one(ChatInput)
        field.value = ""
        field.post_message(events.Paste(green_url))
        await wait_until(pilot, lambda: preview_source(app) == green_url, what="the pasted address to open")
        assert input_value(app) == "" and len(app.conversation.session.turns) == 1


# -- 7. what no rule foresaw is one sentence, in both front ends ---------------------------------------


@pilot_test
async def test_a_command_that_fails_unexpectedly_is_one_notice(pictures, monkeypatch) -> None:
    def broken(conversation, argument, can_pick):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setitem(commands._HANDLERS, "save", broken)
    app = scripted_app(ScriptedEngine("red", "still red"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await send(pilot, "/save")
        assert errors(app) == ["/save failed (RuntimeError: boom). The chat is intact."]
        assert input_value(app) == "/save"  # kept, as a refused line is
        app.query_one(ChatInput).value = ""
        await ask(pilot, "Sure?")
        assert pairs(app)[-1] == ("Sure?", "still red")


def test_an_image_that_fails_in_a_way_nobody_foresaw_is_one_sentence(monkeypatch) -> None:
    def odd(source: str, cancel=None):  # type: ignore[no-untyped-def]
        raise OverflowError("the numbers ran away\nsecond line")

    monkeypatch.setattr(commands, "load_image", odd)
    with pytest.raises(ImageError) as error:
        load_chosen_image("cat\x1b[2J.png")
    assert str(error.value) == "Could not open cat\\x1b[2J.png: the numbers ran away."
