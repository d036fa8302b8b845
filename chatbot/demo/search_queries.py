"""Search texts about demo scenes, each with the rule that says which pictures it is true of.

The demo retrieval model learns from two kinds of text: a picture's caption (what `benchmarks/
eval_demo_search.py` searches with; true of exactly the pictures with that same caption), and the shorter
things a person types ("a red circle", "two shapes", "a blue square above a green triangle"), true of
every picture that has what they name. Every text made here is true of the picture it is made from;
`holds` says which other pictures it is true of, so training never counts a true text as a mismatch.
`one_word_off` makes the hard negatives: the same text with one word changed, false of the picture.

Short texts never take a caption's form (they leave out sizes where a caption would have them), so a
text's meaning follows from the text alone. Pure Python: no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from itertools import permutations

from chatbot.demo.world import COLOURS, NUMBERS, POSITIONS, SHAPES, SIZES, Scene, Thing, caption

LINKS = ("and", "left of", "above")  # how two named shapes are joined: anywhere, beside in a row, in a column
_SHORT_KINDS = ("thing", "count", "pair", "place")


@dataclass(frozen=True)
class Pattern:
    """What one named shape must be; None leaves that attribute open."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None

    def matches(self, thing: Thing) -> bool:
        return all(want is None or want == got for want, got in
                   ((self.shape, thing.shape), (self.colour, thing.colour), (self.size, thing.size)))

    @property
    def words(self) -> str:
        """"a small red circle", "a red shape", "a large square" (a shape word always ends it)."""
        return " ".join(["a", *(w for w in (self.size, self.colour) if w), self.shape or "shape"])


@dataclass(frozen=True)
class Query:
    """A search text and what makes it true.

    kind: "caption" (true of pictures with exactly this caption), "thing" (some shape matches the
    pattern), "place" (a shape matching it is in `cell`), "count" (exactly `count` shapes), or "pair"
    (two different shapes match the two patterns and stand as `link` says).
    """

    kind: str
    things: tuple[Pattern, ...] = ()
    count: int = 0
    cell: int = -1
    link: str = "and"
    caption_text: str = ""

    @property
    def text(self) -> str:
        if self.kind == "caption":
            return self.caption_text
        if self.kind == "count":
            return f"{NUMBERS[self.count]} shape" + ("s" if self.count != 1 else "")
        if self.kind == "place":
            return f"{self.things[0].words} at the {POSITIONS[self.cell]}"
        if self.kind == "pair":
            return f"{self.things[0].words} {self.link} {self.things[1].words}"
        return self.things[0].words

    def holds(self, scene: Scene) -> bool:
        """Whether this text is true of `scene`."""
        if self.kind == "caption":
            return caption(scene) == self.caption_text
        if self.kind == "count":
            return len(scene.things) == self.count
        if self.kind == "place":
            thing = scene.at(self.cell)
            return thing is not None and self.things[0].matches(thing)
        if self.kind == "pair":
            return any(self.things[0].matches(a) and self.things[1].matches(b) and _stands(a, b, self.link)
                       for a, b in permutations(scene.things, 2))
        return any(self.things[0].matches(thing) for thing in scene.things)


def _stands(first: Thing, second: Thing, link: str) -> bool:
    """Whether `first` is `link` `second` on the grid ("left of": same row; "above": same column)."""
    if link == "left of":
        return first.row == second.row and first.column < second.column
    if link == "above":
        return first.column == second.column and first.row < second.row
    return True


def caption_query(scene: Scene) -> Query:
    return Query("caption", caption_text=caption(scene))


def _short_pattern(thing: Thing, rng: random.Random, *, sized: bool = True) -> Pattern:
    """Some of `thing`'s attributes: a shape, or a colour, with others added at random (never all three
    when `sized` is False, so a pair never takes a caption's form)."""
    choices = [("colour", "shape"), ("shape",), ("colour",), ("size", "shape"), ("size", "colour")]
    if sized:
        choices.append(("size", "colour", "shape"))
    keys = rng.choice(choices)
    return Pattern(thing.shape if "shape" in keys else None, thing.colour if "colour" in keys else None,
                   thing.size if "size" in keys else None)


