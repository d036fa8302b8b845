"""Tab completion for a typed line, for every chat front end: command names, and paths after `/image `
and `/compare `.

`completion(line)` says what Tab does to `line`: the candidates (each a whole line, and a short label
to list) and the line to show, which is the one candidate or else what all of them begin with.
The chat app calls it from its input box, the screen-reader mode from readline's completer; neither
decides anything about completing.

The rules:
- `/im` completes to `/image ` (the names in `COMMANDS`; a space follows when the command takes
  something after it).
- After a command whose argument is a path (its usage is `/name PATH`: `/image`
  and `/compare`), the last
  word is a file or folder name. Folders complete with a trailing `/`; only folders and image files
  (`IMAGE_SUFFIXES`) are offered; hidden entries only when the typed name starts with `.`.
- `~` is expanded to find the folder but stays in the completed text.
- When a candidate has a space (or starts with a quote, or the person opened one), every candidate is put in
  double quotes, with `\\` and `"` escaped, so the command parser (`commands._unquoted`) reads the
  same path back. A completed file closes its quote; a folder leaves it open to go on typing.
- A name with a control character is never offered (it would land on screen as it is), and a folder
  that cannot be listed offers nothing: completing never raises.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.core.commands import ALIASES, COMMANDS, is_command
from chatbot.images import IMAGE_SUFFIXES
from chatbot.untrusted import has_controls

# Commands whose whole argument is one path, read from the table: `/image PATH`, `/compare PATH`. (`/export md|html|json
# [PATH]` writes a file of any kind after a format word, so its path is not completed.)
PATH_COMMANDS = frozenset(spec.name for spec in COMMANDS if spec.usage.split()[1:] == ["PATH"])
MAX_CANDIDATES = 1000  # a huge folder offers its first names (sorted)
LISTED = 16  # how many candidates a list names before "and N more" (every command fits)
_QUOTES = "\"'"


@dataclass(frozen=True)
class Candidate:
    """One way to complete a line."""

    line: str  # the whole line once this candidate is chosen
    label: str  # what a list of candidates shows: `/image`, `Pictures/`, `my photo.jpg`


@dataclass(frozen=True)
class Completion:
    """What Tab does to a line."""

    line: str  # the line to show: the one candidate, or what all candidates begin with (the typed line if none)
    candidates: tuple[Candidate, ...] = field(default=())

    @property
    def unique(self) -> bool:
        return len(self.candidates) == 1


def completable(line: str) -> bool:
    """True when Tab on `line` means completing: a command name being typed, or a path command's argument."""
    return _split(line) is not None


def complete_line(line: str, cwd: Path | None = None) -> list[str]:
    """The whole lines that `line` may complete to, sorted; [] when nothing matches or it is not completable."""
    return [candidate.line for candidate in completion(line, cwd).candidates]


def completion(line: str, cwd: Path | None = None) -> Completion:
    """What Tab does to `line`; relative paths are read from `cwd` (default: the current folder)."""
    split = _split(line)
    if split is None:
        return Completion(line)
    head, argument = split
    if argument is None:
        candidates = _command_candidates(line)
    else:
        candidates = _path_candidates(head, argument, cwd)
    if not candidates:
        return Completion(line)
    shown = candidates[0].line if len(candidates) == 1 else os.path.commonprefix([c.line for c in candidates])
    return Completion(shown if len(shown) >= len(line) else line, tuple(candidates))  # a closed quote: kept


def listing(candidates: tuple[Candidate, ...] | list[Candidate], limit: int = LISTED) -> str:
    """The candidates' labels for a person to read, at most `limit` then "and N more".

    Labels are file names from outside: a front end passes this through `untrusted.visible`.
    """
    labels = [candidate.label for candidate in candidates]
    more = len(labels) - limit
    return ", ".join(labels[:limit]) + (f", and {more} more: type more of the name to narrow them" if more > 0 else "")


