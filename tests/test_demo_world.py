"""The demo world (chatbot/demo/): pictures, captions, questions and dialogues that are true and need their history.

Answers are checked against the list of shapes by a reading of the question text written here, not by the
world's own question builders; folded prompts against the literal BLIP-2 format and against what the chat
itself sends.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict

import pytest

from chatbot.demo.dialogues import make_dialogue
from chatbot.demo.examples import (
    HELD_OUT_START,
    caption_prompt,
    dialogue_examples,
    examples_for,
    held_out_scenes,
    training_stream,
    vocabulary,
    words_of,
)
from chatbot.demo.questions import single_questions
from chatbot.demo.world import Scene, Thing, caption, loaded_picture, make_scene, render

SEEDS = range(400)
NUMBER = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4}
CELL = {"top left": 0, "top right": 1, "bottom left": 2, "bottom right": 3}
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")


# -- an independent reading of the questions ---------------------------------------------------------------


def described(scene: Scene, words: str) -> list[Thing]:
    """The shapes that "the small red circle" / "the red shape" / "the square" fits."""
    parts = words.split()
    assert parts[0] == "the", words
    noun = parts[-1]
    return [t for t in scene.things
            if (noun == "shape" or t.shape == noun) and all(w in (t.size, t.colour) for w in parts[1:-1])]


def the_one(scene: Scene, words: str) -> Thing:
    found = described(scene, words)
    assert len(found) == 1, f"{words!r} is ambiguous or empty in {scene}"
    return found[0]


def beside(scene: Scene, thing: Thing, relation: str) -> Thing | None:
    row, column = divmod(thing.cell, 2)
    step = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}[relation]
    row, column = row + step[0], column + step[1]
    if not (0 <= row <= 1 and 0 <= column <= 1):
        return None
    return next((t for t in scene.things if t.cell == row * 2 + column), None)


def name(thing: Thing | None) -> str:
    return "nothing" if thing is None else f"{thing.colour} {thing.shape}"


def property_of(thing: Thing, asked: str) -> str:
    return {"colour": thing.colour, "size": thing.size, "shape": thing.shape,
            "where": [k for k, v in CELL.items() if v == thing.cell][0]}[asked]


def oracle(scene: Scene, question: str) -> str:
    """The answer to a single question, read from its text and the shapes."""
    q = question.lower().rstrip("?")
    if m := re.fullmatch(r"what (colour|size|shape) is (the .+)", q):
        return property_of(the_one(scene, m[2]), m[1])
    if m := re.fullmatch(r"where is (the .+)", q):
        return property_of(the_one(scene, m[1]), "where")
    if m := re.fullmatch(r"what is (left of|right of|above|below) (the .+)", q):
        return name(beside(scene, the_one(scene, m[2]), m[1]))
    if m := re.fullmatch(r"what is at the (.+)", q):
        return name(next((t for t in scene.things if t.cell == CELL[m[1]]), None))
    if m := re.fullmatch(r"how many (\w+ )?(\w+) are there", q):
        if m[1]:  # "red shapes", "small shapes"
            count = sum(m[1].strip() in (t.colour, t.size) for t in scene.things)
        else:  # "shapes", "circles"
            count = sum(m[2] in ("shapes", t.shape + "s") for t in scene.things)
        return list(NUMBER)[count]
    if m := re.fullmatch(r"is there a (\w+) (\w+)", q):
        return "yes" if any((t.colour, t.shape) == (m[1], m[2]) for t in scene.things) else "no"
    if m := re.fullmatch(r"is (the .+) (\w+)", q):
        thing = the_one(scene, m[1])
        return "yes" if m[2] in (thing.colour, thing.size) else "no"
    raise AssertionError(f"the test cannot read {question!r}")


def follow_up_oracle(scene: Scene, turns: list[tuple[str, str]]) -> str:
    """The answer to the last turn of a dialogue, tracking what "it", "them" and "and the ..." refer to."""
    focus: Thing | None = None
    group: list[Thing] = []
    asked = ""
    answer = ""
    for question, _ in turns:
        q = question.lower().rstrip("?")
        if m := re.fullmatch(r"and (the .+)", q):
            focus = the_one(scene, m[1])
            answer = property_of(focus, asked)
        elif m := re.fullmatch(r"(?:what (colour|size|shape) is|(where) is) it", q):
            assert focus is not None
            asked = m[1] or "where"
            answer = property_of(focus, asked)
        elif m := re.fullmatch(r"what is (left of|right of|above|below) it", q):
            assert focus is not None
            focus, asked = beside(scene, focus, m[1]), ""
            answer = name(focus)
        elif m := re.fullmatch(r"how many of them are (\w+)", q):
            answer = list(NUMBER)[sum(m[1] in (t.colour, t.size) for t in group)]
        else:  # an opening: a single question, which also sets what the talk is about
            answer = oracle(scene, question)
            if m := re.fullmatch(r"what (colour|size|shape) is (the .+)|(where) is (the .+)", q):
                asked, focus = m[1] or m[3], the_one(scene, m[2] or m[4])
            elif m := re.fullmatch(r"what is at the (.+)", q):
                asked, focus = "", next(t for t in scene.things if t.cell == CELL[m[1]])
            elif m := re.fullmatch(r"what is (left of|right of|above|below) (the .+)", q):
                asked, focus = "", beside(scene, the_one(scene, m[2]), m[1])
            elif m := re.fullmatch(r"is there a (\w+) (\w+)", q):
                asked, focus = "", next(t for t in scene.things if (t.colour, t.shape) == (m[1], m[2]))
            elif m := re.fullmatch(r"how many (\w+)s are there", q):
                group = [t for t in scene.things if t.shape == m[1]]
                asked, focus = "", group[0] if len(group) == 1 else None
    return answer


# -- the tests ---------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_picture_and_examples() -> None:
    for seed in (0, 7, 123456):
        assert make_scene(seed) == make_scene(seed)
        assert render(make_scene(seed)).tobytes() == render(make_scene(seed)).tobytes()
        assert examples_for(make_scene(seed), random.Random(3)) == examples_for(make_scene(seed), random.Random(3))
    assert render(make_scene(1)).tobytes() != render(make_scene(2)).tobytes()
    assert loaded_picture(make_scene(5)).sha256 == loaded_picture(make_scene(5)).sha256


def test_the_picture_shows_each_shape_in_its_colour_at_its_cell() -> None:
    """The pixel at the centre of each shape's cell (plus its jitter) is near the shape's colour."""
    from chatbot.demo.world import COLOURS as RGB

    for seed in range(60):
        scene = make_scene(seed)
        pixels = render(scene).load()
        for thing in scene.things:
            row, column = divmod(thing.cell, 2)
            x, y = column * 32 + 16 + thing.offset[0], row * 32 + 16 + thing.offset[1] + 2  # below a triangle's tip
            assert sum(abs(a - b) for a, b in zip(pixels[x, y], RGB[thing.colour], strict=True)) < 90, (seed, thing)


def test_scenes_hold_one_to_four_shapes_in_distinct_cells() -> None:
    counts = set()
    for seed in SEEDS:
        scene = make_scene(seed)
        cells = [t.cell for t in scene.things]
        assert cells == sorted(set(cells)) and 1 <= len(cells) <= 4
        counts.add(len(cells))
    assert counts == {1, 2, 3, 4}


def test_every_single_answer_is_true_of_the_shapes() -> None:
    kinds = set()
    for seed in SEEDS:
        scene = make_scene(seed)
        for kind, questions in single_questions(scene).items():
            for qa in questions:
                kinds.add(kind)
                assert qa.answer == oracle(scene, qa.question), (seed, qa)
    assert kinds == {"colour", "size", "shape", "position", "count", "yes/no", "relation", "at"}


def test_captions_name_the_shapes_in_reading_order_with_their_relation() -> None:
    phrase = r"a (small|large) (\w+) (circle|square|triangle)"
    for seed in SEEDS:
        scene = make_scene(seed)
        text = caption(scene)
        named = [(size, colour, shape) for size, colour, shape in re.findall(phrase, text)]
        assert named == [(t.size, t.colour, t.shape) for t in sorted(scene.things, key=lambda t: t.cell)], text
        links = re.sub(phrase, "#", text)
        if len(scene.things) == 1:
            assert links == f"# at the {property_of(scene.things[0], 'where')}"
        elif len(scene.things) == 2:
            (r1, c1), (r2, c2) = (divmod(t.cell, 2) for t in scene.things)
            assert links == ("# left of #" if r1 == r2 else "# above #" if c1 == c2 else "# and #"), text
        else:
            assert links.split(" and ") == ["#"] * len(scene.things)


def test_every_dialogue_answer_is_true_of_the_shapes() -> None:
    rng = random.Random(0)
    lengths = set()
    for seed in SEEDS:
        scene = make_scene(seed)
        if len(scene.things) < 2:
            continue
        dialogue = make_dialogue(scene, rng, rng.randint(2, 4))
        lengths.add(len(dialogue))
        turns = [(qa.question, qa.answer) for qa in dialogue]
        for index in range(len(turns)):
            assert dialogue[index].answer == follow_up_oracle(scene, turns[: index + 1]), (seed, turns[: index + 1])
    assert lengths == {2, 3, 4}


def test_follow_ups_need_the_earlier_turns() -> None:
    """The same follow-up text gets different answers in different dialogues: the question alone cannot tell.
    "And the square?" asks a colour in one dialogue and a size or a position in another."""
    rng = random.Random(1)
    answers: dict[str, set[str]] = defaultdict(set)
    for seed in range(1500):
        scene = make_scene(seed)
        if len(scene.things) >= 2:
            for qa in make_dialogue(scene, rng, 4)[1:]:
                answers[qa.question].add(qa.answer)
    for question in ("What colour is it?", "Where is it?", "What size is it?", "How many of them are red?"):
        assert len(answers[question]) >= 2, (question, answers[question])
    kinds_of_answer = {("colour" if a in COLOURS else "size" if a in SIZES else "where" if a in CELL else a)
                       for a in answers["And the square?"]}
    assert {"colour", "size", "where"} <= kinds_of_answer
    ambiguous = sum(len(found) > 1 for found in answers.values())
    assert ambiguous / len(answers) > 0.6  # most follow-up texts have more than one answer


def test_folded_prompts_are_the_blip2_format_and_what_the_chat_sends() -> None:
    from chatbot.core.captioning import caption as chat_caption
    from chatbot.core.conversation import Conversation
    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.scripted import ScriptedEngine

    rng = random.Random(2)
    checked = 0
    for seed in range(40):
        scene = make_scene(seed)
        if len(scene.things) < 2:
            continue
        dialogue = make_dialogue(scene, rng, 4)
        examples = dialogue_examples(scene, dialogue)
        literal = ""
        for qa, example in zip(dialogue, examples, strict=True):
            assert example.prompt == f"{literal}Question: {qa.question} Answer:"
            literal += f"Question: {qa.question} Answer: {qa.answer}. "
        engine = ScriptedEngine(*(qa.answer for qa in dialogue))
        chat = Conversation.with_engine(engine, loaded_picture(scene))
        for qa in dialogue:
            assert "".join(chat.ask(qa.question)) == qa.answer
        assert engine.prompts == [example.prompt for example in examples]
        chat_caption(engine, loaded_picture(scene), GenerationOptions())
        assert engine.prompts[-1] == caption_prompt() == ""
        checked += 1
    assert checked > 20


def test_the_vocabulary_covers_every_prompt_and_answer() -> None:
    words = set(vocabulary())
    rng = random.Random(4)
    for seed in SEEDS:
        for example in examples_for(make_scene(seed), rng):
            assert set(words_of(example.prompt + " " + example.answer)) <= words, example


def test_training_never_draws_a_held_out_picture() -> None:
    stream = training_stream(0)
    assert all(next(stream).seed < HELD_OUT_START for _ in range(500))
    assert all(scene.seed >= HELD_OUT_START for scene in held_out_scenes(5))


def test_the_tokenizer_reads_every_word_and_decodes_answers_exactly() -> None:
    pytest.importorskip("transformers")
    from chatbot.demo.training.model import build_tokenizer

    tokenizer = build_tokenizer()
    rng = random.Random(5)
    for seed in range(100):
        for example in examples_for(make_scene(seed), rng):
            ids = tokenizer(example.prompt)["input_ids"]
            assert ids[0] == 2 and tokenizer.unk_token_id not in ids  # BOS first (OPT), no unknown word
            answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(answer + [tokenizer.eos_token_id], skip_special_tokens=True) == example.answer
