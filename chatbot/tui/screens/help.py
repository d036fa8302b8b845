"""F1 / `/help`: the key bindings and the slash commands, on one screen."""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from chatbot.core.commands import QUESTION_ESCAPE, help_lines
from chatbot.core.settings import KEY_ACTIONS

FIXED_KEYS = (
    ("Enter", "send the question (or the /command)"),
    ("Tab", "complete a /command's name, or the file or folder after /image or /compare"),
    ("Ctrl+C", "stop the answer too (with text selected in the input: copy it)"),
    ("Ctrl+P", "command palette: every slash command"),
    ("Up / Down", "recall earlier lines"),
)


def key_label(keys: str) -> str:
    """`ctrl+o,f2` as people write it: Ctrl+O or F2."""
    return " or ".join("+".join(part.upper() if len(part) == 1 else part.capitalize() for part in key.split("+"))
                       for key in keys.split(","))


def help_text(keymap: Mapping[str, str] | None = None) -> str:
    """Keys (with the config file's [keys] applied) and commands."""
    keymap = keymap or {}
    keys = [(key_label(keymap.get(action, default)), what) for action, (default, what) in KEY_ACTIONS.items()]
    rows = [*FIXED_KEYS[:2], *keys, *FIXED_KEYS[2:]]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {what}" for key, what in rows]
    return "\n".join([
        "Keys", "", *lines, "", "Commands", "", *help_lines(), "",
        QUESTION_ESCAPE, "Paste or drop an image file's path into the input to switch to it.",
        "Every answer is saved; resume with `blip2-chat --continue`.",
    ])


class HelpScreen(ModalScreen[None]):
    """Closes with Esc, F1 or q."""

    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def __init__(self, keymap: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.keymap = dict(keymap or {})

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(self.keymap), markup=False)
