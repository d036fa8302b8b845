"""The status line: what the app is doing, the model, device, precision, memory, speed of the last answer.

Memory is the process's resident set (psutil, on every platform); accelerator memory comes from the
engine's `device_memory_bytes()` hook, so this module never imports torch. Sizes are decimal (1 GB =
10^9 bytes), as in the precision planner's sentences and the models table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.widgets import Static

from chatbot.engine.base import Engine, GenerationStats
from chatbot.untrusted import visible

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


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

    def _render_line(self) -> None:
        activity = self.activity
        if self.busy_since is not None:
            elapsed = int(time.monotonic() - self.busy_since)
            activity = f"{SPINNER[self._frame % len(SPINNER)]} {activity}" + (f" {elapsed} s" if elapsed else "")
        parts = [activity, self.model, self.device, self.precision, self.memory, self.speed]
        self.update(visible(" │ ".join(part for part in parts if part)))
