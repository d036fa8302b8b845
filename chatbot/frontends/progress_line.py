"""Progress of a long job on stderr: a one-line bar on a terminal, plain sentences anywhere else.

On a terminal the bar is redrawn in place with a carriage return (no other control
characters, no colour). When stderr is a pipe, a log file or a screen reader's transcript, when the
environment asks for plain output (TERM=dumb, ACCESSIBLE=1: chatbot/frontends/screen_reader.py), or
when the caller says a bar would mix with other output on the same screen (`bar=False`), each update
is a whole sentence on its own line, at most one every few seconds.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from chatbot.frontends.screen_reader import is_terminal, plain_output_asked

BAR_WIDTH = 24


def plural(count: int, one: str, many: str = "") -> str:
    """'1 image', '2 images', '0 images'; `many` for nouns that do not just take an s ('1 entry', '3 entries')."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def duration_words(seconds: float) -> str:
    """'45 seconds', '3 minutes', '1 hour 44 minutes', '2 hours 1 minute': how long, for people."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return plural(seconds, "second")
    minutes = round(seconds / 60)
    if minutes < 90:
        return plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    return plural(hours, "hour") + (f" {plural(minutes, 'minute')}" if minutes else "")


def clock_time(seconds: float) -> str:
    """'0:45', '12:05', '2:03:10': how long, compactly, for the bar."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """Counts items done and shows done / total, items per second and time left."""

    def __init__(
        self, total: int, stream: TextIO, *, noun: str = "image", nouns: str = "", every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic, bar: bool = True, environ: Mapping[str, str] | None = None,
        plain: bool = False,
    ) -> None:
        self.total = total
        self.stream = stream
        self.noun = noun  # one item ('image'); `nouns`: more than one (default: noun + 's')
        self.nouns = nouns or noun + "s"
        self.every_seconds = every_seconds  # sentences: at most one per this many seconds (first and last always)
        self.clock = clock
        environ = os.environ if environ is None else environ
        self._environ = environ
        # a bar redrawn in place on a terminal; sentences for a screen reader (`plain`: `plain = true` in the
        # config file, which the caller reads; TERM=dumb or ACCESSIBLE) or a pipe
        self.terminal = bar and is_terminal(stream) and not plain and not plain_output_asked(environ)
        self.done = 0  # items finished, skipped ones included
        self.worked = 0  # items that took work: they set the speed
        self._started = clock()  # the run's start ("took")
        self._measure_after = 0  # the speed is measured once this many items took work (see `start`)
        self._rate_from: float | None = self._started  # when the speed is measured from (None: not yet)
        self._rate_base = 0  # items that took work before then
        self._shown_at: float | None = None
        self._bar_length = 0
        self._drawn = 0  # the count the bar on screen shows (redraws are at most 10 a second)

    def start(self, message: str = "", *, measure_after: int = 0) -> None:
        """Say what is about to happen (`message`, a sentence); the speed is measured from here.

        `measure_after`: measure the speed only from the moment that many items took work, without them (a Ray
        run passes its batch size: its first batch waits for Ray and the workers' models to start, and arrives
        all at once, so neither the wait nor that first burst says how fast the rest will go).
        """
        self._started = self.clock()
        self._measure_after = max(0, measure_after)
        self._rate_from, self._rate_base = (self._started, 0) if not self._measure_after else (None, 0)
        if message:
            self._say(message)

    @property
    def per_second(self) -> float:
        if self._rate_from is None:
            return 0.0
        elapsed, worked = self.clock() - self._rate_from, self.worked - self._rate_base
        return worked / elapsed if elapsed > 0 and worked else 0.0

    def seconds_left(self) -> float | None:
        rate = self.per_second
        return (self.total - self.done) / rate if rate > 0 else None

    def advance(self, worked: bool = True) -> None:
        """One more item finished (`worked=False`: skipped without work)."""
        self.done += 1
        self.worked += int(worked)
        now = self.clock()
        if self._rate_from is None and self.worked >= self._measure_after:
            self._rate_from, self._rate_base = now, self.worked
        last = self.done >= self.total
        if self.terminal:
            if last or self._shown_at is None or now - self._shown_at >= 0.1:
                self._draw_bar()
                self._shown_at = now
        elif last or self._shown_at is None or now - self._shown_at >= self.every_seconds:
            self._say(self.sentence())
            self._shown_at = now

    def sentence(self) -> str:
        """'12 of 40 images done, 3.2 images per second, about 9 seconds left.' ('1 of 1 image done')"""
        text = f"{self.done} of {plural(self.total, self.noun, self.nouns)} done"
        if self.worked and self._rate_from is not None and self.worked > self._rate_base:
            text += f", {self.per_second:.1f} {self.nouns} per second"
        left = self.seconds_left()
        if self.done < self.total and left is not None:
            text += f", about {duration_words(left)} left"
        return text + "."

    def bar(self) -> str:
        """'[#######-----------------] 12/40 images  3.2 images/s  0:09 left'; once all are done, '... took 0:13'."""
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        left = self.seconds_left()
        if self.done >= self.total:
            when = f"took {clock_time(self.clock() - self._started)}"
        else:
            when = f"{clock_time(left) if left is not None else '-:--'} left"
        total = plural(self.total, self.noun, self.nouns)
        return (f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{total}  "
                f"{self.per_second:.1f} {self.nouns}/s  {when}")

    def _columns(self) -> int:
        """The terminal's width: $COLUMNS when set (as shells and `stty cols` leave it), else the stream's own."""
        value = self._environ.get("COLUMNS", "")
        if value.isascii() and value.isdigit() and int(value) > 0:
            return int(value)
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return 80

    def fitted_bar(self, columns: int) -> str:
        """`bar` in fewer than `columns` characters (a line that wraps would make every redraw a new line): the
        graphic goes first, then the speed, then the end is cut."""
        text = self.bar()
        if len(text) < columns:
            return text
        text = text[text.index("] ") + 2:]  # '12/40 images  3.2 images/s  0:09 left'
        if len(text) >= columns:
            count, _, when = text.split("  ")
            text = f"{count}  {when}"
        return text[:max(1, columns - 1)]

    def _draw_bar(self) -> None:
        text = self.fitted_bar(self._columns())
        self.stream.write("\r" + text.ljust(self._bar_length))  # spaces cover a longer previous bar
        self.stream.flush()
        self._bar_length = len(text)
        self._drawn = self.done

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """A sentence in the middle of the run (a Ray worker that stopped): on its own line, below the bar's
        line as it stands; the bar goes on below it at the next item."""
        if self.terminal and self._bar_length:
            self.stream.write("\n")
            self._bar_length = 0
        self._say(message)

    def finish(self) -> None:
        """Bring the bar up to date (a stop may come between redraws), then end its line, so what follows
        starts on a fresh one."""
        if self.terminal and self._drawn != self.done:
            self._draw_bar()
        if self.terminal and self._bar_length:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_length = 0
