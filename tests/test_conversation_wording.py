"""What the conversation says about itself, decided once in the core: a /model that cannot load, the chat with no
model after a failed load, a question too long for the model, earlier turns left out of the prompt, and a /retry
whose answer can only be the same."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import QuestionError, UserError
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image

FLOAT16_REFUSED = "FlanT5 overflows in float16 and answers with garbage. Use --dtype bfloat16 or float32."
NO_MODEL_HINT = "No model is loaded now: /model NAME loads one."


def chat_on(engine: ScriptedEngine, picture: Path, **settings: object) -> Conversation:
    return Conversation(Settings(model=engine.info.model_id, **settings),  # type: ignore[arg-type]
                        image=load_image(picture), engine=engine)


# -- 1. /model: refused before the loaded model is let go of, and no "still loading" after a failed load -----------

@pytest.mark.parametrize("name", ["flan-t5", "Salesforce/blip2-flan-t5-xl"])
def test_model_switch_to_flan_t5_in_float16_is_refused_before_the_loaded_model_goes(name, pictures,
                                                                                   checkpoints) -> None:
    """A FlanT5 folder (its config.json says the family) or a registry name (no download): refused at once."""
    engine = ScriptedEngine()
    chat = chat_on(engine, pictures["red"], dtype="float16")
    target = str(checkpoints["flan-t5"]) if name == "flan-t5" else name
    outcome = run_command(chat, f"/model {target}")
    assert not outcome.ok and outcome.load_model is None
    assert outcome.notices == [Notice(f"{FLOAT16_REFUSED} The chat goes on with scripted-opt.", "error")]
    assert chat.engine is engine  # still loaded, still answering
    assert run_command(chat, f"/model {checkpoints['opt']}").load_model == str(checkpoints["opt"])  # OPT may


def test_a_flan_t5_in_float16_through_the_plain_chat_keeps_the_model_and_answers(pictures, checkpoints) -> None:
    loads: list[str] = []

    def open_model(settings: Settings) -> ScriptedEngine:
        loads.append(settings.model)
        raise AssertionError("nothing is loaded for a refused /model")

    chat = chat_on(ScriptedEngine("a red square", "still red"), pictures["red"], dtype="float16")
    notes, out = io.StringIO(), io.StringIO()
    plain = PlainChat(chat, out=out, notes=notes, echo=False, open_model=open_model)
    plain.run(["q", f"/model {checkpoints['flan-t5']}", "q2", "/model"])
    said = notes.getvalue().splitlines()
    assert f"blip2-chat: {FLOAT16_REFUSED} The chat goes on with scripted-opt." in said
    assert loads == []
    assert out.getvalue().splitlines() == ["Assistant: a red square", "Assistant: still red"]
    assert any(line.startswith("The chat model is scripted-opt (cpu, float32).") for line in said)
    assert not any("still loading" in line for line in said)


def test_after_a_failed_load_the_plain_chat_says_no_model_is_loaded_never_still_loading(pictures) -> None:
    def open_model(settings: Settings) -> ScriptedEngine:
        raise RuntimeError("weights are damaged")  # not a UserError: still one sentence, still no model

    chat = chat_on(ScriptedEngine(), pictures["red"])
    notes = io.StringIO()
    plain = PlainChat(chat, out=io.StringIO(), notes=notes, echo=False, open_model=open_model)
    plain.run(["/model someone/other-model", "q2", "/retry", "/model"])
    said = notes.getvalue().splitlines()
    failed = "The model failed (RuntimeError: weights are damaged)."
    assert said[:4] == [
        f"blip2-chat: {failed} {NO_MODEL_HINT}",
        f"blip2-chat: No model is loaded: {failed} /model NAME loads one.",  # the question
        "blip2-chat: There is no question to answer again. Ask one first.",  # nothing was asked
        f"No chat model is loaded: {failed} /model NAME loads another: a hub id, an alias (`blip2-chat models` "
        "lists them), a checkpoint folder, or demo.",
    ]
    assert chat.engine is None and not any("still loading" in line for line in said)


def test_the_core_says_no_model_after_a_failed_load_and_still_loading_only_while_one_loads(pictures) -> None:
    chat = chat_on(ScriptedEngine("first answer"), pictures["red"])
    "".join(chat.ask("what is it?"))
    chat.detach()  # /model: a load is under way
    with pytest.raises(QuestionError, match="^The model is still loading"):
        chat.ask("and now?")
    chat.load_failed("The folder could not be loaded.")
    with pytest.raises(QuestionError) as refused:
        chat.ask("and now?")
    assert str(refused.value) == "No model is loaded: The folder could not be loaded. /model NAME loads one."
    retried = run_command(chat, "/retry")
    assert retried.notices == [Notice(str(refused.value), "error")]
    assert run_command(chat, "/model nope-model").notices == [Notice(
        "'nope-model' is neither a folder nor a hub id. Use a hub id like Salesforce/blip2-opt-2.7b, an alias from "
        f"`blip2-chat models`, or a folder path. {NO_MODEL_HINT}", "error")]
    chat.attach(ScriptedEngine("second answer"))
    assert "".join(chat.ask("and now?")) == "second answer" and chat.model_error == ""


# -- 2. too long: max_new_tokens named only where it makes room (OPT) -----------------------------------------------

@pytest.mark.parametrize("encoder_decoder", [True, False])
def test_a_question_too_long_names_max_new_tokens_only_for_a_decoder_only_model(encoder_decoder, pictures) -> None:
    engine = ScriptedEngine()
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 40 + 30, family="flan-t5"
                          if encoder_decoder else "opt", is_encoder_decoder=encoder_decoder)
    chat = chat_on(engine, pictures["red"], options=GenerationOptions(max_new_tokens=30))
    with pytest.raises(QuestionError) as refused:
        chat.ask(" ".join(["word"] * 80))
    said = str(refused.value)
    assert said.startswith("The question is too long for this model")
    assert ("max_new_tokens" in said) is not encoder_decoder
    if not encoder_decoder:
        assert said.endswith("Shorten the question (or lower max_new_tokens: /set max_new_tokens N).")


def test_the_synthetic_flan_t5_too_long_question_does_not_suggest_max_new_tokens(engines, pictures) -> None:
    engine = engines["flan-t5"]
    chat = Conversation.with_engine(engine, load_image(pictures["red"]))  # type: ignore[arg-type]
    with pytest.raises(QuestionError) as refused:
        chat.ask("red " * 600)  # over FlanT5's 512 input tokens, whatever max_new_tokens is
    assert "max_new_tokens" not in str(refused.value)
    assert str(refused.value).endswith("Shorten the question.")


# -- 3. left-out turns: said when it starts, when fewer are kept than ever said, and once when all fit again --------

def swinging_chat(picture: Path) -> tuple[Conversation, ScriptedEngine]:
    """A chat whose answers differ in length (1 to 13 words), so the number of turns that fit swings up and down."""
    answers = ["a " * (1 + number * 7 % 13) for number in range(80)]
    engine = ScriptedEngine(*answers)
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 60 + 30)
    return Conversation.with_engine(engine, load_image(picture), GenerationOptions(max_new_tokens=30)), engine


def test_left_out_turns_are_said_when_fewer_are_kept_than_ever_said_not_on_every_swing(pictures) -> None:
    chat, _ = swinging_chat(pictures["red"])
    said, kept = [], []
    for number in range(40):
        "".join(chat.ask(f"question {number}?"))
        assert chat.last_fit is not None
        said.append(chat.left_out)
        kept.append(None if not chat.last_fit.dropped_turns else number - chat.last_fit.dropped_turns)
    counts = [count for count in kept if count is not None]
    assert any(later > earlier for earlier, later in zip(counts, counts[1:], strict=False))  # it does swing
    expected, lowest = [], None  # the rule, worked out on the kept counts alone
    for count in kept:
        if count is not None and (lowest is None or count < lowest):
            lowest = count
            turns = "the last turn" if count == 1 else f"the last {count} turns"
            expected.append(f"The model now sees only {turns} of this chat: earlier ones no longer fit its context. "
                            "The session keeps every turn.")
        else:
            expected.append("")
    assert said == expected
    changes = sum(1 for earlier, later in zip(counts, counts[1:], strict=False) if later != earlier)
    assert sum(1 for text in said if text) < changes  # quieter than saying every change


def test_all_turns_fitting_again_is_said_once_and_a_fresh_context_says_nothing(pictures) -> None:
    chat, _ = swinging_chat(pictures["red"])
    for number in range(12):
        "".join(chat.ask(f"question {number}?"))
    assert chat.last_fit is not None and chat.last_fit.dropped_turns
    chat.attach(ScriptedEngine())  # /model to a roomier model (2048 positions)
    "".join(chat.ask("and now?"))
    assert chat.left_out == "The model sees every turn of this chat again: they all fit its context now."
    "".join(chat.ask("and then?"))
    assert chat.left_out == ""

    chat, _ = swinging_chat(pictures["red"])
    for number in range(12):
        "".join(chat.ask(f"question {number}?"))
    chat.clear()  # a fresh context: nothing to say about the turns it no longer has
    "".join(chat.ask("fresh?"))
    assert chat.left_out == ""


def test_a_model_with_less_room_says_what_it_sees_at_once(pictures) -> None:
    chat, engine = swinging_chat(pictures["red"])
    for number in range(12):
        "".join(chat.ask(f"question {number}?"))
    smaller = ScriptedEngine()
    smaller.info = replace(engine.info, context_tokens=engine.info.image_tokens + 40 + 30)
    chat.attach(smaller)
    "".join(chat.ask("and now?"))
    assert chat.last_fit is not None
    count = 12 - chat.last_fit.dropped_turns
    turns = "the last turn" if count == 1 else f"the last {count} turns"
    assert chat.left_out.startswith(f"The model now sees only {turns} of this chat")


# -- 4. /retry that can only give the same answer says so -------------------------------------------------------------

GREEDY_SAME = ("With temperature 0 the model answers the same question the same way, so this answer will be the "
               "same: /set temperature 0.7 lets it answer differently.")
SEED_SAME = ("With the seed fixed (5) sampling draws the same words again, so this answer will be the same: /set "
             "seed none lets it answer differently.")


def retry_notices(chat: Conversation) -> list[Notice]:
    outcome = run_command(chat, "/retry")
    assert outcome.retry is not None, outcome.notices
    "".join(outcome.retry.chunks)
    return outcome.notices


def test_retry_says_when_its_answer_can_only_be_the_same(pictures) -> None:
    chat = chat_on(ScriptedEngine(), pictures["red"])
    "".join(chat.ask("what is it?"))
    assert retry_notices(chat) == [Notice(GREEDY_SAME)]  # temperature 0, the default
    run_command(chat, "/set num_beams 3")
    assert retry_notices(chat) == []  # other options than the answer it replaces: it may differ
    assert retry_notices(chat) == [Notice(GREEDY_SAME)]  # beam search is as deterministic
    run_command(chat, "/set temperature 0.7")
    retry_notices(chat)
    assert retry_notices(chat) == []  # sampling with a new seed each time
    run_command(chat, "/set seed 5")
    retry_notices(chat)
    assert retry_notices(chat) == [Notice(SEED_SAME)]
    run_command(chat, "/set max_new_tokens 60")  # a longer answer asked for: said nothing of sameness
    assert retry_notices(chat) == []


def test_retry_after_a_stopped_answer_or_on_another_model_says_nothing_of_sameness(pictures) -> None:
    from chatbot.engine.base import CancelToken

    chat = chat_on(ScriptedEngine("one two three"), pictures["red"])
    cancel = CancelToken()
    stream = chat.ask("what is it?", cancel)
    next(stream)
    cancel.cancel()
    "".join(stream)
    assert retry_notices(chat) == []  # the stopped answer is not what a whole one would be
    chat.attach(ScriptedEngine(model_id="other"))
    assert retry_notices(chat) == []


def test_the_plain_chat_says_the_retry_sentence_before_answering_again(pictures) -> None:
    chat = chat_on(ScriptedEngine("a red square", "a red square"), pictures["red"])
    notes = io.StringIO()
    PlainChat(chat, out=io.StringIO(), notes=notes, echo=False).run(["what is it?", "/retry"])
    said = notes.getvalue().splitlines()
    assert said.index(GREEDY_SAME) < said.index("Answering again: what is it?")


def test_a_user_error_from_open_model_keeps_its_words(pictures) -> None:
    def open_model(settings: Settings) -> ScriptedEngine:
        raise UserError("The folder could not be loaded.", "Check it.")

    chat = chat_on(ScriptedEngine(), pictures["red"])
    notes = io.StringIO()
    plain = PlainChat(chat, out=io.StringIO(), notes=notes, echo=False, open_model=open_model)
    plain.run(["/model someone/x-model", "q"])
    assert notes.getvalue().splitlines()[:2] == [
        f"blip2-chat: The folder could not be loaded. Check it. {NO_MODEL_HINT}",
        "blip2-chat: No model is loaded: The folder could not be loaded. Check it. /model NAME loads one.",
    ]
