"""Every script in benchmarks/ answers --help with its usage, at once, and measures nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Modules the scripts import, not scripts themselves.
LIBRARIES = {"__init__.py", "common.py", "precision_report.py"}
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if path.name not in LIBRARIES)


def _tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file under `folder` with its size and modification time (an empty dict when absent)."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()}


def test_the_list_of_scripts_is_not_empty() -> None:
    assert "bench_startup.py" in SCRIPTS and "diag_decode_overhead.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_and_writes_nothing(script: str, tmp_path: Path) -> None:
    results_before = _tree_state(BENCHMARKS / "results")
    cache_before = _tree_state(BENCHMARKS / ".cache")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path / "home")}
    # Run as a path, from elsewhere, the way a person types it.
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}"), done.stdout[:300]
    assert "--help" in done.stdout
    assert _tree_state(BENCHMARKS / "results") == results_before
    assert _tree_state(BENCHMARKS / ".cache") == cache_before
    assert list(tmp_path.iterdir()) == []  # nothing made where it ran, not even the scratch home
