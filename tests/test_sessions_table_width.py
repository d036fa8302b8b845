"""`blip2-chat sessions` lines its columns up by terminal cells, not characters: a Chinese question takes two
cells a character, so its row's IMAGE column used to start further right than the others'. Questions are cut
with "…" between what a reader sees as one character (an emoji family, a skin tone, an accent stay whole)."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from chatbot.core.session_listing import SessionSummary
from chatbot.frontends.listings import _clip, session_rows

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one picture on the screen


def summary(question: str, image: str = "/p/a.png") -> SessionSummary:
    return SessionSummary("20260101-000000-abcdef", 0.0, 3, "m", image, question)


def image_column(line: str) -> int:
    return cell_len(line[: line.index("/p/")])


def test_wide_characters_keep_the_columns_in_line() -> None:
    rows = session_rows([summary("中文问题很长很长很长"), summary("plain question"), summary("🙂🙂 emoji")])
    assert len({image_column(line) for line in rows[1:]}) == 1
    assert image_column(rows[1]) == cell_len(rows[0][: rows[0].index("IMAGE")])


def test_a_long_wide_question_is_cut_to_its_cells() -> None:
    clipped = _clip("很" * 60, 40)
    assert cell_len(clipped) <= 40 and clipped.endswith("…") and clipped.startswith("很" * 19)


def test_an_emoji_sequence_or_an_accent_is_never_cut_in_half() -> None:
    for cut in range(30, 40):
        clipped = _clip("a" * cut + FAMILY * 5, 40)
        if not clipped.endswith("…"):
            continue  # it fits as it is (a terminal shows a family in two cells)
        assert "\u200d…" not in clipped and not clipped[:-1].endswith("\u200d")
        body = clipped[:-1].lstrip("a")
        assert body == FAMILY * (len(body) // len(FAMILY))  # whole families only
    assert _clip("e" * 38 + "e\u0301" + "x" * 10, 40) == "e" * 38 + "e\u0301…"  # the accent stays with its e
    assert _clip("e" * 39 + "e\u0301" + "x" * 10, 40) == "e" * 39 + "…"  # ... or goes with it
    assert not any(unicodedata.combining(c) for c in _clip("e" * 39 + "e\u0301" + "x" * 10, 40))
    assert _clip("/" + "é" * 80, 20, from_left=True).startswith("…")


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=80),
       st.integers(5, 60), st.booleans())
def test_a_clip_always_fits_its_cells(text: str, width: int, from_left: bool) -> None:
    clipped = _clip(text, width, from_left)
    assert cell_len(clipped) <= max(width, cell_len(_clip(text, 10**6)) if cell_len(text) <= width else width)
