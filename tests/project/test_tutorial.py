"""docs/tutorial.md, run as a newcomer would: every ```sh block in order, in one shell, in a
fresh directory with a fresh HOME (no age identity, no seal key, no git identity), on the
real clock. The page promises what each step shows; the assertions hold it to that."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "tutorial.md"
SKIP = "<!-- tutorial: not run"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```sh\n(?P<body>.*?)\n```", re.S)


def blocks(text: str) -> list[str]:
    """The page's shell blocks, in order; a block right under a `tutorial: not run` comment
    is left out (the install: the test runs the pkic it is testing)."""
    return [m["body"] for m in BLOCK.finditer(text) if not m["before"].startswith(SKIP)]


def test_the_page_has_the_steps_it_promises():
    text = PAGE.read_text()
    skipped = [m["body"] for m in BLOCK.finditer(text) if m["before"].startswith(SKIP)]
    assert skipped == ["python3 -m pip install ."], skipped  # only the install is not run
    run = "\n".join(blocks(text))
    for step in ("pkic init my-pki", "pkic apply --yes --commit", "pkic plan --save api.plan", "pkic apply --commit api.plan",
                 "pkic plan --now +66d", "--time-travel"):
        assert step in run, step


@pytest.mark.slow
def test_a_newcomer_following_the_tutorial_gets_a_reviewed_change_and_a_renewal(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    steps = blocks(PAGE.read_text())
    firsts = [body.splitlines()[0] for body in steps]
    assert len(set(firsts)) == len(firsts), "each block is looked up by its first line: they must differ"
    script = ["set -euo pipefail"]
    for i, body in enumerate(steps):
        script += [f"echo '@@@ block {i}'", body]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPS_", "PKIC_", "XDG_", "GIT_"))}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1", COLUMNS="200",
               TMPDIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    out = dict(re.findall(r"@@@ block (\d+)\n(.*?)(?=@@@ block |\Z)", proc.stdout, re.S))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr

    said = {first: out[str(i)] for i, first in enumerate(firsts)}
    assert "pki.yaml is valid" in said["pkic validate"]
    assert "Plan: 4 to issue" in said["pkic plan"]
    assert "+ issue    api" in said["git switch -q -c add-api"] and "Plan: 1 to issue" in said["git switch -q -c add-api"]
    assert "No changes." in said["pkic history api"]
    assert "PKIC OK" in said["pkic check"]
    renewal = said["pkic plan --now +66d"]
    for name in ("api", "payments", "web"):
        assert re.search(rf"renew\s+{name}\b", renewal), renewal
    assert "renewal window opened" in renewal
    assert "PKIC OK" in said["git clone -q . ../drill"] and re.search(r"│ renew\s+│", said["git clone -q . ../drill"])

    repo = work / "my-pki"
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, env=env, check=True).stdout.split("\n")
    assert log[:4] == ["pkic apply: 1 issue, 1 OCSP", "Add the api certificate", "pkic apply: 4 issue, 2 CRL, 3 OCSP", "A new PKI"], log
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, env=env, check=True).stdout
    assert status == "", status  # the saved plan was removed; nothing else left behind
    assert not (work / "drill").exists()
    # the secrets init made are outside the repository, where the page says
    assert (home / ".config" / "sops" / "age" / "keys.txt").is_file()
    assert (home / ".config" / "sops" / "age" / "pkic-seal.key").is_file()
    for key in (repo / "out").rglob("*.sops.yaml"):
        assert "PRIVATE KEY" not in key.read_text()
