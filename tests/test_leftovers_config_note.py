"""With $BLIP2_CHAT_HOME set, a config file in the platform's folder (~/.config/blip2-chat/config.toml) is not
read; `unread_config_note` is the one sentence that says which file is read and which is not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chatbot.core.config_file import read_config, unread_config_note
from chatbot.locations import HOME_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CONFIG_HOME is Linux's convention")


@pytest.fixture
def usual(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The platform's config file (not written yet), under an XDG_CONFIG_HOME of the test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "blip2-chat" / "config.toml"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_usual_config_with_no_config_in_the_home_is_named_as_unread(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(usual, "max_new_tokens = 7\n")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert read_config() == {}  # the documented rule: only $BLIP2_CHAT_HOME's file is read
    assert unread_config_note() == (
        f"No config file is read: ${HOME_ENV} is set, so blip2-chat looks for {tmp_path}/home/config.toml "
        f"(there is none), not {usual}. Copy it there, or unset ${HOME_ENV}, to use it (an empty file there "
        "ends this note).")


def test_a_usual_config_beside_the_home_s_own_is_not_named_at_every_start(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(usual, "max_new_tokens = 7\n")
    _write(tmp_path / "home" / "config.toml", "max_new_tokens = 9\n")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert read_config() == {"max_new_tokens": 9}
    assert unread_config_note() is None  # whoever keeps a config file in the home knows which one is read


def test_nothing_is_said_when_the_usual_config_is_read_or_absent(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert unread_config_note() is None  # no file in the usual place
    usual.parent.mkdir(parents=True)
    usual.mkdir()  # a folder of that name is no config file to point at
    assert unread_config_note() is None
    usual.rmdir()
    _write(usual, "max_new_tokens = 7\n")
    monkeypatch.delenv(HOME_ENV)
    assert unread_config_note() is None  # unset: the usual file is the one read
    assert read_config() == {"max_new_tokens": 7}
    monkeypatch.setenv(HOME_ENV, str(usual.parent))  # the home is the usual folder itself
    assert unread_config_note() is None
    (tmp_path / "link").symlink_to(usual.parent)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "link"))  # or a link to it: the same file
    assert unread_config_note() is None


def test_a_home_that_is_no_folder_is_left_to_the_error_every_command_gives(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(usual, "max_new_tokens = 7\n")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "a-file"))
    assert unread_config_note() is None


def test_a_control_character_in_a_path_is_shown_never_sent(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(usual, "max_new_tokens = 7\n")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home\x1b[31m"))
    note = unread_config_note()
    assert note is not None and "\x1b" not in note and "home\\x1b[31m" in note


def test_a_command_says_the_note_on_stderr_once_and_a_chat_shows_it_first(
        usual: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chatbot.cli import _config_notes, main

    _write(usual, "max_new_tokens = 7\n")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    note = unread_config_note()
    assert note is not None
    assert main(["sessions"]) == 0
    assert capsys.readouterr().err.count(f"blip2-chat: {note}") == 1
    assert _config_notes("chat") == [note]  # kept for the chat to show first, in its own place
    assert capsys.readouterr().err == ""
