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

import os
import re
from pathlib import Path
from typing import Any

from chatbot.core.settings import BY_NAME, KeyTableError
from chatbot.errors import OptionError
from chatbot.file_kinds import LINK_TO_NOTHING, file_kind
from chatbot.locations import config_dir
from chatbot.untrusted import visible

CONFIG_KEYS = tuple(name for name, option in BY_NAME.items() if "config" in option.where)


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
        _refuse_what_is_no_file(path)
        return {}
    toml = _toml_module(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (some Windows editors add one) is no error
        data = toml.loads(text)
    except toml.TOMLDecodeError as error:  # its message ends "(at line N, column M)"
        twice = _set_twice(text)
        reason = f"line {twice[1]} sets {twice[0]} again (first set on line {twice[2]})" if twice else str(error)
        last = len(text.splitlines()) or 1  # tomllib names no line for a file that ends too soon
        reason = reason.replace("(at end of document)", f"(at the end of the file, line {last})")
        raise OptionError(f"The config file {path} is not valid TOML: {reason}.",
                          "Fix that line, or delete the file to use the defaults.") from None
    except UnicodeDecodeError:
        raise OptionError(f"The config file {path} is not UTF-8 text.",
                          "Save it as UTF-8, or delete it to use the defaults.") from None
    except OSError as error:
        raise OptionError(f"The config file {path} cannot be read ({error.strerror or error}).",
                          "Check its permissions.") from None
    checked: dict[str, Any] = {}
    for key, value in data.items():
        where = f"In the config file {path}, line {_line_of(text, key)}"
        if key not in CONFIG_KEYS:
            raise OptionError(f"{where}: unknown key '{visible(key)}'.", f"Known keys: {', '.join(CONFIG_KEYS)}.")
        try:
            checked[key] = BY_NAME[key].check(value, key)
        except KeyTableError as error:  # the line of the action in the table
            raise OptionError(f"In the config file {path}, line {_line_of(text, error.action, table=key)}: "
                              f"{error.message}", error.hint) from None
        except OptionError as error:
            raise OptionError(f"{where}: {error.message}", error.hint) from None
    return checked


def _refuse_what_is_no_file(path: Path) -> None:
    """Nothing at `path` is fine (no config file); a folder, a named pipe or a broken link there is a mistake."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise OptionError(f"The config file {path} is {LINK_TO_NOTHING}.",
                              "Point it at a file, or remove it to use the defaults.") from None
        return
    except OSError as error:  # a loop of links, a folder we may not enter
        raise OptionError(f"The config file {path} cannot be read ({error.strerror or error}).",
                          "Fix it, or move it away to use the defaults.") from None
    raise OptionError(f"The config file {path} is {file_kind(mode)}, not a file, so it was not read.",
                      "Move it away to use the defaults, or put a config.toml file there.")


_TABLE_HEADER = re.compile(r"\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")  # [keys]
_SETTING = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")  # quit = ...


def _set_twice(text: str) -> tuple[str, int, int] | None:
    """The first key set twice in one table: ('quit' in [keys], its line, the first line), else None."""
    table, seen = "", dict[tuple[str, str], int]()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_HEADER.match(line)
        if header:
            table = header.group(1)
            continue
        key = _SETTING.match(line)
        if key:
            name = (table, key.group(1))
            if name in seen:
                where = f"'{visible(key.group(1))}'" + (f" in [{visible(table)}]" if table else "")
                return where, number, seen[name]
            seen[name] = number
    return None


def _line_of(text: str, key: str, table: str = "") -> int:
    """The line that sets `key`: at the top (`key = ...` or the header `[key]`) or, given `table`, inside
    that table; else the table's own line, or 1 (a quoted key, an inline table's entry)."""
    current, fallback = "", 1
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_HEADER.match(line)
        if header:
            current = header.group(1)
            if current == (table or key):
                if not table:
                    return number
                fallback = number
            continue
        setting = _SETTING.match(line)
        if setting and current == table and setting.group(1) == key:
            return number
        if setting and table and not current and setting.group(1) == table:  # keys = { ... } on one line
            fallback = number
    return fallback


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
