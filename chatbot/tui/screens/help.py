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
from chatbot.core.settings import APP_KEYS, KEY_ACTIONS

FIXED_KEYS = (  # the app's own keys (chatbot.core.settings.APP_KEYS: the config file may not take them)
    (APP_KEYS["send"][0], "send the question (or the /command)"),
    (APP_KEYS["complete"][0], "complete a /command's name, or the file or folder after /image or /compare; on a "
                              "question, move to the chat (Enter or Esc there come back)"),
    (APP_KEYS["interrupt"][0], "stop the answer too (with text selected in the input: copy it)"),
    (APP_KEYS["command_palette"][0], "command palette: every slash command"),
    (f"{APP_KEYS['earlier_line'][0]},{APP_KEYS['later_line'][0]}",
     "recall earlier lines (of earlier chats too)"),
    (f"{APP_KEYS['page_up'][0]},{APP_KEYS['page_down'][0]}", "scroll the chat"),
)


def key_label(keys: str, joined: str = " or ") -> str:
    """`ctrl+o,f2` as people write it: Ctrl+O or F2 (`joined` between them; PageUp, PageDown as written)."""
    return joined.join("+".join(_NAMES.get(part, part.upper() if len(part) == 1 else part.capitalize())
                                for part in key.split("+")) for key in keys.split(","))


_NAMES = {"pageup": "PageUp", "pagedown": "PageDown", "escape": "Esc"}  # as the status line says them


def help_sections(keymap: Mapping[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help's two tables, titled: keys (with the config file's [keys] applied), then commands."""
    keymap = keymap or {}
    keys = [(key_label(keymap.get(action, default)), what) for action, (default, what) in KEY_ACTIONS.items()]
    fixed = [(key_label(key, joined=" / " if key.count(",") else " or "), what) for key, what in FIXED_KEYS]
    return [("Keys", [*fixed[:2], *keys, *fixed[2:]]),
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


CLOSE_KEYS = "escape,q"  # and the key that opened it: the help action's, as the config file's [keys] set it


def close_hint(keymap: Mapping[str, str] | None = None) -> str:
    """What the frame says closes the help: Esc, the help key in use (F1 unless [keys] says otherwise), or q."""
    return f"Esc, {key_label((keymap or {}).get('help', KEY_ACTIONS['help'][0]))} or q: close"


class HelpScreen(ModalScreen[None]):
    """Closes with Esc, the key that opens it (F1 unless remapped) or q, as its frame says."""

    BINDINGS = [
        Binding(CLOSE_KEYS, "dismiss(None)", "Close"),
        # the app's help binding's id: the app's keymap (the config file's [keys]) moves this one with it
        Binding(KEY_ACTIONS["help"][0], "dismiss(None)", "Close", id="help"),
    ]

    def __init__(self, keymap: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.keymap = dict(keymap or {})

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as frame:
            frame.border_title = "Help"
            frame.border_subtitle = close_hint(self.keymap)  # on the frame: it shows however far it is scrolled
            yield Static(help_renderable(self.keymap), markup=False)
