"""The config file's [keys] table refuses keys that could never fire (a terminal sends Ctrl+H as Backspace)
and keys the app keeps for itself (Ctrl+P, the command palette), each in one sentence with a free key to
choose instead; every refusal names the line of the key itself, however the key is written."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.cli import build_parser
from chatbot.core.config_file import read_config
from chatbot.core.settings import (
    BY_NAME,
    KEY_ACTIONS,
    KEY_BASES,
    RESERVED_KEYS,
    TEXT_BOX_KEYS,
    GenerationOptions,
    apply_setting,
)
from chatbot.errors import OptionError
from tests.config_support import NEEDS_TOML

pytestmark = NEEDS_TOML

# Written out here, not taken from the code under test: what each key is to a terminal or to the app.
SENT_AS = {"ctrl+h": "Backspace", "ctrl+i": "Tab", "ctrl+m": "Enter", "ctrl+left_square_bracket": "Esc",
           "ctrl+[": "Esc"}
APPS_OWN = {"ctrl+p": "opens the command palette", "ctrl+c": "stops the answer (or copies the text selected)",
            "enter": "sends the question", "tab": "completes a command or a file name",
            "shift+tab": "moves the focus back", "up": "brings back an earlier line",
            "down": "brings back a later line", "pageup": "scrolls the chat up",
            "pagedown": "scrolls the chat down"}
DEFAULTS = {"stop": "escape", "open_image": "ctrl+o", "copy_answer": "ctrl+y", "paste": "ctrl+v", "help": "f1",
            "quit": "ctrl+q"}


def refusal(text: str, valid_toml: bool = True) -> str:
    """What reading a config file of `text` says after its name (it must refuse it, in one line)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(OptionError) as error:
            read_config(path)
        said = str(error.value)
        start = f"In the config file {path}, " if valid_toml else f"The config file {path} is not valid TOML: "
        assert said.startswith(start) and "\n" not in said, said
        return said[len(start):]


# --- keys that never fire, and the app's own -------------------------------------------------------------------

@pytest.mark.parametrize(("action", "key"), [
    ("stop", "ctrl+h"), ("copy_answer", "ctrl+m"), ("open_image", "ctrl+i"), ("help", "ctrl+left_square_bracket"),
    ("quit", "ctrl+["),
])
def test_a_key_a_terminal_sends_as_another_is_refused(action: str, key: str) -> None:
    said = refusal(f'# mine\n\n[keys]\n{action} = "f2,{key}"\n')
    assert said == (f"line 4: keys.{action}: most terminals send {key} as {SENT_AS[key]}, so the app could not tell "
                    "them apart. Choose another; free now: f3, f4, f5.")


def test_ctrl_j_is_a_key_of_its_own() -> None:
    """Ctrl+J sends the newline character, which Enter does not send: Textual names it ctrl+j, so it can fire."""
    from textual._ansi_sequences import ANSI_SEQUENCES_KEYS

    assert ANSI_SEQUENCES_KEYS["\n"] == ("ctrl+j",) and ANSI_SEQUENCES_KEYS["\r"] == ("enter",)
    assert ANSI_SEQUENCES_KEYS["\x08"] == ("backspace",) and ANSI_SEQUENCES_KEYS["\t"] == ("tab",)
    assert BY_NAME["keys"].check({"open_image": "ctrl+j"}, "keys") == {"open_image": "ctrl+j"}


@pytest.mark.parametrize("key", sorted(APPS_OWN))
def test_a_key_the_app_keeps_is_refused(key: str) -> None:
    said = refusal(f'max_new_tokens = 20\n[keys]\nhelp = "f3"\nopen_image = "{key}"\n')
    assert said == (f"line 4: keys.open_image: {key} {APPS_OWN[key]}, so the app keeps it. Choose another; "
                    "free now: f2, f4, f5.")


