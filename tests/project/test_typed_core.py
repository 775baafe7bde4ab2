"""compiler/ stays clean under the tools pyproject.toml configures (issue 14): ruff's
lint and its formatter, and mypy in strict mode with the pydantic plugin. Run here so
that the README's one test command (and .ci/run) holds them, as any other test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args", [("ruff", "check", "compiler"), ("ruff", "format", "--check", "compiler")], ids=["lint", "format"])
def test_ruff_is_clean(args: tuple[str, ...]) -> None:
    p = _run(*args)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    p = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "Success: no issues found" in p.stdout
