"""The status line: what the app is doing, the model, device, precision, memory, speed of the last answer.

In a narrow window the line gives way from its least important end (`fit_status`): a model's path is
clipped from the left, then precision, device, memory, speed and model go, in that order; what the app is
doing and for how long stay to the last.

Memory is the process's resident set (psutil, on every platform); accelerator memory comes from the
engine's `device_memory_bytes()` hook, so this module never imports torch. Sizes are decimal (1 GB =
10^9 bytes), as in the precision planner's sentences and the models table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.cells import cell_len
from textual import events
from textual.widgets import Static

from chatbot.core.text_width import clip_end, clip_path
from chatbot.engine.base import Engine, GenerationStats
from chatbot.untrusted import visible

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SEPARATOR = " │ "
DETAILS = ("model", "device", "precision", "memory", "speed")  # in the order shown
GIVE_WAY = ("precision", "device", "memory", "speed", "model")  # least important first


def process_memory_bytes() -> int:
    """Resident memory of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def human_bytes(count: int) -> str:
    """Decimal units: '512 B', '2 KB', '5.0 MB', '3.0 GB'."""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def memory_text(engine: Engine | None, probe: Callable[[], int] = process_memory_bytes) -> str:
    """'RAM 1.2 GB' and, when the engine holds accelerator memory, '· GPU 3.4 GB'."""
    text = f"RAM {human_bytes(probe())}"
    device = engine.device_memory_bytes() if engine is not None else None
    return f"{text} · GPU {human_bytes(device)}" if device is not None else text


def _short_paths(text: str) -> str:
    """Every path-like word of `text` as `…/` and its last part: `Loading …/chat on cpu`."""
    return " ".join(f"…/{word.rstrip('/').rsplit('/', 1)[-1]}" if "/" in word.strip("/") else word
                    for word in text.split(" "))


def fit_status(activity: str, clock: str, details: dict[str, str], width: int | None) -> str:
    """The status line in `width` cells (None: no limit), from what the app is doing, its clock (' 12 s')
    and the details by name (`DETAILS`); see the module's docstring for what gives way first."""
    details = {name: text for name, text in details.items() if text}

    def line() -> str:
        return SEPARATOR.join([activity + clock, *(details[name] for name in DETAILS if name in details)])

    if width is None or cell_len(line()) <= width:
        return line()
    if "model" in details:  # a checkpoint's path: its end names it
        details["model"] = clip_path(details["model"], max(16, width // 3))
    for name in GIVE_WAY:
        if cell_len(line()) <= width:
            return line()
        details.pop(name, None)
    activity = _short_paths(activity)
    if cell_len(activity + clock) > width:
        activity = clip_end(activity, max(1, width - cell_len(clock)))
    return activity + clock


class StatusBar(Static):
    """One line under the input; `busy` animates a spinner with the elapsed seconds."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)
        self.activity = "Starting…"
        self.busy_since: float | None = None
        self.model = ""
        self.device = ""
        self.precision = ""
        self.memory = ""
        self.speed = ""
        self._frame = 0

    def on_mount(self) -> None:
        self.set_interval(0.1, self._tick)
        self._render_line()

    def set_activity(self, text: str, busy: bool = False) -> None:
        """What the app is doing ('Loading model…', 'Answering…', 'Ready'); `busy` shows a spinner and a clock."""
        if busy and self.busy_since is None:
            self.busy_since = time.monotonic()
        elif not busy:
            self.busy_since = None
        self.activity = text
        self._render_line()

    def set_engine(self, engine: Engine) -> None:
        self.model, self.device, self.precision = engine.info.model_id, engine.info.device, engine.info.precision
        self._render_line()

    def set_memory(self, text: str) -> None:
        if text != self.memory:
            self.memory = text
            self._render_line()

    def set_stats(self, stats: GenerationStats) -> None:
        rate = stats.tokens_per_second
        self.speed = f"{rate:.1f} tok/s" if rate else f"{stats.new_tokens} tokens"
        self._render_line()

    def _tick(self) -> None:
        if self.busy_since is not None:
            self._frame += 1
            self._render_line()

    def on_resize(self, event: events.Resize) -> None:
        self._render_line()

    def _render_line(self) -> None:
        activity, clock = visible(self.activity), ""
        if self.busy_since is not None:
            elapsed = int(time.monotonic() - self.busy_since)
            activity = f"{SPINNER[self._frame % len(SPINNER)]} {activity}"
            clock = f" {elapsed} s" if elapsed else ""
        # the last answer's speed only while nothing is under way: during an answer it would pass for this one's
        speed = self.speed if self.busy_since is None else ""
        details = {"model": self.model, "device": self.device, "precision": self.precision,
                   "memory": self.memory, "speed": speed}
        width = self.content_size.width or None  # 0 before the first layout: not known yet
        # one line the width of the window whatever it says (chat.tcss): repainting it needs no re-layout of the
        # screen, which the spinner would otherwise cost 10 times a second, while the model's thread waits
        self.update(fit_status(activity, clock, {name: visible(text) for name, text in details.items()}, width),
                    layout=False)
