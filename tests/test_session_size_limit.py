"""A chat nearing the size a session file may have is told once, before its answers stop being saved; past it,
every change that is not saved is said (once it was said for the first answer only, and the next ones were lost
without a word), and the way forward names /export, which still holds all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core import commands, store
from chatbot.core.commands import NOT_SAVED_EITHER, after_saving
from chatbot.core.conversation import Conversation
from chatbot.core.session import Session
from chatbot.core.session_files import session_json
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image

ANSWER = "a long answer " * 25


def chat(tmp_path: Path, picture: Path) -> Conversation:
    conversation = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"),
                                SessionStore(tmp_path / "sessions"), engine=ScriptedEngine(*[ANSWER] * 9))
    conversation.set_image(load_image(picture))
    return conversation


def test_nearing_the_limit_is_said_once_and_every_answer_not_saved_after_it(tmp_path: Path, pictures,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []  # the file's size after each answer, with no limit in the way
    measuring = chat(tmp_path / "measure", pictures["red"])
    for number in range(6):
        list(measuring.ask(f"question {number}?"))
        assert after_saving(measuring).notices == []
        assert measuring.store is not None
        sizes.append(measuring.store.last_saved_bytes)
    assert sizes[-1] == len(session_json(measuring.session).encode("utf-8"))
    limit = sizes[3] + 10  # the fourth answer's file fits, the fifth's does not
    assert store.NEARLY_FULL * limit > sizes[2]  # the third is still far from it
    monkeypatch.setattr(store, "MAX_SESSION_BYTES", limit)
    monkeypatch.setattr(commands, "MAX_SESSION_BYTES", limit)

    conversation = chat(tmp_path / "limited", pictures["red"])
    said = []
    for number in range(6):
        list(conversation.ask(f"question {number}?"))
        said.append([(notice.kind, notice.text) for notice in after_saving(conversation).notices])
    assert said[:3] == [[], [], []]
    assert said[3] == [("warning", f"This chat's file holds {sizes[3] / 1e6:.1f} of the {limit / 1e6:.0f} MB a "
                                   "chat may have: soon its answers will not be saved. Start a new chat to go on "
                                   "(/export md keeps this one in a file).")]
    assert said[4] == [("error", "This chat is too long to save: a session file may have at most "
                                 f"{limit / 1e6:.0f} MB, so its last change was not saved. /export md keeps all of it "
                                 "in a file; start a new chat to go on saving.")]
    assert said[5] == [("error", NOT_SAVED_EITHER)]
    saved = SessionStore(tmp_path / "limited" / "sessions").load(conversation.session.id)
    assert len(saved.turns) == 4 and len(conversation.session.turns) == 6  # what is on screen: all of it
