"""The chat app driven as a person would (Pilot): on a scripted engine, and once on a synthetic checkpoint.

Each test reads what the screen shows (bubbles, notices, status line, preview) and what was saved.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from textual import events

from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import ModelNotFoundError, OutOfMemoryError
from chatbot.images import load_image
from chatbot.locations import sessions_dir
from chatbot.tui.app import create_app
from chatbot.tui.screens.file_picker import ImagePickerScreen, ImageTree
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.transcript import Transcript
from tests.tui_support import (
    SIZE,
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
    saved_turns,
    scripted_app,
    send,
    status,
    wait_until,
)

LONG = numbered_words(40)
pytestmark = pytest.mark.usefixtures("home")


@pilot_test
async def test_two_questions_stream_and_show(pictures) -> None:
    engine = ScriptedEngine("a red square on a grey wall", "it is red")
    original, go_on = engine.stream, threading.Event()

    def pausing(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if number == 3:  # the answer waits here, half shown, until the test has seen it (no clock)
                go_on.wait(60)

    engine.stream = pausing  # type: ignore[method-assign]
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "scripted-opt | cpu | float32" in status(app) and "RAM" in status(app)
        await send(pilot, "What is in the picture?")
        bubble = app.query_one(Transcript).pairs[-1].answer
        await wait_until(pilot, lambda: bubble.text == "a red square", what="a partly streamed answer")
        go_on.set()
        await wait_until(pilot, lambda: idle(app))
        await ask(pilot, "What colour is it?")
        assert pairs(app) == [("What is in the picture?", "a red square on a grey wall"),
                              ("What colour is it?", "it is red")]
        assert engine.prompts[-1] == ("Question: What is in the picture? Answer: a red square on a grey wall. "
                                      "Question: What colour is it? Answer:")  # the follow-up remembers
        assert "25.0 tok/s" in status(app) and bubble.border_subtitle == "25.0 tok/s"
        assert [t["answer"] for t in saved_turns()] == ["a red square on a grey wall", "it is red"]  # autosaved


@pilot_test
@pytest.mark.parametrize("key", ["escape", "ctrl+c"])
async def test_escape_stops_the_answer_and_keeps_it_marked(pictures, key) -> None:
    engine = ScriptedEngine(LONG, "short answer", delay=0.05)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Describe it")
        bubble = app.query_one(Transcript).pairs[-1].answer
        await wait_until(pilot, lambda: len(bubble.text.split()) >= 2)
        await pilot.press(key)
        await wait_until(pilot, lambda: idle(app), what="the answer to stop")
        shown = bubble.text
        assert 2 <= len(shown.split()) < 40 and LONG.startswith(shown)
        assert bubble.border_subtitle == "stopped" and bubble.has_class("-stopped")
        assert saved_turns()[-1]["stopped"] is True and saved_turns()[-1]["answer"] == shown
        await ask(pilot, "And now?")  # the chat goes on
        assert pairs(app)[-1] == ("And now?", "short answer")


@pilot_test
async def test_escape_before_the_first_word_gives_the_question_back(pictures) -> None:
    app = scripted_app(ScriptedEngine("too late", delay=5), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Quick question")
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app))
        assert pairs(app) == [] and input_value(app) == "Quick question"
        assert app.conversation.session.turns == []


@pilot_test
async def test_quit_while_an_answer_streams_saves_it_and_exits(pictures) -> None:
    app = scripted_app(ScriptedEngine(LONG, delay=0.05), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Describe it")
        await wait_until(pilot, lambda: len(app.query_one(Transcript).pairs[-1].answer.text.split()) >= 2)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app._exit, what="the app to exit")
    turn = saved_turns()[-1]
    assert turn["stopped"] is True and str(turn["answer"]).startswith("word0 word1")


@pilot_test
async def test_image_command_pasted_path_and_a_bad_image(pictures, tmp_path) -> None:
    engine = ScriptedEngine("red", "green", "still green")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What colour?")
        await send(pilot, f"/image {pictures['green']}")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]))
        assert (f"Now talking about {pictures['green']}. The conversation starts fresh; earlier turns stay in the "
                "saved session.") in notices(app)
        await ask(pilot, "And now?")
        assert engine.prompts[-1] == "Question: And now? Answer:"  # a new image starts a fresh context
        turns = app.conversation.session.turns
        assert turns[0].image and turns[1].image and turns[0].image.sha256 != turns[1].image.sha256

        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        await send(pilot, f"/image {tmp_path / 'broken.png'}")
        await wait_until(pilot, lambda: errors(app))
        broken = tmp_path / "broken.png"
        assert errors(app) == [f"{broken} is damaged or incomplete. Re-download or re-export the image."]
        assert preview_source(app) == str(pictures["green"]) and len(pairs(app)) == 2  # nothing lost

        app.query_one(ChatInput).post_message(events.Paste(f"'{pictures['red']}'"))  # a dropped file
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["red"]))
        assert input_value(app) == ""
        await send(pilot, str(pictures["green"]))  # a typed path alone switches too
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]))


@pilot_test
async def test_retry_and_undo(pictures) -> None:
    engine = ScriptedEngine("first answer", "second answer", "other")
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await send(pilot, "/retry")
        await wait_until(pilot, lambda: idle(app))
        assert pairs(app) == [("What is it?", "second answer")]
        assert [t.answer for t in app.conversation.session.turns] == ["second answer"]
        assert engine.prompts == ["Question: What is it? Answer:"] * 2  # asked again, not folded onto itself
        await ask(pilot, "And?")
        await send(pilot, "/undo")
        assert pairs(app) == [("What is it?", "second answer")]
        assert "Removed the last question and its answer: And?" in notices(app)
        assert [t["answer"] for t in saved_turns()] == ["second answer"]
        await send(pilot, "/undo")
        await send(pilot, "/undo")
        assert pairs(app) == [] and errors(app) == ["There is nothing to undo. Ask a question first."]
        await send(pilot, "/retry")
        assert errors(app)[-1] == "There is no question to answer again. Ask one first."


@pilot_test
async def test_set_good_and_bad_values(pictures) -> None:
    app = scripted_app(ScriptedEngine("one two three four five"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/set max_new_tokens 3")
        assert notices(app)[-1] == "max_new_tokens is now 3."
        await ask(pilot, "Count")
        assert pairs(app) == [("Count", "one two three")]
        await send(pilot, "/set temperature hot")
        assert errors(app) == ["temperature must be 0, or a number from 0.01 to 100 (got 'hot'). e.g. 0.7."]
        assert input_value(app) == "/set temperature hot"  # kept, to fix
        assert app.conversation.options.temperature == 0.0
        await send(pilot, "/set")
        assert notices(app)[-1].startswith("Options: max_new_tokens=3, num_beams=1, temperature=0.0")


@pilot_test
async def test_left_out_turns_clear_and_save(pictures) -> None:
    engine = ScriptedEngine("one two three four five six seven eight nine ten", "fine", "fresh")
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 1000 + 16)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/save")  # nothing to save before the first answer: no empty session
        assert errors(app)[-1] == "There is nothing to save yet. Ask a question first; every answer is saved."
        await ask(pilot, "first?")
        await send(pilot, "/save")
        assert notices(app)[-1] == f"Session saved to {sessions_dir() / app.conversation.session.id}.json."
        await send(pilot, "/set max_new_tokens 1000")  # leaves 16 prompt tokens: the first turn no longer fits
        await ask(pilot, "second?")
        assert engine.prompts[-1] == "Question: second? Answer:"
        assert ("The model no longer sees the earlier turns of this chat: they do not fit its context, where "
                "max_new_tokens sets aside 1000 positions for the answer (a lower /set max_new_tokens leaves more for "
                "the chat). The session keeps every turn.") in notices(app)
        await send(pilot, "/set max_new_tokens 30")
        await send(pilot, "/clear")
        assert notices(app)[-1].startswith("Conversation cleared: the next question starts fresh")
        await ask(pilot, "third?")
        assert engine.prompts[-1] == "Question: third? Answer:" and len(saved_turns()) == 3


@pilot_test
async def test_unknown_command_keeps_history_and_input(pictures) -> None:
    app = scripted_app(ScriptedEngine("an answer", "another"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "First?")
        await send(pilot, "/imgae cat.jpg")
        assert errors(app) == ["Unknown command /imgae. Did you mean /image? Type /help for the list."]
        assert input_value(app) == "/imgae cat.jpg" and pairs(app) == [("First?", "an answer")]
        await ask(pilot, "Second?")
        assert pairs(app)[-1] == ("Second?", "another")


@pilot_test
async def test_model_errors_are_one_notice_and_the_chat_goes_on(pictures) -> None:
    engine = ScriptedEngine("fine answer", "half of an answer that breaks", "after the error")
    engine.fail_next(OutOfMemoryError("The device ran out of memory while answering.", "Try a shorter answer."))
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "Too big?")
        assert errors(app) == ["The device ran out of memory while answering. Try a shorter answer."]
        assert pairs(app) == [] and input_value(app) == "Too big?"  # nothing recorded; the question is back
        await ask(pilot, "Too big?")
        engine.fail_next(RuntimeError("CUDA error: an illegal memory access"), after_chunks=2)
        await ask(pilot, "Breaks?")
        assert errors(app)[-1] == ("The model failed (RuntimeError: CUDA error: an illegal memory access). "
                                   "The conversation is intact; try again, or /clear to start a fresh context.")
        assert pairs(app) == [("Too big?", "fine answer"), ("Breaks?", "half of")]  # the partial answer is kept
        assert app.query_one(Transcript).pairs[-1].answer.border_subtitle == "stopped"
        await ask(pilot, "Still there?")
        assert pairs(app)[-1] == ("Still there?", "after the error") and len(saved_turns()) == 3


@pilot_test
async def test_question_typed_before_the_model_is_ready_is_answered_once_it_is(pictures) -> None:
    loaded = threading.Event()
    engine = ScriptedEngine("worth the wait")

    def slow_factory(settings, progress):
        progress("Loading the scripted model on cpu")
        loaded.wait(10)
        return engine

    app = create_app(Settings(model="scripted-opt"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=slow_factory, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "Loading the scripted model on cpu" in status(app))
        await send(pilot, "Are you there?")
        question = app.query_one(Transcript).query("MessageBubble").last()
        assert question.text == "Are you there?" and question.border_subtitle == "waiting for the model…"
        assert pairs(app) == []
        loaded.set()
        await wait_until(pilot, lambda: pairs(app) == [("Are you there?", "worth the wait")])
        await wait_until(pilot, lambda: status(app).startswith("Ready"), what="the status to say Ready")


@pilot_test
async def test_a_question_without_an_image_is_refused_before_the_model_is_ready() -> None:
    """No image open and none opening: the question is refused at once, not after the model has loaded;
    it stays in the input."""
    loaded = threading.Event()

    def slow_factory(settings, progress):
        loaded.wait(10)
        return ScriptedEngine("never asked")

    app = create_app(Settings(model="scripted-opt"), store=SessionStore(), engine_factory=slow_factory,
                     renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "What is it?")
        assert errors(app) == ["No image is open. Open one first with /image PATH."]
        assert app.conversation.engine is None and pairs(app) == [] and input_value(app) == "What is it?"
        loaded.set()
        await wait_until(pilot, lambda: app.conversation.engine is not None, what="the model")  # (not mid-close)


@pilot_test
async def test_a_refused_line_is_kept_selected_so_the_next_one_replaces_it(pictures) -> None:
    """A probe typed /undo twice with nothing to undo and sent "/undo/undo"; /open 1 refused, then "/open 2"
    became "/open 1/open 2". The kept line is selected: typing replaces it, an arrow key keeps it to edit."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/undo")
        assert errors(app) and input_value(app) == "/undo"
        await pilot.press("slash", "h", "e", "l", "p")
        assert input_value(app) == "/help"
        await send(pilot, "/undo")
        await pilot.press("end", "x")
        assert input_value(app) == "/undox"  # after an arrow key (End), typing edits the kept line


