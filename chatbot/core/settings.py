"""The settings schema: every option declared once, with its type, default, allowed values and help.

The command-line flags (`chatbot.cli`), the config file (`chatbot.core.config_file`), `/set` and
`/set` alone (`chatbot.core.commands`), a resumed session's saved options and the help texts are
all derived from `OPTIONS`. A value is checked where it enters, by the same rule whichever way
it came, and reaches the engine already checked.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, NamedTuple

from chatbot.engine.base import GenerationOptions
from chatbot.engine.precision import DTYPE_CHOICES, QUANTIZE_CHOICES
from chatbot.engine.registry import DEFAULT_MODEL
from chatbot.errors import OptionError
from chatbot.untrusted import visible

MODEL_ENV = "BLIP2_CHAT_MODEL"
SEED_LIMIT = 2**63  # torch's generators take seeds below this
# Patterns are used with fullmatch and name ASCII digits: `match` with `$` let "cpu\n" through, and `\d` took
# any script's digits (cuda:\u0663).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")
# Numbers as flags, /set and the README spell them: ASCII digits and an optional sign; a number may have a
# decimal point and an exponent (1e3). No underscores (Python's int("1_0")), no other scripts' digits (int("\u0663")).
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)
UNSET = ("none", "off")  # what unsets an optional setting (the seed), as a flag, in the config file or with /set
# The chat app's looks: Textual's built-in themes and our high-contrast one (chatbot/tui/themes.py);
# tests/test_settings_looks.py checks this list against Textual's.
HIGH_CONTRAST_THEME = "blip2-high-contrast"
THEMES = (
    "textual-dark", "textual-light", HIGH_CONTRAST_THEME, "ansi-dark", "ansi-light", "atom-one-dark",
    "atom-one-light", "catppuccin-frappe", "catppuccin-latte", "catppuccin-macchiato", "catppuccin-mocha",
    "dracula", "flexoki", "gruvbox", "monokai", "nord", "rose-pine", "rose-pine-dawn", "rose-pine-moon",
    "solarized-dark", "solarized-light", "tokyo-night",
)
# The chat app's keys that the config file's [keys] table may change: binding id -> (default key, what it does).
KEY_ACTIONS: dict[str, tuple[str, str]] = {
    "stop": ("escape", "stop the answer (or an image still opening)"),
    "open_image": ("ctrl+o", "choose an image in a file browser"),
    "copy_answer": ("ctrl+y", "copy the last answer to the clipboard"),
    "paste": ("ctrl+v", "paste an image from the clipboard (/paste)"),
    "help": ("f1", "help: keys and commands"),
    "quit": ("ctrl+q", "quit (the chat is saved)"),
}


class AppKey(NamedTuple):
    """One of the chat app's own keys, which the [keys] table cannot take."""

    key: str  # as Textual names it
    does: str  # what it does, after the key in a sentence: "ctrl+c stops the answer (or copies the text selected)"
    help: str  # its row in the help ("": none); keys whose rows say the same share one row (Up / Down)


