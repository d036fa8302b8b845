"""Choose an image from the file system, with a live preview of the highlighted file (Ctrl+O).

Only folders and image files are listed; the preview is decoded in a thread worker so moving
through a folder of large photos never freezes the screen. Dismisses with the chosen path or None.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.text import Text, TextType
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Static
from textual.worker import get_current_worker

from chatbot.errors import ImageError
from chatbot.images import IMAGE_SUFFIXES, LoadedImage, load_image
from chatbot.tui.widgets.image_preview import PREVIEW_MAX_SIDE, ImagePreview
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

    def __init__(self, start: Path, renderer: str = "auto") -> None:
        super().__init__()
        self.start = start if start.is_dir() else Path.cwd()
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static(self._title(self.start), id="picker-title", markup=False)
            with Horizontal(id="picker-body"):
                yield ImageTree(self.start, id="picker-tree")
                yield ImagePreview(self.renderer, empty_text="Highlight an image to preview it.", id="picker-preview")
            yield Static("Enter: open image · Backspace: parent folder · Esc: cancel", id="picker-help")

    def on_mount(self) -> None:
        self.query_one(ImageTree).focus()

    @staticmethod
    def _title(folder: Path) -> str:
        return f"Open an image — {visible(folder)}"

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
            self._load_preview(path)

    @on(DirectoryTree.FileSelected)
    def _chosen(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(event.path)

    @work(thread=True, exclusive=True, group="preview")
    def _load_preview(self, path: Path) -> None:
        try:
            image: LoadedImage | str = load_image(path, max_side=PREVIEW_MAX_SIDE)
        except ImageError as error:
            image = str(error)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_preview, image)

    def _show_preview(self, image: LoadedImage | str) -> None:
        preview = self.query_one(ImagePreview)
        if isinstance(image, str):
            preview.show_problem(image)
        else:
            preview.show(image)