@pilot_test
async def test_the_model_arriving_after_the_app_closed_changes_nothing_and_does_not_fail() -> None:
    """The model finished loading while the app was closing otherwise than by Ctrl+Q: its message came to a
    screen without a status bar (NoMatches, seen once under load)."""
    from chatbot.tui import messages as msg

    gate = threading.Event()

    def never_loads(settings, progress):  # type: ignore[no-untyped-def]
        gate.wait(10)
        raise RuntimeError("closed")

    app = create_app(Settings(model="scripted-opt"), store=SessionStore(), engine_factory=never_loads,
                     renderer="halfcell")
    async with app.run_test(size=SIZE):
        pass
    gate.set()
    engine = ScriptedEngine("late")
    app.on_model_progress(msg.ModelProgress("Loading 90%"))
    app.on_model_ready(msg.ModelReady(engine))
    app.on_model_failed(msg.ModelFailed("gone"))
    assert app.conversation.engine is None and app.model_error is None


@pilot_test
async def test_a_path_dropped_while_an_answer_streams_waits_in_the_input(pictures) -> None:
    engine = ScriptedEngine(LONG, delay=0.05)
    app = scripted_app(engine, pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Tell me everything")
        await wait_until(pilot, lambda: app.answer is not None, what="the answer to start")
        app.query_one(ChatInput).post_message(events.Paste(str(pictures["green"])))
        await wait_until(pilot, lambda: input_value(app) == str(pictures["green"]), what="the path kept")
        assert notices(app)[-1] == ("An answer is still coming, so switching the image has to wait. Let it finish, "
                                    "or stop it (Esc in the app, Ctrl+C in the screen-reader mode).")
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app))
        await pilot.press("enter")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]), what="the switch")