def short_query(scene: Scene, rng: random.Random) -> Query:
    """A short text true of `scene`, of a kind drawn at random (a pair only when there are two shapes)."""
    kinds = _SHORT_KINDS if len(scene.things) >= 2 else tuple(k for k in _SHORT_KINDS if k != "pair")
    kind = rng.choice(kinds)
    if kind == "count":
        return Query("count", count=len(scene.things))
    if kind == "place":
        thing = rng.choice(scene.things)
        pattern = _short_pattern(thing, rng, sized=False)  # "a small red circle at the top left" is a caption
        return Query("place", (pattern,), cell=thing.cell)
    if kind == "pair":
        first, second = rng.sample(scene.things, 2)
        if (first.row, first.column) > (second.row, second.column):
            first, second = second, first
        links = ["and", *(link for link in LINKS[1:] if _stands(first, second, link))]
        return Query("pair", (_short_pattern(first, rng, sized=False), _short_pattern(second, rng, sized=False)),
                     link=rng.choice(links))
    return Query("thing", (_short_pattern(rng.choice(scene.things), rng),))


def one_word_off(query: Query, scene: Scene, rng: random.Random, tries: int = 20) -> Query | None:
    """`query` with one word changed (a colour, shape, size, number, place or link) so that it is false
    of `scene`; None when `tries` changes found none."""
    for _ in range(tries):
        changed = _caption_changed(scene, rng) if query.kind == "caption" else _short_changed(query, rng)
        if changed is not None and changed.text != query.text and not changed.holds(scene):
            return changed
    return None


def _other(values: tuple[str, ...] | list[str], current: str, rng: random.Random) -> str:
    return rng.choice([value for value in values if value != current])


def _caption_changed(scene: Scene, rng: random.Random) -> Query:
    """The caption of `scene` with one shape's colour, shape or size changed, or (one or two shapes) its
    place or the link between the two changed."""
    things = list(scene.things)
    index = rng.randrange(len(things))
    part = rng.choice(("colour", "shape", "size", "where"))
    if part == "where" and len(things) <= 2:
        text = caption(scene)
        if len(things) == 1:
            where = things[0].position
            elsewhere = _other(POSITIONS, where, rng)
            return Query("caption", caption_text=text.replace(f"at the {where}", f"at the {elsewhere}"))
        link = next(link for link in (" left of ", " above ", " and ") if link in text)
        return Query("caption", caption_text=text.replace(link, f" {_other(LINKS, link.strip(), rng)} ", 1))
    thing = things[index]
    if part == "colour":
        things[index] = replace(thing, colour=_other(list(COLOURS), thing.colour, rng))
    elif part == "size":
        things[index] = replace(thing, size=_other(SIZES, thing.size, rng))
    else:
        things[index] = replace(thing, shape=_other(SHAPES, thing.shape, rng))
    return caption_query(replace(scene, things=tuple(things)))


def _short_changed(query: Query, rng: random.Random) -> Query | None:
    if query.kind == "count":
        return replace(query, count=rng.choice([n for n in range(1, 5) if n != query.count]))
    slots: list[str] = ["pattern"]
    if query.kind == "place":
        slots.append("cell")
    if query.kind == "pair":
        slots.append("link")
    slot = rng.choice(slots)
    if slot == "cell":
        return replace(query, cell=rng.choice([c for c in range(4) if c != query.cell]))
    if slot == "link":
        return replace(query, link=_other(LINKS, query.link, rng))
    index = rng.randrange(len(query.things))
    pattern = query.things[index]
    named = [name for name in ("shape", "colour", "size") if getattr(pattern, name) is not None]
    name = rng.choice(named)
    values = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES}[name]
    changed = replace(pattern, **{name: _other(values, getattr(pattern, name), rng)})
    things = list(query.things)
    things[index] = changed
    return replace(query, things=tuple(things))
