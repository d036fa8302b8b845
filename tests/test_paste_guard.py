"""A terminal's paste stays text: an ESC inside a bracketed paste no longer turns the rest of it into key presses.

The real Textual parser is fed through the guard (`PasteGuardedParser`), in chunks as `os.read` would cut them;
what comes out is compared with what the pasted text is (ESC shown as U+241B, NUL dropped as Textual drops it)
and with what Textual's own parser makes of input without pastes. The app's own driver is checked to read
with the guard, and the chat app, in the test's app and in a real pseudo-terminal, is given a hostile paste to
show it stays open with the text in its box.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from textual import events
from textual._xterm_parser import XTermParser
from textual.message import Message

from chatbot.engine.scripted import ScriptedEngine
from chatbot.tui.paste_guard import SHOWN_ESC, PasteGuardedParser
from chatbot.tui.terminal_gone import driver_class_for
from chatbot.tui.widgets.chat_input import ChatInput
from tests.terminal_support import Screen
from tests.test_chat_signals import _run_in_terminal
from tests.tui_support import SIZE, input_value, pairs, pilot_test, ready, scripted_app, wait_until

START, END = "\x1b[200~", "\x1b[201~"
# ESC, then text that looks like a key, a colour, a mouse click, focus, F1, a second paste's start
LOOKALIKES = "a\x1b[A\x1b[31mred\x1b[<0;3;4M\x1b[I\x1bOP\x1b[200~b"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path))
    return tmp_path


def parsed(chunks: Iterable[str], parser: XTermParser | None = None) -> list[tuple[object, ...]]:
    """What `parser` (a guarded one by default) makes of `chunks`, fed one read at a time, then the end of input;
    each event as a tuple of what a user would notice (a key's name and character, a paste's text)."""
    parser = parser or PasteGuardedParser()
    got: list[Message] = []
    for chunk in [*filter(None, chunks), ""]:  # "" only at the end: it is the end of input
        got.extend(parser.feed(chunk))
    return [summary(event) for event in got]


def summary(event: Message) -> tuple[object, ...]:
    if isinstance(event, events.Key):
        return ("key", event.key, event.character)
    if isinstance(event, events.Paste):
        return ("paste", event.text)
    if isinstance(event, events.MouseEvent):
        return (type(event).__name__, event.x, event.y, event.button)
    return (type(event).__name__,)


def pasted(text: str) -> tuple[str, str]:
    """The Paste event a paste of `text` should give: its ESCs shown, its NULs dropped (as Textual drops them)."""
    return ("paste", text.replace("\x1b", "\u241b").replace("\x00", ""))


@pytest.mark.parametrize("chunks, text", [
    # the prober's repro: ESC x, then Ctrl+Q (the app quit), Ctrl+O (the picker opened), Enter (a question went)
    ([START + "look\x1bx\x11" + END], "look\x1bx\x11"),
    ([START + "look\x1bx\x0f\r" + END], "look\x1bx\x0f\r"),
    ([START + LOOKALIKES + END], LOOKALIKES),
    ([START + "\x1b" * 40 + "q" + END], "\x1b" * 40 + "q"),  # more than Textual's 32-character sequence limit
    ([START + "x\x1b[201" + END], "x\x1b[201"),  # an end marker's beginning, then the real end
    ([START + "x\x1b[20", "0~y" + END], "x\x1b[200~y"),  # a fake end marker, split across two reads
    ([START + "x\x1b[2", "01x\x11" + END], "x\x1b[201x\x11"),
    ([START + "x\x1b", "[201~"], "x"),  # the real end marker split across two reads...
    ([START + "x\x1b[20", "1~"], "x"),
    ([START + "x", "\x1b[201", "~"], "x"),  # ...and across three
    ([START + "x\x1b[20", "\x1b[201~"], "x\x1b[20"),  # a marker's beginning at the end of a read that is not one
    ([START[:3], START[3:] + "\x1b\x11", END], "\x1b\x11"),  # the start marker split across reads
])
def test_a_hostile_paste_gives_one_paste_event_with_its_text_and_no_keys(chunks: list[str], text: str) -> None:
    assert parsed(chunks) == [pasted(text)]


def test_input_that_ends_inside_a_paste_gives_no_keys() -> None:
    assert not [event for event in parsed([START + "x\x1b"]) if event[0] == "key"]
    assert not [event for event in parsed([START + "x\x1bq\x11"]) if event[0] == "key"]


def test_textual_alone_turns_such_a_paste_into_keys() -> None:
    """The bug itself, in the parser as Textual ships it: the guard is what makes the difference. (When this
    fails, Textual has fixed it, and `chatbot.tui.paste_guard` can go.)"""
    got = parsed([START + "look\x1bx\x11" + END], XTermParser())
    assert ("key", "ctrl+q", "\x11") in got


def test_keys_after_a_paste_are_keys_again() -> None:
    assert parsed([START + "p\x1bq" + END + "\x11"]) == [pasted("p\x1bq"), ("key", "ctrl+q", "\x11")]
    assert parsed([START + "p\x1b", "[201~\x1b[A"]) == [pasted("p"), ("key", "up", None)]


TYPED = [
    "hello",
    "\x1b",  # Escape alone
    "\x1b[A\x1b[B\x1b[1;5C",  # arrows, Ctrl+Right
    "\x1bx",  # Alt+X
    "\x11\x0f\r\x7f\t",  # Ctrl+Q, Ctrl+O, Enter, Backspace, Tab
    "\x1b[<0;10;5M\x1b[<0;10;5m",  # a click
    "\x1b[I\x1b[O",  # focus in, focus out
    "\x1b[2",  # the beginning of a sequence at the end of a read: the parser's own business
    "0~",
    "\x1b[97;5u",  # a kitty-protocol Ctrl+A
    START + "a normal paste, with spaces\tand a tab" + END,
    START + END,  # an empty one
    "\x1b[200",
    "~split start" + END,
    "é中👨\u200d👩",
]


@pytest.mark.parametrize("cut", [1, 3, 7, len("".join(TYPED))])
def test_typed_keys_and_plain_pastes_are_as_textual_reads_them(cut: int) -> None:
    stream = "".join(TYPED)
    chunks = [stream[at:at + cut] for at in range(0, len(stream), cut)]
    guarded = parsed(chunks)
    assert guarded == parsed(chunks, XTermParser())
    assert pasted("a normal paste, with spaces\tand a tab") in guarded and ("paste", "split start") in guarded


# pieces of markers, sequences and control characters, among any other characters
PASTE_PIECES = st.sampled_from(["\x1b", "\x1b[", "[", "20", "201", "~", "\x1b[2", "\x1b[20", "\x1b[201", "0~",
                                "\x00", "\x11", "\x0f", "\r", "\n", "x", ";", "<", "M", "O", "P", "A", "u"])
PASTE_TEXT = st.lists(st.one_of(PASTE_PIECES, st.characters()), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(before=st.text(st.sampled_from("ab\x11\r"), max_size=4),
       content=PASTE_TEXT.filter(lambda text: END not in text),
       cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6))
def test_no_key_comes_out_of_any_paste(before: str, content: str, cuts: list[int]) -> None:
    """Whatever a paste holds (but its own end marker, which only the terminal can keep out) and however the
    reads cut it, it comes out as one Paste event with its text, and no key between its start and its end."""
    stream = before + START + content + END
    bounds = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    chunks = [stream[start:stop] for start, stop in zip(bounds, bounds[1:], strict=False)]
    got = parsed(chunks)
    assert got[len(before):] == [pasted(content)]
    assert got[:len(before)] == parsed([before], XTermParser())


@pytest.fixture
def driver_signals() -> Iterator[None]:
    """Textual's driver puts in its own SIGTSTP and SIGCONT handlers when built; they are put back after."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTSTP, signal.SIGCONT)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.skipif(sys.platform == "win32", reason="Textual's POSIX driver")
