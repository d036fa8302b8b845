"""Single questions about a demo scene, each with its one exact short answer.

A question names a shape only when the words it uses pick out exactly one ("the circle" when there is
one circle, "the red circle" otherwise, ...), so every answer is unambiguous. Answers are lower-case
words without punctuation: a colour, a shape, a size, a position, a number word, yes or no,
"red circle" for a shape asked for by place, or "nothing".
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from chatbot.demo.world import COLOURS, NUMBERS, POSITIONS, SHAPES, SIZES, Scene, Thing

ATTRIBUTES = ("colour", "size", "shape", "position")
RELATIONS = ("left of", "right of", "above", "below")
KINDS = ("colour", "size", "shape", "position", "count", "yes/no", "relation", "at")


@dataclass(frozen=True)
class QA:
    """A question, its exact answer, and what kind of question it is."""

    question: str
    answer: str
    kind: str


def attribute(thing: Thing, name: str) -> str:
    """The answer to "what <name> is it?" about `thing`."""
    return {"colour": thing.colour, "size": thing.size, "shape": thing.shape, "position": thing.position}[name]


def matches(thing: Thing, words: dict[str, str]) -> bool:
    """Whether `thing` has every attribute value in `words` ({"colour": "red", ...})."""
    return all(attribute(thing, key) == value for key, value in words.items())


# Ways to name a shape, shortest first: the attributes a description uses.
_DESCRIPTIONS = (("shape",), ("colour", "shape"), ("size", "shape"), ("colour",), ("size", "colour", "shape"),
                 ("size", "colour"), ("size",))


def referent(scene: Scene, thing: Thing, avoid: str = "") -> str | None:
    """The shortest words that pick out `thing` alone ("the circle", "the small red shape"), not using
    the attribute `avoid` (asking the colour of "the red circle" would give the answer away); None when
    no description is unique."""
    for keys in _DESCRIPTIONS:
        if avoid in keys:
            continue
        words = {key: attribute(thing, key) for key in keys}
        if sum(matches(other, words) for other in scene.things) == 1:
            noun = words.get("shape", "shape")
            return " ".join(["the", *(words[k] for k in ("size", "colour") if k in words), noun])
    return None


def neighbour(scene: Scene, thing: Thing, relation: str) -> Thing | None:
    """The shape beside `thing` in the grid: "left of" and "right of" in its row, "above" and "below" in
    its column; None when that cell is empty or off the grid."""
    row, column = thing.row, thing.column
    target = {"left of": (row, column - 1), "right of": (row, column + 1), "above": (row - 1, column),
              "below": (row + 1, column)}[relation]
    if not (0 <= target[0] < 2 and 0 <= target[1] < 2):
        return None
    return scene.at(target[0] * 2 + target[1])


def ask_attribute(name: str, about: str) -> str:
    """The question for attribute `name` of the shape called `about` ("the circle" or "it")."""
    return f"Where is {about}?" if name == "position" else f"What {name} is {about}?"


def plural(shape: str) -> str:
    return shape + "s"


def count_word(number: int) -> str:
    return NUMBERS[number]


def single_questions(scene: Scene) -> dict[str, list[QA]]:
    """Every single question this module asks about `scene`, by kind (a kind may be empty)."""
    out: dict[str, list[QA]] = {kind: [] for kind in KINDS}
    for thing in scene.things:
        for name in ATTRIBUTES:
            words = referent(scene, thing, avoid=name)
            if words:
                out[name].append(QA(ask_attribute(name, words), attribute(thing, name), name))
        words = referent(scene, thing)
        if words:
            for relation in RELATIONS:
                other = neighbour(scene, thing, relation)
                out["relation"].append(QA(f"What is {relation} {words}?", other.name if other else "nothing",
                                          "relation"))
    out["count"].append(QA("How many shapes are there?", count_word(len(scene.things)), "count"))
    for shape in SHAPES:
        number = sum(t.shape == shape for t in scene.things)
        out["count"].append(QA(f"How many {plural(shape)} are there?", count_word(number), "count"))
    for value in (*COLOURS, *SIZES):
        number = sum(value in (t.colour, t.size) for t in scene.things)
        out["count"].append(QA(f"How many {value} shapes are there?", count_word(number), "count"))
    for cell, position in enumerate(POSITIONS):
        found = scene.at(cell)
        out["at"].append(QA(f"What is at the {position}?", found.name if found else "nothing", "at"))
    out["yes/no"] = _yes_no(scene)
    return out


def _yes_no(scene: Scene) -> list[QA]:
    out = []
    for colour in COLOURS:
        for shape in SHAPES:
            present = any(matches(t, {"colour": colour, "shape": shape}) for t in scene.things)
            out.append(QA(f"Is there a {colour} {shape}?", "yes" if present else "no", "yes/no"))
    for thing in scene.things:
        for name, values in (("colour", tuple(COLOURS)), ("size", SIZES)):
            words = referent(scene, thing, avoid=name)
            if words:
                out.extend(QA(f"Is {words} {value}?", "yes" if attribute(thing, name) == value else "no", "yes/no")
                           for value in values)
    return out


def sample_single(scene: Scene, rng: random.Random) -> QA:
    """One single question: a kind drawn uniformly among those with questions, yes and no equally often."""
    questions = single_questions(scene)
    kind = rng.choice([k for k in KINDS if questions[k]])
    pool = questions[kind]
    if kind == "yes/no":
        pool = _one_side(pool, rng.random() < 0.5, lambda qa: qa.answer == "yes")
    return rng.choice(pool)


def _one_side(pool: list[QA], wanted: bool, side: Callable[[QA], bool]) -> list[QA]:
    chosen = [qa for qa in pool if side(qa) == wanted]
    return chosen or pool