def _split(line: str) -> tuple[str, str | None] | None:
    """(head, argument) for a path command's line, (head, None) while the command name is typed, else None.

    `head` is the line up to where the argument starts, as typed.
    """
    if "\n" in line or not is_command(line) or line != line.lstrip():
        return None
    word, space, rest = line[1:].partition(" ")
    if not space:
        return line, None
    if ALIASES.get(word.lower(), word.lower()) not in PATH_COMMANDS:
        return None
    argument = rest.lstrip()
    return line[: len(line) - len(argument)], argument


def _command_candidates(line: str) -> list[Candidate]:
    typed = line[1:].lower()
    return [Candidate(f"/{spec.name}" + (" " if spec.argument != "none" else ""), f"/{spec.name}")
            for spec in sorted(COMMANDS, key=lambda spec: spec.name) if spec.name.startswith(typed)]


def _path_candidates(head: str, argument: str, cwd: Path | None) -> list[Candidate]:
    typed = _typed_path(argument)
    if typed is None:
        return []
    quote_opened = argument[:1] != "" and argument[0] in _QUOTES
    if typed == "~":
        raws = [("~/", "~/", True)] if os.path.isdir(os.path.expanduser("~")) else []
    else:
        folder, _, prefix = typed.rpartition("/")
        folder = folder + "/" if "/" in typed else ""
        raws = [(folder + name + ("/" if is_dir else ""), name + ("/" if is_dir else ""), is_dir)
                for name, is_dir in _entries(folder, prefix, cwd)]
    quoted = quote_opened or any(_needs_quotes(raw) for raw, _, _ in raws)
    return [Candidate(head + (_quoted(raw, closed=not is_dir) if quoted else raw), label)
            for raw, label, is_dir in raws]


def _typed_path(argument: str) -> str | None:
    """The path the argument spells so far (quotes and their escapes undone), or None when it spells none.

    A closed quote (`"my photo.jpg"`) is completed inside; text after a closing quote is not one path.
    """
    if not argument or argument[0] not in _QUOTES:
        return argument
    quote, inner = argument[0], argument[1:]
    if quote == "'":  # shlex: nothing escapes inside single quotes
        inner = inner[:-1] if inner.endswith("'") else inner
        return None if "'" in inner else inner
    text: list[str] = []
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner) and inner[index + 1] in '"\\':
            text.append(inner[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(text) if index == len(inner) - 1 else None
        text.append(char)
        index += 1
    return "".join(text)


def _entries(folder: str, prefix: str, cwd: Path | None) -> list[tuple[str, bool]]:
    """(name, is a folder) for the folders and image files in `folder` whose name starts with `prefix`."""
    try:
        where = Path(os.path.expanduser(folder or "."))
        if not where.is_absolute():
            where = (cwd if cwd is not None else Path.cwd()) / where
        found: list[tuple[str, bool]] = []
        with os.scandir(where) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
                    continue
                if not _showable(name):
                    continue
                kind = _kind(entry)
                if kind is not None:
                    found.append((name, kind == "folder"))
    except (OSError, ValueError):  # cannot be listed (or a name the file system refuses): nothing to offer
        return []
    found.sort(key=lambda item: (_natural(item[0]), item[0]))  # copy2 before copy10, as a person counts
    return found[:MAX_CANDIDATES]


def _natural(name: str) -> list[tuple[int, int | str]]:
    """A sort key that reads runs of digits as numbers and ignores case: `copy2` before `copy10`."""
    return [(0, int(part)) if part.isdigit() else (1, part.casefold()) for part in re.split(r"(\d+)", name) if part]


def _kind(entry: os.DirEntry[str]) -> str | None:
    try:
        if entry.is_dir():  # follows a symlink
            return "folder"
        if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
            return "image"
    except OSError:
        pass
    return None


def _showable(name: str) -> bool:
    """False for a name with a control character, or bytes that are not text (it would reach the screen raw)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return not has_controls(name)


def _needs_quotes(raw: str) -> bool:
    """True when the parser would not read `raw` back as it is: spaces (it strips the ends), or a leading quote."""
    return any(char.isspace() for char in raw) or (raw != "" and raw[0] in _QUOTES)


def _quoted(raw: str, *, closed: bool) -> str:
    """`raw` in double quotes as `commands._unquoted` reads it back (shlex rules: `\\` escapes `"` and `\\`)."""
    body = raw.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"' if closed else f'"{body}'
