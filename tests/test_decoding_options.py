"""Every decoding option reaches generation: it changes the answer, and ours still equals `generate`'s.

The reference writes `generate`'s arguments from the options themselves (tests/test_engine.py,
`reference_kwargs`), so an engine that dropped an option would still answer, but differently from the
reference with that option, and fail here. Each option is checked on both decoding paths: plain
`generate` (a CPU's default) and the static cache (a GPU's, here run step by step).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine, open_engine
from chatbot.images import LoadedImage, load_image
from tests.conftest import FAMILIES
from tests.test_engine import reference_tokens

PROMPT = "Question: What is in the picture? Answer:"
SAMPLING = GenerationOptions(max_new_tokens=12, temperature=0.9, seed=7)
# option -> (options without it, options with it); the options that only act when an answer would end
# are tried on the checkpoints whose end token the model picks early (conftest.early_end_checkpoints)
ACTS_AT_THE_END = {"min_new_tokens", "length_penalty"}
CHANGES = {
    "max_new_tokens": (GenerationOptions(max_new_tokens=6), GenerationOptions(max_new_tokens=14)),
    "min_new_tokens": (GenerationOptions(max_new_tokens=16), GenerationOptions(max_new_tokens=16, min_new_tokens=10)),
    "num_beams": (GenerationOptions(max_new_tokens=12), GenerationOptions(max_new_tokens=12, num_beams=4)),
    "temperature": (GenerationOptions(max_new_tokens=12), SAMPLING),
    "seed": (SAMPLING, replace(SAMPLING, seed=8)),
    "top_p": (SAMPLING, replace(SAMPLING, top_p=0.3)),
    "repetition_penalty": (GenerationOptions(max_new_tokens=24), GenerationOptions(max_new_tokens=24,
                                                                                   repetition_penalty=3.0)),
    "length_penalty": (GenerationOptions(max_new_tokens=16, num_beams=4, length_penalty=-3.0),
                       GenerationOptions(max_new_tokens=16, num_beams=4, length_penalty=3.0)),
}


@pytest.fixture(scope="module")
def paths(checkpoints: dict[str, Path], early_end_checkpoints) -> dict[tuple[str, bool, bool], Blip2Engine]:
    """(family, static path?, ends early?) -> engine."""
    folders = {(family, False): checkpoints[family] for family in FAMILIES}
    folders.update({(family, True): early_end_checkpoints[family][0] for family in FAMILIES})
    return {(family, static, early): open_engine(str(folders[(family, early)]), device="cpu", static_decoding=static)
            for family in FAMILIES for static in (False, True) for early in (False, True)}


@pytest.fixture
def picture(pictures: dict[str, Path]) -> LoadedImage:
    return load_image(pictures["red"])  # with PROMPT: what the early-end checkpoints answer 4 tokens to


def ours(engine: Blip2Engine, image: LoadedImage, options: GenerationOptions) -> list[int]:
    engine.forget()
    engine.answer(image, PROMPT, options)
    return list(engine.last_stats.token_ids)


@pytest.mark.parametrize("static", [False, True], ids=["generate", "static"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("option", CHANGES)
def test_each_option_changes_the_answer_and_ours_equals_the_reference(paths, picture, family, static, option) -> None:
    engine = paths[(family, static, option in ACTS_AT_THE_END)]
    without, with_it = CHANGES[option]
    expected = reference_tokens(engine, picture, PROMPT, with_it)
    assert expected != reference_tokens(engine, picture, PROMPT, without), f"{option} changed nothing here"
    assert ours(engine, picture, with_it) == expected
    assert ours(engine, picture, without) == reference_tokens(engine, picture, PROMPT, without)
