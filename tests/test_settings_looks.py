"""The chat app's looks and keys from the config file: a theme (a high-contrast one for low vision), a
[keys] table that remaps the app's keys, and NO_COLOR."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.theme import BUILTIN_THEMES

from chatbot.core.config_file import read_config
from chatbot.core.settings import HIGH_CONTRAST_THEME, KEY_ACTIONS, THEMES, Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import OptionError
from chatbot.images import load_image
from chatbot.tui.app import create_app
from chatbot.tui.screens.file_picker import ImagePickerScreen
from chatbot.tui.screens.help import help_renderable, help_sections
from tests.config_support import NEEDS_TOML
from tests.tui_support import SIZE, pilot_test, ready

pytestmark = NEEDS_TOML


def test_the_theme_names_are_textuals_and_ours() -> None:
    assert set(THEMES) == set(BUILTIN_THEMES) | {HIGH_CONTRAST_THEME} and len(THEMES) == len(set(THEMES))


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_theme_and_keys_are_read_and_checked(tmp_path: Path) -> None:
    path = config(tmp_path, 'theme = "blip2-high-contrast"\n\n[keys]\nopen_image = "ctrl+t"\nquit = "ctrl+q,f10"\n'
                            'paste = "ctrl+v"\nhelp = "ctrl+shift+comma"\n')
    assert read_config(path) == {"theme": HIGH_CONTRAST_THEME, "keys": {
        "open_image": "ctrl+t", "quit": "ctrl+q,f10", "paste": "ctrl+v", "help": "ctrl+shift+comma"}}
    for text, message in [
        ('model = "x"\ntheme = "neon"\n', "line 2: theme must be one of: textual-dark, textual-light, "
                                          "blip2-high-contrast,"),
        ('\n[keys]\nopen = "ctrl+k"\n', "line 3: keys has no action 'open'. Actions: stop, open_image, copy_answer, "
                                        "paste, help, quit."),
        ('[keys]\nhelp = "Ctrl K"\n', "line 2: keys.help must be a key name such as ctrl+t or f2 (got 'Ctrl K')."),
        ('[keys]\nquit = "ctrl+nonsense"\n', "line 2: keys.quit: 'ctrl+nonsense' is not a key name. Keys are named "
                                             "like ctrl+t, alt+x, f2, escape or ctrl+shift+comma."),
        ('[keys]\nquit = "f10,cmd+q"\n', "line 2: keys.quit: 'cmd+q' is not a key name."),
        ('[keys]\nquit = "ctrl+ctrl+q"\n', "line 2: keys.quit: 'ctrl+ctrl+q' is not a key name."),
        ('[keys]\nhelp = "ctrl+k"\n', "line 2: keys.help: ctrl+k is a key of the box you type in, so the app would "
                                       "never see it. Choose another; free now: f2, f3, f4."),
        ('[keys]\nopen_image = "f2,ctrl+u"\n', "line 2: keys.open_image: ctrl+u is a key of the box you type in"),
        ('[keys]\nquit = "ctrl+v"\n', "line 2: keys.quit: ctrl+v is a key of the box you type in"),
        ('[keys]\nquit = "a"\n', "line 2: keys.quit: a types text, so it would quit (the chat is saved) while you "
                                  "write a question. Add ctrl or alt (ctrl+t, alt+x), or choose a free key: "
                                  "f2, f3, f4."),
        ('[keys]\nhelp = "shift+comma"\n', "line 2: keys.help: shift+comma types text"),
        ('[keys]\nstop = "space"\n', "line 2: keys.stop: space types text"),
        ('[keys]\nquit = "f2"\nhelp = "f3,f2"\n', "line 2: keys: f2 is the key of both help and quit. Give each "
                                                   "action keys of its own; free now: f4, f5, f6."),
        # the probe's file: the bad key's own line, and a suggestion of keys not taken (f2 is help's here)
        ('# comment\nmax_new_tokens = 20\n\n[keys]\nhelp = "f2"\nopen_image = "f3"\nquit = "ctrl+e"\n',
         "line 7: keys.quit: ctrl+e is a key of the box you type in, so the app would never see it. Choose another; "
         "free now: f4, f5, f6."),
        ('[keys]\nhelp = "f2"\n\n[other]\nquit = "ctrl+a"\n', "line 4: unknown key 'other'"),
        ('keys = { quit = "ctrl+a" }\n', "line 1: keys.quit: ctrl+a is a key of the box"),
        ('[keys]\nhelp = "ctrl+q"\n', "line 2: keys: ctrl+q is the key of both help and quit."),
        ('keys = 3\n', "line 1: keys must be a table of action = \"key\" (got 3)."),
    ]:
        with pytest.raises(OptionError) as error:
            read_config(config(tmp_path, text))
        assert message in str(error.value), str(error.value)


def test_the_help_screen_names_the_keys_in_use() -> None:
    (_, keys), _ = help_sections({"open_image": "ctrl+t", "quit": "ctrl+q,f10"})
    assert ("Ctrl+T", "choose an image in a file browser") in keys
    labels = [label for label, _ in keys]
    assert "Ctrl+Q or F10" in labels and "Ctrl+O" not in labels and "F1" in labels
    assert [action for action in KEY_ACTIONS] == ["stop", "open_image", "copy_answer", "paste", "help", "quit"]


@pytest.mark.parametrize("width", [36, 60, 120])
def test_the_help_wraps_each_description_under_itself(width: int) -> None:
    """On a narrow terminal a long description goes on under its own column, never back under the keys."""
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    console.print(help_renderable())
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    for title, rows in help_sections():
        start = lines.index(title) + 2
        table = lines[start:lines.index("", start)]
        column = table[0].index(rows[0][1].split()[0], len(rows[0][0]))  # where descriptions start
        assert all(line[column - 2:column].strip() == "" for line in table), table
        # read back column by column, the words are the rows' own, in order: nothing crossed over
        assert " ".join(line[:column] for line in table).split() == " ".join(left for left, _ in rows).split()
        assert " ".join(line[column:] for line in table).split() == " ".join(right for _, right in rows).split()
        assert max(len(line) for line in table) <= width


def test_the_key_names_the_settings_know_are_the_toolkits() -> None:
    """The settings (pure, no Textual) name keys and the text box's own keys as Textual does."""
    import string

    from textual.keys import Keys, _character_to_key

    from chatbot.core.settings import KEY_BASES, TEXT_BOX_KEYS
    from chatbot.tui.widgets.chat_input import ChatInput

    punctuation = {_character_to_key(c) for c in string.punctuation}
    named = {key.value for key in Keys if "+" not in key.value and not key.value.startswith("<")}
    assert punctuation <= KEY_BASES and KEY_BASES <= punctuation | named | set(string.ascii_lowercase + string.digits)
    box = {key for cls in ChatInput.__mro__ for binding in getattr(cls, "BINDINGS", [])
           for key in (binding.key if hasattr(binding, "key") else binding[0]).split(",")}
    assert TEXT_BOX_KEYS == box


@pilot_test
async def test_the_app_takes_its_theme_and_keys_from_the_settings(pictures) -> None:
    settings = Settings(model="scripted-opt", theme=HIGH_CONTRAST_THEME, keys={"open_image": "f2"})
    app = create_app(settings, image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=lambda settings, progress: ScriptedEngine(), renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == HIGH_CONTRAST_THEME and app.current_theme.background == "#000000"
        await pilot.press("ctrl+o")  # the old key does nothing now
        await pilot.pause()
        assert not isinstance(app.screen, ImagePickerScreen)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, ImagePickerScreen)


@pilot_test
async def test_no_color_turns_colour_off(pictures, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = create_app(Settings(model="scripted-opt"), image=load_image(pictures["red"]), store=SessionStore(),
                     engine_factory=lambda settings, progress: ScriptedEngine(), renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.no_color
