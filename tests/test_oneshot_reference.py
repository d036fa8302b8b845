"""`ask` and `caption` as a user runs them (a subprocess), their words checked against the reference: the
text `Blip2ForConditionalGeneration.generate` gives for the same prompt, decoded by the checkpoint's own
tokenizer. A lost `--prompt`, a wrong caption prompt or a question folded wrongly would change the words.

OPT is checked on the demo model (trained here: it answers in words). A random-weight OPT says random
bytes, and a byte cut in half at the end of an answer is shown as nothing while a one-piece decode shows
U+FFFD, so its text is no fair reference; FlanT5's tokenizer has whole characters only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.images import load_image
from prompts import style_for
from tests.test_cli import QUESTION, Runs, json_lines, one_line, run_cli
from tests.test_engine import reference_tokens

OPTIONS = GenerationOptions()  # the commands' defaults: greedy, 30 new tokens at most
FAMILIES = ["opt", "flan-t5"]  # opt: the demo model



def words(text: str) -> str:
    """Words as a person reads them: an answer streamed as it came may hold two spaces where one is stored."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def references(engines: dict[str, Any]) -> dict[str, Any]:
    from chatbot.engine.blip2 import open_engine
    from chatbot.locations import demo_model_dir

    return {"opt": open_engine(str(demo_model_dir()), device="cpu"), "flan-t5": engines["flan-t5"]}


def reference_text(engine: Any, picture: Path, prompt: str) -> str:
    """What generate says for `prompt` about `picture`, as one line of words."""
    tokens = reference_tokens(engine, load_image(picture), prompt, OPTIONS)
    return " ".join(engine.processor.tokenizer.decode(tokens, skip_special_tokens=True).split())


@pytest.fixture(scope="module")
def runs(checkpoints: dict[str, Path], pictures: dict[str, Path]) -> Runs:
    """Two commands at a time: each loads a model on a core of its own."""
    red, green = pictures["red"], pictures["green"]
    jobs = {
        f"{family}-{what}": partial(run_cli, *args, "--model", "demo" if family == "opt" else checkpoints[family])
        for family in FAMILIES
        for what, args in {
            "caption-two": ("caption", red, green, "--json"),
            "caption-prompt": ("caption", red, "--prompt", "a photo of"),
            "ask": ("ask", green, QUESTION),
        }.items()
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_caption_of_two_pictures_says_what_generate_says_of_each(family: str, runs: Runs, references: dict[str, Any],
                                                                 pictures: dict[str, Path]) -> None:
    engine = references[family]
    engine.forget()
    prompt = style_for(engine.info.family, "caption").build([], "")
    records = json_lines(runs[f"{family}-caption-two"], 2)
    assert [record["answer"] for record in records] == [
        reference_text(engine, pictures[colour], prompt) for colour in ("red", "green")]


@pytest.mark.parametrize("family", FAMILIES)
def test_caption_prompt_is_the_text_the_caption_continues(family: str, runs: Runs, references: dict[str, Any],
                                                          pictures: dict[str, Path]) -> None:
    """`--prompt "a photo of"`: generate is given exactly that text; the words after it are the caption."""
    engine = references[family]
    engine.forget()
    assert words(one_line(runs[f"{family}-caption-prompt"])) == reference_text(engine, pictures["red"], "a photo of")


@pytest.mark.parametrize("family", FAMILIES)
def test_ask_says_what_generate_says(family: str, runs: Runs, references: dict[str, Any],
                                     pictures: dict[str, Path]) -> None:
    engine = references[family]
    engine.forget()
    prompt = Conversation.with_engine(engine, load_image(pictures["green"]), OPTIONS).prepare(QUESTION).text
    assert prompt.endswith(f"Question: {QUESTION} Answer:")  # (the prompt format itself: tests/test_prompts.py)
    assert words(one_line(runs[f"{family}-ask"])) == reference_text(engine, pictures["green"], prompt)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_answer_is_called_cut_short_exactly_when_generate_would_have_gone_on(
        family: str, references: dict[str, Any], pictures: dict[str, Path]) -> None:
    """`cut_short` (ask/caption's stderr sentence, `--json`'s field, the chat's mark) says that the answer reached
    max_new_tokens before the model ended it: exactly when generate, given more room, says more."""
    from dataclasses import replace

    engine = references[family]
    engine.forget()
    image = load_image(pictures["green"])
    prompt = Conversation.with_engine(engine, image, OPTIONS).prepare(QUESTION).text
    whole = reference_tokens(engine, image, prompt, OPTIONS)
    seen = set()
    for limit in (1, 2, len(whole), OPTIONS.max_new_tokens):
        options = replace(OPTIONS, max_new_tokens=limit)
        "".join(engine.stream(image, prompt, options))
        longer = reference_tokens(engine, image, prompt, replace(OPTIONS, max_new_tokens=limit + 5))
        assert engine.last_stats.cut_short == (len(longer) > limit), limit
        seen.add(engine.last_stats.cut_short)
    if family == "opt":  # the demo model ends its answers itself: both cases happen
        assert seen == {True, False}