def test_the_keys_the_app_keeps_are_the_ones_it_binds() -> None:
    """Every key the chat app, its screen or its input box binds, other than the [keys] actions and the input
    box's editing keys, is one the settings keep; and every kept key is bound there (or is the palette's)."""
    from textual.screen import Screen

    from chatbot.tui.app import ChatApp
    from chatbot.tui.widgets.chat_input import ChatInput

    def keys(*classes: type) -> set[str]:
        return {key for cls in classes for binding in cls.__dict__.get("BINDINGS", [])
                for key in (binding.key if hasattr(binding, "key") else binding[0]).split(",")}

    merged = ChatApp._merge_bindings().key_to_bindings  # the app's and its base classes', as Textual joins them
    app_level = {key for key, bindings in merged.items() if any(binding.id is None for binding in bindings)}
    app_level |= keys(Screen) | {ChatApp.COMMAND_PALETTE_BINDING}
    typing_box = keys(*ChatInput.__mro__)
    assert app_level <= set(RESERVED_KEYS) | TEXT_BOX_KEYS
    assert keys(ChatInput) | {"enter"} <= set(RESERVED_KEYS)  # its own keys, and Input's send
    assert set(RESERVED_KEYS) <= app_level | typing_box
    assert RESERVED_KEYS == APPS_OWN
    assert not set(RESERVED_KEYS) & set(DEFAULTS.values()) and KEY_ACTIONS == {
        action: (key, KEY_ACTIONS[action][1]) for action, key in DEFAULTS.items()}


# --- a key listed twice, and the wording when every suggestion is taken ----------------------------------------

def test_a_key_listed_twice_for_one_action_is_said_plainly() -> None:
    said = refusal('[keys]\nopen_image = "ctrl+o,ctrl+o"\n')
    assert said == ('line 2: keys.open_image: ctrl+o is listed twice. List each key once, e.g. '
                    'open_image = "ctrl+o".')
    assert "both" not in said
    # the example keeps the other keys, in order
    assert refusal('[keys]\nquit = "f10,ctrl+q,f10"\n').endswith('e.g. quit = "f10,ctrl+q".')


def test_with_every_suggested_key_taken_the_way_forward_still_reads_whole() -> None:
    every = ",".join(("f2", "f3", "f4", "f5", "f6", "f7", "f8", "ctrl+t", "ctrl+g", "ctrl+b",
                      *(f"f{n}" for n in range(9, 25))))
    assert refusal(f'[keys]\nquit = "{every}"\nhelp = "x"\n') == (
        "line 3: keys.help: x types text, so it would open the help while you write a question. "
        "Add ctrl or alt (ctrl+t, alt+x).")
    assert refusal(f'[keys]\nquit = "{every}"\nhelp = "ctrl+p"\n') == (
        "line 3: keys.help: ctrl+p opens the command palette, so the app keeps it. Choose another, such as a "
        "function key.")
    assert refusal(f'[keys]\nquit = "{every}"\nhelp = "f24"\n') == (
        "line 2: keys: f24 is the key of both help and quit. Give each action keys of its own.")


# --- /set and the flags never set keys -------------------------------------------------------------------------

def test_keys_are_only_in_the_config_file() -> None:
    with pytest.raises(OptionError) as error:
        apply_setting(GenerationOptions(), 'keys {"open_image": "ctrl+p"}')
    assert str(error.value).startswith("/set does not know 'keys'. Settable: ")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--keys", "open_image=ctrl+p", "photo.jpg"])


