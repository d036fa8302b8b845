"""`/export` while an answer is being made: the chat is exported as recorded, and the notice says what it lacks.

A probe exported during the first answer and got a file with no question in it under "Exported the chat to
...". The core decides it (`commands._export`) for every front end; the sentence is written out here."""

from __future__ import annotations

from pathlib import Path

from chatbot.core.commands import run_command
from chatbot.core.conversation import Conversation
from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.images import load_image

LACKS = ("The question being answered now and its answer are not in the export: /export again once the answer is "
         "done to include them.")


def test_an_export_made_while_the_first_answer_comes_says_it_lacks_it(tmp_path: Path, work: Path, pictures) -> None:
    conversation = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"),
                                SessionStore(tmp_path / "sessions"), engine=ScriptedEngine("a red square"))
    conversation.set_image(load_image(pictures["red"]))
    chunks = conversation.ask("What colour is it?")
    assert next(chunks) == "a"  # the answer is on its way, not recorded yet

    during = run_command(conversation, "/export json")
    target = work / f"blip2-chat-{conversation.session.id}.json"
    assert [(notice.text, notice.kind) for notice in during.notices] == [
        (f"Exported the chat to {target}.", "info"), (LACKS, "warning")]
    assert during.ok and "What colour is it?" not in target.read_text()

    assert "".join(["a", *chunks]) == "a red square"
    after = run_command(conversation, "/export json")
    assert [notice.text for notice in after.notices] == [f"Updated the export {target}."]
    assert "What colour is it?" in target.read_text() and "a red square" in target.read_text()
