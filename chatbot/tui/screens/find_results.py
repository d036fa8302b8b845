"""`/find TEXT` in the app: the pictures that match, best first, with a thumbnail of the highlighted one.

Each row says the rank, the file's name and its scores; a file that cannot be opened (gone, no longer a
picture) says so and cannot be chosen, and one that changed unseen since the list was made is refused with
the sentence `/open N` says. Thumbnails are decoded in a thread worker, so moving through the list never
freezes the screen. Dismisses with the chosen path (the chat then opens it by its usual rules) or None.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from chatbot.core.photo_search import Found, found_line, result_to_open
from chatbot.errors import UserError
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.untrusted import visible


class FindResultsScreen(ModalScreen[str | None]):
    """Results on the left, the highlighted picture on the right; Enter opens it in the chat, Esc closes."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, query: str, found: Sequence[Found], renderer: str = "auto") -> None:
        super().__init__()
        self.query_text = query
        self.found = list(found)
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        title = f"Pictures that match “{visible(self.query_text)}”, best first"
        with Vertical(id="find"):
            yield Static(title, id="find-title", markup=False)
            with Horizontal(id="find-body"):
                yield OptionList(*[
                    Option(Text(found_line(rank, found)), id=str(rank - 1), disabled=found.missing)
                    for rank, found in enumerate(self.found, 1)
                ], id="find-list")
                yield ImagePreview(self.renderer, empty_text="Highlight a result to see it.", id="find-preview")
            yield Static("Enter: open it in the chat · Up/Down: move · Esc: close", id="find-help")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        found = self.found[int(event.option.id or 0)]
        if not found.missing:
            self.query_one(ImagePreview).load(found.path)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        try:  # the file is looked at again, as /open N does: the same sentence for one gone or changed since
            path = result_to_open(self.found, str(int(event.option.id or 0) + 1))
        except UserError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.dismiss(path)
