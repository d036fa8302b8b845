"""The config file: defaults for every command, written once, overridden by flags.

`config.toml` in `locations.config_dir()` ($BLIP2_CHAT_HOME, else the platform's config folder), e.g.

    model = "Salesforce/blip2-flan-t5-xl"
    device = "cuda:0"
    quantize = "8bit"
    max_new_tokens = 50

Every problem (bad TOML, an unknown key, a wrong type or value) is one `OptionError` naming the
file and the line, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatbot.engine.base import GenerationOptions
from chatbot.engine.precision import QUANTIZE_CHOICES
from chatbot.errors import OptionError
from chatbot.locations import config_dir

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = QUANTIZE_CHOICES
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# key -> accepted Python types; generation keys are checked like their flags.
KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,), "device": (str,), "dtype": (str,), "quantize": (str,),
    "max_new_tokens": (int,), "num_beams": (int,),
    "temperature": (int, float), "top_p": (int, float), "repetition_penalty": (int, float),
    "plain": (bool,),  # `chat` always in the screen-reader mode (chatbot/plain_io.py)
}
GENERATION_KEYS = ("max_new_tokens", "num_beams", "temperature", "top_p", "repetition_penalty")


def config_path() -> Path:
    """Where the config file lives (it need not exist)."""
    return config_dir() / "config.toml"


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The checked settings in the config file; {} when there is none.

    Raises:
        OptionError: the file cannot be read, is not TOML, or holds an unknown key or a bad value.
    """
    path = path or config_path()
    if not path.is_file():
        return {}
    toml = _toml_module(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = toml.loads(text)
    except toml.TOMLDecodeError as error:  # its message ends "(at line N, column M)"
        raise OptionError(f"The config file {path} is not valid TOML: {error}.",
                          "Fix that line, or delete the file to use the defaults.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OptionError(f"The config file {path} cannot be read ({error}).", "Check its permissions.") from None
    for key, value in data.items():
        where = f"In the config file {path}, line {_line_of(text, key)}"
        if key not in KEYS:
            raise OptionError(f"{where}: unknown key '{key}'.", f"Known keys: {', '.join(KEYS)}.")
        if isinstance(value, bool) != (KEYS[key] == (bool,)) or not isinstance(value, KEYS[key]):
            kinds: dict[tuple[type, ...], str] = {(str,): "text in quotes", (bool,): "true or false"}
            kind = kinds.get(KEYS[key], "a number")
            raise OptionError(f"{where}: {key} must be {kind} (got {value!r}).", "")
        _check_value(key, value, where)
    return data


def _check_value(key: str, value: Any, where: str) -> None:
    """Values the run could not use, refused here so the message can name the line."""
    from chatbot.config import check_options  # config imports this module; import at call time

    if key == "dtype" and value not in DTYPES:
        raise OptionError(f"{where}: unknown dtype '{value}'.", f"Use one of: {', '.join(DTYPES)}.")
    if key == "quantize" and value not in QUANTIZE:
        raise OptionError(f"{where}: unknown quantize '{value}'.", f"Use one of: {', '.join(QUANTIZE)}.")
    if key == "device" and not DEVICE_PATTERN.match(value):
        raise OptionError(f"{where}: unknown device '{value}'.", "Use auto, cpu, cuda or cuda:N.")
    if key == "model" and not value.strip():
        raise OptionError(f"{where}: model is empty.", "Name a hub id, an alias or a checkpoint folder.")
    if key in GENERATION_KEYS:
        try:
            check_options(replace(GenerationOptions(), **{key: value}), as_flags=False)
        except OptionError as error:
            raise OptionError(f"{where}: {error.message}", error.hint) from None


def _line_of(text: str, key: str) -> int:
    """The line that sets `key` (1 when it cannot be found, e.g. a quoted key)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return 1


def _toml_module(path: Path) -> Any:
    try:
        import tomllib  # Python 3.11+

        return tomllib
    except ModuleNotFoundError:
        pass
    try:
        import tomli  # the same parser, for Python 3.10

        return tomli
    except ModuleNotFoundError:
        raise OptionError(f"Reading the config file {path} needs Python 3.11 or the tomli package.",
                          "Run `pip install tomli`, or move the file away.") from None
