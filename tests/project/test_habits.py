"""The habits of a well-kept project (issue 15): the version is written once, in
compiler/__init__.py; contributors' pre-commit hooks run tools the test extras install;
users' pre-commit hook (`pkic validate`) passes on the worked example."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import compiler

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def tracked_files() -> list[str]:
    p = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in p.stdout.split("\0") if f]


# --------------------------------------------------------------------------- the version


def test_the_version_is_written_once_in_compiler_init():
    version = compiler.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", version), version
    # the version, not a piece of an address such as 10.1.0.5
    literal = re.compile(rb"(?<![\d.])" + re.escape(version.encode()) + rb"(?![\d.])")
    found = []
    for name in tracked_files():
        if name.startswith("tests/") or name in ("CHANGELOG.md", "compiler/__init__.py"):
            continue
        path = ROOT / name
        if path.is_file() and not path.is_symlink() and literal.search(path.read_bytes()):
            found.append(name)
    assert found == [], f"{version} is written in {found}: compiler/__init__.py is its only source"
    assert literal.search((ROOT / "compiler" / "__init__.py").read_bytes())


def test_pyproject_reads_the_version_from_compiler_init():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "compiler.__version__"}


def test_init_pins_the_installed_version_not_a_literal(monkeypatch):
    """`pkic init` writes CI's requirement from the installed distribution's metadata."""
    from compiler import init

    class Dist:
        version = "9.8.7"

        def read_text(self, name: str) -> str | None:
            return None

    monkeypatch.setattr(init.metadata, "distribution", lambda name: Dist())
    text, requirement, _source = init.requirements_file()
    assert requirement == "pkic==9.8.7" and "pkic==9.8.7\n" in text


# --------------------------------------------------------------------------- pre-commit


def load(name: str):
    return yaml.safe_load((ROOT / name).read_text())


def hooks(config: dict) -> list[dict]:
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def in_venv(command: str) -> str | None:
    exe = VENV_BIN / command
    return str(exe) if exe.exists() else shutil.which(command)


def test_the_contributors_hooks_are_local_and_run_tools_the_venv_has():
    config = load(".pre-commit-config.yaml")
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "installing the hooks must download nothing"
    ids = [hook["id"] for hook in hooks(config)]
    assert len(ids) == len(set(ids))
    assert {"ruff", "ruff-format", "mypy", "actionlint", "zizmor", "pkic-validate"} <= set(ids)
    for hook in hooks(config):
        assert hook["language"] == "system", hook["id"]
        command = shlex.split(hook["entry"])[0]
        assert command == "pkic" or in_venv(command), f"{hook['id']}: {command} is not in {VENV_BIN}"


def test_the_users_hook_is_pkic_validate_on_the_files_it_reads():
    manifest = load(".pre-commit-hooks.yaml")
    assert [hook["id"] for hook in manifest] == ["pkic-validate"]
    (hook,) = manifest
    assert hook["entry"] == "pkic validate" and hook["language"] == "python" and hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    for name in ("pki.yaml", ".sops.yaml", "policies/services.yaml", "csrs/db.csr.pem"):
        assert files.search(name), name
    for name in ("README.md", "out/state.json", "sub/pki.yaml", "compiler/policy/__init__.py"):
        assert not files.search(name), name
    # the contributors' copy checks this repository's example on the same files
    (own,) = [h for h in hooks(load(".pre-commit-config.yaml")) if h["id"] == "pkic-validate"]
    assert (own["entry"], own["files"], own["pass_filenames"]) == (hook["entry"], hook["files"], False)


def test_the_users_hook_passes_on_the_worked_example():
    (hook,) = load(".pre-commit-hooks.yaml")
    command, *args = shlex.split(hook["entry"])
    exe = in_venv(command)
    assert exe, f"{command} is not installed"
    # this checkout's compiler/, as the other tests run it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([exe, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pki.yaml is valid" in p.stdout + p.stderr


# --------------------------------------------------------------------------- CI


def test_ci_runs_every_python_from_the_oldest_pyproject_allows_with_that_python():
    ci = load(".github/workflows/ci.yml")
    job = ci["jobs"]["test"]
    pythons = job["strategy"]["matrix"]["python"]
    assert all(isinstance(v, str) for v in pythons), "quote the versions: YAML reads 3.10 as 3.1"
    oldest = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert oldest == ">=" + pythons[0], (oldest, pythons)
    (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    # sudo resets PATH: without it passed on, .ci/run's python3 would be the runner's own
    (run,) = [s["run"] for s in job["steps"] if "run" in s]
    assert run.strip() == 'sudo env "PATH=$PATH" bash .ci/run'


# --------------------------------------------------------------------------- the selections


def test_ci_runs_the_readmes_test_command_in_timed_parts():
    """The README's second command is the quick selection then the rest; .ci/run runs
    the same selections (the rest split in two), each timed, and fails if any failed."""
    readme = (ROOT / "README.md").read_text()
    (command,) = [line for line in readme.split("```")[1].splitlines() if "pytest" in line]
    assert command == "python3 -m pip install -e '.[test]' && python3 -m pytest && python3 -m pytest -m \"slow or interop\"", command
    run = (ROOT / ".ci/run").read_text()
    for line, part in [
        ("python3 -m pip install -q -e '.[test]'", 'part "python packages"'),
        ("python3 -m pytest || failed=1", 'part "tests: quick selection"'),
        ("python3 -m pytest -m slow || failed=1", 'part "tests: -m slow"'),
        ("python3 -m pytest -m interop || failed=1", 'part "tests: -m interop"'),
    ]:
        assert f"\n{line}\n{part}\n" in run, line
    assert run.rstrip().endswith('exit "$failed"')


def _collected(*args: str) -> set[str]:
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return {line for line in p.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_the_quick_selection_and_the_rest_make_the_whole_suite():
    everything = _collected("-m", "")
    quick = _collected()
    slow, interop = _collected("-m", "slow"), _collected("-m", "interop")
    assert quick and slow and interop
    assert quick | slow | interop == everything
    assert not quick & (slow | interop)
    assert all(t.startswith("tests/interop/") for t in interop)
    # naming a file runs all of it, slow tests included
    assert _collected("tests/project/test_habits.py") >= {t for t in slow if t.startswith("tests/project/test_habits.py")}
