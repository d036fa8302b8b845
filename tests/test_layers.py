"""The layering contracts of pyproject.toml ([tool.importlinter]) hold: checked as part of the test command.

A change that imports torch outside chatbot/engine, or makes prompts/ depend on the app, fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_no_import_circle() -> None:
    """No module imports (directly or through others) a module that imports it back: each layer and
    package reads top to bottom. Imports inside functions and under TYPE_CHECKING count too."""
    import grimp

    graph = grimp.build_graph("chatbot", "prompts", cache_dir=None)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    circles = []
    for module in sorted(imports):
        for imported in sorted(imports[module]):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                circles.append(f"{module} <-> {imported}")
    assert not circles, circles


def test_the_contracts_catch_an_upward_import(tmp_path: Path) -> None:
    """The layers contract is not vacuous: the same configuration over a copy of the code in which the
    core imports a front end is broken."""
    import shutil

    for package in ("chatbot", "prompts"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    core = tmp_path / "chatbot" / "core" / "session.py"
    core.write_text(core.read_text(encoding="utf-8") + "\nimport chatbot.frontends.oneshot  # noqa\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0 and "Layers" in run.stdout and "BROKEN" in run.stdout, run.stdout + run.stderr
