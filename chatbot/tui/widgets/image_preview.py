"""A preview of the image being talked about, with its name, size and hash under it.

`textual-image` draws it with the terminal's graphics protocol (Kitty, Sixel) or, where there is
none, with coloured half blocks. It probes the terminal when first imported, which must happen
before Textual takes the terminal over: `prepare_terminal_graphics()` does that (only in terminals
that may draw images), and this module imports it lazily so importing the app does no terminal I/O.

Half blocks are a picture only in colour: with colour off (NO_COLOR) they would be rows of identical
`▀`, so the preview says so in words instead, with the image's name and size under it as always.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, cast

from PIL import Image as PILImage
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import get_current_worker

from chatbot.core.text_width import clip_middle
from chatbot.errors import ImageError
from chatbot.images import LoadedImage, load_image
from chatbot.tui.widgets.transcript import image_label
from chatbot.untrusted import visible

RENDERERS = ("auto", "halfcell", "none")  # auto: best the terminal has; halfcell: tests and snapshots
PREVIEW_MAX_SIDE = 384  # pixels handed to the renderer: enough for a sidebar, cheap to redraw


# Terminals that may draw real images (Kitty graphics or Sixel). Elsewhere, and inside tmux or screen,
# which pass neither through by default, half blocks are used without asking the terminal anything.
_GRAPHICS_TERMS = ("kitty", "ghostty", "foot", "mlterm", "contour", "wezterm")
_GRAPHICS_PROGRAMS = ("WezTerm", "iTerm.app", "ghostty", "vscode", "WarpTerminal", "konsole")


def terminal_may_draw_images(env: Mapping[str, str]) -> bool:
    """True when the terminal is one that can show images; BLIP2_CHAT_GRAPHICS=0/1 overrides the guess."""
    forced = env.get("BLIP2_CHAT_GRAPHICS", "")
    if forced in ("0", "1"):
        return forced == "1"
    if env.get("TMUX") or env.get("STY") or env.get("TERM", "").startswith(("screen", "tmux")):
        return False
    term = env.get("TERM", "").lower()
    return any(name in term for name in _GRAPHICS_TERMS) or env.get("TERM_PROGRAM", "") in _GRAPHICS_PROGRAMS \
        or bool(env.get("KONSOLE_VERSION"))


class _NotATerminal:
    """Stands in for sys.__stdout__ while textual-image is imported, so it sends the terminal no queries."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prepare_terminal_graphics(env: Mapping[str, str] = os.environ) -> str:
    """Set textual-image up before Textual owns the terminal; returns the renderer to use.

    Its import probes the terminal (an escape-sequence query and a read of the answer) when stdout
    is a terminal; keys typed meanwhile can be lost and the late answer can land in the input box
    as `[?1;2c`. So it probes only terminals that may draw images, and otherwise uses half blocks.
    """
    if terminal_may_draw_images(env):
        import textual_image.widget  # noqa: F401 - imported for its one-time terminal probe

        return "auto"
    real, sys.__stdout__ = sys.__stdout__, _NotATerminal(sys.__stdout__)  # type: ignore[assignment,misc]
    try:
        import textual_image.widget  # noqa: F401
    finally:
        sys.__stdout__ = real  # type: ignore[misc]
    return "halfcell"


def image_widget_class(renderer: str) -> type[Any] | None:
    """The textual-image widget for `renderer` ("auto", "halfcell"); None for "none" (text only)."""
    if renderer == "none":
        return None
    import textual_image.widget as image_widgets

    return image_widgets.HalfcellImage if renderer == "halfcell" else image_widgets.Image


def draws_with_colour_cells(renderer: str) -> bool:
    """True when `renderer` draws the picture as coloured characters (half blocks), not as an image."""
    if renderer == "halfcell":
        return True
    if renderer != "auto":
        return False
    import textual_image.renderable as renderables
    from textual_image.renderable.halfcell import Image as Halfcell
    from textual_image.renderable.unicode import Image as Unicode

    return renderables.Image in (Halfcell, Unicode)


MIN_NAME_CELLS = 12  # narrower than this beside the size, the whole line is clipped in the middle instead


class CaptionLine(str):
    """The image in one line, `photo.jpg · 640×480` (a str: `name` then `size`), which Textual shows in any width
    (`_ClippedInTheMiddle`): a name that fits stays whole, the size giving way; a longer one loses its middle
    (`clip_middle`), its start and its end kept, and the size. Cut at its end, a camera's long names would all
    end alike, in `…`."""

    name: str
    size: str

    def __new__(cls, name: str, size: str) -> CaptionLine:
        line = super().__new__(cls, name + size)
        line.name, line.size = name, size
        return line

    def visualize(self) -> _ClippedInTheMiddle:
        """Textual's visual protocol: it asks this before taking the line for a str."""
        return _ClippedInTheMiddle(self.name, self.size)


class _ClippedInTheMiddle:
    """The Rich renderable of a `CaptionLine`: one line in the width it is given."""

    def __init__(self, name: str, size: str) -> None:
        self.name, self.size = name, size

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, line = options.max_width, self.name + self.size
        if cell_len(self.name) >= width:  # the name cannot be whole: its two ends, and the size where there is room
            if width - cell_len(self.size) >= MIN_NAME_CELLS:
                line = clip_middle(self.name, width - cell_len(self.size)) + self.size
            else:
                line = clip_middle(line, width)
        yield Text(line, no_wrap=True, overflow="ellipsis", end="")  # a whole name: the size gives way to "…"


