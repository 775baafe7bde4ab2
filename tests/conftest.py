"""Shared fixtures: every test runs the real CLI in a temporary repo, with a throwaway
age identity (HOME and SOPS_AGE_KEY_FILE point into the temp dir, never at the user's)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import forkrun
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-27T12:00:00Z"


# --------------------------------------------------------------------------- selections

QUICK_SKIPS = ("slow", "interop")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`python3 -m pytest` alone runs the quick selection: every test but those marked
    slow or interop (run them with `-m slow`, `-m interop` or `-m "slow or interop"`).
    A `-m` expression (`-m ""`: everything), a `-k` expression, `--lf`/`--ff`, or paths
    and test ids named on the command line select as pytest always does."""
    args = [*config.invocation_params.args, *os.environ.get("PYTEST_ADDOPTS", "").split()]
    # a -m of any kind (`-m slow`, `-qm slow`, `-m ""` for everything), a -k, a rerun of
    # failures, or named paths: the selection is the user's
    marked = config.option.markexpr or any(re.match(r"-[A-Za-z]*m", a) for a in args if not a.startswith("--"))
    chosen = config.option.keyword or config.getoption("lf", False) or config.getoption("failedfirst", False)
    if marked or chosen or config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in QUICK_SKIPS) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Pkic:
    def __init__(self, env: dict, home: Path):
        self.env = env
        self.home = home

    def __call__(self, *args: str, cwd: Path | None = None, check: bool | None = None, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        # a process of its own, forked from this one (tests/forkrun.py explains why and
        # when it falls back to a new interpreter)
        proc = forkrun.run(list(args), cwd, {**self.env, **(env or {})}, input)
        if check or (check is None and False):
            assert proc.returncode == 0, f"pkic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def ok(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = self(*args, cwd=cwd, env=env)
        assert proc.returncode == 0, f"pkic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc


def make_pkic(base: Path) -> Pkic:
    """A CLI runner isolated in ``base``: HOME, the age identity and TMPDIR live there."""
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPS_", "PKIC_", "XDG_"))}
    env.update(
        HOME=str(home),
        SOPS_AGE_KEY_FILE=str(home / "age" / "keys.txt"),
        # the seal key, named on its own so that tests which move the age identity keep it
        PKIC_SEAL_KEY_FILE=str(home / "seal" / "pkic-seal.key"),
        PYTHONPATH=str(REPO_ROOT),
        COLUMNS="200",
        NO_COLOR="1",
        GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com",
        TMPDIR=str(base),
        # tests sign at fixed times (--now): apply refuses a --now far from the clock unless told
        PKIC_TIME_TRAVEL="1",
    )
    return Pkic(env, home)


@pytest.fixture
def pkic(tmp_path: Path) -> Pkic:
    return make_pkic(tmp_path)


@pytest.fixture
def repo(tmp_path: Path, pkic: Pkic) -> Path:
    """A fresh `pkic init` repo (not yet applied)."""
    pkic.ok("init", str(tmp_path / "pki"))
    return tmp_path / "pki"


@pytest.fixture
def applied(repo: Path, pkic: Pkic) -> Path:
    """The init example, applied at NOW."""
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    return repo


def init_applied_committed(pkic: Pkic, repo: Path) -> Path:
    """`pkic init`, its files committed, then `apply --commit` at NOW: a sealed repo with
    history, as a PKI repo looks after its first merge and apply."""
    pkic.ok("init", str(repo))
    for args in (("add", "-A"), ("commit", "-q", "-m", "init")):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=pkic.env)
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    return repo


def unsealed(repo: Path) -> dict:
    """Make ``repo`` an unsealed one (a local experiment): no out.seal, and an env with no
    seal key. For tests of what apply does with a damaged out/ when nothing seals it."""
    (repo / "out.seal").unlink(missing_ok=True)
    return {"PKIC_SEAL_KEY_FILE": str(repo.parent / "no-seal-key")}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below directory, by relative path: to prove nothing changed."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_spec(repo: Path, text: str) -> None:
    (repo / "pki.yaml").write_text(text, encoding="utf-8")
