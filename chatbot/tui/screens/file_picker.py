"""Choose an image from the file system, with a live preview of the highlighted file (Ctrl+O).

Only folders and image files are listed; the preview is decoded in a thread worker so moving
through a folder of large photos never freezes the screen. Dismisses with the chosen path or None.
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
            with Horizontal(id="picker-body"):
                yield ImageTree(self.start, id="picker-tree")
                yield ImagePreview(self.renderer, empty_text="Highlight an image to preview it.", id="picker-preview")
            chooses = "compare with it" if self.compare else "open image"
            yield Static(f"Enter: {chooses} · Backspace: parent folder · Esc: cancel", id="picker-help")

    def on_mount(self) -> None:
        self.query_one(ImageTree).focus()

    def _title(self, folder: Path) -> str:
        return f"{'Compare with an image' if self.compare else 'Open an image'} — {visible(folder)}"

    def action_parent(self) -> None:
        tree = self.query_one(ImageTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one("#picker-title", Static).update(self._title(parent))

    @on(DirectoryTree.NodeHighlighted)
    def _highlighted(self, event: DirectoryTree.NodeHighlighted[object]) -> None:
        entry = event.node.data
        path = getattr(entry, "path", None)
        if isinstance(path, Path) and path.is_file():
            self.query_one(ImagePreview).load(path)

    @on(DirectoryTree.FileSelected)
    def _chosen(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(event.path)
