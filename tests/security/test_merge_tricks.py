"""Attack: restore an older, genuine out/ (from before a revocation) through a merge
commit crafted so that its first parent is the old commit and its second the current
tip, then fast-forward the branch to it (GitLab's fast-forward merges, or a maintainer's
`git merge` on the command line). Along first parents only, the newer seals are hidden;
the seal's freshness check reads all of HEAD's history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import NOW

LATER = "2027-01-15T12:00:00Z"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_a_crafted_merge_fast_forwarded_cannot_restore_an_older_out(tmp_path, pkic):
    repo = tmp_path / "pki"
    pkic.ok("init", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    old = git(repo, "rev-parse", "HEAD")
    # a reviewed change: payments' key is compromised, revoke it
    spec = (repo / "pki.yaml").read_text().replace("  payments:\n", "  payments:\n    revoke: key_compromise\n")
    (repo / "pki.yaml").write_text(spec)
    git(repo, "commit", "-q", "-am", "pki: payments' key is compromised")
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    tip = git(repo, "rev-parse", "HEAD")
    revoked = json.loads((repo / "out/state.json").read_text())["certificates"]["payments"][0]
    assert revoked["status"] == "revoked"

    # the attacker's "merge of main into the PR": the old tree, the old commit first
    crafted = git(repo, "commit-tree", f"{old}^{{tree}}", "-p", old, "-p", tip, "-m", "Merge branch 'main' into pr")
    git(repo, "merge", "-q", "--ff-only", crafted)
    assert json.loads((repo / "out/state.json").read_text())["certificates"]["payments"][0]["status"] == "active"

    p = pkic("apply", "--yes", "--commit", "--now", LATER, cwd=repo)
    assert p.returncode == 1 and "restores an older out/" in p.stderr and tip[:12] in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and git(repo, "rev-parse", "HEAD") == crafted  # nothing signed, nothing committed
    p = pkic("plan", "--now", LATER, cwd=repo)
    assert p.returncode == 1 and "restores an older out/" in p.stderr, p.stderr
    p = pkic("plan", "--json", "--now", LATER, cwd=repo)
    findings = json.loads(p.stdout)["seal"]["findings"]
    assert any("payments" in f["message"] and "revoked" in f["message"] for f in findings), findings
    assert pkic("verify", "--seal", cwd=repo).returncode == 1

    # the way back: undo the crafted merge's content; apply carries on from the newest seal
    git(repo, "rm", "-r", "-q", "out", "out.seal")
    git(repo, "checkout", tip, "--", "out", "out.seal")
    git(repo, "commit", "-q", "-m", "Revert the crafted merge's out/")
    pkic.ok("apply", "--yes", "--commit", "--now", LATER, cwd=repo)
    records = json.loads((repo / "out/state.json").read_text())["certificates"]["payments"]
    assert [r["status"] for r in records if r["serial"] == revoked["serial"]] == ["revoked"]  # it stays revoked
