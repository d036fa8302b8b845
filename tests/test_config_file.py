"""The config file: defaults under the flags, and one clear error naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.cli import build_parser, settings_for
from chatbot.core.config_file import config_path, read_config
from chatbot.core.settings import MODEL_ENV
from chatbot.errors import OptionError
from tests.config_support import NEEDS_TOML, config_home, write_config

pytestmark = NEEDS_TOML


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return config_home(tmp_path, monkeypatch)


def settings(*flags: str):  # type: ignore[no-untyped-def]
    return settings_for(build_parser().parse_args(["ask", "photo.jpg", "hi?", *flags]))


def test_no_file_means_the_defaults(home: Path) -> None:
    assert config_path() == home / "config.toml"
    assert read_config() == {}
    chosen = settings()
    assert (chosen.model, chosen.device, chosen.dtype, chosen.quantize) == (
        "Salesforce/blip2-opt-2.7b", "auto", "auto", "auto")
    assert chosen.options.max_new_tokens == 30


def test_every_key_is_read(home: Path) -> None:
    write_config(home, '# everyday settings\nmodel = "flan-t5-xl"\ndevice = "cuda:1"\ndtype = "bfloat16"\n'
                       'quantize = "8bit"\nmax_new_tokens = 12\nnum_beams = 3\ntemperature = 0.7\ntop_p = 0.8\n'
                       'repetition_penalty = 1.5\n')
    chosen = settings()
    assert (chosen.model, chosen.device, chosen.dtype, chosen.quantize) == ("flan-t5-xl", "cuda:1", "bfloat16", "8bit")
    options = chosen.options
    assert (options.max_new_tokens, options.num_beams, options.temperature, options.top_p,
            options.repetition_penalty) == (12, 3, 0.7, 0.8, 1.5)


def test_flags_and_the_model_variable_beat_the_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home, 'model = "flan-t5-xl"\nquantize = "4bit"\ndevice = "cpu"\nmax_new_tokens = 12\n'
                       'temperature = 1\n')
    chosen = settings("--quantize", "none", "--max-new-tokens", "5", "--model", "opt-6.7b")
    assert (chosen.model, chosen.quantize, chosen.device) == ("opt-6.7b", "none", "cpu")
    assert chosen.options.max_new_tokens == 5 and chosen.options.temperature == 1.0
    monkeypatch.setenv(MODEL_ENV, "opt-2.7b-coco")
    assert settings().model == "opt-2.7b-coco"


@pytest.mark.parametrize(("text", "words"), [
    ('model = "opt-2.7b"\nquantize = 8bit\n', ["not valid TOML", "line 2"]),
    ('model = "opt-2.7b"\n[section\n', ["not valid TOML", "line 2"]),
    ('model = "opt-2.7b"\n\nquantise = "8bit"\n', ["line 3", "unknown key 'quantise'", "quantize"]),
    ('max_new_tokens = "many"\n', ["line 1", "max_new_tokens must be a whole number from 1 to 1024", "'many'"]),
    ('model = 7\n', ["line 1", "model must be text in quotes"]),
    ('temperature = true\n', ["line 1", "temperature must be 0, or a number from 0.01 to 100 (got true)"]),
    ('model = "opt-2.7b"\nmax_new_tokens = [', ["not valid TOML", "(at the end of the file, line 2)"]),
    ('temperature = nan\n', ["line 1", "temperature must be 0, or a number from 0.01 to 100 (got nan)"]),
    ('seed = -1\n', ["line 1", "seed must be a whole number from 0 to 9223372036854775807 (got -1)"]),
    ('plain = "yes"\n', ["line 1", "plain must be true or false (got 'yes')"]),
    ('\nquantize = "3bit"\n', ["line 2", "quantize must be one of: auto, none, int8, 8bit, 4bit (got '3bit')"]),
    ('dtype = "float64"\n', ["line 1", "dtype must be one of: auto, float32, bfloat16, float16 (got 'float64')"]),
    ('device = "gpu"\n', ["line 1", "device must be auto, cpu, cuda or cuda:N (got 'gpu')"]),
    ('model = "  "\n', ["line 1", "model must be a hub id, an alias or a checkpoint folder (got '  ')"]),
    ('top_p = 1.5\n', ["line 1", "top_p must be a number above 0 and at most 1 (got 1.5)"]),
    ('num_beams = 0\n', ["line 1", "num_beams must be a whole number from 1 to 16 (got 0)"]),
    # text from the file is shown with its control characters escaped, never raw
    ('[keys]\n"\\n" = "ctrl+k"\n', ["line 2", "keys has no action '\\n'."]),
    ('device = "gpu\\u001b]0;x\\u0007"\n', ["line 1", "(got 'gpu\\x1b]0;x\\x07')"]),
    ('"mo\\u001bdel" = "x"\n', ["line 1", "unknown key 'mo\\x1bdel'"]),
    ('model = "a"\nmax_new_tokens = 9\nmodel = "b"', ["line 3 sets 'model' again (first set on line 1)"]),
    ('[keys]\nquit = "f2"\n\n[keys]\n', ["not valid TOML"]),
    ('[keys]\nquit = "f2"\nhelp = "f3"\nquit = "f4"\n', ["line 4 sets 'quit' in [keys] again (first set on line 2)"]),
])
def test_bad_files_are_one_error_naming_file_and_line(home: Path, text: str, words: list[str]) -> None:
    path = write_config(home, text)
    with pytest.raises(OptionError) as error:
        settings()
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_byte_order_mark_is_no_error(home: Path) -> None:
    path = write_config(home, 'max_new_tokens = 7\n')
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert settings().options.max_new_tokens == 7


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling link", "link loop"])
def test_a_config_path_that_is_no_file_is_one_error(home: Path, kind: str) -> None:
    import os

    path = write_config(home, "")
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling link":
        path.symlink_to(home / "nowhere.toml")
    else:
        path.symlink_to(path)
    with pytest.raises(OptionError) as error:
        settings()
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert {"folder": "is a folder, not a file", "fifo": "is a named pipe, not a file",
            "dangling link": "is a link to nothing", "link loop": "cannot be read"}[kind] in message
