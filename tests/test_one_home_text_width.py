"""Text cut to a number of terminal cells has one home (chatbot.core.text_width), used by the app's status line and
image caption and by the `sessions` table: a cut text never takes more cells than it was given, and never cuts
inside what a reader sees as one character (an emoji sequence, a skin tone, a flag, an accent, a surrogate pair).

Before, only the `sessions` table kept emoji sequences whole, and it took more cells than it had for emoji
written with their presentation selector (❤️: two cells, counted as one); the app's three cuts split them.
"""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from chatbot.core.session_listing import SessionSummary
from chatbot.core.text_width import characters, clip_end, clip_middle, clip_path, clip_start
from chatbot.frontends.listings import session_rows
from chatbot.tui.widgets.image_preview import CaptionLine
from chatbot.tui.widgets.status_bar import fit_status

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one picture in two cells
HEART = "\u2764\ufe0f"  # a heart and the emoji presentation selector: two cells
THUMB = "\U0001f44d\U0001f3fd"  # a thumb with a skin tone
FLAG = "\U0001f1eb\U0001f1f7"  # two regional letters: one flag
PAIR = "\ud83d\ude00"  # a surrogate pair (as text read with surrogatepass holds an emoji)
# What a reader sees as one character, each: plain, wide, and the sequences that must never be cut.
ATOMS = ["a", "b", "/", " ", "é", "e\u0301", "写", "真", "😀", FAMILY, HEART, THUMB, FLAG, PAIR, "\udcff"]
atom_lists = st.lists(st.sampled_from(ATOMS), max_size=40)
widths = st.integers(min_value=-2, max_value=50)


def whole(kept: str, atoms: list[str], *, from_start: bool) -> bool:
    """Whether `kept` is some whole atoms of `atoms` at its start (or end)."""
    ends = ["".join(atoms[:n] if from_start else atoms[len(atoms) - n:]) for n in range(len(atoms) + 1)]
    return kept in ends


@settings(max_examples=300, deadline=None)
@given(atoms=atom_lists, width=widths)
def test_a_cut_fits_its_cells_and_keeps_every_character_whole(atoms: list[str], width: int) -> None:
    text = "".join(atoms)
    assert characters(text) == atoms
    for clip in (clip_end, clip_start, clip_middle, clip_path):
        cut = clip(text, width)
        assert cell_len(cut) <= max(width, 0), (clip.__name__, cut)
        if cut == text:
            continue
        assert cut.count("…") == 1 or cut == "", (clip.__name__, cut)
        head, _, tail = cut.partition("…") if clip is not clip_start else ("", "", cut[1:])
        assert whole(head, atoms, from_start=True), (clip.__name__, cut)
        assert whole(tail, atoms, from_start=False), (clip.__name__, cut)


@settings(max_examples=200, deadline=None)
@given(atoms=atom_lists, width=st.integers(min_value=1, max_value=50))
def test_a_cut_never_leaves_half_of_a_surrogate_pair(atoms: list[str], width: int) -> None:
    text = "".join(atom for atom in atoms if atom != "\udcff")  # only whole pairs in it
    for clip in (clip_end, clip_start, clip_middle, clip_path):
        cut = clip(text, width)
        for index, char in enumerate(cut):
            if "\ud800" <= char <= "\udbff":
                assert index + 1 < len(cut) and "\udc00" <= cut[index + 1] <= "\udfff", (clip.__name__, cut)
            if "\udc00" <= char <= "\udfff":
                assert index > 0 and "\ud800" <= cut[index - 1] <= "\udbff", (clip.__name__, cut)


def only(sequence: str, text: str) -> bool:
    return text == sequence * (len(text) // len(sequence))


def test_the_status_line_keeps_an_emoji_whole_when_it_cuts_the_activity() -> None:
    for width in range(16, 40):
        line = fit_status("⠙ Asking " + HEART * 20, " 12 s", {}, width)
        assert cell_len(line) <= width and line.endswith("… 12 s")
        assert only(HEART, line.removeprefix("⠙ Asking ").removesuffix("… 12 s")), line


def test_the_status_line_keeps_an_emoji_whole_when_it_cuts_the_models_path() -> None:
    for width in range(40, 60):
        line = fit_status("Ready", "", {"model": "/models/" + FAMILY * 30}, width)
        model = line.split(" │ ")[1]
        assert model.startswith("…") and only(FAMILY, model.removeprefix("…")), model


def test_the_image_caption_keeps_an_emoji_whole_when_it_cuts_the_name() -> None:
    atoms = [FAMILY] * 30 + list(".png")
    for width in range(20, 50):  # room for the size and a part of the name (MIN_NAME_CELLS)
        console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
        console.print(CaptionLine("".join(atoms), " · 64×48").visualize())
        shown = console.file.getvalue().rstrip("\n")  # type: ignore[attr-defined]
        head, _, tail = shown.removesuffix(" · 64×48").partition("…")
        assert cell_len(shown) <= width and shown.endswith(" · 64×48"), shown
        assert whole(head, atoms, from_start=True) and whole(tail, atoms, from_start=False), shown


def test_the_sessions_table_keeps_an_emoji_whole_in_its_cells() -> None:
    summary = SessionSummary("20260101-000000-abcdef", 0.0, 3, "m", "/p/a.png", HEART * 30)
    question = session_rows([summary])[1].split("  ")[3]
    assert cell_len(question) <= 40 and only(HEART, question.removesuffix("…")), question
