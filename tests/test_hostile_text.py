"""Text from outside (a session file, a file name, the model) never reaches a terminal raw.

Each front end is fed escape sequences that would set the window title (OSC 0), clear the screen
(CSI 2J) or write the clipboard (OSC 52); what reaches the terminal shows them as text instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.locations import HOME_ENV
from chatbot.tui.widgets.bubbles import MessageBubble, Notice
from chatbot.untrusted import has_controls, visible
from tests.tui_support import SIZE, pilot_test, ready, scripted_app

EVIL = "\x1b]0;PWNED\x07 \x1b[2J \x1b]52;c;ZXZpbA==\x07 \x9b31m \u202eevil"
SHOWN = "\\x1b]0;PWNED\\x07 \\x1b[2J \\x1b]52;c;ZXZpbA==\\x07 \\x9b31m \\u202eevil"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # every control but tab and newline


def test_visible_shows_every_control_and_keeps_the_rest() -> None:
    assert visible(EVIL) == SHOWN and not RAW.search(visible(EVIL))
    assert visible("café, naïve, 日本, emoji 🙂") == "café, naïve, 日本, emoji 🙂"  # printable text untouched
    assert visible("two\nlines\tand\rreturn") == "two\\nlines\\tand\\rreturn"
    assert has_controls(EVIL) and not has_controls(SHOWN)


def test_invisible_characters_that_make_names_look_alike_are_shown() -> None:
    # a probe: "zw\u200b\u200d\ufeff.jpg" was shown as "zw.jpg", "ls\u2028sep.jpg" as "lssep.jpg"
    assert visible("zw\u200b.jpg \u2060\u2061\u2064 \ufeffbom ls\u2028sep\u2029") == \
        "zw\\u200b.jpg \\u2060\\u2061\\u2064 \\ufeffbom ls\\u2028sep\\u2029"
    family, persian = "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert visible(family) == family and visible(persian) == persian  # the joiners emoji and scripts need stay


@pilot_test
async def test_a_session_holding_escapes_is_shown_as_text_in_the_app(pictures) -> None:
    red = pictures["red"]
    session = Session(model="scripted-opt", turns=[Turn(f"q {EVIL}", f"a {EVIL}", ImageRef(str(red), "0" * 64))])
    app = scripted_app(ScriptedEngine("fine"), red, session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        shown = [str(widget.content) for widget in app.query(MessageBubble)] + \
                [str(widget.content) for widget in app.query(Notice)]
        assert f"q {SHOWN}" in shown and f"a {SHOWN}" in shown
        assert not any(RAW.search(text) for text in shown)


def run(*args: object, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatbot", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=120, env={**os.environ, HOME_ENV: str(home)},
                          stdin=subprocess.DEVNULL)


def test_file_names_sessions_and_errors_reach_the_terminal_as_text(tmp_path, pictures, checkpoints) -> None:
    evil_file = tmp_path / f"photo{EVIL}.png"
    shutil.copy(pictures["red"], evil_file)
    caption = run("caption", evil_file, pictures["green"], "--model", checkpoints["opt"], "--max-new-tokens", "3",
                  home=tmp_path)
    assert caption.returncode == 0, caption.stderr
    assert caption.stdout.splitlines()[0].startswith(f"{tmp_path}/photo{SHOWN}.png: ")  # the PATH: prefix
    missing = run("ask", tmp_path / f"gone{EVIL}.png", "what?", home=tmp_path)
    assert missing.returncode == 2 and f"gone{SHOWN}.png" in missing.stderr
    SessionStore(tmp_path / "sessions").save(Session(model="m", turns=[Turn(EVIL, EVIL, ImageRef(EVIL, "0" * 64))]))
    listing = run("sessions", home=tmp_path)
    assert listing.returncode == 0 and "\\x1b]0;PWNED" in listing.stdout
    for result in (caption, missing, listing):
        assert not RAW.search(result.stdout + result.stderr), repr(result.stdout + result.stderr)
