"""The conversation layer and the shared slash commands, on a real (synthetic) engine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatbot.core.commands import (
    COMMANDS,
    Notice,
    help_lines,
    is_command,
    parse_command,
    question_text,
    run_command,
    switch_image,
)
from chatbot.core.conversation import Conversation
from chatbot.core.settings import apply_setting
from chatbot.engine.base import CancelToken, GenerationOptions
from chatbot.errors import OptionError, QuestionError, UserError
from chatbot.images import load_image


@pytest.fixture
def chat(engines, pictures) -> Conversation:
    return Conversation.with_engine(engines["opt"], load_image(pictures["red"]), GenerationOptions(max_new_tokens=5))


def test_retry_replaces_the_last_answer(chat) -> None:
    "".join(chat.ask("What is it?"))
    "".join(chat.ask("And the colour?"))
    list(chat.retry())
    assert [t.question for t in chat.session.turns] == ["What is it?", "And the colour?"]


def test_retry_that_produces_nothing_keeps_the_old_turn(chat) -> None:
    "".join(chat.ask("What is it?"))
    before = chat.session.turns[-1]
    cancel = CancelToken()
    cancel.cancel()  # cancelled before the first token: nothing new to record
    list(chat.retry(cancel))
    assert chat.session.turns[-1] is before


def test_retry_undo_clear_with_nothing_to_act_on(chat) -> None:
    with pytest.raises(QuestionError):
        chat.retry()
    assert chat.undo() is None
    "".join(chat.ask("What is it?"))
    chat.clear()
    with pytest.raises(QuestionError):  # the cleared turn is not part of this context any more
        chat.retry()
    assert len(chat.session.turns) == 1  # ... but it is still in the session


def test_empty_question_and_no_image(engines) -> None:
    chat = Conversation.with_engine(engines["opt"])
    with pytest.raises(QuestionError, match="No image"):
        list(chat.ask("What is it?"))
    with pytest.raises(QuestionError, match="empty"):
        chat.prepare(" \n ")


def test_parse_command() -> None:
    assert not is_command("What is /this?") and not is_command("//not a command") and is_command(" /undo")
    assert question_text("//etc is a folder?") == "/etc is a folder?"
    command = parse_command("/image  ~/Pictures/cat.jpg ")
    assert (command.name, command.argument) == ("image", "~/Pictures/cat.jpg")
    assert parse_command("/EXIT").name == "quit" and parse_command("/?").name == "help"
    for line, message in [
        ("/imgae cat.jpg", "Unknown command /imgae. Did you mean /image? Type /help for the list."),
        ("/export", "/export needs more: /export md|html|json [PATH] [--embed]. e.g. /export md, /export html "
                    "~/chats/, or /export md chat.md --embed."),
        ("/clear everything", "/clear takes nothing after it. Type just /clear."),
    ]:
        with pytest.raises(UserError) as error:
            parse_command(line)
        assert str(error.value) == message
    lines = help_lines()
    assert [line.split()[0] for line in lines] == [f"/{spec.name}" for spec in COMMANDS]


def test_set_values() -> None:
    options = GenerationOptions()
    assert apply_setting(options, "temperature 0.7") == (replace(options, temperature=0.7), "temperature")
    assert apply_setting(options, "max-new-tokens 50")[0].max_new_tokens == 50
    assert apply_setting(replace(options, seed=3), "seed none")[0].seed is None  # a seed can be unset
    assert apply_setting(options, f"seed {2**63 - 1}")[0].seed == 2**63 - 1
    for bad, message in [
        ("temperature hot", "temperature must be 0, or a number from 0.01 to 100 (got 'hot')."),
        ("temperature nan", "temperature must be 0, or a number from 0.01 to 100 (got nan)."),
        # so small that the logits overflow to infinity and sampling crashed (the probe's 1e-300 and 1e-45)
        ("temperature 1e-300", "temperature must be 0, or a number from 0.01 to 100 (got 1e-300)."),
        ("temperature 0.009", "temperature must be 0, or a number from 0.01 to 100 (got 0.009)."),
        ("repetition_penalty 1e-38", "repetition_penalty must be a number from 0.01 to 10 (got 1e-38)."),
        ("num_beams 2.5", "num_beams must be a whole number from 1 to 16 (got '2.5')."),
        ("num_beams 1000", "num_beams must be a whole number from 1 to 16 (got 1000)."),
        ("max_new_tokens 100000", "max_new_tokens must be a whole number from 1 to 1024 (got 100000)."),
        (f"seed {2**63}", f"seed must be a whole number from 0 to {2**63 - 1} (got {2**63})."),
        ("top_p 2", "top_p must be a number above 0 and at most 1 (got 2)."),
        ("colour red", "/set does not know 'colour'."), ("", "/set needs a key and a value."),
        ("col\x1b]0;x\x07 1", "/set does not know 'col\\x1b]0;x\\x07'."),  # typed or pasted controls, shown escaped
        ("temperature h\u202eot", "temperature must be 0, or a number from 0.01 to 100 (got 'h\\u202eot')."),
    ]:
        with pytest.raises(OptionError) as error:
            apply_setting(options, bad)
        assert error.value.message == message


def test_every_command_outcome_on_a_conversation(chat, tmp_path, pictures) -> None:
    """What each command does, as data: the notices both front ends show, and what is left to them."""
    assert run_command(chat, "/help").effect == "help" and run_command(chat, "/q").effect == "quit"
    assert run_command(chat, "/image").notices[0].text == "/image needs a path or a URL. e.g. /image cat.jpg."
    assert run_command(chat, "/image", can_pick=True).effect == "pick_image"
    assert run_command(chat, '/image "my photo.jpg"').open_image == "my photo.jpg"
    refused = run_command(chat, "/undo")
    assert not refused.ok and refused.notices == [Notice("There is nothing to undo. Ask a question first.", "error")]
    answer = "".join(chat.ask("What is it?")).strip()
    retry = run_command(chat, "/retry").retry
    assert retry is not None and retry.question == "What is it?"
    assert "".join(retry.chunks).strip() == answer  # greedy: the same answer again, recorded once
    assert [t.question for t in chat.session.turns] == ["What is it?"]
    undone = run_command(chat, "/undo")
    assert undone.turns_changed and undone.notices == [Notice("Removed the last question and its answer: What is it?")]
    listed = run_command(chat, "/set").notices[0].text
    assert listed == ("Options: max_new_tokens=5, num_beams=1, temperature=0.0, top_p=0.9, repetition_penalty=1.0, "
                      "seed=none. Change one with /set KEY VALUE.")
    assert run_command(chat, "/set seed 7").notices == [Notice("seed is now 7.")]
    assert run_command(chat, "/set seed none").notices == [Notice("seed is now none.")]  # as /set takes it back
    switched = switch_image(chat, load_image(pictures["green"]))
    assert switched.notices == [Notice(f"Now talking about {pictures['green']}.")]


def test_commands_that_change_the_turns_wait_for_a_streaming_answer(chat) -> None:
    stream = chat.ask("What is it?")
    next(stream)
    for line in ("/clear", "/undo", "/retry", "/image x.png"):
        outcome = run_command(chat, line)
        assert not outcome.ok and outcome.notices[0].text.startswith(f"An answer is still coming, so {line.split()[0]}")
    assert run_command(chat, "/set").ok  # reading and saving may go on
    list(stream)
    assert not chat.answering and run_command(chat, "/clear").ok


def test_ask_says_a_model_failure_in_one_sentence_and_goes_on_with_the_next_image(
        pictures, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`ask` about two images where the model fails on the first: one sentence for it (no traceback), the
    second still answered, exit status 1. (The engine is the scripted one: this tests the front end.)"""
    from chatbot.core.settings import Settings
    from chatbot.engine.scripted import ScriptedEngine
    from chatbot.frontends import oneshot

    engine = ScriptedEngine("a green square")
    engine.fail_next(MemoryError())
    monkeypatch.setattr(oneshot, "open_engine_for", lambda settings: engine)
    red, green = str(pictures["red"]), str(pictures["green"])
    assert oneshot.run_ask(Settings(model="scripted"), [red, green], "What is it?") == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{red}: ", f"{green}: a green square"]
    assert captured.err.splitlines() == [
        f"blip2-chat: {red}: Ran out of memory. Try a lower --max-new-tokens, or a smaller model."]


def test_undo_says_when_it_reaches_back_past_a_fresh_start(pictures) -> None:
    """/retry answers only the context's last question; /undo may remove an older one, and then says so (and which
    picture it was about), so a turn the person no longer sees is never removed unseen."""
    from chatbot.engine.scripted import ScriptedEngine

    chat = Conversation.with_engine(ScriptedEngine(), load_image(pictures["red"]))
    "".join(chat.ask("What is it?"))
    "".join(chat.ask("And the colour?"))
    chat.set_image(load_image(pictures["green"]))
    "".join(chat.ask("Is it green?"))
    run_command(chat, "/clear")
    assert run_command(chat, "/undo").notices == [
        Notice("Removed the last question and its answer (asked before the chat started afresh): Is it green?")]
    assert run_command(chat, "/undo").notices == [
        Notice(f"Removed the last question and its answer (asked before the chat started afresh, about "
               f"{pictures['red'].name}): And the colour?")]
    assert run_command(chat, "/retry").notices[0].text.startswith("There is no question to answer again.")
