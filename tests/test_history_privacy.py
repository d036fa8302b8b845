"""The Up arrow's history file outlives the chat, so it never keeps a password typed in an address: `/image
https://bob:hunter2@host/a.png` is kept with the login masked, as every message shows it, in the app and the
screen-reader mode alike (one `LineHistory`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.line_history import LineHistory
from chatbot.image_download import without_logins


@pytest.mark.parametrize(("typed", "kept"), [
    ("/image https://bob:hunter2@example.com/cat.png", "/image https://bob:***@example.com/cat.png"),
    ("/compare http://token@x.org/a.png", "/compare http://***@x.org/a.png"),
    ("what about ftp://u:p@h/x and https://h/y?a=b@c", "what about ftp://u:***@h/x and https://h/y?a=b@c"),
    ("a question with an @ sign: me@example.com", "a question with an @ sign: me@example.com"),
])
def test_a_login_in_a_typed_address_is_masked_in_the_history_file(tmp_path: Path, typed: str, kept: str) -> None:
    history = LineHistory(tmp_path / "plain-history", lambda sentence: None)
    history.add([typed])
    assert (tmp_path / "plain-history").read_text(encoding="utf-8") == kept + "\n"
    assert without_logins(typed) == kept


def test_a_pasted_page_is_not_kept_in_the_history_file(tmp_path: Path) -> None:
    from chatbot.core.line_history import MAX_LINE_CHARS

    history = LineHistory(tmp_path / "plain-history", lambda sentence: None)
    history.add(["x" * (MAX_LINE_CHARS + 1), "a question", "y" * MAX_LINE_CHARS])
    assert (tmp_path / "plain-history").read_text(encoding="utf-8").splitlines() == ["a question", "y" * MAX_LINE_CHARS]


def test_the_app_s_up_history_keeps_the_newest_lines_as_the_file_does() -> None:
    from chatbot.core.line_history import HISTORY_LINES
    from chatbot.tui.widgets.chat_input import ChatInput

    box = ChatInput()
    box.remember_all(f"line {n}" for n in range(HISTORY_LINES + 50))
    for n in range(HISTORY_LINES + 50, HISTORY_LINES + 60):
        box.remember(f"line {n}")
    assert box.history == [f"line {n}" for n in range(60, HISTORY_LINES + 60)]
