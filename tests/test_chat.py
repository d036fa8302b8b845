"""The conversation layer and the shared slash commands, on a real (synthetic) engine."""

from __future__ import annotations

import pytest

from chatbot.chat import Chat
from chatbot.commands import apply_setting, help_lines, parse_command
from chatbot.engine.base import CancelToken, GenerationOptions
from chatbot.errors import OptionError, QuestionError, UserError
from chatbot.images import load_image


@pytest.fixture
def chat(engines, pictures) -> Chat:
    return Chat(engines["opt"], load_image(pictures["red"]), GenerationOptions(max_new_tokens=5))


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
    chat = Chat(engines["opt"])
    with pytest.raises(QuestionError, match="No image"):
        list(chat.ask("What is it?"))
    with pytest.raises(QuestionError, match="empty"):
        chat.prepare(" \n ")


def test_parse_command() -> None:
    assert parse_command("What is /this?") is None
    assert parse_command("//not a command") is None
    command = parse_command("/image  ~/Pictures/cat.jpg ")
    assert command is not None and (command.name, command.argument) == ("image", "~/Pictures/cat.jpg")
    assert parse_command("/EXIT").name == "quit"  # type: ignore[union-attr]
    with pytest.raises(UserError, match=r"Unknown command /imgae\. Did you mean /image\?"):
        parse_command("/imgae cat.jpg")
    assert any(line.startswith("/export md|json [PATH]") for line in help_lines())


def test_set_values() -> None:
    options = GenerationOptions()
    assert apply_setting(options, "temperature 0.7").temperature == 0.7
    assert apply_setting(options, "max-new-tokens 50").max_new_tokens == 50
    for bad, words in [("temperature hot", "a number"), ("num_beams 2.5", "whole number"),
                       ("top_p 2", "top_p must be"), ("colour red", "does not know"), ("", "needs a key")]:
        with pytest.raises(OptionError, match=words):
            apply_setting(options, bad)
