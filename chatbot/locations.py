"""Where blip2-chat keeps its files: one function per directory, nothing created at import."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BLIP2_CHAT_HOME"  # one folder for everything (tests and portable installs use it)


def data_dir() -> Path:
    """Sessions and other data: $BLIP2_CHAT_HOME, else $XDG_DATA_HOME/blip2-chat, else ~/.local/share/blip2-chat."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "blip2-chat"


def config_dir() -> Path:
    """The config file's folder: $BLIP2_CHAT_HOME, else $XDG_CONFIG_HOME/blip2-chat, else ~/.config/blip2-chat."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "blip2-chat"


def sessions_dir() -> Path:
    """One JSON file per chat session."""
    return data_dir() / "sessions"


def exports_dir() -> Path:
    """Default folder for /export when no path is given: the current directory."""
    return Path.cwd()
