"""A question's heading is made of its parts (`question_heading_parts`): the HTML page marks the question's
words as theirs without splitting our own heading back apart, and a question holding ": " stays whole."""

from __future__ import annotations

import datetime

from chatbot.core.export_pages import (
    HEADING_CHARS,
    export_html,
    question_heading,
    question_heading_parts,
    shortened,
)
from chatbot.core.session import Session, Turn

DAY = datetime.date(2026, 1, 2)


def test_the_parts_make_the_heading() -> None:
    assert question_heading_parts(2, "Note: what is it?") == ("Question 2", "Note: what is it?")
    assert question_heading(2, "Note: what is it?") == "Question 2: Note: what is it?"
    assert question_heading_parts(3, "  ") == ("Question 3", "") and question_heading(3, " ") == "Question 3"


def test_the_html_heading_marks_only_the_question_as_theirs() -> None:
    session = Session(model="m", turns=[Turn("Note: what is it?", "a.", None), Turn("", "b.", None)])
    page = export_html(session, {}, made=DAY)
    assert '<h3>Question 1: <span lang="" dir="auto">Note: what is it?</span></h3>' in page
    assert "<h3>Question 2</h3>" in page


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one picture


def test_a_long_question_is_cut_between_whole_characters() -> None:
    """A page counts characters, not cells, but never cuts inside an emoji sequence or before an accent."""
    for lead in range(HEADING_CHARS - 8, HEADING_CHARS):
        words = shortened("a" * lead + FAMILY * 10, HEADING_CHARS)
        body = words.removesuffix("…").lstrip("a")
        assert body == FAMILY * (len(body) // len(FAMILY)) and len(words) <= HEADING_CHARS
        accent = shortened("e" * lead + "e\u0301" * 10, HEADING_CHARS)
        body = accent.removesuffix("…")[lead:]
        assert body == "e\u0301" * (len(body) // 2) and len(accent) <= HEADING_CHARS  # each e with its accent
