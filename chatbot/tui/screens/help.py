"""F1 / `/help`: the key bindings and the slash commands, on one screen."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from chatbot.core.commands import COMMANDS, QUESTION_ESCAPE
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


def help_sections(keymap: Mapping[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help's two tables, titled: keys (with the config file's [keys] applied), then commands."""
    keymap = keymap or {}
    keys = [(key_label(keymap.get(action, default)), what) for action, (default, what) in KEY_ACTIONS.items()]
    return [("Keys", [*FIXED_KEYS[:2], *keys, *FIXED_KEYS[2:]]),
            ("Commands", [(spec.usage, spec.summary) for spec in COMMANDS])]


USAGE_WIDTH = len("/export md|html|json")  # a longer key or usage wraps after this, at a space

HELP_NOTES = (QUESTION_ESCAPE,
              "Paste or drop an image file's path, or an http(s) address, into the input to switch to it.",
              "Every answer is saved; resume with `blip2-chat --continue`.")


def help_renderable(keymap: Mapping[str, str] | None = None) -> RenderableType:
    """The help as the screen shows it: on a narrow terminal a row's description wraps under itself, not
    under the key. Everything is Text, never markup."""
    parts: list[RenderableType] = []
    for title, rows in help_sections(keymap):
        table = Table.grid(padding=(0, 2))
        table.add_column(max_width=USAGE_WIDTH)
        table.add_column(ratio=1)
        for left, right in rows:
            table.add_row(Text(left), Text(right))
        parts += [Text(title, style="bold"), Text(""), table, Text("")]
    return Group(*parts, *(Text(note) for note in HELP_NOTES))


CLOSE_KEYS = "escape,f1,q"
CLOSE_HINT = "Esc, F1 or q: close"  # on the frame, so it shows however far the help is scrolled


class HelpScreen(ModalScreen[None]):
    """Closes with Esc, F1 or q, as its frame says."""

    BINDINGS = [Binding(CLOSE_KEYS, "dismiss(None)", "Close")]

    def __init__(self, keymap: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.keymap = dict(keymap or {})

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as frame:
            frame.border_title = "Help"
            frame.border_subtitle = CLOSE_HINT
            yield Static(help_renderable(self.keymap), markup=False)