# The chat app's own keys: id -> AppKey. chatbot/tui binds them from here, and its help lists them from here: the
# command palette, Ctrl+C, and the input box's Enter, Tab, Up, Down, PageUp and PageDown (Shift+Tab is Textual's
# own, moving the focus back from the chat to the input box).
APP_KEYS: dict[str, AppKey] = {
    "send": AppKey("enter", "sends the question", "send the question (or the /command)"),
    "complete": AppKey("tab", "completes a command or a file name",
                       "complete a /command's name, or the file or folder after /image or /compare; on a question, "
                       "move to the chat (Enter or Esc there come back)"),
    "interrupt": AppKey("ctrl+c", "stops the answer (or copies the text selected)",
                        "stop the answer too (with text selected in the input: copy it)"),
    "command_palette": AppKey("ctrl+p", "opens the command palette", "command palette: every slash command"),
    "focus_back": AppKey("shift+tab", "moves the focus back", ""),
    "earlier_line": AppKey("up", "brings back an earlier line", "recall earlier lines (of earlier chats too)"),
    "later_line": AppKey("down", "brings back a later line", "recall earlier lines (of earlier chats too)"),
    "page_up": AppKey("pageup", "scrolls the chat up", "scroll the chat"),
    "page_down": AppKey("pagedown", "scrolls the chat down", "scroll the chat"),
}
RESERVED_KEYS: dict[str, str] = {entry.key: entry.does for entry in APP_KEYS.values()}  # key -> what the app does
# Keys that reach the app as another key: a terminal sends Ctrl+H as Backspace's character, Ctrl+I as Tab's,
# Ctrl+M as Enter's and Ctrl+[ as Esc's, so an action bound to one could never fire (or fires on the other key).
# Ctrl+J is not here: it sends the newline character, which Enter does not, and Textual tells it apart.
SAME_AS_OTHER_KEY: dict[str, str] = {
    "ctrl+h": "Backspace", "ctrl+i": "Tab", "ctrl+m": "Enter", "ctrl+left_square_bracket": "Esc",
    # DEL, NUL and the other control characters a Ctrl+digit or Ctrl+punctuation sends (xterm's, tmux's)
    "ctrl+question_mark": "Backspace", "ctrl+8": "Backspace", "ctrl+3": "Esc",
    "ctrl+space": "a NUL character (Ctrl+@)", "ctrl+2": "a NUL character (Ctrl+@)",
    "ctrl+at": "a NUL character (Ctrl+@)", "ctrl+4": "Ctrl+\\", "ctrl+5": "Ctrl+]", "ctrl+6": "Ctrl+^",
    "ctrl+7": "Ctrl+_",
}
KEY_NAME = re.compile(r"[a-z0-9_]+(\+[a-z0-9_]+)*(,[a-z0-9_]+(\+[a-z0-9_]+)*)*")  # ctrl+o, f2, ctrl+shift+x,f3
# What a key may be called, as the chat app's toolkit (Textual) names keys: modifiers, then one key.
KEY_MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
# punctuation, by the names Textual gives the characters (tests/test_settings_looks.py checks them)
KEY_PUNCTUATION = frozenset({
    "ampersand", "apostrophe", "asterisk", "at", "backslash", "circumflex_accent", "colon", "comma",
    "dollar_sign", "equals_sign", "exclamation_mark", "full_stop", "grave_accent", "greater_than_sign",
    "left_curly_bracket", "left_parenthesis", "left_square_bracket", "less_than_sign", "minus", "number_sign",
    "percent_sign", "plus", "question_mark", "quotation_mark", "right_curly_bracket", "right_parenthesis",
    "right_square_bracket", "semicolon", "slash", "tilde", "underscore", "vertical_line",
})
KEY_BASES = frozenset({
    *"abcdefghijklmnopqrstuvwxyz0123456789", *(f"f{n}" for n in range(1, 25)),
    "escape", "enter", "tab", "space", "backspace", "delete", "insert", "home", "end", "pageup", "pagedown",
    "up", "down", "left", "right", *KEY_PUNCTUATION,
})
# Keys the text box the question is typed in keeps for itself (editing, moving, copy and paste): an app
# action bound to one of them would never fire while typing. tests/test_settings_looks.py checks the list
# against the text box's own bindings.
TEXT_BOX_KEYS = frozenset({
    "alt+backspace", "backspace", "ctrl+a", "ctrl+backspace", "ctrl+c", "ctrl+d", "ctrl+e", "ctrl+k", "ctrl+left",
    "ctrl+right", "ctrl+shift+a", "ctrl+shift+left", "ctrl+shift+right", "ctrl+u", "ctrl+v", "ctrl+w", "ctrl+x",
    "delete", "end", "enter", "home", "left", "right", "shift+end", "shift+home", "shift+left", "shift+right",
    "super+backspace", "super+c", "up", "down", "tab", "pageup", "pagedown", "ctrl+pageup", "ctrl+pagedown",
})
Where = Literal["flag", "config", "set"]
EVERYWHERE: frozenset[Where] = frozenset({"flag", "config", "set"})


