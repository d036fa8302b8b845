"""Ctrl+C (SIGINT) during `describe`: the first one stops the run, every later one is ignored.

The first lands as KeyboardInterrupt, but never in the middle of a row: while a row is written and
counted (`held`) it waits, and lands just after, so the count said at the stop is the rows saved. A
second Ctrl+C, pressed while the run is stopping (closing the file, saying how far it got, leaving), must
not interrupt that; it is ignored, and the run leaves as soon as everything is saved
(`chatbot.core.runtime.exit_now`), so there is nothing to wait for. The handler itself is
`chatbot.frontends.stop_signals.StopSignals` (shared with `index`, which takes SIGTERM and SIGHUP too).
"""

from __future__ import annotations

from chatbot.frontends.stop_signals import StopSignals


class CtrlC(StopSignals):
    """The run's SIGINT handler while `installed`; `pressed` once a real Ctrl+C has stopped the run."""
