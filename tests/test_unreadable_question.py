"""A question the model cannot read: FlanT5's tokenizer has no pieces for Chinese, Hindi or Arabic and reads such a
question as unknown tokens (the demo model: words outside its world), then answers as if nothing were wrong. Where
most of a question's tokens are the unknown token, one sentence says before the answer that it may mean nothing:
in the chat app, the screen-reader mode and `ask`. OPT's byte-level tokenizer reads anything."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.core.answer_wording import UNREADABLE
from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.images import load_image
from tests.tui_support import SIZE, ask, notices, pilot_test, ready


def unknown_by_the_tokenizer(engine, text: str) -> tuple[int, int]:
    """The reference: the tokenizer's pieces looked up in its vocabulary one by one (a piece it has no entry for is
    the unknown token), the bare SentencePiece word start left out."""
    tokenizer = engine.tokenizer
    pieces = [piece for piece in tokenizer.tokenize(text) if piece != "▁"]
    vocabulary = tokenizer.get_vocab()
    return sum(piece not in vocabulary or vocabulary[piece] == tokenizer.unk_token_id for piece in pieces), len(pieces)


@pytest.mark.parametrize("question", ["What colour is it?", "这是什么颜色？", "यह किस रंग का है?", "ما هذا؟",
                                      "what is это?", "🙂"])
def test_the_engine_counts_the_unknown_pieces_its_tokenizer_makes(engines, question: str) -> None:
    for family in ("opt", "flan-t5"):
        engine = engines[family]
        assert engine.unknown_tokens(question) == unknown_by_the_tokenizer(engine, question)
    assert engines["flan-t5"].unknown_tokens("这是什么颜色？")[0] > 0  # the synthetic FlanT5 has no Chinese pieces
    assert engines["flan-t5"].unknown_tokens("What colour is it?")[0] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_opt_reads_any_text(engines, text: str) -> None:
    assert engines["opt"].unknown_tokens(text)[0] == 0  # byte-level BPE: every text has pieces


class ReadsAscii(ScriptedEngine):
    """A scripted model whose tokenizer knows ASCII words only (one token a word)."""

    def unknown_tokens(self, text: str) -> tuple[int, int]:
        words = text.split()
        return sum(not word.isascii() for word in words), len(words)


def test_the_conversation_says_it_before_an_answer_to_a_question_it_cannot_read(pictures) -> None:
    conversation = Conversation.with_engine(ReadsAscii("x", "y", "z"), load_image(pictures["red"]))
    list(conversation.ask("这是 什么 颜色"))
    assert conversation.notes_before_answer() == [UNREADABLE]
    list(conversation.ask("what is 这?"))  # one of two words: it can read the question
    assert conversation.notes_before_answer() == []
    list(conversation.ask("这是 什么"))
    assert conversation.notes_before_answer() == [UNREADABLE]  # said before each such answer


def test_the_screen_reader_mode_says_it_after_the_question_before_answering(pictures) -> None:
    out, notes = io.StringIO(), io.StringIO()
    conversation = Conversation(Settings(model="scripted"), None, SessionStore(), load_image(pictures["red"]),
                                engine=ReadsAscii("a square"))
    PlainChat(conversation, out=out, notes=notes, echo=False).run(["这是 什么"])
    said = notes.getvalue().splitlines()
    assert said.index(UNREADABLE) == said.index("Answering.") - 1


def test_ask_says_it_once_for_several_images(pictures, capsys, monkeypatch) -> None:
    from chatbot.frontends import oneshot

    monkeypatch.setattr(oneshot, "open_engine_for", lambda settings: ReadsAscii("red", "green"))
    assert oneshot.run_ask(Settings(model="scripted"), [str(pictures["red"]), str(pictures["green"])],
                           "这是 什么") == 0
    assert capsys.readouterr().err.splitlines().count(UNREADABLE) == 1


@pilot_test
async def test_the_app_shows_it_above_the_answer(pictures: dict[str, Path]) -> None:
    from chatbot.tui.app import create_app

    app = create_app(Settings(model="scripted"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=lambda settings, progress: ReadsAscii("a square"), renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "这是 什么")
        assert UNREADABLE in notices(app)
