"""The config file in tests: a home of the test's own that holds it, writing it, and the mark that skips a test
where TOML cannot be read."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from chatbot.core.settings import MODEL_ENV
from chatbot.locations import HOME_ENV

NEEDS_TOML = pytest.mark.skipif(sys.version_info < (3, 11) and not importlib.util.find_spec("tomli"),
                                reason="reading TOML needs Python 3.11 or tomli")


def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tmp_path` as blip2-chat's home, where the config file is looked for; no model named by the environment."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    monkeypatch.delenv(MODEL_ENV, raising=False)
    return tmp_path


def write_config(home: Path, text: str) -> Path:
    """`text` as the config file of `home`; its path."""
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path
