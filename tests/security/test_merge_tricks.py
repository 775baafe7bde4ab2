"""Attack: restore an older, genuine out/ (from before a revocation) through a merge
commit crafted so that its first parent is the old commit and its second the current
tip, then fast-forward the branch to it (GitLab's fast-forward merges, or a maintainer's
`git merge` on the command line). Along first parents only, the newer seals are hidden;
the seal's freshness check reads all of HEAD's history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import NOW, init_applied_committed

LATER = "2027-01-15T12:00:00Z"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_a_crafted_merge_fast_forwarded_cannot_restore_an_older_out(tmp_path, pkic):
    repo = init_applied_committed(pkic, tmp_path / "pki")
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
    v = pkic("verify", "--seal", "--now", LATER, cwd=repo)
    assert v.returncode == 1 and "restores an older out/" in v.stderr, v.stdout + v.stderr

    # the way back: undo the crafted merge's content; apply carries on from the newest seal
    git(repo, "rm", "-r", "-q", "out", "out.seal")
    git(repo, "checkout", tip, "--", "out", "out.seal")
    git(repo, "commit", "-q", "-m", "Revert the crafted merge's out/")
    pkic.ok("apply", "--yes", "--commit", "--now", LATER, cwd=repo)
    records = json.loads((repo / "out/state.json").read_text())["certificates"]["payments"]
    assert [r["status"] for r in records if r["serial"] == revoked["serial"]] == ["revoked"]  # it stays revoked


def _restore_old_out_and_unrevoke(tmp_path, pkic):
    """A sealed repo whose payments was revoked (key compromise); then the attacker's
    commit on top: out/ and out.seal from before the revocation, the revoke line gone."""
    repo = init_applied_committed(pkic, tmp_path / "pki")
    old = git(repo, "rev-parse", "HEAD")
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.replace("  payments:\n", "  payments:\n    revoke: key_compromise\n"))
    git(repo, "commit", "-q", "-am", "pki: payments' key is compromised")
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    tip = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-r", "-q", "out", "out.seal")
    git(repo, "checkout", old, "--", "out", "out.seal")
    (repo / "pki.yaml").write_text(spec)
    git(repo, "add", "-A")
    return repo, tip


@pytest.mark.slow
def test_a_tree_named_out_seal_in_a_backdated_root_cannot_hide_the_newer_seals(tmp_path, pkic):
    """git cat-file --batch prints a tree's bytes too: a parser that skips only blobs
    reads them as headers, and every later version of out.seal is lost. A root commit
    dated 1971 (so it sorts first by date) whose out.seal is a directory, merged in."""
    repo, tip = _restore_old_out_and_unrevoke(tmp_path, pkic)
    blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=b"hi\n", capture_output=True, check=True).stdout.decode().strip()
    name = "x" + "\n" * 200 + "y"
    inner = subprocess.run(["git", "-C", str(repo), "mktree", "-z"], input=f"100644 blob {blob}\t{name}\0".encode(), capture_output=True, check=True).stdout.decode().strip()
    outer = subprocess.run(["git", "-C", str(repo), "mktree"], input=f"040000 tree {inner}\tout.seal\n".encode(), capture_output=True, check=True).stdout.decode().strip()
    env = {"GIT_AUTHOR_DATE": "1971-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "1971-01-01T00:00:00Z"}
    root = subprocess.run(["git", "-C", str(repo), "commit-tree", outer, "-m", "tidy"], env={**pkic.env, **env}, capture_output=True, check=True, text=True).stdout.strip()
    tree = git(repo, "write-tree")
    merged = git(repo, "commit-tree", tree, "-p", "HEAD", "-p", root, "-m", "cleanup")
    git(repo, "reset", "-q", "--hard", merged)
    for cmd in (("apply", "--yes", "--commit", "--now", LATER), ("plan", "--now", LATER), ("plan", "--base", tip, "--now", LATER)):
        p = pkic(*cmd, cwd=repo)
        assert p.returncode == 1 and "restores an older out/" in p.stderr and tip[:12] in p.stderr, (cmd, p.stdout, p.stderr)
    assert git(repo, "rev-parse", "HEAD") == merged


@pytest.mark.slow
def test_plan_without_base_is_not_anchored_by_a_backdated_root_with_an_attacker_seal(tmp_path, pkic):
    """The advisory plan's trust-on-first-use key comes from HEAD's first parents, not
    from the oldest commit by date (a date is the author's to choose)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from compiler.state import EMPTY_TREE, render_seal, scan_out, tree_id

    repo, tip = _restore_old_out_and_unrevoke(tmp_path, pkic)
    git(repo, "commit", "-q", "-m", "restore")
    attacker = Ed25519PrivateKey.generate()
    body = {"lineage": None, "serial": 1, "prev": None, "out_tree": EMPTY_TREE["sha1"], "object_format": "sha1",
            "state_serial": 0, "sops_rules": "none", "sealed_at": "1971-01-01T00:00:00Z"}
    blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=render_seal(attacker, body), capture_output=True, check=True).stdout.decode().strip()
    tree = subprocess.run(["git", "-C", str(repo), "mktree"], input=f"100644 blob {blob}\tout.seal\n".encode(), capture_output=True, check=True).stdout.decode().strip()
    env = {"GIT_AUTHOR_DATE": "1971-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "1971-01-01T00:00:00Z"}
    root = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-m", "history"], env={**pkic.env, **env}, capture_output=True, check=True, text=True).stdout.strip()
    # re-seal the restored out/ with the attacker key, chained to the backdated root's seal
    listing = scan_out(repo, "sha1")
    body2 = {**body, "serial": 10, "prev": __import__("hashlib").sha256(render_seal(attacker, body)).hexdigest(),
             "out_tree": tree_id(listing, "sha1"), "sealed_at": NOW}
    (repo / "out.seal").write_bytes(render_seal(attacker, body2))
    git(repo, "add", "-A")
    merged = git(repo, "commit-tree", git(repo, "write-tree"), "-p", "HEAD", "-p", root, "-m", "Merge history")
    git(repo, "reset", "-q", "--hard", merged)
    p = pkic("plan", "--now", LATER, cwd=repo)
    assert p.returncode == 1 and "seal: sealed" not in p.stdout and "is not sealed by the seal key" in p.stderr, p.stdout + p.stderr
    assert pkic("verify", "--seal", "--now", NOW, cwd=repo).returncode == 1
    assert pkic("apply", "--yes", "--now", LATER, cwd=repo).returncode == 1


@pytest.mark.slow
def test_the_pr_check_does_not_take_the_seal_key_from_an_attackers_merge_base(tmp_path, pkic):
    """PR1: commit X re-seals out/ with the attacker's own key, commit Y restores the real
    seal (net: nothing), merged. PR2 branches from X, so X is its merge base with main,
    and adds a leaf. `plan --base main` must check PR2's out/ against main's key, not
    against whatever key X's seal names."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from compiler.state import render_seal

    repo = init_applied_committed(pkic, tmp_path / "pki")
    genuine = (repo / "out.seal").read_bytes()
    git(repo, "switch", "-q", "-c", "pr1")
    attacker = Ed25519PrivateKey.generate()
    body = {k: v for k, v in json.loads(genuine).items() if k not in ("signature", "public_key", "format", "version")}
    body.update(serial=50, prev=__import__("hashlib").sha256(genuine).hexdigest())
    (repo / "out.seal").write_bytes(render_seal(attacker, body))
    git(repo, "commit", "-q", "-am", "X: tidy")
    x = git(repo, "rev-parse", "HEAD")
    (repo / "out.seal").write_bytes(genuine)
    git(repo, "commit", "-q", "-am", "Y: tidy more")
    git(repo, "switch", "-q", "-")  # main
    main = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge pr1", "pr1")
    git(repo, "switch", "-q", "-c", "pr2", x)
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + "  evil:\n    issuer: services-ca\n    dns: [login.example.com]\n")
    git(repo, "commit", "-q", "-am", "pki: add a login service")
    assert git(repo, "merge-base", "HEAD", main) == x
    p = pkic("plan", "--base", main, "--now", NOW, cwd=repo)
    assert p.returncode == 1 and "seal: sealed" not in p.stdout and "is not sealed by the seal key" in p.stderr, p.stdout + p.stderr
    md = pkic("plan", "--base", main, "--format", "markdown", "--now", NOW, cwd=repo).stdout
    assert "out/ is not the sealed output" in md
    # the legitimate twin: PR2 rebased on main's tip plans clean, and names the key it checked
    git(repo, "rebase", "-q", "--onto", main, x)
    md = pkic.ok("plan", "--base", main, "--format", "markdown", "--now", NOW, cwd=repo).stdout
    assert "is the sealed output" in md and json.loads(genuine)["public_key"] in md and f"{main}'s history" in md
