"""Slash commands shared by every chat front end: parsing, help, and `/set` values. Pure, no I/O."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from chatbot.config import check_options
from chatbot.engine.base import GenerationOptions
from chatbot.errors import OptionError, UserError


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    summary: str


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("image", "/image PATH", "switch to another image (starts a fresh context)"),
    CommandSpec("clear", "/clear", "forget the conversation so far (it stays in the saved session)"),
    CommandSpec("retry", "/retry", "answer the last question again"),
    CommandSpec("undo", "/undo", "drop the last question and answer"),
    CommandSpec("save", "/save", "save the session now (it is also saved after every answer)"),
    CommandSpec("export", "/export md|json [PATH]", "write the chat as Markdown or JSON"),
    CommandSpec("set", "/set KEY VALUE", "change a decoding option; /set alone lists them"),
    CommandSpec("help", "/help", "list the commands"),
    CommandSpec("quit", "/quit", "leave"),
)
_ALIASES = {"exit": "quit", "q": "quit", "?": "help"}

# Options a user may change mid-chat, with the type their value is read as.
SETTABLE: dict[str, type] = {
    "max_new_tokens": int, "num_beams": int, "temperature": float, "top_p": float,
    "repetition_penalty": float, "seed": int,
}


@dataclass(frozen=True)
class Command:
    name: str  # one of COMMANDS' names
    argument: str  # the rest of the line, stripped


def parse_command(line: str) -> Command | None:
    """A Command for a line starting with `/`, None for an ordinary question.

    Raises:
        UserError: an unknown command (the message suggests the nearest known one).
    """
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    word, _, rest = text[1:].partition(" ")
    name = _ALIASES.get(word.lower(), word.lower())
    known = [spec.name for spec in COMMANDS]
    if name not in known:
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"Did you mean /{near[0]}? " if near else ""
        raise UserError(f"Unknown command /{word}.", f"{hint}Type /help for the list.")
    return Command(name, rest.strip())


def help_lines() -> list[str]:
    width = max(len(spec.usage) for spec in COMMANDS)
    return [f"{spec.usage.ljust(width)}  {spec.summary}" for spec in COMMANDS]


def describe_options(options: GenerationOptions) -> str:
    return ", ".join(f"{key}={getattr(options, key)}" for key in SETTABLE)


def apply_setting(options: GenerationOptions, argument: str) -> GenerationOptions:
    """The options with `/set KEY VALUE` applied; bad keys or values raise OptionError."""
    key, _, value = argument.strip().partition(" ")
    key = key.replace("-", "_").lower()
    if key not in SETTABLE:
        raise OptionError(f"/set does not know '{key}'." if key else "/set needs a key and a value.",
                          f"Settable: {', '.join(SETTABLE)}; e.g. /set temperature 0.7.")
    kind = SETTABLE[key]
    value = value.strip()
    try:
        parsed = kind(value)
    except ValueError:
        raise OptionError(f"/set {key} needs {'a whole number' if kind is int else 'a number'}, not '{value}'.",
                          f"e.g. /set {key} {getattr(GenerationOptions(), key) or 1}.") from None
    return check_options(replace(options, **{key: parsed}), as_flags=False)
