"""`/model NAME`: another chat model in the middle of a chat. A name that finds nothing keeps the loaded model;
otherwise the loaded one is let go of first (on a consumer GPU two models may not fit), the new one is loaded by
the same loader as at the start, and the chat goes on with every turn."""

from __future__ import annotations

import gc
import io
import weakref
from pathlib import Path

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from tests.tui_support import SIZE, ask, errors, idle, notices, pairs, pilot_test, ready, send, wait_until


def test_model_alone_names_the_loaded_model_and_a_bad_name_is_refused(pictures) -> None:
    chat = Conversation.with_engine(ScriptedEngine(), load_image(pictures["red"]))
    said = run_command(chat, "/model").notices
    assert chat.engine is not None
    assert said == [Notice(f"The chat model is {chat.engine.info.model_id} (cpu, float32). /model NAME loads "
                           "another: a hub id, an alias (`blip2-chat models` lists them), a checkpoint folder, or "
                           "demo.")]
    assert run_command(chat, '/model "a folder/with space"').load_model == "a folder/with space"


def test_a_chat_goes_on_with_another_model_and_lets_go_of_the_first(tmp_path: Path, pictures, checkpoints) -> None:
    from chatbot.engine.blip2 import open_engine
    from chatbot.engine.checkpoint_location import resolve_model

    first = open_engine(resolve_model(str(checkpoints["opt"])), device="cpu")
    weights = weakref.ref(first.model)
    notes = io.StringIO()
    conversation = Conversation(Settings(model=str(checkpoints["opt"]), options=GenerationOptions(max_new_tokens=3)),
                                None, SessionStore(tmp_path / "sessions"), load_image(pictures["red"]), engine=first)
    del first
    plain = PlainChat(conversation, out=io.StringIO(), notes=notes, echo=True)
    plain.run(["what is it?", f"/model {tmp_path / 'nothing here'}", f"/model {checkpoints['flan-t5']}",
               "and now?"])
    said = notes.getvalue()
    assert f"The chat goes on with {checkpoints['opt']}." in said  # the name that finds nothing: kept
    assert f"The chat goes on with {checkpoints['flan-t5']}." in said
    engine = conversation.engine
    assert engine is not None and engine.info.model_id == str(checkpoints["flan-t5"])
    assert engine.info.family == "flan-t5"
    session = conversation.session
    assert [turn.question for turn in session.turns] == ["what is it?", "and now?"]
    assert session.model == str(checkpoints["flan-t5"])  # saved so: --continue goes on with it
    gc.collect()
    assert weights() is None  # the first model's weights are gone, not kept beside the second's


def test_a_model_that_fails_to_load_leaves_none_and_says_how_to_load_one(tmp_path: Path, pictures,
                                                                         checkpoints) -> None:
    from chatbot.errors import UserError

    def broken(settings: Settings) -> ScriptedEngine:
        raise UserError("The folder could not be loaded.", "")

    notes = io.StringIO()
    conversation = Conversation.with_engine(ScriptedEngine(), load_image(pictures["red"]))
    plain = PlainChat(conversation, out=io.StringIO(), notes=notes, echo=True, open_model=broken)
    plain.run([f"/model {checkpoints['opt']}", "what is it?"])
    said = notes.getvalue().splitlines()
    assert "blip2-chat: The folder could not be loaded. No model is loaded now: /model NAME loads one." in said
    assert conversation.engine is None
    assert "blip2-chat: No model is loaded: The folder could not be loaded. /model NAME loads one." in said


@pilot_test
async def test_the_app_switches_models_and_a_question_asked_meanwhile_waits_for_the_new_one(pictures) -> None:
    from dataclasses import replace

    from chatbot.tui.app import create_app

    first, second = ScriptedEngine("a red square"), ScriptedEngine("a red box")
    second.info = replace(second.info, model_id="Salesforce/blip2-flan-t5-xl")
    asked: list[str] = []

    def engine_factory(settings: Settings, progress: object) -> ScriptedEngine:
        asked.append(settings.model)
        return first if settings.model == "scripted-opt" else second

    app = create_app(Settings(model="scripted-opt"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=engine_factory, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await send(pilot, "/model nope-model")
        assert errors(app)[-1] == ("'nope-model' is neither a folder nor a hub id. Use a hub id like "
                                   "Salesforce/blip2-opt-2.7b, an alias from `blip2-chat models`, or a folder path. "
                                   "The chat goes on with scripted-opt.")
        assert app.conversation.engine is first
        from chatbot.tui.widgets.chat_input import ChatInput

        field = app.query_one(ChatInput)  # refused: the line stays, selected, as for any refused command
        assert (field.value, field.selected_text) == ("/model nope-model", "/model nope-model")
        field.value = ""
        await send(pilot, "/model flan-t5-xl")
        await ask(pilot, "And now?")  # waits for the new model, then is answered by it
        await wait_until(pilot, lambda: idle(app) and len(pairs(app)) == 2, what="the second answer")
        assert pairs(app) == [("What is it?", "a red square"), ("And now?", "a red box")]
        assert asked == ["scripted-opt", "flan-t5-xl"]
        assert "The chat goes on with Salesforce/blip2-flan-t5-xl." in notices(app)
        assert app.conversation.session.model == "Salesforce/blip2-flan-t5-xl"



def test_options_that_leave_the_new_model_no_room_are_said_at_the_switch(pictures, checkpoints) -> None:
    """`/set max_new_tokens 1024` for a roomy model, then `/model` to one with 128 positions: said when the chat goes
    on with it, not only as every question's refusal afterwards."""
    from dataclasses import replace

    small = ScriptedEngine("a red square")
    small.info = replace(small.info, model_id="small", context_tokens=128)
    notes = io.StringIO()
    conversation = Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=1024)), None,
                                SessionStore(), load_image(pictures["red"]), engine=ScriptedEngine("x"))
    assert conversation.room_problem() == ""
    plain = PlainChat(conversation, out=io.StringIO(), notes=notes, echo=True, open_model=lambda settings: small)
    plain.run([f"/model {checkpoints['opt']}"])  # a checkpoint folder: the checks pass; the factory gives `small`
    said = notes.getvalue().splitlines()
    from chatbot.core.prompt_checks import MIN_PROMPT_TOKENS

    most = 128 - small.info.image_tokens - MIN_PROMPT_TOKENS  # positions less the image's, less the least question
    room = (f"blip2-chat: max_new_tokens=1024 leaves no room for a question in this model's 128 positions. Use at most "
            f"{most} (/set max_new_tokens N in a chat, --max-new-tokens N on the command line).")
    assert said[said.index("The chat goes on with small.") + 1] == room
    assert conversation.room_problem() == room.removeprefix("blip2-chat: ")
