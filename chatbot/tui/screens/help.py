"""F1 / `/help`: the key bindings and the slash commands, on one screen."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from chatbot.core.commands import COMMANDS, QUESTION_ESCAPE
from chatbot.core.key_names import action_keys, key_label
from chatbot.core.settings import APP_KEYS, KEY_ACTIONS

FIRST_KEYS = ("send", "complete")  # the help's first rows: the keys of typing a question; then the [keys] actions


def app_key_rows(ids: Iterable[str]) -> list[tuple[str, str]]:
    """The help's rows for the app's own keys `ids` (chatbot.core.settings.APP_KEYS), in order: keys whose rows
    say the same share one row (`Up / Down`), and a key with no row (Shift+Tab) is left out."""
    rows: dict[str, list[str]] = {}
    for name in ids:
        entry = APP_KEYS[name]
        if entry.help:
            rows.setdefault(entry.help, []).append(entry.key)
    return [(key_label(",".join(keys), joined=" / " if len(keys) > 1 else " or "), what) for what, keys in rows.items()]


def help_sections(keymap: Mapping[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help's two tables, titled: keys (with the config file's [keys] applied), then commands."""
    keys = [(key_label(action_keys(keymap, action)), what) for action, (_, what) in KEY_ACTIONS.items()]
    rest = [name for name in APP_KEYS if name not in FIRST_KEYS]
    return [("Keys", [*app_key_rows(FIRST_KEYS), *keys, *app_key_rows(rest)]),
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
    return f"Esc, {key_label(action_keys(keymap, 'help'))} or q: close"


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
