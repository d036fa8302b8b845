"""The screen-reader mode's /help names Tab where readline completes lines, and the commands it completes."""

from chatbot.core.completion import PATH_COMMANDS
from chatbot.frontends.plain.chat import keys_help


class Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_help_at_a_screen_names_tab_and_every_command_it_completes_paths_for() -> None:
    at_screen = keys_help(Stream(True), Stream(True))
    assert "Tab completes a command's name" in at_screen
    for name in PATH_COMMANDS:
        assert f"/{name}" in at_screen


def test_help_without_line_editing_does_not_promise_tab() -> None:
    assert "Tab" not in keys_help(Stream(True), Stream(False))  # `> chat.txt`: lines read without readline
