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
