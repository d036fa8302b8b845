"""F1 / `/help`: the key bindings and the slash commands, on one screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from chatbot.core.commands import QUESTION_ESCAPE, help_lines

KEYS = (
    ("Enter", "send the question (or the /command)"),
    ("Esc", "stop the answer in progress (the partial answer is kept, marked stopped)"),
    ("Ctrl+O", "choose an image in a file browser with a preview"),
    ("Ctrl+Y", "copy the last answer to the clipboard"),
    ("Ctrl+P", "command palette: every slash command"),
    ("Up / Down", "recall earlier lines"),
    ("F1", "this help"),
    ("Ctrl+Q", "quit (the session is saved)"),
)


def help_text() -> str:
    width = max(len(key) for key, _ in KEYS)
    keys = [f"{key.ljust(width)}  {what}" for key, what in KEYS]
    return "\n".join([
        "Keys", "", *keys, "", "Commands", "", *help_lines(), "",
        QUESTION_ESCAPE, "Paste or drop an image file's path into the input to switch to it.",
        "Every answer is saved; resume with `blip2-chat --continue`.",
    ])


class HelpScreen(ModalScreen[None]):
    """Closes with Esc, F1 or q."""

    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(), markup=False)
