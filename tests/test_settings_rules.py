"""One rule per option, whichever way a value comes in (a flag, the config file, /set, a resumed session):
the order flag > config file > a command's own default > the schema's, numbers as the README spells them,
patterns matched whole, where each value came from, and the flags each command takes."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.cli import build_parser, main, settings_for
from chatbot.core.config_file import read_config
from chatbot.core.settings import (
    BY_NAME,
    MODEL_ENV,
    OPTIONS,
    SETTABLE,
    GenerationOptions,
    apply_setting,
    checked_saved_options,
    shown_value,
)
from chatbot.errors import OptionError
from tests.config_support import NEEDS_TOML, config_home, write_config

pytestmark = NEEDS_TOML
NUMBERS = [option for option in OPTIONS if option.kind in (int, float)]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return config_home(tmp_path, monkeypatch)


def parsed(*argv: str):  # type: ignore[no-untyped-def]
    return settings_for(build_parser().parse_args(list(argv)))


def refused(call, *args: object) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(OptionError) as error:
        call(*args)
    return str(error.value)


# --- the order: flag > config file > the command's own default > the schema's ---------------------------------

def test_the_config_file_is_describes_default_too(home: Path) -> None:
    """The probe: `model = "demo"` and `max_new_tokens = 1` in the config, and describe wrote a whole sentence
    (its own defaults ranked above the file); caption obeyed."""
    assert (parsed("describe", "imgs").options.max_new_tokens,
            parsed("describe", "imgs").options.repetition_penalty) == (30, 1.5)  # describe's own, with no file
    write_config(home, 'model = "demo"\nmax_new_tokens = 1\nrepetition_penalty = 1.2\n')
    for command in (["describe", "imgs"], ["caption", "imgs"], ["ask", "imgs", "hi?"]):
        options = parsed(*command).options
        assert (options.max_new_tokens, options.repetition_penalty) == (1, 1.2), command
    flagged = parsed("describe", "imgs", "--max-new-tokens", "7", "--repetition-penalty", "2").options
    assert (flagged.max_new_tokens, flagged.repetition_penalty) == (7, 2.0)
    write_config(home, 'max_new_tokens = 1\n')  # the file says one, describe's own default is the other
    options = parsed("describe", "imgs").options
    assert (options.max_new_tokens, options.repetition_penalty) == (1, 1.5)


def test_each_value_says_where_it_came_from(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home, 'device = "cuda:7"\nseed = 3\n')
    chosen = parsed("describe", "imgs", "--num-beams", "2")
    assert chosen.device == "cuda:7" and chosen.sources["device"] == "the config file's device"
    assert chosen.source_of("num_beams") == "--num-beams" and chosen.source_of("seed") == "the config file's seed"
    assert chosen.source_of("repetition_penalty") == "the command's default"
    assert chosen.source_of("model") == chosen.source_of("top_p") == "the default"
    monkeypatch.setenv(MODEL_ENV, "opt-2.7b-coco")
    assert parsed("ask", "x.jpg", "hi?").source_of("model") == "$BLIP2_CHAT_MODEL"
    assert parsed("ask", "x.jpg", "hi?", "--model", "demo").source_of("model") == "--model"
    assert replace(chosen, sources={}) == chosen  # where a value came from is no part of what it is


def test_models_takes_the_config_files_device(home: Path) -> None:
    write_config(home, 'device = "cpu"\n')
    assert parsed("models").device == "cpu" and parsed("models", "--device", "auto").device == "auto"
    assert refused(parsed, "models", "--device", "gpu") == (
        "--device must be auto, cpu, cuda or cuda:N (got 'gpu'). e.g. cuda:0.")


# --- patterns match the whole value, in ASCII ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ('device = "cpu\\n"\n', "line 1: device must be auto, cpu, cuda or cuda:N (got 'cpu\\n'). e.g. cuda:0."),
    ('device = "cuda:\u0663"\n', "line 1: device must be auto, cpu, cuda or cuda:N (got 'cuda:\u0663')."),
    ('[keys]\nhelp = "f2\\n"\n', "line 2: keys.help must be a key name such as ctrl+t or f2 (got 'f2\\n')."),
    ('[keys]\nhelp = "f2,f2"\n', 'line 2: keys.help: f2 is listed twice. List each key once, e.g. help = "f2".'),
    ('\n[keys]\nquit = "f10,ctrl+q,f10"\n', "line 3: keys.quit: f10 is listed twice."),
    ('seed = ""\n', "line 1: seed must be a whole number from 0 to 9223372036854775807 (got ''). "
                    "e.g. 42, or none to unset it."),
])
def test_the_config_file_refuses_what_only_looked_right(home: Path, text: str, message: str) -> None:
    said = refused(read_config, write_config(home, text))
    assert message in said and "\n" not in said, said


def test_every_pattern_is_matched_whole() -> None:
    """Each pattern in the schema, given a valid value with a newline after it, refuses it."""
    import chatbot.core.settings as schema

    patterns = {name: value for name, value in vars(schema).items() if isinstance(value, type(schema.KEY_NAME))}
    assert {"DEVICE_PATTERN", "KEY_NAME", "WHOLE_NUMBER", "NUMBER"} <= set(patterns)
    for name, good in {"DEVICE_PATTERN": "cpu", "KEY_NAME": "f2", "WHOLE_NUMBER": "3", "NUMBER": "0.5"}.items():
        assert patterns[name].fullmatch(good) and not patterns[name].fullmatch(good + "\n"), name
    assert refused(BY_NAME["device"].parse, "cuda:\u0663", "--device") == (
        "--device must be auto, cpu, cuda or cuda:N (got 'cuda:\u0663'). e.g. cuda:0.")


# --- numbers as the README spells them ------------------------------------------------------------------------

@pytest.mark.parametrize(("argument", "message"), [
    ("max_new_tokens 1_000", "max_new_tokens must be a whole number from 1 to 1024 (got '1_000')."),
    ("top_p \u0663", "top_p must be a number above 0 and at most 1 (got '\u0663')."),
    ("num_beams \uff13", "num_beams must be a whole number from 1 to 16 (got '\uff13')."),  # a full-width 3
    ("temperature 0_5", "temperature must be 0, or a number from 0.01 to 100 (got '0_5')."),
    ("max_new_tokens 1e1", "max_new_tokens must be a whole number from 1 to 1024 (got '1e1')."),
    ("seed", "seed needs a value: a whole number from 0 to 9223372036854775807, or none to unset it."),
    ("seed  ", "seed needs a value: a whole number from 0 to 9223372036854775807, or none to unset it."),
    ("max_new_tokens", "max_new_tokens needs a value: a whole number from 1 to 1024."),
    ("seed nothing", "seed must be a whole number from 0 to 9223372036854775807 (got 'nothing')."),
])
def test_set_refuses_what_the_readme_does_not_allow(argument: str, message: str) -> None:
    with pytest.raises(OptionError) as error:
        apply_setting(GenerationOptions(seed=5), argument)
    assert error.value.message == message


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-new-tokens", "1_0"], "--max-new-tokens must be a whole number from 1 to 1024 (got '1_0'). e.g. 50."),
    (["--top-p", "\u0663"], "--top-p must be a number above 0 and at most 1 (got '\u0663'). e.g. 0.9."),
    (["--seed", ""], "--seed needs a value: a whole number from 0 to 9223372036854775807, or none to unset it. "
                     "e.g. 42."),
    (["--temperature", ""], "--temperature needs a value: 0, or a number from 0.01 to 100. e.g. 0.7."),
    (["--device", "cpu\n"], "--device must be auto, cpu, cuda or cuda:N (got 'cpu\\n'). e.g. cuda:0."),
])
def test_flags_refuse_the_same(home: Path, flags: list[str], message: str) -> None:
    assert refused(parsed, "ask", "x.jpg", "hi?", *flags) == message


def test_what_numbers_are_read(home: Path) -> None:
    options = GenerationOptions(seed=5)
    for argument, key, value, shown in [
        ("temperature -0", "temperature", 0.0, "0.0"), ("temperature -0.0e5", "temperature", 0.0, "0.0"),
        ("temperature 1e-1", "temperature", 0.1, "0.1"), ("top_p .5", "top_p", 0.5, "0.5"),
        ("repetition_penalty +2.", "repetition_penalty", 2.0, "2.0"),
        ("max_new_tokens +12", "max_new_tokens", 12, "12"),
        ("seed none", "seed", None, "none"), ("seed OFF", "seed", None, "none"), ("seed 007", "seed", 7, "7"),
    ]:
        changed, _ = apply_setting(options, argument)
        assert getattr(changed, key) == value and shown_value(changed, key) == shown, argument
        assert math.copysign(1, changed.temperature) == 1  # never -0.0
    write_config(home, 'seed = "none"\ntemperature = -0.0\n')
    assert read_config() == {"seed": None, "temperature": 0.0}
    assert parsed("ask", "x.jpg", "hi?").options.seed is None
    write_config(home, 'seed = "off"\n')
    assert parsed("ask", "x.jpg", "hi?").options.seed is None
    assert parsed("ask", "x.jpg", "hi?", "--seed", "4").options.seed == 4
    assert checked_saved_options({"seed": "none", "temperature": -0.0}) == ({"seed": None, "temperature": 0.0}, {})


# The same value typed (a flag, /set) and written in the config file: the same answer, or the same refusal.
# hypothesis: any text at all for every number option, with a fixed budget.

@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(NUMBERS), st.text(alphabet=st.sampled_from("0123456789+-._eE \u0663\uff13\u00b2nif"),
                                         max_size=8) | st.text(max_size=6))
def test_accepted_number_text_is_plain_ascii(option, text: str) -> None:  # type: ignore[no-untyped-def]
    try:
        value = option.parse(text, option.name)
    except OptionError as error:
        assert "\n" not in error.message and error.message.startswith(option.name)
        return
    typed = text.strip(" \t")
    if value is None:
        assert option.optional and typed.lower() in ("none", "off")
        return
    assert typed.isascii() and "_" not in typed and typed
    assert value == (int(typed) if option.kind is int else float(typed)) and math.copysign(1, value) == 1
    assert option.check(value, option.name) == value  # as the config file and a saved session give it


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(NUMBERS), st.integers(-10, 2**64) | st.floats(allow_nan=True, allow_infinity=True))
def test_typed_and_written_numbers_agree(option, number) -> None:  # type: ignore[no-untyped-def]
    """A number typed as Python writes it (`repr`) and the same number in the config file: one rule."""
    if option.kind is int and isinstance(number, float):
        number = int(number) if math.isfinite(number) and number.is_integer() else number
        if isinstance(number, float):
            return  # a float where a whole number belongs: TOML would say 1.5, the flag '1.5'; both refused
    typed: object
    try:
        typed = option.parse(repr(number), option.name)
    except OptionError as error:
        typed = error.message.split(" (got")[0]
    written: object
    try:
        written = option.check(number, option.name)
    except OptionError as error:
        written = error.message.split(" (got")[0]
    assert typed == written


def test_every_settable_option_refuses_an_empty_value() -> None:
    for key in SETTABLE:
        with pytest.raises(OptionError) as error:
            apply_setting(GenerationOptions(), f"{key} ")
        assert error.value.message.startswith(f"{key} needs a value: {BY_NAME[key].allowed()}")


# --- each command takes the flags it uses -----------------------------------------------------------------

DECODING = ["--max-new-tokens", "1", "--num-beams", "2", "--temperature", "5", "--top-p", "0.5",
            "--repetition-penalty", "1.5", "--seed", "3"]


@pytest.mark.parametrize("command", [["index", "imgs"], ["search", "a", "dog"]])
def test_index_and_search_refuse_decoding_flags(command: list[str], home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in zip(DECODING[::2], DECODING[1::2], strict=True):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--model", "demo", flag, value])
        assert stop.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"blip2-chat: error: unrecognized arguments: {flag} {value} ({flag} goes with ask, caption, chat, "
            "describe or demo, not with this command)")
    with pytest.raises(SystemExit):  # a mistyped flag still gets its suggestion
        main([*command, "--quantise", "none"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: error: unrecognized arguments: --quantise none (did you mean --quantize?)")
    chosen = parsed(*command, "--device", "cpu", "--dtype", "float32", "--quantize", "none", "--model", "demo")
    assert (chosen.device, chosen.dtype, chosen.quantize, chosen.model) == ("cpu", "float32", "none", "demo")


def test_each_commands_help_names_only_its_flags() -> None:
    from chatbot.cli import _subcommands

    commands = _subcommands(build_parser())
    helps = {name: " ".join(parser.format_help().split()) for name, parser in commands.items()}
    for name in ("index", "search"):
        assert not any(flag in helps[name] for flag in DECODING[::2]), name
        assert "FlanT5" not in helps[name] and "the retrieval model's number format" in helps[name]
        assert all(flag in helps[name] for flag in ("--model", "--device", "--dtype", "--quantize")), name
    for name in ("ask", "caption", "chat", "describe", "demo"):
        assert all(flag in helps[name] for flag in DECODING[::2]), name
    assert "above 1 discourages repeats (default: 1.5)" in helps["describe"]  # describe's own default
    assert "above 1 discourages repeats (default: 1.0)" in helps["ask"]
    assert "(default: the config file's device, else auto)" in helps["models"]
    assert "--model" not in helps["models"] and "--device" not in helps["sessions"]


@pytest.mark.parametrize("typed", ["5000", "5e3", "1e400", "-0.5"])
def test_a_number_out_of_range_is_echoed_as_it_was_typed(typed: str) -> None:
    from chatbot.core.settings import BY_NAME

    with pytest.raises(OptionError) as error:
        BY_NAME["temperature"].parse(typed, "temperature")
    assert error.value.message.endswith(f"(got {typed}).")


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_torch_threads_sleep_while_they_wait_unless_the_user_chose(given, monkeypatch, tmp_path) -> None:
    """Before any command can load torch, its OpenMP threads are told to wait passively (a spinning wait takes
    the core from the work when anything else runs); a value the user set is kept."""
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path))
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    assert main(["sessions"]) == 0
    import os

    assert os.environ["OMP_WAIT_POLICY"] == (given or "PASSIVE")
