"""The linter and formatter configured in pyproject.toml ([tool.ruff]) pass on the whole tree, so CI (which runs
the test suite) runs them too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(command: list) -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is not installed: it comes with the [test] extra (pip install -e '.[test]')"
    result = subprocess.run([ruff, *command, "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff {' '.join(command)} found problems:\n{result.stdout}{result.stderr}"
