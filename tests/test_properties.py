"""Properties over open-ended inputs, checked with hypothesis on a fixed example budget (CI stays quick).

The budget fitter (prompts/budget.py) against a brute-force reference, and the config file reader on
arbitrary TOML. Session files and image bytes have their own properties next to their other tests.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.core.config_file import read_config
from chatbot.core.settings import BY_NAME
from chatbot.errors import OptionError
from prompts import FlanT5Chat, OptChat, PromptTooLong, fit_prompt

words = st.text(alphabet=string.ascii_lowercase + " ?.", min_size=0, max_size=30)
turns = st.lists(st.tuples(words, words), max_size=12)


def count_words(text: str) -> int:
    return len(text.split())


@settings(max_examples=300, deadline=None)
@given(history=turns, question=words.filter(lambda q: q.strip()), budget=st.integers(min_value=0, max_value=120),
       opt=st.booleans())
def test_the_budget_fitter_keeps_the_question_fits_and_drops_oldest_first(history, question, budget, opt) -> None:
    style = OptChat() if opt else FlanT5Chat()
    # the reference: try dropping 0, 1, 2, ... oldest turns and take the first prompt that fits
    fitting = [d for d in range(len(history) + 1) if count_words(style.build(history[d:], question)) <= budget]
    try:
        fitted = fit_prompt(style, history, question, count_words, budget)
    except PromptTooLong as error:
        assert not fitting  # only when not even the question alone fits
        assert error.question_tokens == count_words(style.build([], question)) > budget
        return
    assert fitted.dropped_turns == fitting[0]  # as few turns left out as possible, the oldest ones
    assert fitted.text == style.build(history[fitted.dropped_turns:], question)  # the newest turns, in order
    assert fitted.prompt_tokens == count_words(fitted.text) <= budget  # it fits
    assert fitted.text.endswith(style.build([], question))  # the current question is never dropped


toml_values = st.recursive(
    st.none().map(lambda _: 0) | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def toml_literal(value: object) -> str:
    """A TOML literal for `value` (inline tables and arrays for nested ones)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else "-inf" if value == float("-inf")
                                             else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_literal(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"


keys = st.sampled_from([*BY_NAME, "quantise", "colour"]) | st.text(alphabet=string.ascii_letters + "_-", min_size=1,
                                                                   max_size=12)
documents = st.dictionaries(keys, toml_values, max_size=5).map(
    lambda table: "".join(f"{key} = {toml_literal(value)}\n" for key, value in table.items()))
raw_text = st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=documents | raw_text)
def test_the_config_reader_on_any_text_raises_only_its_own_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        values = read_config(path)
    except OptionError as error:
        assert str(path) in error.message and "\n" not in str(error)
        return
    for key, value in values.items():  # whatever it accepted, the schema accepts too, unchanged
        assert BY_NAME[key].check(value, key) == value


def test_a_config_file_that_is_not_utf8_is_said_so(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'model = "caf\xe9"\n')
    with pytest.raises(OptionError) as error:
        read_config(path)
    assert str(error.value) == (f"The config file {path} is not UTF-8 text. Save it as UTF-8, or delete it to use "
                                "the defaults.")
