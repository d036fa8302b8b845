"""Dialogues of 2-4 turns whose follow-ups cannot be answered without the earlier turns.

Three kinds of follow-up, each leaning on what came before:
- "And the square?" asks the attribute the last question asked (colour, size, shape or position),
  of another shape: only the history says which attribute.
- "What colour is it?", "Where is it?", "What is left of it?" ask about the shape the conversation is
  on: only the history says which one.
- "How many of them are red?" counts among the shapes the last count was about.
Dialogues are drawn for scenes of two or more shapes, where "it" is never the only shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from chatbot.demo.questions import (
    ATTRIBUTES,
    QA,
    RELATIONS,
    ask_attribute,
    attribute,
    count_word,
    neighbour,
    plural,
    referent,
)
from chatbot.demo.world import COLOURS, SHAPES, SIZES, Scene, Thing

FOLLOW_UP_KINDS = ("and-the", "it", "of-them")


@dataclass
class _Focus:
    """What the conversation is about after a turn: a shape, the attribute last asked, a counted group."""

    thing: Thing | None = None
    attribute: str = ""
    group: list[Thing] = field(default_factory=list)


def make_dialogue(scene: Scene, rng: random.Random, turns: int) -> list[QA]:
    """A dialogue of up to `turns` turns about `scene` (at least two when the scene has two shapes or more;
    shorter when no follow-up applies). The first turn is a single question; the others are follow-ups
    whose `kind` is one of FOLLOW_UP_KINDS."""
    first, focus = _opening(scene, rng)
    dialogue = [first]
    while len(dialogue) < turns:
        step = _follow_up(scene, rng, focus)
        if step is None:
            break
        dialogue.append(step)
    return dialogue


def _opening(scene: Scene, rng: random.Random) -> tuple[QA, _Focus]:
    things = scene.things
    options: list[tuple[QA, _Focus]] = []
    for thing in things:
        for name in ATTRIBUTES:
            words = referent(scene, thing, avoid=name)
            if words:
                options.append((QA(ask_attribute(name, words), attribute(thing, name), name), _Focus(thing, name)))
        words = referent(scene, thing)
        for relation in RELATIONS:
            other = neighbour(scene, thing, relation)
            if words and other:
                options.append((QA(f"What is {relation} {words}?", other.name, "relation"), _Focus(other)))
        options.append((QA(f"What is at the {thing.position}?", thing.name, "at"), _Focus(thing)))
        if sum(t.colour == thing.colour and t.shape == thing.shape for t in things) == 1:
            options.append((QA(f"Is there a {thing.colour} {thing.shape}?", "yes", "yes/no"), _Focus(thing)))
    for shape in SHAPES:
        group = [t for t in things if t.shape == shape]
        if 1 <= len(group) < len(things):
            counted = QA(f"How many {plural(shape)} are there?", count_word(len(group)), "count")
            options.extend([(counted, _Focus(group[0] if len(group) == 1 else None, group=group))] * 3)
    return rng.choice(options)


def _follow_up(scene: Scene, rng: random.Random, focus: _Focus) -> QA | None:
    """One follow-up that depends on `focus`, which it updates; None when none applies. Each kind of
    follow-up that applies is equally likely."""
    options: list[tuple[QA, _Focus]] = []
    if focus.attribute:
        for other in scene.things:
            words = referent(scene, other, avoid=focus.attribute)
            if other is not focus.thing and words:
                qa = QA(f"And {words}?", attribute(other, focus.attribute), "and-the")
                options.append((qa, _Focus(other, focus.attribute)))
    if focus.thing is not None:
        for name in ATTRIBUTES:
            if name != focus.attribute:
                qa = QA(ask_attribute(name, "it"), attribute(focus.thing, name), "it")
                options.append((qa, _Focus(focus.thing, name)))
        for relation in RELATIONS:
            beside = neighbour(scene, focus.thing, relation)
            if beside is not None:
                options.append((QA(f"What is {relation} it?", beside.name, "it"), _Focus(beside)))
    if len(focus.group) >= 2:
        for value in (*COLOURS, *SIZES):
            number = sum(value in (t.colour, t.size) for t in focus.group)
            options.append((QA(f"How many of them are {value}?", count_word(number), "of-them"),
                            _Focus(group=focus.group)))
    if not options:
        return None
    kind = rng.choice(sorted({qa.kind for qa, _ in options}))
    qa, new_focus = rng.choice([option for option in options if option[0].kind == kind])
    focus.thing, focus.attribute, focus.group = new_focus.thing, new_focus.attribute, new_focus.group
    return qa