@pilot_test
async def test_a_model_that_cannot_load_is_one_notice(pictures) -> None:
    def failing(settings, progress):
        raise ModelNotFoundError("No model called nope here.", "Check the name.")

    app = create_app(Settings(model="nope"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=failing, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: errors(app))
        assert errors(app) == ["The model could not be loaded: No model called nope here. Check the name. /model NAME "
                               "loads another: a hub id, an alias (`blip2-chat models` lists them), a checkpoint "
                               "folder, or demo."]
        await send(pilot, "Hello?")
        assert errors(app)[-1] == ("No model is loaded: No model called nope here. Check the name. /model NAME loads "
                                   "one.")
        assert status(app).startswith("No model")


@pilot_test
async def test_keys_copy_help_palette_and_picker(pictures, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no clipboard tool: only the terminal's way
    app = scripted_app(ScriptedEngine("copy me please", "green one"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "Say something")
        await pilot.press("ctrl+y")
        assert app.clipboard == "copy me please"
        said = "Asked the terminal to copy the last answer (OSC 52)."
        await wait_until(pilot, lambda: any(str(n.message).startswith(said) for n in app._notifications),
                         what="the copy's honest notice")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p")
        await pilot.press(*"undo")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: pairs(app) == [], what="/undo from the palette")
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ImagePickerScreen)
        tree = app.screen.query_one(ImageTree)
        await wait_until(pilot, lambda: len(tree.root.children) == 2, what="the folder listing")
        assert sorted(str(node.label) for node in tree.root.children) == ["green.jpg", "red.png"]
        tree.move_cursor(next(n for n in tree.root.children if str(n.label) == "green.jpg"))
        in_picker = app.screen
        await wait_until(pilot, lambda: preview_source(in_picker, "#picker-preview") == str(pictures["green"]),
                         what="a live preview")
        await pilot.press("enter")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]))
        assert not isinstance(app.screen, ImagePickerScreen)


