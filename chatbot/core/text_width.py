"""Text cut to a number of terminal cells, with "…" where it was cut: one rule for the chat app's status line and
image caption and for the `sessions` table.

A wide character (CJK, most emoji) takes two cells, and what a reader sees as one character stays whole or goes
whole: an emoji sequence (a family joined by zero-width joiners, a skin tone, a flag, a keycap, a presentation
selector), a letter and its accents, a surrogate pair. Cells are counted as the toolkit that draws them counts
(rich's `cell_len`, which Textual uses), over the kept text as a whole. Pure: no terminal needed.
"""

from __future__ import annotations

import unicodedata

from rich.cells import cell_len

ELLIPSIS = "…"  # one cell
_JOINER = "\u200d"  # zero-width joiner: the characters on both sides of it are drawn as one
_SELECTORS = {"\ufe0e", "\ufe0f"}  # text and emoji presentation
_MARKS = {"Mn", "Mc", "Me"}  # combining accents and other marks, drawn on or beside the letter before them


def characters(text: str) -> list[str]:
    """`text` as the characters a reader sees, in order: each a run of code points that is drawn as one."""
    seen: list[str] = []
    for char in text:
        if seen and _continues(seen[-1], char):
            seen[-1] += char
        else:
            seen.append(char)
    return seen


def _continues(before: str, char: str) -> bool:
    """Whether `char` is drawn as part of `before`, the character a reader sees so far."""
    code = ord(char)
    return (before.endswith(_JOINER) or char == _JOINER or char in _SELECTORS
            or unicodedata.category(char) in _MARKS
            or 0x1F3FB <= code <= 0x1F3FF  # skin tones
            or 0xE0020 <= code <= 0xE007F  # tags (the flags of England, Scotland, Wales)
            or (0xDC00 <= code <= 0xDFFF and 0xD800 <= ord(before[-1]) <= 0xDBFF)  # a surrogate pair's second half
            or (_regional(char) and len(before) == 1 and _regional(before)))  # a flag: two regional letters


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def clip_end(text: str, width: int) -> str:
    """`text` in at most `width` cells, losing its end: `Searching for “a red…` (nothing in no cells)."""
    if cell_len(text) <= width:
        return text
    return _first(characters(text), width - 1) + ELLIPSIS if width > 0 else ""


def clip_start(text: str, width: int) -> str:
    """`text` in at most `width` cells, losing its beginning: `…/weights/chat.png` (nothing in no cells)."""
    if cell_len(text) <= width:
        return text
    return ELLIPSIS + _first(characters(text)[::-1], width - 1, backwards=True) if width > 0 else ""


def clip_middle(text: str, width: int) -> str:
    """`text` in at most `width` cells, losing its middle: `IMG_2026…_0042.jpg` (a name's start and its end, the
    part that tells photos apart, stay; the end has the extra cell when they cannot have as many)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    seen = characters(text)
    start, end = 0, len(seen)
    head_cells = tail_cells = 0
    while start < end:  # a character at a time from each end, the end first, while they fit beside "…"
        from_end = head_cells >= tail_cells
        cells = cell_len(seen[end - 1] if from_end else seen[start])
        if head_cells + tail_cells + cells > width - 1:
            break
        if from_end:
            end -= 1
            tail_cells += cells
        else:
            start += 1
            head_cells += cells
    return f"{''.join(seen[:start])}{ELLIPSIS}{''.join(seen[end:])}"


def clip_path(path: str, width: int) -> str:
    """`path` in at most `width` cells, losing its beginning, at a `/` where it can: `…/weights/chat`."""
    if cell_len(path) <= width:
        return path
    seen = characters(path)
    for start in range(1, len(seen)):
        if seen[start] == "/":
            tail = ELLIPSIS + "".join(seen[start:])
            if cell_len(tail) <= width:
                return tail
    return clip_start(path, width)


def _first(seen: list[str], cells: int, *, backwards: bool = False) -> str:
    """The first of the characters `seen` that fit in `cells` together (`backwards`: `seen` is reversed, and so
    is what comes back, to reading order)."""
    kept: list[str] = []
    used = 0
    for char in seen:
        used += cell_len(char)
        if used > cells:
            break
        kept.append(char)
    return "".join(kept[::-1] if backwards else kept)
