"""The config file: defaults for every command, written once, overridden by flags.

`config.toml` in `locations.config_dir()` ($BLIP2_CHAT_HOME, else the platform's config folder), e.g.

    model = "Salesforce/blip2-flan-t5-xl"
    device = "cuda:0"
    quantize = "8bit"
    max_new_tokens = 50

Every problem (bad TOML, an unknown key, a wrong type or value) is one `OptionError` naming the
file and the line, so a typo never silently falls back to a default. With $BLIP2_CHAT_HOME set, a config file in
the platform's folder is not read; `unread_config_note` is the sentence that says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatbot.core.settings import BY_NAME, KeyTableError
from chatbot.errors import OptionError, UserError
from chatbot.file_kinds import LINK_TO_NOTHING, file_kind
from chatbot.locations import HOME_ENV, config_dir, home_dir, platform_config_dir
from chatbot.untrusted import visible

CONFIG_KEYS = tuple(name for name, option in BY_NAME.items() if "config" in option.where)


def config_path() -> Path:
    """Where the config file lives (it need not exist)."""
    return config_dir() / "config.toml"


def unread_config_note() -> str | None:
    """The sentence for a config file in the usual place that is not read because $BLIP2_CHAT_HOME is set and
    that home has none, said when a command starts; None otherwise (no such file, it is the one read, or the home
    has a config file of its own: whoever keeps one there knows which is read, and is not told at every start).

    Someone who set $BLIP2_CHAT_HOME (a portable install, a second setup) and keeps a config file in the usual
    place would otherwise wonder why its settings do nothing. An empty config.toml in the home keeps it quiet.
    """
    try:
        home = home_dir()
        if home is None:
            return None
        usual = platform_config_dir() / "config.toml"
        read = home / "config.toml"
        if not usual.is_file() or read.exists():  # the home's own file (perhaps the usual one itself) is read
            return None
    except (UserError, OSError):  # no home folder, a folder we may not enter: nothing to point at
        return None
    return (f"No config file is read: ${HOME_ENV} is set, so blip2-chat looks for {visible(read)} (there is none), "
            f"not {visible(usual)}. Copy it there, or unset ${HOME_ENV}, to use it (an empty file there ends this "
            "note).")


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
            raise OptionError(f"In the config file {path}, line {_line_of(text, key, error.action)}: "
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


Path_ = tuple[str, ...]  # a key's whole name: ('keys', 'quit') for quit in [keys], or keys.quit = ...


def _set_twice(text: str) -> tuple[str, int, int] | None:
    """The first key set twice in one table: ("'quit' in [keys]", its line, the first line), else None."""
    seen: dict[Path_, int] = {}
    table: Path_ = ()
    for number, path, kind in _statements(text):
        if kind != "key":
            table = path
            if kind == "array":  # each [[name]] starts a new element: its keys may be set again
                seen = {where: line for where, line in seen.items() if where[:len(path)] != path}
            continue
        if path in seen:
            name = ".".join(path[len(table):])
            where = f"'{visible(name)}'" + (f" in [{visible('.'.join(table))}]" if table else "")
            return where, number, seen[path]
        seen[path] = number
    return None


def _line_of(text: str, *path: str) -> int:
    """The line that sets `path` (('keys', 'quit'): quit under [keys], keys.quit or "quit" under [keys]), or
    the first that sets something inside it; else the line of the table or inline table holding it
    (keys = { quit = ... }), else 1."""
    best, depth = 1, 0
    for number, where, _ in _statements(text):
        if where[:len(path)] == path:
            return number
        if where == path[:len(where)] and len(where) > depth:
            best, depth = number, len(where)
    return best


def _statements(text: str) -> Iterator[tuple[int, Path_, str]]:
    """Each line that opens a table or sets a key: (its number, the whole name, "table", "array" or "key").

    Each key and header is read by the TOML parser itself, so quoted ("quit") and dotted (keys.quit) names
    come out as in the parsed file; lines inside a multi-line string name nothing.
    """
    table: Path_ = ()
    closing = ""  # the quotes that end the multi-line string the line is in
    for number, line in enumerate(text.splitlines(), start=1):
        if closing:
            closing = "" if closing in line else closing
            continue
        stripped = line.strip()
        if stripped.startswith("["):
            header = _name_in(stripped)
            if header:
                table = header
                yield number, header, "array" if stripped.startswith("[[") else "table"
            continue
        key, value = _split_setting(stripped)
        name = _name_in(key + " = 0") if key else None
        if name:
            yield number, table + name, "key"
            closing = _opened_string(value)


def _name_in(snippet: str) -> Path_ | None:
    """The name a one-line TOML snippet (`[keys]`, `"quit" = 0`) sets, as the parser reads it; None if none."""
    toml = _toml()
    try:
        node: Any = toml.loads(snippet)
    except toml.TOMLDecodeError:
        return None
    name: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        name.append(key)
    return tuple(name) or None


def _split_setting(line: str) -> tuple[str, str]:
    """`key = value` as (key, value), the key maybe quoted (an = inside quotes is part of it); ('', '') if
    the line sets nothing."""
    quote = ""
    for at, char in enumerate(line):
        if quote:
            if char == quote and not (quote == '"' and line[at - 1] == "\\"):
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char == "=":
            return line[:at], line[at + 1:]
    return "", ""


def _opened_string(value: str) -> str:
    """The three quotes that end a multi-line string `value` opens and leaves open, else ''."""
    value = value.strip()
    first = min((value.find(quote) for quote in "\"'" if quote in value), default=-1)
    if first < 0 or value[first:first + 3] not in ('"""', "'''"):
        return ""
    delimiter = value[first:first + 3]
    return delimiter if delimiter not in value[first + 3:] else ""


def _toml() -> Any:
    """tomllib (Python 3.11+) or tomli, the same parser for 3.10; raises ModuleNotFoundError without either."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        import tomli

        return tomli


def _toml_module(path: Path) -> Any:
    try:
        return _toml()
    except ModuleNotFoundError:
        raise OptionError(f"Reading the config file {path} needs Python 3.11 or the tomli package.",
                          "Run `pip install tomli`, or move the file away.") from None
