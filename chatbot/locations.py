"""Where blip2-chat keeps its files: one function per directory, nothing created at import.

$BLIP2_CHAT_HOME, when set, holds everything (tests and portable installs use it): a relative path is
taken from the current folder and used (and shown) absolute; an empty or blank value counts as unset;
one that names a file (or anything else that is no folder) is one UserError. Otherwise the
platform's own folders, from `platformdirs`: on Linux $XDG_DATA_HOME/blip2-chat (~/.local/share/...) and
$XDG_CONFIG_HOME/blip2-chat (~/.config/...); on macOS ~/Library/Application Support/blip2-chat; on
Windows the AppData folders.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from chatbot.errors import UserError
from chatbot.file_kinds import LINK_TO_NOTHING, file_kind

HOME_ENV = "BLIP2_CHAT_HOME"  # one folder for everything (tests and portable installs use it)
APP = "blip2-chat"


def home_dir() -> Path | None:
    """$BLIP2_CHAT_HOME as an absolute path, or None where it is unset, empty or blank.

    Raises:
        UserError: it names something that is not a folder (a file, a link to nothing) or cannot be looked at;
            a folder that is not there yet is fine (it is made when something is saved).
    """
    value = os.environ.get(HOME_ENV, "")
    if not value.strip():
        return None
    home = Path(os.path.abspath(Path(value).expanduser()))  # relative: from the current folder, once, here
    hint = f"Point ${HOME_ENV} at a folder (it is made if missing), or unset it to use the platform's folders."
    try:
        mode = os.stat(home).st_mode
    except FileNotFoundError:
        if os.path.islink(home):
            raise UserError(f"${HOME_ENV} is {home}, {LINK_TO_NOTHING}.", hint) from None
        return home
    except OSError as error:  # a file on the way (NotADirectoryError), a loop of links, no permission
        raise UserError(f"${HOME_ENV} is {home}, which cannot be used ({error.strerror or error}).", hint) from None
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise UserError(f"${HOME_ENV} is {home}, {kind}, not a folder.", hint)
    return home


def data_dir() -> Path:
    """Sessions and other data: $BLIP2_CHAT_HOME, else the platform's user data folder for blip2-chat."""
    home = home_dir()
    if home is not None:
        return home
    import platformdirs

    return _platform_folder(platformdirs.user_data_dir, "data")


def config_dir() -> Path:
    """The config file's folder: $BLIP2_CHAT_HOME, else the platform's user config folder for blip2-chat."""
    home = home_dir()
    if home is not None:
        return home
    return platform_config_dir()


def platform_config_dir() -> Path:
    """The platform's user config folder for blip2-chat, $BLIP2_CHAT_HOME or not (a config file there while it is
    set is not read: `chatbot.core.config_file.unread_config_note` says so)."""
    import platformdirs

    return _platform_folder(platformdirs.user_config_dir, "config")


def _platform_folder(where: Callable[..., str], what: str) -> Path:
    """The platform's folder for blip2-chat's `what`; UserError when there is no home folder to put it in (HOME
    unset for a user the system does not know: platformdirs then raises, or gives a path starting with a literal
    `~` that would land in the current folder)."""
    try:
        folder = where(APP, appauthor=False)
    except (RuntimeError, KeyError, OSError):
        folder = ""
    if not os.path.isabs(folder):
        raise UserError(f"There is no home folder to keep blip2-chat's {what} in ($HOME is not set, and the system "
                        "knows of none for this user).",
                        f"Set HOME to your home folder, or ${HOME_ENV} to a folder for blip2-chat "
                        f"(e.g. {HOME_ENV}=/tmp/blip2-chat).")
    return Path(folder)


def sessions_dir() -> Path:
    """One JSON file per chat session."""
    return data_dir() / "sessions"


def pasted_dir() -> Path:
    """Where pasted images are kept, one file per image, named by its sha256 (`chatbot.core.clipboard`)."""
    return data_dir() / "pasted"


def line_history_file() -> Path:
    """The earlier lines typed in the app and the screen-reader mode, kept across chats for the Up arrow."""
    return data_dir() / "plain-history"


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
