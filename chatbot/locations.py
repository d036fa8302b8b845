"""Where blip2-chat keeps its files: one function per directory, nothing created at import.

$BLIP2_CHAT_HOME, when set, holds everything (tests and portable installs use it). Otherwise the
platform's own folders, from `platformdirs`: on Linux $XDG_DATA_HOME/blip2-chat (~/.local/share/...) and
$XDG_CONFIG_HOME/blip2-chat (~/.config/...); on macOS ~/Library/Application Support/blip2-chat; on
Windows the AppData folders.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BLIP2_CHAT_HOME"  # one folder for everything (tests and portable installs use it)
APP = "blip2-chat"


def data_dir() -> Path:
    """Sessions and other data: $BLIP2_CHAT_HOME, else the platform's user data folder for blip2-chat."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def config_dir() -> Path:
    """The config file's folder: $BLIP2_CHAT_HOME, else the platform's user config folder for blip2-chat."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def sessions_dir() -> Path:
    """One JSON file per chat session."""
    return data_dir() / "sessions"


def exports_dir() -> Path:
    """Default folder for /export when no path is given: the current directory."""
    return Path.cwd()


def index_dir() -> Path:
    """The search index `blip2-chat index` builds and `search` and `/find` read (unless --index names another)."""
    return data_dir() / "index"


DEMO_MODEL = "demo"  # --model demo: the small model trained here (chatbot/demo), shipped with the package


def is_demo_model(name: str) -> bool:
    """Whether a model name (a --model value, a chat file's) names the shipped demo model."""
    return name.strip().lower() == DEMO_MODEL


_DEMO_FOLDERS = {"chat": "chat", "retrieval": "search"}  # checkpoint kind -> folder under chatbot/demo/weights


def demo_model_dir(kind: str = "chat") -> Path:
    """The shipped demo model's checkpoint folder for `kind` (package data: no download, no cache).

    One name, two models: `--model demo` is the chat model (weights/chat) where a chat is opened, and the
    retrieval model (weights/search) where `index` and `search` open one.
    """
    if kind not in _DEMO_FOLDERS:
        raise ValueError(f"kind must be one of {tuple(_DEMO_FOLDERS)}, got {kind!r}")
    return Path(__file__).resolve().parent / "demo" / "weights" / _DEMO_FOLDERS[kind]
