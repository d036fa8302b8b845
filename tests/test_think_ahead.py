"""Thinking ahead: while the person types, the engine encodes the image and prefills the prompt's opening.

It must never change an answer (token equality with the reference after every kind of turn),
must save the work it claims to save, must skip requests that went stale, and must stay out of
one-shot use.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine
from chatbot.images import LoadedImage, load_image
from prompts import style_for
from tests.conftest import FAMILIES, make_image
from tests.test_engine import QUESTIONS, converse_and_compare

OPTIONS = GenerationOptions(max_new_tokens=8)


@pytest.fixture
def red(pictures: dict[str, Path]) -> LoadedImage:
    return load_image(pictures["red"])


_FRESH_COLOURS = itertools.count(1)


@pytest.fixture
def fresh_image(tmp_path: Path) -> LoadedImage:
    """A picture no earlier test has encoded (the engines are shared by the whole session): each call
    gets the next colour of a fixed sequence, whatever the temporary folder is called."""
    number = next(_FRESH_COLOURS)
    colour = (40 + number * 37 % 200, 200 - number * 53 % 180, 30 + number * 71 % 190)
    return load_image(make_image(tmp_path / "fresh.png", colour, size=(72, 40)))


@pytest.mark.parametrize("family", ["opt", "flan-t5"])
def test_every_prompt_starts_with_the_opening(family) -> None:
    style = style_for(family, "chat")
    histories = [[], [("What is it?", "a cat")], [("What is it?", "a cat"), ("Colour?", "red.")]]
    for history in histories:
        for question in ["Why?", "  how many   are there ", "Is it \"big\"?"]:
            assert style.build(history, question).startswith(style.opening(history) + " ")
    assert style_for(family, "caption").opening([]) == ""


def test_opening_an_image_encodes_it_and_prefills_the_first_prompts_opening(engines, fresh_image) -> None:
    engine: Blip2Engine = engines["opt"]
    engine.forget()
    encodings = engine.image_encodings
    chat = Conversation.with_engine(engine, fresh_image, OPTIONS, think_ahead=True)
    engine.wait_until_prepared()
    assert engine.image_encodings == encodings + 1
    opening = engine.input_ids(chat.style.opening([]))
    converse_and_compare(chat, QUESTIONS[:1])
    assert not engine.last_stats.image_encoded
    assert engine.last_stats.reused_prefix_tokens >= len(opening) - 1


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_stay_the_references_through_undo_clear_retry_and_switch(engines, red, pictures, family) -> None:
    engine: Blip2Engine = engines[family]
    engine.forget()
    chat = Conversation.with_engine(engine, red, OPTIONS, think_ahead=True)
    converse_and_compare(chat, QUESTIONS[:2])
    engine.wait_until_prepared()
    if family == "opt":  # the folded history up to the next "Question:" is prefilled already
        history_opening = engine.input_ids(chat.style.opening(chat.history()))
        converse_and_compare(chat, QUESTIONS[2:3])
        assert engine.last_stats.reused_prefix_tokens >= len(history_opening) - 1
    chat.undo()
    converse_and_compare(chat, QUESTIONS[3:4])
    chat.clear()
    converse_and_compare(chat, QUESTIONS[:1])
    chat.set_image(load_image(pictures["green"]))
    engine.wait_until_prepared()
    converse_and_compare(chat, QUESTIONS[1:3])


def test_flan_t5_thinks_ahead_with_the_image_only(engines, fresh_image) -> None:
    engine: Blip2Engine = engines["flan-t5"]
    encodings = engine.image_encodings
    chat = Conversation.with_engine(engine, fresh_image, OPTIONS, think_ahead=True)
    engine.wait_until_prepared()
    assert engine.image_encodings == encodings + 1
    converse_and_compare(chat, QUESTIONS[:1])
    assert not engine.last_stats.image_encoded and engine.last_stats.reused_prefix_tokens == 0


def test_without_think_ahead_nothing_runs_in_the_background(engines, fresh_image) -> None:
    engine: Blip2Engine = engines["opt"]
    encodings = engine.image_encodings
    chat = Conversation.with_engine(engine, fresh_image, OPTIONS)
    "".join(chat.ask(QUESTIONS[0]))
    assert engine.image_encodings == encodings + 1 and engine.last_stats.image_encoded


def hold_model_thread(engine: Blip2Engine) -> threading.Event:
    """Occupy the model thread until the returned event is set, so requests queue up behind it."""
    release = threading.Event()
    engine.model_thread().submit(release.wait)
    return release


def test_stale_requests_are_skipped(engines, tmp_path, monkeypatch) -> None:
    engine: Blip2Engine = engines["opt"]
    first = load_image(make_image(tmp_path / "first.png", (10, 200, 30)))
    second = load_image(make_image(tmp_path / "second.png", (200, 10, 30)))
    release = hold_model_thread(engine)
    engine.prepare_ahead(first, "Question:")
    engine.prepare_ahead(second, "Question:")  # the person opened another image before the first was ready
    release.set()
    engine.wait_until_prepared()
    assert engine.images.get(first.sha256) is None
    assert engine.images.get(second.sha256) is not None

    third = load_image(make_image(tmp_path / "third.png", (30, 30, 200)))
    release = hold_model_thread(engine)
    engine.prepare_ahead(third, "Question:")
    chat = Conversation.with_engine(engine, third, OPTIONS)
    question_prompt = chat.prepare(QUESTIONS[0]).text
    asked = threading.Event()  # set once the question's turn has begun (it tokenizes its prompt first)
    tokenize = engine.input_ids

    def noting_the_question(prompt: str) -> list[int]:
        if prompt == question_prompt:
            asked.set()
        return tokenize(prompt)

    monkeypatch.setattr(engine, "input_ids", noting_the_question)
    asking = threading.Thread(target=lambda: "".join(chat.ask(QUESTIONS[0])))
    asking.start()  # asked before the queued work began: the turn does that work itself, once
    assert asked.wait(timeout=30)
    release.set()
    asking.join(timeout=60)
    assert engine.last_stats.image_encoded and engine.last_stats.reused_prefix_tokens == 0


def test_forget_wins_over_work_already_queued(engines, red) -> None:
    engine: Blip2Engine = engines["opt"]
    release = hold_model_thread(engine)
    engine.prepare_ahead(red, "Question:")
    engine.forget()
    release.set()
    engine.wait_until_prepared()
    assert engine.prefix.held is None


def test_a_failure_in_the_background_is_silent_and_the_next_turn_works(engines, red, monkeypatch) -> None:
    engine: Blip2Engine = engines["opt"]

    def broken(*args: object) -> None:
        raise RuntimeError("something went wrong in the background")

    monkeypatch.setattr(engine, "_extend_prefix", broken)
    chat = Conversation.with_engine(engine, red, OPTIONS, think_ahead=True)
    engine.wait_until_prepared()  # no exception reaches the caller
    monkeypatch.undo()
    converse_and_compare(chat, QUESTIONS[:2])


def test_the_chat_app_encodes_the_picture_before_the_first_question(engines, fresh_image, tmp_path) -> None:
    from chatbot.core.session import Session
    from chatbot.core.settings import Settings
    from chatbot.core.store import SessionStore

    engine: Blip2Engine = engines["opt"]
    encodings = engine.image_encodings
    conversation = Conversation(Settings(model="tiny"), Session(model="tiny"), SessionStore(tmp_path), fresh_image,
                                think_ahead=True)  # as create_app makes it
    conversation.attach(engine)
    engine.wait_until_prepared()
    assert engine.image_encodings == encodings + 1  # while the person was still typing
