"""The Makefile as a fresh clone meets it: the first commands the README gives install what
they need when there is no .venv yet (checked with `make -n`, which prints what would run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_COMMANDS = ["test", "test-unit", "lint", "demo", "run-local", "run-emulator", "test-loader"]


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml", "requirements-dev.txt", ".env.example"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("target", FIRST_COMMANDS)
def test_a_first_command_installs_the_venv_when_it_is_missing(fresh_clone: Path, target: str):
    plan = subprocess.run(
        ["make", "-n", target], cwd=fresh_clone, capture_output=True, text=True, check=True
    ).stdout
    assert "-m venv .venv" in plan, plan
    assert "pip install -q --require-hashes -r requirements-dev.txt" in plan, plan


def test_with_a_venv_installed_make_test_runs_pytest_only(fresh_clone: Path):
    (fresh_clone / ".venv").mkdir()
    (fresh_clone / ".venv" / ".installed").touch()
    plan = subprocess.run(
        ["make", "-n", "test"], cwd=fresh_clone, capture_output=True, text=True, check=True
    ).stdout
    assert "-m venv" not in plan
    assert ".venv/bin/pytest" in plan