@dataclass(frozen=True)
class Option:
    """One setting: how it is named, read and checked."""

    name: str  # as in the config file and /set; the flag is --name-with-dashes
    kind: type  # str, int, float or bool
    default: Any
    help: str  # one sentence for --help, /set and the config file's documentation
    where: frozenset[Where] = EVERYWHERE
    choices: tuple[str, ...] = ()
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    low_open: bool = False  # the low bound itself is not allowed (top_p > 0)
    least_above_low: float | None = None  # the low bound or at least this (temperature: 0, or from 0.01)
    example: str = ""
    optional: bool = False  # None is a value ("none" unsets it: the seed)
    check_text: Callable[[str], bool] | None = None  # extra rule for text values
    text_rule: str = ""  # says that rule in words

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        """The values this option takes, in words (for messages and help)."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.text_rule:
            return self.text_rule
        if self.kind is bool:
            return "true or false"
        whole = "a whole number" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            if self.least_above_low is not None:
                return f"{_num(self.low)}, or {whole} from {_num(self.least_above_low)} to {_num(self.high)}"
            if self.low_open:
                return f"{whole} above {_num(self.low)} and at most {_num(self.high)}"
            return f"{whole} from {_num(self.low)} to {_num(self.high)}"
        return whole

    def parse(self, text: str, label: str) -> Any:
        """The value typed as `text` (a flag or /set), checked; OptionError says what is allowed.

        Spaces and tabs around it are dropped; nothing left is refused (`none` or `off` unsets an optional one).
        """
        text = text.strip(" \t")
        if not text:
            unset = ", or none to unset it" if self.optional else ""
            raise OptionError(f"{label} needs a value: {self.allowed()}{unset}.",
                              f"e.g. {self.example}." if self.example else "")
        if self.optional and text.lower() in UNSET:
            return None
        value: Any = text
        if self.kind in (int, float):
            if not (WHOLE_NUMBER if self.kind is int else NUMBER).fullmatch(text):
                raise self._error(label, text)
            value = int(text) if self.kind is int else float(text)
            try:
                return self.check(value, label)
            except OptionError:
                raise self._error(label, value, typed=text) from None  # "(got 5000)", as typed, not 5000.0
        elif self.kind is bool:
            if text.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise self._error(label, text)
            value = text.lower() in ("true", "yes", "on", "1")
        return self.check(value, label)

    def check(self, value: Any, label: str) -> Any:
        """`value` if this option allows it (ints are accepted where numbers are), else OptionError."""
        if self.optional and (value is None or isinstance(value, str) and value.lower() in UNSET):
            return None  # a config file has no None: it says "none", as the flag does
        if self.kind is dict:
            return _check_keys(value, label)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is float and isinstance(value, float) and value == 0:
            value = 0.0  # -0.0 is 0 ("temperature is now -0.0" said a sign that means nothing)
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, self.kind):
            if self.kind is str:  # only a config file can give a number or a boolean here
                raise OptionError(f"{label} must be text in quotes (got {value!r}).",
                                  f"e.g. {label} = \"{self.default}\".")
            raise self._error(label, value)
        number: Any = value
        if isinstance(value, str):
            if not value.strip() or (self.choices and value not in self.choices) or (
                    self.check_text is not None and not self.check_text(value)):
                raise self._error(label, value)
        elif self.kind in (int, float):
            if not math.isfinite(number) or (self.low is not None and (number < self.low or (
                    self.low_open and number == self.low))) or (self.high is not None and number > self.high) or (
                    self.least_above_low is not None and self.low is not None
                    and self.low < number < self.least_above_low):
                raise self._error(label, value)
        return value

    def _error(self, label: str, value: Any, typed: str | None = None) -> OptionError:
        shown = (visible(typed) if typed is not None  # a number as the person typed it
                 else f"'{visible(value)}'" if isinstance(value, str)  # a config's text: no controls
                 else str(value).lower() if isinstance(value, bool) else repr(value))  # true, as TOML spells it
        return OptionError(f"{label} must be {self.allowed()} (got {shown}).", self._hint())

    def _hint(self) -> str:
        if not self.example:
            return ""
        return f"e.g. {self.example}, or none to unset it." if self.optional else f"e.g. {self.example}."


class KeyTableError(OptionError):
    """A problem with one action of the [keys] table (`action`), so the config file can name its line."""

    def __init__(self, message: str, hint: str, action: str) -> None:
        super().__init__(message, hint)
        self.action = action


SPARE_KEYS = ("f2", "f3", "f4", "f5", "f6", "f7", "f8", "ctrl+t", "ctrl+g", "ctrl+b",  # to suggest, when free
              *(f"f{n}" for n in range(9, 25)))
LITERAL_KEYS = {"ctrl+[": "ctrl+left_square_bracket"}  # as people write Esc's other name, which Textual spells out


def _check_keys(value: Any, label: str) -> dict[str, str]:
    """The [keys] table: known actions, each to a key name (or several, comma-separated) that the app can
    see and does not keep for itself, and no key for two actions."""
    if not isinstance(value, dict):
        raise OptionError(f"{label} must be a table of action = \"key\" (got {value!r}).",
                          "e.g. [keys] then open_image = \"ctrl+t\" on its own line.")
    in_use = {one for action, (default, _) in KEY_ACTIONS.items()
              for one in str(value.get(action, default)).split(",")}
    free = ", ".join([key for key in SPARE_KEYS if key not in in_use][:3])  # "" when all are taken
    for action, key in value.items():
        if action not in KEY_ACTIONS:
            raise KeyTableError(f"{label} has no action '{visible(action)}'.", f"Actions: {', '.join(KEY_ACTIONS)}.",
                                action)
        for one in key.split(",") if isinstance(key, str) else ():  # before the name check: ctrl+[ is no name
            same = SAME_AS_OTHER_KEY.get(LITERAL_KEYS.get(one, one))
            if same is not None:
                raise KeyTableError(f"{label}.{action}: most terminals send {one} as {same}, so the app could not "
                                    "tell them apart.", _choose_another(free), action)
        if not isinstance(key, str) or not KEY_NAME.fullmatch(key):
            raise KeyTableError(f"{label}.{action} must be a key name such as ctrl+t or f2 (got {visible(repr(key))}).",
                                "Lower case; several keys separated by commas.", action)
        listed = key.split(",")
        twice = next((one for number, one in enumerate(listed) if one in listed[:number]), None)
        if twice is not None:
            once = ",".join(dict.fromkeys(listed))
            raise KeyTableError(f"{label}.{action}: {twice} is listed twice.",
                                f"List each key once, e.g. {action} = \"{once}\".", action)
        for one in listed:
            _check_one_key(one, action, label, free)
    _check_each_key_has_one_action(value, label, free)
    return dict(value)


def _check_one_key(one: str, action: str, label: str, free: str) -> None:
    """One key of `action`: a name Textual knows, not the app's own, not the input box's, typing no text;
    `free` names keys to suggest instead."""
    choose = _choose_another(free)
    *modifiers, base = one.split("+")
    if base not in KEY_BASES or not set(modifiers) <= KEY_MODIFIERS or len(set(modifiers)) < len(modifiers):
        raise KeyTableError(f"{label}.{action}: '{one}' is not a key name.",
                            "Keys are named like ctrl+t, alt+x, f2, escape or ctrl+shift+comma.", action)
    if modifiers != sorted(modifiers):  # Textual names a key's modifiers in alphabetical order, and matches exactly
        raise KeyTableError(f"{label}.{action}: '{one}' names its modifiers in another order than the app does, so "
                            "it would never match.", f"Write it as {'+'.join([*sorted(modifiers), base])}.", action)
    if one in RESERVED_KEYS:
        raise KeyTableError(f"{label}.{action}: {one} {RESERVED_KEYS[one]}, so the app keeps it.", choose, action)
    if one in TEXT_BOX_KEYS and one not in KEY_ACTIONS[action][0].split(","):
        raise KeyTableError(f"{label}.{action}: {one} is a key of the box you type in, so the app would "
                            "never see it.", choose, action)
    if _types_text(base, modifiers):
        doing = "open the help" if action == "help" else KEY_ACTIONS[action][1]  # help's is a title, no verb
        raise KeyTableError(f"{label}.{action}: {one} types text, so it would {doing} "
                            "while you write a question.",
                            "Add ctrl or alt (ctrl+t, alt+x)" + (f", or choose a free key: {free}." if free else "."),
                            action)


def _choose_another(free: str) -> str:
    return f"Choose another; free now: {free}." if free else "Choose another, such as a function key."


def _check_each_key_has_one_action(value: dict[str, str], label: str, free: str) -> None:
    """No key for two actions, counting the keys left at their defaults."""
    spare = f"; free now: {free}" if free else ""
    taken: dict[str, str] = {}
    for action, (default, _) in KEY_ACTIONS.items():
        for one in value.get(action, default).split(","):
            if one in taken:
                raise KeyTableError(f"{label}: {one} is the key of both {taken[one]} and {action}.",
                                    f"Give each action keys of its own{spare}.",
                                    action if action in value else taken[one])
            taken[one] = action


def _types_text(base: str, modifiers: list[str]) -> bool:
    """Whether a key types a character into the question (a letter, digit, punctuation or space, maybe shifted)."""
    return (len(base) == 1 or base == "space" or base in KEY_PUNCTUATION) and set(modifiers) <= {"shift"}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_DEFAULTS = GenerationOptions()
OPTIONS: tuple[Option, ...] = (
    Option("model", str, DEFAULT_MODEL, "hub id (Salesforce/blip2-opt-2.7b), alias (opt-2.7b) or checkpoint folder",
           where=frozenset({"flag", "config"}), example="flan-t5-xl",
           text_rule="a hub id, an alias or a checkpoint folder"),
    Option("device", str, "auto", "auto, cpu, cuda or cuda:N", where=frozenset({"flag", "config"}),
           check_text=lambda text: bool(DEVICE_PATTERN.fullmatch(text)), text_rule="auto, cpu, cuda or cuda:N",
           example="cuda:0"),
    Option("dtype", str, "auto", "weights' number format; FlanT5 never float16", where=frozenset({"flag", "config"}),
           choices=DTYPE_CHOICES),
    Option("quantize", str, "auto", "int8 (weight-only, fast on GPUs), 8bit or 4bit (bitsandbytes), none, or auto: "
           "the best precision that fits", where=frozenset({"flag", "config"}), choices=QUANTIZE_CHOICES),
    Option("max_new_tokens", int, _DEFAULTS.max_new_tokens, "longest answer in tokens", low=1, high=1024,
           example="50"),
    Option("num_beams", int, _DEFAULTS.num_beams, "beam search width; 1 = greedy", low=1, high=16,
           example="5"),
    # below 0.01 sampling is greedy decoding anyway, and the logits overflow to infinity (1e-300: a crash)
    Option("temperature", float, _DEFAULTS.temperature, "0 decodes deterministically; above 0 samples", low=0,
           high=100, least_above_low=0.01, example="0.7"),
    Option("top_p", float, _DEFAULTS.top_p, "nucleus sampling mass, used when sampling", low=0, high=1,
           low_open=True, example="0.9"),
    Option("repetition_penalty", float, _DEFAULTS.repetition_penalty, "above 1 discourages repeats", low=0.01,
           high=10, example="1.5"),
    Option("seed", int, _DEFAULTS.seed, "fixes the random seed so sampling repeats (none: a new one each time)",
           low=0, high=SEED_LIMIT - 1, optional=True, example="42"),
    Option("plain", bool, False, "`chat` always in the screen-reader mode", where=frozenset({"config"})),
    Option("theme", str, "textual-dark", "the chat app's colours (blip2-high-contrast for low vision)",
           where=frozenset({"config"}), choices=THEMES),
    Option("keys", dict, {}, "the chat app's keys, e.g. open_image = \"ctrl+t\"", where=frozenset({"config"})),
)
BY_NAME = {option.name: option for option in OPTIONS}
GENERATION_KEYS = tuple(f.name for f in fields(GenerationOptions) if f.name in BY_NAME)
SETTABLE = tuple(option.name for option in OPTIONS if "set" in option.where)


@dataclass(frozen=True)
class Settings:
    """The choices a run is made with, every value checked."""

    model: str  # hub id, alias or checkpoint folder
    device: str = "auto"
    dtype: str = "auto"
    options: GenerationOptions = field(default_factory=GenerationOptions)
    json: bool = False  # one JSON object per answer instead of text
    quantize: str = "auto"
    theme: str = "textual-dark"  # the chat app's looks (config file only)
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key (config file [keys] only)
    # where each flag option's value came from, in words for a message: "--device", "$BLIP2_CHAT_MODEL",
    # "the config file's device", "the command's default" or "the default" (see `source_of`)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def source_of(self, name: str) -> str:
        """Where option `name`'s value came from (`sources`), "the default" where nothing is recorded."""
        return self.sources.get(name, DEFAULT_SOURCE)