# --- the line of the key itself --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line"), [
    ('# c\n[keys]\nhelp = "f2"\n\n\n"copy_answer" = "ctrlx+y"\n', 6),  # a quoted name: was the header's, 2
    ("# c\n[keys]\nhelp = 'f2'\n\n\n'copy_answer' = 'ctrlx+y'\n", 6),
    ('# c\nmax_new_tokens = 20\n\n\n\nkeys.copy_answer = "ctrlx+y"\n', 6),  # dotted, at the top: was 1
    ('# c\n["keys"]\nhelp = "f2"\n\n\ncopy_answer = "ctrlx+y"\n', 6),  # a quoted table name: was 1
    ('# c\n[ keys ] # mine\nhelp = "f2"\n\n\ncopy_answer = "ctrlx+y"\n', 6),
    ('model = """\n[keys]\ncopy_answer = "f2"\n"""\n[keys]\nhelp = "f3"\ncopy_answer = "ctrlx+y"\n', 7),
    ('model = "a = b"\n[keys]\n"quit = " = "f2"\ncopy_answer = "ctrlx+y"\n', 3),  # "quit = " is no action
    ('# c\n"max_new_tokens" = 2000000\n', 2),  # a quoted top-level name: was 1
    ('# c\n\nkeys = { help = "f2", copy_answer = "ctrlx+y" }\n', 3),  # an inline table: its own line
    ('[keys]\nhelp = "f2"\n\n[keys.sub]\n', 4),
])
def test_a_refusal_names_the_line_that_sets_the_key(text: str, line: int) -> None:
    assert refusal(text).startswith(f"line {line}: ")


def test_a_key_set_twice_is_named_however_it_is_written() -> None:
    assert refusal('[keys]\n"quit" = "f2"\nhelp = "f3"\nquit = "f4"\n', valid_toml=False).startswith(
        "line 4 sets 'quit' in [keys] again (first set on line 2).")
    assert refusal('keys.quit = "f2"\nkeys."quit" = "f4"\n', valid_toml=False).startswith(
        "line 2 sets 'keys.quit' again (first set on line 1).")


NAME = st.sampled_from(sorted(DEFAULTS))
FILLER = st.sampled_from(["", "# a comment", "   ", "# quit = \"ctrl+a\"", 'max_new_tokens = 20', "seed = 7",
                          'model = """\ncopy_answer = "ctrl+a"\n[keys]\n"""', "temperature = 0.5 # warm"])


@settings(max_examples=200, deadline=None)
@given(before=st.lists(FILLER, max_size=5, unique=True),
       inside=st.lists(FILLER.filter(lambda f: "=" not in f), max_size=4),
       form=st.sampled_from(["bare", "double", "single", "dotted", "spaced"]), action=NAME,
       bad=st.sampled_from(["ctrlx+y", "ctrl+h", "ctrl+p", "a", "ctrl+k"]))
def test_the_line_named_is_the_bad_keys_own(before: list[str], inside: list[str], form: str, action: str,
                                            bad: str) -> None:
    """Comments, blank lines, other settings and multi-line strings before it never move the line named."""
    lines = "\n".join(before).split("\n") if before else []
    if form == "dotted":
        lines += inside + [f'keys.{action} = "{bad}"']
    else:
        name = {"bare": action, "double": f'"{action}"', "single": f"'{action}'", "spaced": f"  {action}  "}[form]
        lines += ["[keys]", *inside, f'{name} = "{bad}"']
    said = refusal("\n".join(lines) + "\n")
    assert said.startswith(f"line {len(lines)}: keys.{action}"), (lines, said)


# --- any table of keys: accepted only when every key can fire and is the action's own ---------------------------

KEY = st.builds(lambda modifiers, base: "+".join([*modifiers, base]),
                st.lists(st.sampled_from(["ctrl", "shift", "alt"]), unique=True, max_size=2),
                st.sampled_from(sorted(KEY_BASES)))
TABLE = st.dictionaries(NAME, st.lists(st.one_of(KEY, st.sampled_from(sorted(SENT_AS) + sorted(APPS_OWN))),
                                       min_size=1, max_size=3).map(",".join), max_size=4)


