"""The app's own keys are described once (chatbot.core.settings.APP_KEYS): the help lists them from there. And the
core's words never name a key the config file's [keys] may change: they take it from the settings
(`chatbot.core.key_names`) or name the action."""

from __future__ import annotations

from chatbot.core.commands import COMMANDS
from chatbot.core.key_names import action_key_label, action_keys, key_label
from chatbot.core.settings import APP_KEYS, KEY_ACTIONS
from chatbot.tui.screens.help import help_sections


def test_the_help_lists_the_apps_own_keys_from_the_settings() -> None:
    (_, rows), _ = help_sections()
    for entry in APP_KEYS.values():
        if entry.help:
            assert any(key_label(entry.key) in label.split(" / ") and what == entry.help for label, what in rows)
    assert [label for label, _ in rows[:2]] == ["Enter", "Tab"]
    assert ("Up / Down", APP_KEYS["earlier_line"].help) in rows and "Shift+Tab" not in [label for label, _ in rows]
    assert len(rows) == len(KEY_ACTIONS) + len({entry.help for entry in APP_KEYS.values() if entry.help})


def test_an_actions_key_is_the_one_in_use() -> None:
    assert action_key_label(None, "stop") == "Esc" and action_key_label({"stop": "f2,escape"}, "stop") == "F2"
    assert action_keys({"quit": "ctrl+q,f10"}, "quit") == "ctrl+q,f10" and action_keys({}, "help") == "f1"


def test_no_command_names_a_key_the_config_file_may_change() -> None:
    defaults = {key_label(key) for key, _ in KEY_ACTIONS.values()}
    for spec in COMMANDS:
        assert not [key for key in defaults if key in spec.summary], spec