def image_summary(image: LoadedImage) -> CaptionLine:
    """The image in one line, for where there is no room for the preview: `photo.jpg · 640×480` (see
    `CaptionLine`: too long for the window, it loses the middle of the name)."""
    width, height = image.original_size
    return CaptionLine(visible(image_label(image.source)), f" · {width}×{height}")


def picture_cells(pixels: tuple[int, int], width: int, rows: int) -> tuple[int, int]:
    """The largest (columns, rows) a picture `pixels` in size takes within `width` × `rows` cells, its proportions
    kept, measured as textual-image measures what it draws: its own geometry, with the terminal's cell size in
    pixels (asked once, when its widget module was imported before Textual took the terminal; then kept)."""
    from textual_image._geometry import ImageSize
    from textual_image._terminal import get_cell_size

    columns, height = ImageSize(*pixels, width="auto", height="auto").get_cell_size(width, rows, get_cell_size())
    return max(1, columns), max(1, height)


NO_COLOUR_TEXT = "No preview: drawing the picture needs colour, and colour is off (NO_COLOR)."


def thumbnail(image: PILImage.Image, max_side: int = PREVIEW_MAX_SIDE) -> PILImage.Image:
    small = image.copy()
    small.thumbnail((max_side, max_side))
    return small


class ImagePreview(Vertical):
    """The current image (or why there is none) and a caption naming it."""

    def __init__(
        self, renderer: str = "auto", *, empty_text: str = "No image yet.\nType /image PATH.",
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, not {renderer!r}")
        self.renderer = renderer
        self.empty_text = empty_text
        self.source: str | None = None  # what is shown now (tests read it)
        self.summary: str = " ".join(empty_text.split())  # what is shown, in one line (`image_summary`)

    def compose(self) -> ComposeResult:
        widget_class = image_widget_class(self.renderer)
        if self.app.no_color and draws_with_colour_cells(self.renderer):
            widget_class = None  # see the module's docstring
        if widget_class is not None:  # one image widget for good: show() only swaps its picture
            picture: Widget = widget_class(None, id="preview-image")
            picture.display = False
            yield picture
        yield Static(self.empty_text, id="preview-empty", markup=False)
        yield Static("", id="preview-caption", markup=False)

    def show(self, image: LoadedImage) -> None:
        """Draw `image` and name it in the caption."""
        self.source = image.source
        self.summary = image_summary(image)
        width, height = image.original_size
        caption = f"{visible(image_label(image.source))}\n{width}×{height} · sha256 {image.sha256[:12]}"
        self.query_one("#preview-caption", Static).update(caption)
        pictures = self.query("#preview-image")
        empty = self.query_one("#preview-empty", Static)
        colour_off = not pictures and self.renderer != "none"  # no picture widget: see compose
        empty.display = colour_off
        if colour_off:
            empty.update(NO_COLOUR_TEXT)
        for widget in pictures:
            cast(Any, widget).image = thumbnail(image.image)
            widget.display = True
        self._fit_picture()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_picture()  # the window (and with it the sidebar) changed size: the picture follows

    def _fit_picture(self) -> None:
        """Size the picture to the room it has: the preview's width, and its height less the caption's. (From the
        width alone textual-image would draw a tall picture taller than the room, and the rest would be cut
        off.) A preview whose height follows its content (`height: auto`) keeps the stylesheet's sizes."""
        width, height = self.content_size
        if not width or not height or self.styles.height is None or self.styles.height.is_auto:
            return  # not laid out yet (a Resize comes when it is), or hidden in a narrow window
        caption = self.query_one("#preview-caption", Static)
        below = caption.styles.margin.top + caption.get_content_height(self.content_size, self.app.size, width)
        for picture in self.query("#preview-image"):
            image = cast(Any, picture).image
            if isinstance(image, PILImage.Image):
                columns, rows = picture_cells(image.size, width, max(1, height - below))
                picture.styles.width, picture.styles.height = columns, rows

    def show_problem(self, text: str) -> None:
        """No image to show: say why (e.g. the resumed session's file moved)."""
        self.source = None
        self.summary = visible(" ".join(text.split()))
        for widget in self.query("#preview-image"):
            cast(Any, widget).image = None
            widget.display = False
        empty = self.query_one("#preview-empty", Static)
        empty.update(visible(text))
        empty.display = True
        self.query_one("#preview-caption", Static).update("")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Decode `path` in a thread worker and show it (or why it cannot be shown), so moving through a
        list of large photos never freezes the screen; a newer call cancels an older one."""
        self._load(path)

    # exit_on_error=False: a preview that fails in a way nobody foresaw (or whose screen closed meanwhile)
    # must never end the app with WorkerFailed; what went wrong is shown in the preview instead.
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def _load(self, path: str | os.PathLike[str]) -> None:
        try:
            image: LoadedImage | str = load_image(path, max_side=PREVIEW_MAX_SIDE)
        except ImageError as error:
            image = str(error)
        except Exception as error:  # noqa: BLE001 - a bug while previewing one file must not end the app
            image = cannot_preview(path, error)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_loaded, image)

    def _show_loaded(self, image: LoadedImage | str) -> None:
        if isinstance(image, str):
            self.show_problem(image)
            return
        try:
            self.show(image)
        except Exception as error:  # noqa: BLE001 - e.g. the renderer refuses the picture
            self.show_problem(cannot_preview(image.source, error))


def cannot_preview(source: str | os.PathLike[str], error: BaseException) -> str:
    """What the preview says when showing `source` failed unexpectedly: one line naming the kind of failure
    (not its message, which may hold outside text) and what to do instead. `show_problem` makes it visible."""
    name = image_label(os.fspath(source))
    return f"Cannot preview {name} (an unexpected {type(error).__name__}). Try another file."
