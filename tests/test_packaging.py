"""Every file the package reads at run time goes into the wheel: a non-Python file under chatbot/ or prompts/ is
listed in pyproject.toml's package-data, or an installed (not editable) blip2-chat lacks it (the app's style
sheet once was: `pip install .` gave an app that could not start)."""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("chatbot", "prompts")


def package_of(path: Path) -> tuple[str, Path]:
    """The package a file belongs to (its nearest folder with an __init__.py) and that folder."""
    folder = path.parent
    while not (folder / "__init__.py").exists():
        folder = folder.parent
    return ".".join(folder.relative_to(ROOT).parts), folder


def matches(relative: str, pattern: str) -> bool:
    """setuptools' glob, part by part (`*` never crosses a folder)."""
    parts, pattern_parts = relative.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(map(fnmatchcase, parts, pattern_parts))


def data_files() -> list[Path]:
    return sorted(path for top in SOURCES for path in (ROOT / top).rglob("*")
                  if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts)


def test_every_data_file_is_declared_as_package_data():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for path in data_files():
        package, folder = package_of(path)
        relative = path.relative_to(folder).as_posix()
        if not any(matches(relative, pattern) for pattern in declared.get(package, ())):
            missing.append(f"{path.relative_to(ROOT)} (package {package})")
    assert not missing, "not in [tool.setuptools.package-data]: " + ", ".join(missing)


def test_the_check_sees_the_style_sheet_and_the_demo_weights():
    """The check above is only as good as the files it walks: the ones we know of are among them."""
    found = {path.relative_to(ROOT).as_posix() for path in data_files()}
    assert "chatbot/tui/chat.tcss" in found
    assert "chatbot/demo/weights/chat/model.safetensors" in found


def test_the_version_is_written_once_and_the_installed_metadata_says_it():
    """pyproject takes the version from chatbot.__version__ (`--version`, the download User-Agent), so the two
    cannot drift apart."""
    from importlib.metadata import version

    import chatbot

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "chatbot.__version__"}
    assert version("blip2-chat") == chatbot.__version__


def test_the_sdist_carries_the_licence_and_what_its_tests_need():
    manifest = (ROOT / "MANIFEST.in").read_text().split("\n")
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert {"include LICENSE README.md", "graft tests", "graft examples"} <= set(manifest)
