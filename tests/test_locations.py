"""Where files go: $BLIP2_CHAT_HOME first, else the platform's folders (XDG variables on Linux)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chatbot import locations


def test_blip2_chat_home_holds_everything(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(locations.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "ignored"))
    assert locations.data_dir() == locations.config_dir() == tmp_path / "home"
    assert locations.sessions_dir() == tmp_path / "home" / "sessions"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are Linux's convention")
def test_xdg_folders_on_linux(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(locations.HOME_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert locations.data_dir() == tmp_path / "data" / "blip2-chat"
    assert locations.config_dir() == tmp_path / "config" / "blip2-chat"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert locations.data_dir() == tmp_path / "user" / ".local" / "share" / "blip2-chat"


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_an_empty_or_blank_home_counts_as_unset(monkeypatch, tmp_path: Path, value: str) -> None:
    monkeypatch.setenv(locations.HOME_ENV, value)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    assert locations.home_dir() is None
    assert locations.data_dir().is_absolute() and locations.config_dir().is_absolute()
    if sys.platform.startswith("linux"):
        assert locations.sessions_dir() == tmp_path / "data" / "blip2-chat" / "sessions"


def test_a_relative_home_is_made_absolute(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(locations.HOME_ENV, "relative/../here")
    assert locations.data_dir() == locations.config_dir() == tmp_path / "here"
    assert locations.sessions_dir() == tmp_path / "here" / "sessions"


@pytest.mark.parametrize("kind", ["file", "under a file", "dangling link"])
def test_a_home_that_is_no_folder_is_one_sentence_for_every_command(monkeypatch, tmp_path: Path, capsys,
                                                                   kind: str) -> None:
    from chatbot.cli import main
    from chatbot.errors import UserError

    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    home = {"file": tmp_path / "file", "under a file": tmp_path / "file" / "home",
            "dangling link": tmp_path / "link"}[kind]
    monkeypatch.setenv(locations.HOME_ENV, str(home))
    said = {"file": f"$BLIP2_CHAT_HOME is {home}, a file, not a folder.",
            "under a file": f"$BLIP2_CHAT_HOME is {home}, which cannot be used (Not a directory).",
            "dangling link": f"$BLIP2_CHAT_HOME is {home}, a link to nothing."}[kind]
    hint = "Point $BLIP2_CHAT_HOME at a folder (it is made if missing), or unset it to use the platform's folders."
    for where in (locations.data_dir, locations.config_dir, locations.sessions_dir, locations.index_dir):
        with pytest.raises(UserError) as error:
            where()
        assert str(error.value) == f"{said} {hint}"
    for command in (["sessions"], ["ask", str(tmp_path / "x.jpg"), "hi?"]):  # `sessions` said "No saved sessions yet"
        assert main(command) == 2
        captured = capsys.readouterr()
        assert captured.err == f"blip2-chat: {said} {hint}\n" and captured.out == "", command


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG rules of Linux")
@pytest.mark.parametrize("platformdirs_says", ["raise", "~/.local/share/blip2-chat"])
def test_no_home_folder_at_all_is_one_sentence_not_a_traceback_or_a_tilde_folder(
        monkeypatch, tmp_path: Path, capsys, platformdirs_says: str) -> None:
    """HOME unset for a user the system does not know (a container, `env -i` under another uid): platformdirs
    raises (4.x) or answers `~/...` (3.x), which would have put the chats in a folder named `~` here."""
    import platformdirs

    from chatbot.cli import main

    def where(*args: object, **kwargs: object) -> str:
        if platformdirs_says == "raise":
            raise RuntimeError("could not determine the home directory for '~/.local/share'")
        return platformdirs_says

    monkeypatch.delenv("BLIP2_CHAT_HOME")
    monkeypatch.setattr(platformdirs, "user_data_dir", where)
    monkeypatch.setattr(platformdirs, "user_config_dir", where)
    monkeypatch.chdir(tmp_path)
    assert main(["sessions"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("blip2-chat: There is no home folder to keep blip2-chat's ") and "BLIP2_CHAT_HOME" in said
    assert list(tmp_path.iterdir()) == []  # no `~` folder made here