@settings(max_examples=200, deadline=None)
@given(table=TABLE)
def test_a_table_is_accepted_only_when_every_key_can_fire_for_its_action(table: dict[str, str]) -> None:
    try:
        kept = BY_NAME["keys"].check(table, "keys")
    except OptionError as error:
        # one sentence, then a way forward; never "the key of both help and help"
        assert error.message.endswith(".") and ". " not in error.message.replace("e.g. ", ""), error.message
        assert error.hint.endswith(".") and error.hint[0].isupper(), error.hint
        assert not any(f"both {action} and {action}" in error.message for action in DEFAULTS)
        lone = [key for keys in table.values() for key in keys.split(",")]
        if len(table) == 1 and len(lone) == 1 and lone[0] in SENT_AS:
            assert f"most terminals send {lone[0]} as {SENT_AS[lone[0]]}" in error.message
        if len(table) == 1 and len(lone) == 1 and lone[0] in APPS_OWN:
            assert f"{lone[0]} {APPS_OWN[lone[0]]}, so the app keeps it" in error.message
        return
    assert kept == table
    in_use = [key for action, default in DEFAULTS.items() for key in table.get(action, default).split(",")]
    assert len(in_use) == len(set(in_use)), in_use  # no key for two actions, nor twice for one
    for action, keys in table.items():
        for key in keys.split(","):
            assert key not in SENT_AS and key not in APPS_OWN, key
            assert key not in TEXT_BOX_KEYS or key == DEFAULTS[action], key
            *modifiers, base = key.split("+")
            assert set(modifiers) - {"shift"} or not (len(base) == 1 or base == "space" or base.endswith(
                ("_mark", "_sign", "_bracket", "_parenthesis", "_accent")) or base in {
                "ampersand", "apostrophe", "asterisk", "at", "backslash", "colon", "comma", "full_stop",
                "minus", "plus", "semicolon", "slash", "tilde", "underscore", "vertical_line"}), key


@pytest.mark.parametrize(("key", "arrives_as"), [
    ("ctrl+question_mark", "backspace"), ("ctrl+8", "backspace"), ("ctrl+space", "ctrl+@"), ("ctrl+2", "ctrl+@"),
    ("ctrl+at", "ctrl+@"), ("ctrl+3", "escape"), ("ctrl+4", "ctrl+backslash"), ("ctrl+5", "ctrl+right_square_bracket"),
    ("ctrl+6", "ctrl+circumflex_accent"), ("ctrl+7", "ctrl+underscore"),
])
def test_a_ctrl_key_that_sends_another_control_character_is_refused(key: str, arrives_as: str) -> None:
    """What the terminal sends for it (xterm's control character) is read by Textual as another key, so the binding
    could never fire: checked against Textual's own parser."""
    from textual import events
    from textual._xterm_parser import XTermParser

    sent = {"ctrl+question_mark": "\x7f", "ctrl+8": "\x7f", "ctrl+space": "\x00", "ctrl+2": "\x00", "ctrl+at": "\x00",
            "ctrl+3": "\x1b", "ctrl+4": "\x1c", "ctrl+5": "\x1d", "ctrl+6": "\x1e", "ctrl+7": "\x1f"}[key]
    parser = XTermParser()
    read = [event.key for event in [*parser.feed(sent), *parser.feed("")] if isinstance(event, events.Key)]
    assert read == [arrives_as] and arrives_as != key
    with pytest.raises(OptionError, match=re.escape(f"most terminals send {key} as ")):
        BY_NAME["keys"].check({"help": key}, "keys")


@pytest.mark.parametrize(("key", "written"), [("shift+ctrl+up", "ctrl+shift+up"), ("ctrl+alt+t", "alt+ctrl+t"),
                                               ("shift+alt+f5", "alt+shift+f5")])
def test_modifiers_in_another_order_than_textuals_are_refused_with_the_spelling_that_works(key: str,
                                                                                            written: str) -> None:
    """Textual names a key's modifiers sorted (alt, ctrl, meta, shift, super) and matches a binding exactly, so
    `shift+ctrl+up` never fired (the footer showed it all the same)."""
    with pytest.raises(OptionError) as refused:
        BY_NAME["keys"].check({"help": key}, "keys")
    assert str(refused.value).endswith(f"so it would never match. Write it as {written}.")
    assert BY_NAME["keys"].check({"help": written}, "keys") == {"help": written}
