"""Training and evaluation examples: a picture, the prompt the chat would send, the answer it should get.

Prompts are built by our own `prompts/` styles, exactly as the chat and `caption` build them: a dialogue's
earlier turns are folded ("Question: q1 Answer: a1. Question: q2 Answer:"), a caption's prompt is the
caption style's. The model is trained on these and evaluated through the engine with the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from chatbot.demo.dialogues import make_dialogue
from chatbot.demo.questions import QA, sample_single
from chatbot.demo.world import COLOURS, NUMBERS, POSITIONS, SHAPES, SIZES, Scene, caption, make_scene
from prompts import style_for

FAMILY = "opt"  # the demo chat model's language-model family


@dataclass(frozen=True)
class Example:
    """One prompt about one scene and the answer the model should give."""

    scene: Scene
    prompt: str
    answer: str
    kind: str  # a question kind, "caption", or a follow-up kind ("and-the", "it", "of-them")
    history: tuple[tuple[str, str], ...] = ()  # the earlier turns folded into the prompt
    question: str = ""  # the question alone ("" for a caption)


def chat_prompt(history: Sequence[tuple[str, str]], question: str) -> str:
    """The prompt the chat sends for `question` after `history`: the OPT chat style's folding."""
    return style_for(FAMILY, "chat").build(history, question)


def caption_prompt() -> str:
    """The prompt `caption` and `describe` send: the caption style's (no history, no question)."""
    return style_for(FAMILY, "caption").build([], "")


def caption_example(scene: Scene) -> Example:
    return Example(scene, caption_prompt(), caption(scene), "caption")


def single_example(scene: Scene, qa: QA) -> Example:
    return Example(scene, chat_prompt([], qa.question), qa.answer, qa.kind, (), qa.question)


def dialogue_examples(scene: Scene, dialogue: Sequence[QA]) -> list[Example]:
    """One example per turn of `dialogue`, each with the turns before it folded in."""
    out = []
    for index, qa in enumerate(dialogue):
        history = tuple((earlier.question, earlier.answer) for earlier in dialogue[:index])
        out.append(Example(scene, chat_prompt(history, qa.question), qa.answer, qa.kind, history, qa.question))
    return out


def examples_for(scene: Scene, rng: random.Random, singles: int = 1, turns: int = 1) -> list[Example]:
    """What one training picture teaches: its caption, `singles` single questions, and `turns` turns of one
    dialogue (follow-ups first; a picture of one shape, which has no dialogue, gets single questions instead)."""
    out = [caption_example(scene)]
    out.extend(single_example(scene, sample_single(scene, rng)) for _ in range(singles))
    dialogue = dialogue_examples(scene, make_dialogue(scene, rng, rng.randint(2, 4))) if len(scene.things) >= 2 else []
    follow_ups, opening = dialogue[1:], dialogue[:1]
    rng.shuffle(follow_ups)
    chosen = (follow_ups + opening)[:turns]
    out.extend(chosen)
    out.extend(single_example(scene, sample_single(scene, rng)) for _ in range(turns - len(chosen)))
    return out


def training_stream(seed: int) -> Iterator[Scene]:
    """Endless scenes for training: scene seeds drawn from `seed`, never from the held-out range."""
    rng = random.Random(seed)
    while True:
        yield make_scene(rng.randrange(HELD_OUT_START))


HELD_OUT_START = 10**9  # scene seeds at or above this are kept for evaluation


def held_out_scenes(count: int, start: int = HELD_OUT_START) -> list[Scene]:
    """`count` scenes never seen in training (their seeds are at or above HELD_OUT_START)."""
    return [make_scene(start + index) for index in range(count)]


# Words the prompts and answers use, besides the world's own names: the tokenizer's vocabulary.
_TEMPLATE_WORDS = ("question answer what is the a at of how many are there shapes shape colour size where it "
                   "and them left right above below top bottom nothing yes no")
_SPLIT = re.compile(r"\w+|[^\w\s]+")  # the word-level tokenizer's split (tokenizers' Whitespace)


def words_of(text: str) -> list[str]:
    """`text` split the way the demo tokenizer splits it: lower-case words and punctuation runs."""
    return _SPLIT.findall(text.lower())


def vocabulary() -> list[str]:
    """Every word and punctuation mark the demo's prompts and answers use, sorted (the tokenizer's words)."""
    words = set(_TEMPLATE_WORDS.split()) | {":", ".", "?"}
    for name in (*COLOURS, *SHAPES, *SIZES, *NUMBERS, *POSITIONS):
        words.update(words_of(name))
    words.update(shape + "s" for shape in SHAPES)
    return sorted(words)