DEFAULT_SOURCE = "the default"
COMMAND_DEFAULT_SOURCE = "the command's default"


def config_source(name: str) -> str:
    """How a message names a value from the config file: "the config file's device"."""
    return f"the config file's {name}"


def settings_from(
    flags: Mapping[str, Any], file: Mapping[str, Any], *, command_defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None, json: bool = False,
) -> Settings:
    """Settings from typed flags (None: not given), then $BLIP2_CHAT_MODEL for the model, then the config
    file (already checked), then a command's own defaults (describe's longer answers), then the schema's
    defaults: the config file sets the defaults of every command, and only a flag says otherwise.

    Flag values are text as typed; each is checked here by its option, naming the flag. `Settings.sources`
    says where each value came from.
    """
    environ = os.environ if environ is None else environ
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if "flag" not in option.where:
            continue
        typed = flags.get(option.name)
        if typed is not None:
            chosen[option.name] = option.parse(str(typed), option.flag)
            sources[option.name] = option.flag
        elif option.name == "model" and environ.get(MODEL_ENV, "").strip():
            chosen[option.name] = option.check(environ[MODEL_ENV].strip(), f"${MODEL_ENV}")
            sources[option.name] = f"${MODEL_ENV}"
        elif option.name in file:
            chosen[option.name] = file[option.name]
            sources[option.name] = config_source(option.name)
        elif command_defaults and option.name in command_defaults:
            chosen[option.name] = option.check(command_defaults[option.name], option.name)
            sources[option.name] = COMMAND_DEFAULT_SOURCE
        else:
            chosen[option.name] = option.default
            sources[option.name] = DEFAULT_SOURCE
    options = GenerationOptions(**{key: chosen[key] for key in GENERATION_KEYS})
    return Settings(model=model_as_recorded(chosen["model"]), device=chosen["device"], dtype=chosen["dtype"],
                    quantize=chosen["quantize"], options=options, json=json,
                    theme=file.get("theme", BY_NAME["theme"].default), keys=dict(file.get("keys", {})),
                    sources=sources)


