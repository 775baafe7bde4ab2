"""Incremental plan and apply against from-scratch ones, end to end, on randomly edited
specs: after each random edit the plan made with the entry cache warm (the last plan's)
is the plan made with no cache at all, byte for byte, and the apply that follows writes
a state that a whole serialisation gives (State.to_json checks it on every apply of a
state this small, and this test reads it back whole as well)."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from conftest import Pkic

from compiler.state.store import state_from_json

pytestmark = pytest.mark.slow

NOW = "2026-11-27T12:00:00Z"
SPEC = """version: 1
defaults: {key: ecdsa-p256, subject: {O: Example}}
publish: {ocsp: false}
authorities:
  root-ca: {subject: {CN: Root}, lifetime: 10y}
  ca-a: {issuer: root-ca, subject: {CN: CA A}, lifetime: 3y, path_length: 0}
  ca-b:
    issuer: root-ca
    subject: {CN: CA B}
    lifetime: 3y
certificates:
"""


def leaf(i: int, issuer: str) -> str:
    return f"  svc-{i:02d}: {{issuer: {issuer}, dns: [svc-{i:02d}.example.com], lifetime: 90d}}\n"


def edit(text: str, rng: random.Random, step: int) -> str:
    """One random change a pull request might make."""
    names = re.findall(r"^  (svc-\d+):", text, re.M)
    kind = rng.choice(["san", "issuer", "add", "remove", "lifetime", "authority", "defaults", "revoke", "comment"])
    name = rng.choice(names)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"  {name}:"))
    if kind == "san":
        new = line.replace(".example.com]", f".example.com, extra{step}.example.com]")
    elif kind == "issuer":
        new = re.sub(r"issuer: ca-[ab]", f"issuer: {rng.choice(['ca-a', 'ca-b'])}", line)
    elif kind == "add":
        return text + leaf(50 + step, rng.choice(["ca-a", "ca-b"]))
    elif kind == "remove" and len(names) > 3:
        return text.replace(line + "\n", "")
    elif kind == "lifetime":
        new = line.replace("lifetime: 90d", f"lifetime: {rng.choice(['30d', '60d', '1y'])}")
    elif kind == "authority":
        return text.replace("    lifetime: 3y\n", f"    lifetime: 3y\n    crl_url: http://crl.example.com/b{step}.crl\n")
    elif kind == "defaults":
        return text.replace("subject: {O: Example}", f"subject: {{O: Example {step}}}")
    elif kind == "revoke":
        new = line.replace("lifetime:", "revoke: superseded, lifetime:") if "revoke" not in line else line
    else:
        return text.replace(line, line + f"  # note {step}")
    return text.replace(line, new)


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_plan_and_apply_match_from_scratch(tmp_path: Path, pkic: Pkic, seed: int) -> None:
    rng = random.Random(seed)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    text = SPEC + "".join(leaf(i, "ca-a" if i % 2 else "ca-b") for i in range(12))
    (repo / "pki.yaml").write_text(text)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    pkic.ok("plan", "--now", NOW, cwd=repo)  # the entry cache filled: every plan below may use it
    cold = {"XDG_CACHE_HOME": str(tmp_path / "no-cache")}
    for step in range(6):
        text = edit(text, rng, step)
        (repo / "pki.yaml").write_text(text)
        warm = pkic("plan", "--now", NOW, cwd=repo)
        scratch = pkic("plan", "--now", NOW, cwd=repo, env=cold)
        assert (warm.returncode, warm.stdout, warm.stderr) == (scratch.returncode, scratch.stdout, scratch.stderr), text
        shutil.rmtree(tmp_path / "no-cache", ignore_errors=True)
        if warm.returncode == 0:
            pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
            data = (repo / "out" / "state.json").read_bytes()
            assert state_from_json(data).to_json().encode() == data
    # the warm plans did take the incremental path: the entry cache is there
    assert list((tmp_path / "home" / ".cache" / "pkic").rglob("entries.json"))