def test_the_apps_driver_reads_the_terminal_with_the_guard(driver_signals: None) -> None:
    """The app's own driver, reading a pipe as it reads the terminal: the hostile paste arrives as one Paste."""
    from textual.drivers.linux_driver import LinuxDriver

    got: list[Message] = []

    class Recording(driver_class_for(LinuxDriver)):  # type: ignore[misc]
        def process_message(self, message: Message) -> None:  # what would go to the app
            got.append(message)
            if isinstance(message, events.Key) and message.key == "z":  # the last thing written: done
                self.exit_event.set()

    async def read_all() -> None:
        driver = Recording(SimpleNamespace())
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, (START + "look\x1bx\x11\x0f\r" + END + "z").encode())
            driver.fileno = read_end
            driver.run_input_thread()  # here, not in a thread: it returns once "z" is read
        finally:
            os.close(read_end)
            os.close(write_end)

    asyncio.run(read_all())
    assert [summary(event) for event in got] == [pasted("look\x1bx\x11\x0f\r"), ("key", "z", "z")]


@pilot_test
async def test_a_hostile_paste_leaves_the_app_open_with_the_text_shown_in_the_box(pictures: Any) -> None:
    """What the app makes of the parser's events: Ctrl+Q in the paste no longer quits, Ctrl+O opens no picker,
    Enter sends nothing; the box holds the text with its control characters shown, never raw."""
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.query_one(ChatInput).focus()
        for event in PasteGuardedParser().feed(START + "look\x1bx\x11\x0f\r" + END):
            app.post_message(event)
        await wait_until(pilot, lambda: input_value(app) == f"look{SHOWN_ESC}x\\x11\\x0f", what="the pasted text")
        await pilot.pause()
        assert app.is_running and app.screen is app.screen_stack[0]
        assert pairs(app) == []


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_the_real_app_in_a_terminal_keeps_a_hostile_paste_as_text(
    checkpoints: dict[str, Path], pictures: dict[str, Path], home: Path
) -> None:
    """The prober's repro, end to end: the paste's Ctrl+Q no longer quits the app (it is still there for SIGTERM,
    exit 143), its Enter sent nothing, and the draft saved is the pasted text, shown, then what was typed after it."""
    process, ours, theirs = _run_in_terminal(
        [str(pictures["red"]), "--model", str(checkpoints["opt"]), "--max-new-tokens", "4"], home)
    screen = Screen(ours)
    try:
        screen.wait_for(lambda: b"Ready" in screen.data, "the model to load")
        os.write(ours, b"what is it?\r")  # a chat with a turn is saved, with its draft
        screen.wait_for(lambda: any((home / "sessions").glob("*.json")), "the answer to be saved")
        os.write(ours, (START + "look\x1bx\x11\x0f\r" + END + " typed").encode())
        screen.wait_for(lambda: b"typed" in screen.data or process.poll() is not None,
                        "the typed word after the paste")  # or the exit, that the paste's Ctrl+Q caused
        process.send_signal(signal.SIGTERM)
        assert screen.drain(process) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
        os.close(ours)
        os.close(theirs)
    (session,) = [json.loads(path.read_text()) for path in (home / "sessions").glob("*.json")]
    assert session["draft"] == f"look{SHOWN_ESC}x\\x11\\x0f typed"
    assert [turn["question"] for turn in session["turns"]] == ["what is it?"]


def test_the_app_still_starts_where_the_guard_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard reaches into Textual's private parser module; a Textual that moved it must not stop the app from
    starting: its driver then reads as Textual's own does."""
    import sys

    from textual.drivers.linux_driver import LinuxDriver

    from chatbot.tui.terminal_gone import driver_class_for

    monkeypatch.setitem(sys.modules, "chatbot.tui.paste_guard", None)  # importing it raises ImportError
    driver = driver_class_for(LinuxDriver)
    assert issubclass(driver, LinuxDriver) and driver.__name__ == "OutlivingLinuxDriver"
    assert driver.run_input_thread is LinuxDriver.run_input_thread