def model_as_recorded(name: str) -> str:
    """The model as a chat saves it and --json and the index record it: a checkpoint folder (`./tiny-opt`,
    `~/models/x`) as its absolute path, so that the record names the same folder from any working directory
    (`--continue` from elsewhere); a hub id, an alias or `demo` as given. The loader's rule decides what is a
    folder: an existing directory of that name wins over a hub id or alias
    (chatbot.engine.checkpoint_location.find_locally)."""
    try:
        local = os.path.expanduser(name.strip())
        return os.path.abspath(local) if local and os.path.isdir(local) else name
    except (OSError, ValueError):  # a NUL, a name too long: no folder
        return name


def describe_options(options: GenerationOptions) -> str:
    """`key=value, ...` for every option /set can change."""
    return ", ".join(f"{key}={shown_value(options, key)}" for key in SETTABLE)


def shown_value(options: GenerationOptions, key: str) -> str:
    """An option's value as /set takes it back: `none` where there is none (no fixed seed), not Python's None."""
    value = getattr(options, key)
    return "none" if value is None else str(value)


def apply_setting(options: GenerationOptions, argument: str) -> tuple[GenerationOptions, str]:
    """`/set KEY VALUE` applied to `options`: (the new options, the key); bad keys or values raise OptionError."""
    key, _, value = argument.strip().partition(" ")
    key = key.replace("-", "_").lower()
    if key not in SETTABLE:
        raise OptionError(f"/set does not know '{visible(key)}'." if key else "/set needs a key and a value.",
                          f"Settable: {', '.join(SETTABLE)}; e.g. /set temperature 0.7.")
    return replace(options, **{key: BY_NAME[key].parse(value, key)}), key


def checked_saved_options(saved: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, OptionError]]:
    """A saved session's `/set` options, each checked by the rule `/set` uses: the allowed ones (checked
    values) and the refused ones with why."""
    kept: dict[str, Any] = {}
    refused: dict[str, OptionError] = {}
    for key in SETTABLE:
        if key not in saved:
            continue
        try:
            kept[key] = BY_NAME[key].check(saved[key], key)
        except OptionError as error:
            refused[key] = error
    return kept, refused


def saved_options(saved: Mapping[str, Any], fallback: GenerationOptions) -> GenerationOptions:
    """The options a resumed session was using (its `/set` changes) over `fallback`; a refused one keeps
    the fallback's value."""
    return replace(fallback, **checked_saved_options(saved)[0])
