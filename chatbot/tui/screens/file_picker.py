"""Choose an image from the file system, with a live preview of the highlighted file (Ctrl+O).

Only folders and image files are listed; the preview is decoded in a thread worker so moving
through a folder of large photos never freezes the screen. Dismisses with the chosen path or None.
Opened while an answer is still coming, it says first that the chosen image will wait in the input box
(the app's rule for switching mid-answer), not only once one is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.text import Text, TextType
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Static

from chatbot.images import IMAGE_SUFFIXES
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.untrusted import visible


class ImageTree(DirectoryTree):
    """A directory tree that lists folders and image files only, hidden ones left out."""

    def process_label(self, label: TextType) -> Text:
        """A file name as a label: control characters shown, never sent to the terminal."""
        return super().process_label(visible(label.plain if isinstance(label, Text) else label))

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [
            path for path in paths
            if not path.name.startswith(".") and (path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES)
        ]


EMPTY_PREVIEW = "Highlight an image to preview it."
# the app refuses to switch (or compare) while an answer streams and keeps the choice in the input box to send later
CHOICE_WAITS = "An answer is still coming: the image you choose waits in the input box; press Enter there once it ends."


class ImagePickerScreen(ModalScreen[Path | None]):
    """Folders on the left, the highlighted image on the right; Enter chooses, Esc closes."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("backspace", "parent", "Parent folder"),
    ]

    def __init__(self, start: Path, renderer: str = "auto", *, compare: bool = False) -> None:
        super().__init__()
        self.start = start if start.is_dir() else Path.cwd()
        self.renderer = renderer
        self.compare = compare  # what Enter does with the chosen image: compare with it, or open it

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static(self._title(self.start), id="picker-title", markup=False)
            yield Static(CHOICE_WAITS, id="picker-waits", markup=False)
            with Horizontal(id="picker-body"):
                yield ImageTree(self.start, id="picker-tree")
                yield ImagePreview(self.renderer, empty_text=EMPTY_PREVIEW, id="picker-preview")
            chooses = "compare with it" if self.compare else "open image"
            yield Static(f"Enter: {chooses} · Backspace: parent folder · Esc: cancel", id="picker-help")

    def on_mount(self) -> None:
        self.query_one(ImageTree).focus()
        self._say_whether_the_choice_waits()

    def _say_whether_the_choice_waits(self) -> None:
        """Show CHOICE_WAITS while the app is answering (an app without answers, e.g. a test's host: never)."""
        streaming = getattr(self.app, "streaming", None)
        self.query_one("#picker-waits").display = bool(callable(streaming) and streaming())

    def _title(self, folder: Path) -> str:
        return f"{'Compare with an image' if self.compare else 'Open an image'} — {visible(folder)}"

    def action_parent(self) -> None:
        tree = self.query_one(ImageTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one("#picker-title", Static).update(self._title(parent))
        self._clear_preview()  # the folder left behind's image is no longer among those listed

    def _clear_preview(self) -> None:
        preview = self.query_one(ImagePreview)
        preview.workers.cancel_group(preview, "preview")  # a preview still decoding must not land after this
        preview.show_problem(EMPTY_PREVIEW)

    @on(DirectoryTree.NodeHighlighted)
    def _highlighted(self, event: DirectoryTree.NodeHighlighted[object]) -> None:
        self._say_whether_the_choice_waits()  # the answer may have ended since the picker opened
        entry = event.node.data
        path = getattr(entry, "path", None)
        if isinstance(path, Path) and path.is_file():
            self.query_one(ImagePreview).load(path)
        else:  # a folder: no image to show, so none (not the last file's)
            self._clear_preview()

    @on(DirectoryTree.FileSelected)
    def _chosen(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(event.path)