@pilot_test
async def test_keys_that_arrive_together_apply_in_order(pictures) -> None:
    """A burst of keys (a laggy link, a macro) edits as the same keys typed slowly would: Backspace, the
    arrows, Ctrl+U and Enter take effect where they came, not after the characters that followed them."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        named = {"backspace": "\x7f", "ctrl+u": "\x15", "left": None, "end": None, "enter": "\r"}
        burst = [*"xyz", "ctrl+u", *"What colr", "backspace", "backspace", *"lour s it?", "left", "left", "left",
                 "left", "left", *"i", "end", "enter"]
        for key in burst:
            app.post_message(events.Key(key, named[key] if key in named else key))
        await wait_until(pilot, lambda: pairs(app) == [("What colour is it?", "fine")], what="the burst's question")
        assert input_value(app) == ""


@pilot_test
async def test_a_paste_of_several_lines_is_joined_into_one_and_said(pictures) -> None:
    """The input holds one line; a paste of several keeps them all, joined with spaces, and a notice says so
    (Textual's Input kept only the first line, silently)."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(*"Two: ")
        app.query_one(ChatInput).post_message(events.Paste("What is at the top left?\r\n\n  What size is it?\n"))
        await wait_until(pilot, lambda: input_value(app) == "Two: What is at the top left? What size is it?",
                         what="the joined paste")
        await wait_until(pilot, lambda: any(str(n.message) == "The 2 pasted lines were joined into one, with spaces."
                                            for n in app._notifications), what="the notice")


@pilot_test
async def test_the_picker_says_whether_it_opens_or_compares(pictures) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for line, title, help_text in [("/image", "Open an image — ", "Enter: open image"),
                                       ("/compare", "Compare with an image — ", "Enter: compare with it")]:
            await send(pilot, line)
            await wait_until(pilot, lambda: isinstance(app.screen, ImagePickerScreen), what="the picker")
            shown = str(app.screen.query_one("#picker-title").render())
            assert shown == title + str(pictures["red"].parent)
            assert str(app.screen.query_one("#picker-help").render()).startswith(help_text)
            await pilot.press("escape")


@pilot_test
async def test_typing_after_tab_goes_on_in_the_input(pictures) -> None:
    """Tab on a question moves the focus (to the chat, to scroll it); the next characters typed still land in
    the input, after what was there, and nothing is selected or replaced."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(*"What is")
        await pilot.press("tab")
        field = app.query_one(ChatInput)
        assert app.focused is not field
        await pilot.press(*" it?")
        assert app.focused is field and input_value(app) == "What is it?"
        await pilot.press("tab", "shift+tab")  # away and back: the text stays, unselected
        await pilot.press("!")
        assert input_value(app) == "What is it?!"


def test_palette_offers_every_slash_command(pictures) -> None:
    from chatbot.core.commands import COMMANDS
    from chatbot.tui.palette import palette_entries

    names = {entry[0].split()[0] for entry in palette_entries(scripted_app(ScriptedEngine(), pictures["red"]))}
    assert names == {f"/{spec.name}" for spec in COMMANDS}


@pilot_test
async def test_on_a_synthetic_checkpoint(checkpoints, pictures) -> None:
    settings = Settings(model=str(checkpoints["opt"]), device="cpu")  # the real loader, in the app's worker
    app = create_app(settings, image=load_image(pictures["red"]), store=SessionStore(), renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, timeout=120, what="the synthetic model to load")
        assert "| cpu | float32" in status(app)
        await ask(pilot, "What is in the picture?")
        await ask(pilot, "What colour is it?")
        turns = app.conversation.session.turns
        assert [t.question for t in turns] == ["What is in the picture?", "What colour is it?"]
        assert pairs(app) == [(t.question, t.answer) for t in turns]
        assert "tok/s" in status(app) or "tokens" in status(app)
        assert len(saved_turns()) == 2


def test_importing_the_app_imports_no_torch() -> None:
    code = ("import sys, chatbot.tui.app; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pilot_test
async def test_quitting_while_a_question_waits_for_the_model_keeps_the_question(pictures) -> None:
    never = threading.Event()

    def endless_factory(settings, progress):
        progress("Loading the scripted model on cpu")
        never.wait(30)  # the model never finishes loading while the app runs
        return ScriptedEngine()

    app = create_app(Settings(model="scripted-opt"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=endless_factory, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "Loading the scripted model on cpu" in status(app))
        await send(pilot, "Are you there?")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to close")
    never.set()
    (turn,) = saved_turns()  # the question is in the saved session, marked as never answered
    assert (turn["question"], turn["answer"], turn["stopped"]) == ("Are you there?", "", True)


class _DripHandler(BaseHTTPRequestHandler):
    """Answers at once, then sends one byte every half second: a download that never seems to end."""

    stop = threading.Event()
    dropped = threading.Event()  # a client went away mid-download

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            for _ in range(200):
                if self.stop.wait(0.5):
                    return
                self.wfile.write(b"\0")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.dropped.set()


@pytest.fixture
def dripping_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _DripHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/slow.png"
    _DripHandler.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pilot_test
async def test_esc_stops_a_slow_download_and_quitting_during_one_ends_the_app(pictures, dripping_url) -> None:
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, f"/image {dripping_url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {dripping_url}… (Esc stops)"))
        await pilot.press("escape")
        await wait_until(pilot, lambda: f"Stopped opening {dripping_url}." in notices(app), what="the stop")
        assert preview_source(app) == str(pictures["red"]) and status(app).startswith("Ready")
        await send(pilot, f"/image {dripping_url}")
        await wait_until(pilot, lambda: status(app).startswith(f"Opening {dripping_url}"))
        _DripHandler.dropped.clear()  # the first download (stopped by Esc) may have been noticed already
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to close")
    assert _DripHandler.dropped.wait(10)  # the download was given up (the client closed it), so exit never waits
