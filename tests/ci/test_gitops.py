"""GitOps end to end, with real git in temporary repos (and a bare remote), the real CLI,
sops and headless Chromium:

* the pull request flow: spec on main, ``apply --commit`` (one commit, exactly the
  changed out/ files, summary and ``Pki-*`` trailers), a branch planned with no
  identity (text, markdown, JSON), the merge, ``apply --commit --reviewed DIGEST``,
  ``pkic history`` and an apply with nothing to do making no commit;
* the guards of ``apply --commit``: uncommitted spec or policies, hand-edited files in
  out/, and the leftovers of a killed apply (which are not hand edits);
* ``--reviewed``: the spec-driven part must match, time-driven work may come due;
* stale saved plans, two CI applies racing through a bare remote, the repo lock;
* ``pkic check`` levels, exit codes and formats; the markdown plan against a golden
  file; ``pkic graph``; ``pkic report`` as a browser renders it;
* the shipped workflows are tested in test_workflows.py, the provenance of the
  reviewed plan in test_ci.py.

Time is injected with ``--now`` (never sleep). Set ``PKIC_UPDATE_GOLDEN=1`` to rewrite
the golden files from the current output (then read them before committing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import NOW, snapshot, write_spec
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from helpers import active, state

UTC = timezone.utc
NOW_DT = datetime.fromisoformat(NOW.replace("Z", "+00:00"))


def at(days: float = 0, hours: float = 0) -> str:
    return (NOW_DT + timedelta(days=days, hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


T1 = at(days=1)  # the pull request is planned and merged a day after the first apply
T3 = at(days=3, hours=18)  # OCSP responses (4d, re-signed 2d before) and the 7d CRL (3.5d before) are due
LATER = "2027-02-01T12:00:00Z"  # day 66: leaves issued at NOW or T1 (90d, renew 30d before) are due

GOLDEN = Path(__file__).parent.parent / "golden"
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"

API = "  api:\n    issuer: services-ca\n    dns: [api.example.com]\n"
DB = "  db:\n    issuer: services-ca\n    profile: peer\n    dns: [db.svc.internal]\n"
CACHE = "  cache:\n    issuer: services-ca\n    dns: [cache.svc.internal]\n"
WEB_DNS = "dns: [web.example.com, www.example.com]"


# --------------------------------------------------------------------------- helpers


def git(pkic, repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env={**pkic.env, "LC_ALL": "C"})
    if check:
        assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def head(pkic, repo: Path) -> str:
    return git(pkic, repo, "rev-parse", "HEAD").stdout.strip()


def porcelain(pkic, repo: Path) -> str:
    return git(pkic, repo, "status", "--porcelain=v1", "--untracked-files=all").stdout


def commit_spec(pkic, repo: Path, message: str) -> str:
    git(pkic, repo, "add", "-A", "--", "pki.yaml", "policies")
    git(pkic, repo, "commit", "-q", "-m", message)
    return head(pkic, repo)


def spec_text(repo: Path) -> str:
    return (repo / "pki.yaml").read_text()


def edit_spec(repo: Path, *, add: str = "", drop: tuple[str, ...] = (), replace: tuple[tuple[str, str], ...] = ()) -> None:
    text = spec_text(repo)
    for name in drop:
        text = without(text, name)
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    write_spec(repo, text + add)


def without(text: str, name: str) -> str:
    """pki.yaml without the entry `name` (a block indented by two spaces)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"  {name}:\n")
    end = start + 1
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    return "".join(lines[:start] + lines[end:])


def trailers(pkic, repo: Path, rev: str = "HEAD") -> list[tuple[str, str]]:
    """The commit's trailers, as git itself parses them (so they are real trailers)."""
    out = git(pkic, repo, "log", "-1", "--format=%(trailers:only,unfold)", rev).stdout
    return [tuple(line.split(": ", 1)) for line in out.splitlines() if line.strip()]


def trailer_values(tr: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in tr if k == key]


def commit_files(pkic, repo: Path, rev: str = "HEAD") -> dict[str, str]:
    out = git(pkic, repo, "diff-tree", "--no-commit-id", "--no-renames", "--name-status", "-r", rev).stdout
    return {line.split("\t", 1)[1]: line.split("\t", 1)[0] for line in out.splitlines()}


def plan_json(pkic, repo: Path, now: str, env: dict | None = None) -> dict:
    return json.loads(pkic.ok("plan", "--json", "--now", now, cwd=repo, env=env).stdout)


def fingerprint(repo: Path, name: str) -> str:
    cert = x509.load_pem_x509_certificate((repo / "out" / "certs" / f"{name}.pem").read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture
def main_repo(repo: Path, pkic) -> Path:
    """The `pkic init` repo with everything committed on `main` (nothing applied)."""
    git(pkic, repo, "symbolic-ref", "HEAD", "refs/heads/main")
    git(pkic, repo, "add", "-A")
    git(pkic, repo, "commit", "-q", "-m", "pki: the initial spec")
    return repo


@pytest.fixture
def committed(main_repo: Path, pkic) -> Path:
    """main_repo, applied at NOW with --commit."""
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=main_repo)
    assert porcelain(pkic, main_repo) == ""
    return main_repo


# --------------------------------------------------------------------------- 1. the pull request flow


@pytest.mark.slow
def test_pull_request_flow_commits_trailers_and_history(main_repo, pkic, tmp_path):
    repo = main_repo
    base = head(pkic, repo)
    first_plan = plan_json(pkic, repo, NOW)
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    c1 = head(pkic, repo)

    # one commit, exactly the out/ files the apply wrote, nothing left over
    assert git(pkic, repo, "rev-list", "--count", f"{base}..{c1}").stdout.strip() == "1"
    files = commit_files(pkic, repo, c1)
    assert files.pop("out.seal") == "M"  # the seal init wrote, now over what this apply wrote
    assert set(files) == set(git(pkic, repo, "ls-files", "out").stdout.split())
    assert all(f.startswith("out/") for f in files) and set(files.values()) == {"A"}
    assert {"out/state.json", "out/certs/web.pem", "out/keys/web.sops.yaml", "out/crl/services-ca.crl", "out/trust/bundle.pem"} <= set(files)
    assert porcelain(pkic, repo) == ""

    message = git(pkic, repo, "log", "-1", "--format=%B").stdout
    assert message.splitlines()[0] == "pkic apply: 4 issue, 2 CRL, 3 OCSP"
    assert "- issue web: not issued yet" in message and "- re-sign CRLs: root-ca, services-ca" in message
    tr = trailers(pkic, repo)
    s, act = state(repo), active(repo)
    issued = {v.split()[0]: v.split()[1:] for v in trailer_values(tr, "Pki-Issued")}
    assert set(issued) == {"root-ca", "services-ca", "web", "payments"}
    for name, (serial, sha16) in issued.items():
        assert serial == act[name]["serial"] and sha16 == act[name]["sha256"][:16] == fingerprint(repo, name)[:16]
    assert trailer_values(tr, "Pki-Plan") == [first_plan["reviewed_digest"]]
    assert re.fullmatch(r"[0-9a-f]{64}", first_plan["reviewed_digest"])
    assert trailer_values(tr, "Pki-State") == [f"{s['lineage']} {s['serial']}"] and s["serial"] == 1
    assert sorted(trailer_values(tr, "Pki-CRL")) == ["root-ca 1", "services-ca 1"]
    seal = json.loads((repo / "out.seal").read_text())
    assert trailer_values(tr, "Pki-Seal") == [f"{seal['serial']} {hashlib.sha256((repo / 'out.seal').read_bytes()).hexdigest()}"]
    assert seal["out_tree"] == git(pkic, repo, "rev-parse", "HEAD:out").stdout.strip()  # git's own tree id

    # a pull request: add a leaf, retire another by removing it, give web one more name
    git(pkic, repo, "switch", "-q", "-c", "feature")
    edit_spec(repo, add=API, drop=("payments",), replace=((WEB_DNS, "dns: [web.example.com, www.example.com, app.example.com]"),))
    commit_spec(pkic, repo, "pki: add api, retire payments, app.example.com for web")
    # CI plans it with no identity at all (plan.yml has no secret)
    no_identity = {"SOPS_AGE_KEY_FILE": str(tmp_path / "nowhere" / "keys.txt")}
    assert not Path(no_identity["SOPS_AGE_KEY_FILE"]).exists() and "SOPS_AGE_KEY" not in pkic.env
    text = pkic.ok("plan", "--now", T1, cwd=repo, env=no_identity).stdout
    assert re.search(r"\+ issue\s+api\b", text) and re.search(r"- revoke\s+payments\b", text) and re.search(r"~ reissue\s+web\b", text)
    assert "Plan: 1 to issue, 1 to reissue, 0 to renew, 1 to revoke" in text
    md = pkic.ok("plan", "--format", "markdown", "--now", T1, cwd=repo, env=no_identity).stdout
    branch_plan = plan_json(pkic, repo, T1, env=no_identity)
    digest = branch_plan["reviewed_digest"]
    assert md.startswith("<!-- pkic-plan -->\n### pkic plan: 1 to issue, 1 to reissue, 0 to renew, 1 to revoke")
    assert "| 🟢 | `api` | certificate | **issue** |" in md and "| 🔴 | `payments` | certificate | **revoke** |" in md
    assert f"`Pki-Plan: {digest}`" in md

    # merge, then apply on main with the reviewed digest (as apply.yml does)
    git(pkic, repo, "switch", "-q", "main")
    git(pkic, repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #1 from feature", "feature")
    merge = head(pkic, repo)
    payments_serial = act["payments"]["serial"]
    out_before = snapshot(repo / "out")
    p = pkic.ok("apply", "--yes", "--commit", "--reviewed", digest, "--now", T1, "--author", "Rita Reviewer <rita@example.com>", cwd=repo)
    out_after = snapshot(repo / "out")
    assert "Committed" in p.stdout
    c2 = head(pkic, repo)
    assert git(pkic, repo, "rev-parse", f"{c2}^").stdout.strip() == merge
    assert git(pkic, repo, "log", "-1", "--format=%an <%ae>").stdout.strip() == "Rita Reviewer <rita@example.com>"
    assert git(pkic, repo, "log", "-1", "--format=%s").stdout.startswith("pkic apply: 1 issue, 1 reissue, 1 revoke, 1 CRL, ")
    tr = trailers(pkic, repo)
    act = active(repo)
    assert trailer_values(tr, "Pki-Issued") == [f"api {act['api']['serial']} {act['api']['sha256'][:16]}"]
    assert trailer_values(tr, "Pki-Reissued") == [f"web {act['web']['serial']} {act['web']['sha256'][:16]}"]
    assert trailer_values(tr, "Pki-Revoked") == [f"payments {payments_serial} cessation_of_operation"]
    assert trailer_values(tr, "Pki-CRL") == ["services-ca 2"]
    assert trailer_values(tr, "Pki-Plan") == [digest]
    assert trailer_values(tr, "Pki-State") == [f"{s['lineage']} 2"]
    files = commit_files(pkic, repo, c2)
    assert files.pop("out.seal") == "M"  # and the seal over it
    # exactly what the apply changed on disk, nothing more, nothing less
    assert set(files) == {f"out/{k}" for k in set(out_before) | set(out_after) if out_before.get(k) != out_after.get(k)}
    assert files["out/certs/api.pem"] == "A" and files["out/certs/payments.pem"] == "D" and files["out/keys/payments.sops.yaml"] == "D"
    assert files["out/certs/web.pem"] == "M" and "out/state.json" in files and "pki.yaml" not in files
    assert porcelain(pkic, repo) == ""

    # time passes: the renewal job renews what came due (web and api, issued at T1)
    pkic.ok("apply", "--yes", "--commit", "--now", LATER, cwd=repo)
    c3 = head(pkic, repo)
    tr = trailers(pkic, repo)
    act = active(repo)
    assert sorted(trailer_values(tr, "Pki-Renewed")) == sorted(f"{n} {act[n]['serial']} {act[n]['sha256'][:16]}" for n in ("api", "web"))

    # history: every version, newest first, with commit, author, action, serial
    events = json.loads(pkic.ok("history", "web", "--json", cwd=repo).stdout)
    assert events["name"] == "web"
    ev = events["events"]
    assert [(e["action"], e["commit"]) for e in ev] == [("renew", c3), ("reissue", c2), ("issue", c1)]
    assert [e["serial"] for e in ev] == [r["serial"] for r in state(repo)["certificates"]["web"]]
    assert [e["author"] for e in ev] == ["Test <test@example.com>", "Rita Reviewer <rita@example.com>", "Test <test@example.com>"]
    dates = [datetime.fromisoformat(e["date"]) for e in ev]
    assert dates == sorted(dates, reverse=True)
    text = pkic.ok("history", "web", cwd=repo).stdout
    positions = [text.index(c[:12]) for c in (c3, c2, c1)]
    assert positions == sorted(positions) and "reissue" in text and "renew" in text
    ev = json.loads(pkic.ok("history", "payments", "--json", cwd=repo).stdout)["events"]
    assert [(e["action"], e["commit"], e["serial"], e["reason"]) for e in ev] == [
        ("revoke", c2, payments_serial, "cessation_of_operation"), ("issue", c1, payments_serial, None)]
    assert "No history for 'nope'" in pkic.ok("history", "nope", cwd=repo).stdout

    # nothing to do: no commit at all
    p = pkic.ok("apply", "--yes", "--commit", "--now", LATER, cwd=repo)
    assert "No changes" in p.stdout and head(pkic, repo) == c3 and porcelain(pkic, repo) == ""


# --------------------------------------------------------------------------- 2. guards


def assert_refused(pkic, repo: Path, needle: str, *args: str, now: str = T1) -> subprocess.CompletedProcess:
    """apply --commit exits 1 having signed nothing, changed nothing in out/, committed nothing."""
    before_head, before_out, before_serial = head(pkic, repo), snapshot(repo / "out"), state(repo)["serial"]
    p = pkic("apply", "--yes", "--commit", *args, "--now", now, cwd=repo)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert needle in p.stderr, p.stderr
    assert "Committed" not in p.stdout and "Apply complete" not in p.stdout
    assert head(pkic, repo) == before_head
    assert snapshot(repo / "out") == before_out
    assert state(repo)["serial"] == before_serial
    return p


@pytest.mark.slow
def test_guard_uncommitted_spec(committed, pkic):
    repo = committed
    edit_spec(repo, add=API)
    p = assert_refused(pkic, repo, "uncommitted changes in the spec: pki.yaml")
    assert "commit pki.yaml, policies/ and CSRs first" in p.stderr
    git(pkic, repo, "add", "pki.yaml")  # staged is not committed either
    assert_refused(pkic, repo, "uncommitted changes in the spec: pki.yaml")
    commit_spec(pkic, repo, "pki: add api")
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert trailer_values(trailers(pkic, repo), "Pki-Issued") == [f"api {active(repo)['api']['serial']} {active(repo)['api']['sha256'][:16]}"]
    assert porcelain(pkic, repo) == ""


@pytest.mark.slow
def test_guard_untracked_or_modified_policy(committed, pkic):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")
    (repo / "policies" / "extra.yaml").write_text("max_lifetime: 90d\n")
    assert_refused(pkic, repo, "uncommitted changes in the spec: policies/extra.yaml")
    (repo / "policies" / "extra.yaml").unlink()
    with open(repo / "policies" / "README.md", "a") as fh:
        fh.write("\none more line\n")
    assert_refused(pkic, repo, "policies/README.md")
    git(pkic, repo, "checkout", "--", "policies")
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert porcelain(pkic, repo) == ""


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


HAND_EDITS = {
    "crl-replaced": ("out/crl/services-ca.crl", lambda out: (out / "crl/services-ca.crl").write_bytes((out / "crl/root-ca.crl").read_bytes())),
    "key-file-byte-appended": ("out/keys/web.sops.yaml", lambda out: _append(out / "keys/web.sops.yaml", b"\n")),
    "ocsp-replaced": ("out/ocsp/web.der", lambda out: (out / "ocsp/web.der").write_bytes((out / "ocsp/payments.der").read_bytes())),
    "cert-replaced": ("out/certs/web.pem", lambda out: (out / "certs/web.pem").write_bytes((out / "certs/payments.pem").read_bytes())),
    "cert-byte-appended": ("out/certs/web.pem", lambda out: _append(out / "certs/web.pem", b"x")),
    "chain-replaced": ("out/certs/web.chain.pem", lambda out: (out / "certs/web.chain.pem").write_bytes((out / "certs/payments.chain.pem").read_bytes())),
    "crl-pem-replaced": ("out/crl/services-ca.crl.pem", lambda out: (out / "crl/services-ca.crl.pem").write_bytes((out / "crl/root-ca.crl.pem").read_bytes())),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HAND_EDITS))
def test_guard_hand_edited_out_files(committed, pkic, case):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")  # there is work to do: proves nothing is signed
    rel, do_edit = HAND_EDITS[case]
    do_edit(repo / "out")
    p = assert_refused(pkic, repo, "edited by hand")
    assert rel in p.stderr and "git checkout -- out/" in p.stderr
    git(pkic, repo, "checkout", "--", "out")
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert porcelain(pkic, repo) == ""


def test_a_stray_file_in_out_is_not_committed_by_pkic(committed, pkic):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")
    (repo / "out" / "notes.txt").write_text("scratch notes, not pkic's\n")
    pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo)  # refusing would be fine too
    assert "out/notes.txt" not in commit_files(pkic, repo)
    assert not git(pkic, repo, "ls-files", "out/notes.txt").stdout


def _interrupt_a_rekey(pkic, repo: Path) -> dict:
    edit_spec(repo, replace=(("    path_length: 0\n", "    path_length: 0\n    rekey: 1\n"),))
    commit_spec(pkic, repo, "pki: rekey services-ca")
    before = active(repo)
    c0 = head(pkic, repo)
    p = pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo, env={"PKIC_FAULT": "journal:2"})
    assert p.returncode == 137, (p.stdout, p.stderr)
    assert head(pkic, repo) == c0 and (repo / ".pkic" / "journal.jsonl").exists()
    return before


@pytest.mark.slow
def test_leftovers_of_a_killed_apply_are_not_hand_edits(committed, pkic):
    repo = committed
    before = _interrupt_a_rekey(pkic, repo)
    c0 = head(pkic, repo)
    p = pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert "Finished an interrupted apply" in p.stderr and "edited by hand" not in p.stderr
    assert git(pkic, repo, "rev-list", "--count", f"{c0}..HEAD").stdout.strip() == "1"
    assert porcelain(pkic, repo) == ""  # everything committed, no staging file left behind
    assert not (repo / ".pkic" / "journal.jsonl").exists()
    after = active(repo)
    for name in ("services-ca", "web", "payments"):
        assert after[name]["key_id"] != before[name]["key_id"], name
    assert after["root-ca"]["serial"] == before["root-ca"]["serial"]
    assert pkic("plan", "--detailed-exitcode", "--now", T1, cwd=repo).returncode == 0
    pkic.ok("verify", "--now", T1, cwd=repo)
    # the committed state is the state on disk
    assert git(pkic, repo, "show", "HEAD:out/state.json").stdout == (repo / "out/state.json").read_text()


@pytest.mark.slow
def test_history_keeps_the_steps_of_an_interrupted_apply(committed, pkic):
    repo = committed
    _interrupt_a_rekey(pkic, repo)
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    for name in ("services-ca", "web", "payments"):
        ev = json.loads(pkic.ok("history", name, "--json", cwd=repo).stdout)["events"]
        assert [e["action"] for e in ev] == ["reissue", "issue"], (name, ev)
        assert ev[0]["serial"] == active(repo)[name]["serial"]


# --------------------------------------------------------------------------- 3. --reviewed


@pytest.mark.slow
def test_reviewed_digest_spec_driven_must_match_time_driven_may_come_due(committed, pkic):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")
    reviewed = plan_json(pkic, repo, T1)["reviewed_digest"]

    # the spec changes after the review: loud failure, nothing signed
    edit_spec(repo, add=DB)
    commit_spec(pkic, repo, "pki: and db, not reviewed")
    p = assert_refused(pkic, repo, "not the reviewed one", "--reviewed", reviewed)
    assert f"reviewed {reviewed[:16]}" in p.stderr and "review it again" in p.stderr
    assert_refused(pkic, repo, "not the reviewed one", "--reviewed", "0" * 64)
    git(pkic, repo, "revert", "--no-edit", "HEAD")

    # back to the reviewed spec, applied two days later: OCSP and CRL re-signing came due
    later_plan = plan_json(pkic, repo, T3)
    assert later_plan["reviewed_digest"] == reviewed
    assert later_plan["crls"] and any(r["code"] != "new" for o in later_plan["ocsp"] for r in o["reasons"])
    pkic.ok("apply", "--yes", "--commit", "--reviewed", reviewed, "--now", T3, cwd=repo)
    tr = trailers(pkic, repo)
    assert trailer_values(tr, "Pki-Plan") == [reviewed]
    assert [v.split()[0] for v in trailer_values(tr, "Pki-Issued")] == ["api"]
    assert "services-ca" in " ".join(trailer_values(tr, "Pki-CRL"))

    # another reviewed change, merged when renewals came due: the renewals ride along
    edit_spec(repo, add=DB)
    commit_spec(pkic, repo, "pki: add db")
    reviewed = plan_json(pkic, repo, T3)["reviewed_digest"]
    p = pkic.ok("apply", "--yes", "--commit", "--reviewed", reviewed, "--now", LATER, cwd=repo)
    assert re.search(r"renew\s+web", p.stdout)
    tr = trailers(pkic, repo)
    assert trailer_values(tr, "Pki-Plan") == [reviewed]
    assert [v.split()[0] for v in trailer_values(tr, "Pki-Issued")] == ["db"]
    assert sorted(v.split()[0] for v in trailer_values(tr, "Pki-Renewed")) == ["api", "payments", "web"]
    assert porcelain(pkic, repo) == ""


# --------------------------------------------------------------------------- 4. saved plans


@pytest.mark.slow
def test_saved_plan_applies_with_commit_and_a_stale_one_is_refused(committed, pkic, tmp_path):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")
    fresh = tmp_path / "fresh-plan.json"
    pkic.ok("plan", "--out", str(fresh), "--now", T1, cwd=repo)
    pkic.ok("apply", str(fresh), "--commit", "--now", T1, cwd=repo)
    assert [v.split()[0] for v in trailer_values(trailers(pkic, repo), "Pki-Issued")] == ["api"]

    edit_spec(repo, add=DB)
    commit_spec(pkic, repo, "pki: add db")
    old = tmp_path / "old-plan.json"
    pkic.ok("plan", "--out", str(old), "--now", T1, cwd=repo)
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)  # another apply moves the state on
    edit_spec(repo, add=CACHE)
    commit_spec(pkic, repo, "pki: add cache")
    p = assert_refused(pkic, repo, "stale plan", str(old))
    assert "made against state serial 2, but the state is now at serial 3" in p.stderr


# --------------------------------------------------------------------------- 5. concurrency


@pytest.mark.slow
def test_two_ci_applies_race_first_push_wins_rerun_converges(committed, pkic, tmp_path):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "Merge pull request #2: add api")
    remote = tmp_path / "remote.git"
    git(pkic, tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for clone in (a, b, c):
        git(pkic, tmp_path, "clone", "-q", str(remote), str(clone))

    # job a (one day later) and job b (three days later, OCSP/CRLs due too) apply the same main
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=a)
    pkic.ok("apply", "--yes", "--commit", "--now", T3, cwd=b)
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=c)
    git(pkic, a, "push", "-q", "origin", "HEAD:main")
    api = state(a)["certificates"]["api"][0]
    for late in (b, c):
        p = git(pkic, late, "push", "origin", "HEAD:main", check=False)
        assert p.returncode != 0 and "rejected" in p.stderr, p.stderr

    # b reruns from the new main: only its own (time-driven) work is left, and it pushes
    git(pkic, b, "fetch", "-q", "origin")
    git(pkic, b, "reset", "-q", "--hard", "origin/main")
    pkic.ok("apply", "--yes", "--commit", "--now", T3, cwd=b)
    assert git(pkic, b, "rev-parse", "HEAD^").stdout.strip() == git(pkic, b, "rev-parse", "origin/main").stdout.strip()
    tr = trailers(pkic, b)
    assert not [k for k, _ in tr if k in ("Pki-Issued", "Pki-Reissued", "Pki-Renewed", "Pki-Revoked")], tr
    assert state(b)["certificates"]["api"][0]["serial"] == api["serial"]  # a's api, not issued twice
    assert state(b)["serial"] == state(a)["serial"] + 1 and state(b)["lineage"] == state(a)["lineage"]
    git(pkic, b, "push", "-q", "origin", "HEAD:main")
    assert pkic("plan", "--detailed-exitcode", "--now", T3, cwd=b).returncode == 0

    # c reruns from the newest main: nothing left, no commit
    git(pkic, c, "fetch", "-q", "origin")
    git(pkic, c, "reset", "-q", "--hard", "origin/main")
    tip = head(pkic, c)
    p = pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=c)
    assert "No changes" in p.stdout and head(pkic, c) == tip and porcelain(pkic, c) == ""


@pytest.mark.slow
def test_two_applies_in_one_checkout(committed, pkic):
    repo = committed
    edit_spec(repo, add=API)
    commit_spec(pkic, repo, "pki: add api")
    lock = repo / ".pkic" / "lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = assert_refused(pkic, repo, "another pkic apply is running")
    assert "Traceback" not in p.stderr

    # and for real: two at once; one does the work, the other is locked out or finds nothing to do
    edit_spec(repo, add=DB)
    c0 = commit_spec(pkic, repo, "pki: add db")
    cmd = [sys.executable, "-m", "compiler.cli", "apply", "--yes", "--commit", "--now", T1]
    procs = [subprocess.Popen(cmd, cwd=repo, env=pkic.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(pr.wait(timeout=60), *pr.communicate()) for pr in procs]
    for rc, out, err in results:
        assert rc == 0 or (rc == 1 and "another pkic apply is running" in err), (rc, out, err)
    assert git(pkic, repo, "rev-list", "--count", f"{c0}..HEAD").stdout.strip() == "1"
    assert sorted(v.split()[0] for v in trailer_values(trailers(pkic, repo), "Pki-Issued")) == ["api", "db"]
    assert porcelain(pkic, repo) == ""
    assert pkic("plan", "--detailed-exitcode", "--now", T1, cwd=repo).returncode == 0


# --------------------------------------------------------------------------- 6. pkic check


def check_json(pkic, repo: Path, now: str, *args: str) -> tuple[int, dict]:
    p = pkic("check", "--json", "--now", now, *args, cwd=repo)
    assert p.returncode in (0, 1, 2, 3), (p.returncode, p.stdout, p.stderr)
    return p.returncode, json.loads(p.stdout)


def levels(body: dict) -> dict[tuple[str, str], str]:
    return {(i["kind"], i["name"]): i["level"] for i in body["items"]}


@pytest.mark.slow
def test_check_exit_codes_and_formats(applied, pkic, tmp_path):
    repo = applied
    web = active(repo)["web"]

    # right after the apply: OK, even with a very eager --warn/--critical
    rc, body = check_json(pkic, repo, NOW)
    assert rc == 0 and body["status"] == "OK" and body["code"] == 0 and body["summary"].startswith("PKIC OK - ")
    assert {"certificate", "crl", "ocsp", "responder"} == {i["kind"] for i in body["items"]}
    for item in body["items"]:
        assert set(item) >= {"kind", "name", "issuer", "level", "expires", "message"}
        datetime.fromisoformat(item["expires"].replace("Z", "+00:00"))
    assert ("certificate", "web") in levels(body) and ("crl", "services-ca") in levels(body)
    assert next(i for i in body["items"] if i["name"] == "web" and i["kind"] == "certificate")["expires"] == web["not_after"]
    p = pkic("check", "--now", NOW, "--warn", "365d", "--critical", "30d", cwd=repo)
    assert p.returncode == 0 and p.stdout.startswith("PKIC OK"), p.stdout  # a fresh 7-day CRL is no alarm
    # a certificate not yet due is no alarm either (its OCSP response is another matter)
    _, body = check_json(pkic, repo, at(days=50), "--warn", "60d")
    assert levels(body)[("certificate", "web")] == "OK"

    # refresh OCSP and CRLs half a day before web's renewal point, then look just past it
    pkic.ok("apply", "--yes", "--now", "2027-01-26T00:00:00Z", cwd=repo)
    assert active(repo)["web"]["serial"] == web["serial"]  # not renewed yet
    p = pkic("check", "--now", "2027-01-26T13:00:00Z", cwd=repo)
    assert p.returncode == 1, p.stdout
    assert p.stdout.startswith("PKIC WARNING - 2 problem(s): certificate payments: past its renewal point")
    assert "WARNING  certificate web: past its renewal point 2027-01-26T12:00:00Z" in p.stdout
    rc, body = check_json(pkic, repo, "2027-01-26T13:00:00Z")
    assert rc == 1 and body["status"] == "WARNING" and body["code"] == 1
    assert {k for k, v in levels(body).items() if v != "OK"} == {("certificate", "web"), ("certificate", "payments")}

    # within --critical (6 days left), then expired: CRITICAL
    rc, body = check_json(pkic, repo, "2027-02-19T12:00:00Z")
    web_item = next(i for i in body["items"] if i["kind"] == "certificate" and i["name"] == "web")
    assert rc == 2 and body["status"] == "CRITICAL" and web_item["level"] == "CRITICAL" and "6d 0h left" in web_item["message"]
    _, body = check_json(pkic, repo, "2027-02-19T12:00:00Z", "--critical", "1d")
    assert levels(body)[("certificate", "web")] == "WARNING"  # --critical is what made it critical
    rc, body = check_json(pkic, repo, "2027-02-26T12:00:00Z")
    web_item = next(i for i in body["items"] if i["kind"] == "certificate" and i["name"] == "web")
    assert rc == 2 and web_item["message"].startswith("expired at")

    # prometheus, to stdout and atomically to a file
    # as of the last apply (2027-01-26): at NOW its CRLs and responses would not be valid yet
    p = pkic("check", "--format", "prometheus", "--now", "2027-01-26T00:00:00Z", cwd=repo)
    assert p.returncode == 0
    expiry = int(datetime.fromisoformat(web["not_after"].replace("Z", "+00:00")).timestamp())
    assert f'pkic_certificate_expiry_timestamp_seconds{{name="web",issuer="services-ca"}} {expiry}\n' in p.stdout
    assert "# TYPE pkic_certificate_expiry_timestamp_seconds gauge" in p.stdout
    assert re.search(r'^pkic_crl_next_update_timestamp_seconds\{name="services-ca",issuer="services-ca"\} \d+$', p.stdout, re.M)
    assert re.search(r'^pkic_check_level\{kind="certificate",name="web"\} 0$', p.stdout, re.M)
    for line in p.stdout.splitlines():
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? -?\d+', line), line
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    target = textfile / "pkic.prom"
    target.write_text("old\n")
    inode = target.stat().st_ino
    q = pkic("check", "--format", "prometheus", "--now", "2027-01-26T00:00:00Z", "--out", str(target), cwd=repo)
    assert q.returncode == 0 and q.stdout.startswith("PKIC OK")
    assert target.read_text() == p.stdout
    assert target.stat().st_ino != inode  # replaced, not rewritten in place
    assert [f.name for f in textfile.iterdir()] == ["pkic.prom"]


def test_check_unknown_without_state(repo, pkic):
    p = pkic("check", cwd=repo)
    assert p.returncode == 3 and p.stdout.startswith("PKIC UNKNOWN - "), (p.stdout, p.stderr)
    p = pkic("check", "--json", cwd=repo)
    assert p.returncode == 3
    body = json.loads(p.stdout)
    assert body["status"] == "UNKNOWN" and body["code"] == 3 and body["items"] == [] and body["summary"].startswith("PKIC UNKNOWN")
    (repo / "out").mkdir()
    (repo / "out" / "state.json").write_text("{not json")
    p = pkic("check", cwd=repo)
    assert p.returncode == 3 and p.stdout.startswith("PKIC UNKNOWN"), (p.stdout, p.stderr)


# --------------------------------------------------------------------------- 7. markdown plan, golden


def mask(text: str) -> str:
    text = re.sub(r"Pki-Plan: [0-9a-f]{64}", "Pki-Plan: <digest>", text)
    text = re.sub(r"`ed25519:[A-Za-z0-9+/=]{44}`", "`<seal key>`", text)
    text = re.sub(r"\bage1[0-9a-z]{58}\b", "<age recipient>", text)
    return re.sub(r"\b[0-9a-f]{32,40}\b", "<serial>", text)


def test_markdown_plan_matches_golden(repo, pkic):
    edit_spec(repo, add=DB)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    # at LATER: issue api, reissue web (new name), revoke payments (removed), renew db (due)
    edit_spec(repo, add=API, drop=("payments",), replace=((WEB_DNS, "dns: [web.example.com, www.example.com, app.example.com]"),))
    plan = plan_json(pkic, repo, LATER)
    assert sorted((c["name"], c["action"]) for c in plan["changes"]) == [("api", "issue"), ("db", "renew"), ("payments", "revoke"), ("web", "reissue")]
    md = pkic.ok("plan", "--format", "markdown", "--now", LATER, cwd=repo).stdout
    assert f"Pki-Plan: {plan['reviewed_digest']}" in md
    golden = GOLDEN / "plan_multi_change.md"
    if os.environ.get("PKIC_UPDATE_GOLDEN") or not golden.exists():
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(mask(md), encoding="utf-8")
    assert mask(md) == golden.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- 8. graph

GRAPH_SPEC_EXTRA = """  iot-ca:
    issuer: root-ca
    subject: {CN: Example IoT CA}
    lifetime: 2y
  sensor.v1:
    issuer: iot-ca
    profile: client
    subject: {CN: sensor}
"""
GRAPH_EDGES = {("root-ca", "services-ca"), ("services-ca", "web"), ("services-ca", "payments"), ("root-ca", "iot-ca"), ("iot-ca", "sensor.v1")}


def _graph_repo(repo: Path) -> None:
    """The init example plus a second intermediate with a leaf, and payments revoked in place."""
    authority, leaf = GRAPH_SPEC_EXTRA.split("  sensor.v1:")
    text = spec_text(repo).replace("\ncertificates:\n", "\n" + authority + "\ncertificates:\n", 1)
    text = text.replace("    uri: [spiffe://example.com/payments]\n", "    uri: [spiffe://example.com/payments]\n    revoke: superseded\n")
    write_spec(repo, text + "  sensor.v1:" + leaf)


def test_graph_mermaid_and_dot(repo, pkic):
    _graph_repo(repo)
    pkic.ok("validate", cwd=repo)
    names = {n for edge in GRAPH_EDGES for n in edge}

    mm = pkic.ok("graph", "--format", "mermaid", cwd=repo).stdout
    lines = mm.splitlines()
    assert lines[0] == "graph TD"
    ids = {}
    for line in lines[1:]:
        m = re.fullmatch(r'  (\w+)(\(\["|\[")([^"]+)("\]\)|"\])', line)
        if m:
            name, kind = m.group(3).split("<br/>")[0], m.group(3).split("<br/>")[1].split(",")[0]
            ids[name] = m.group(1)
            assert (m.group(2) == '(["') == (kind == "authority"), line
    assert set(ids) == names and len(set(ids.values())) == len(ids)
    edges = {tuple(m.groups()) for m in re.finditer(r"^  (\w+) --> (\w+)$", mm, re.M)}
    assert edges == {(ids[a], ids[b]) for a, b in GRAPH_EDGES}
    assert f"  style {ids['payments']} stroke-dasharray: 5 5" in lines

    dot = pkic.ok("graph", "--format", "dot", cwd=repo).stdout
    nodes, dot_edges, graph_name = parse_dot(dot)
    assert graph_name == "pki"
    assert set(nodes) == names and dot_edges == GRAPH_EDGES
    for name, attrs in nodes.items():
        assert attrs["label"].split("\\n")[0] == name
        assert attrs["shape"] == ("box3d" if name in ("root-ca", "services-ca", "iot-ca") else "box")
    assert nodes["payments"].get("style") == "dashed" and "style" not in nodes["web"]


def test_graph_mermaid_ids_are_distinct_for_distinct_names(repo, pkic):
    edit_spec(repo, add="  web-v2:\n    issuer: services-ca\n    dns: [v2.example.com]\n  web.v2:\n    issuer: services-ca\n    dns: [v2b.example.com]\n")
    mm = pkic.ok("graph", "--format", "mermaid", cwd=repo).stdout
    node_ids = re.findall(r'^  (\w+)[(\[]', mm, re.M)
    assert len(node_ids) == 6 and len(set(node_ids)) == 6, mm


def parse_dot(text: str) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]], str]:
    """A small parser for the dot subset pkic writes (digraph, attribute, node and edge
    statements, quoted or bare IDs): raises on anything structurally wrong."""
    token_re = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(->|[{}\[\];=,])|([A-Za-z_][\w.]*|-?\d+(?:\.\d+)?))', re.S)
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = token_re.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenise dot at {text[pos:pos + 30]!r}"
        quoted, punct, bare = m.groups()
        tokens.append(("id", quoted[1:-1]) if quoted else ("p", punct) if punct else ("id", bare))
        pos = m.end()
    i = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal i
        assert i < len(tokens), "unexpected end of dot"
        k, v = tokens[i]
        assert k == kind and (value is None or v == value), f"expected {value or kind}, got {v!r}"
        i += 1
        return v

    def attrs() -> dict[str, str]:
        out = {}
        take("p", "[")
        while tokens[i] != ("p", "]"):
            key = take("id")
            take("p", "=")
            out[key] = take("id")
            if tokens[i] == ("p", ","):
                take("p", ",")
        take("p", "]")
        return out

    assert take("id") == "digraph"
    name = take("id")
    take("p", "{")
    nodes: dict[str, dict[str, str]] = {}
    edges: set[tuple[str, str]] = set()
    while tokens[i] != ("p", "}"):
        first = take("id")
        if first in ("node", "edge", "graph") and tokens[i] == ("p", "["):
            attrs()
        elif tokens[i] == ("p", "="):
            take("p", "=")
            take("id")
        elif tokens[i] == ("p", "->"):
            take("p", "->")
            edges.add((first, take("id")))
            if tokens[i] == ("p", "["):
                attrs()
        else:
            assert first not in nodes, f"node {first} declared twice"
            nodes[first] = attrs() if tokens[i] == ("p", "[") else {}
        take("p", ";")
    take("p", "}")
    assert i == len(tokens), "trailing tokens after the graph"
    for a, b in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} to an undeclared node"
    return nodes, edges, name


# --------------------------------------------------------------------------- 9. the HTML report in a browser


class Element:
    def __init__(self, tag: str, attrs: dict, parent: "Element | None"):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str, **attrs) -> list["Element"]:
        return [e for e in self.iter() if e.tag == tag and all(e.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def find(self, tag: str, **attrs) -> "Element":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}> in the page"
        return found[0]

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)

    def ancestor(self, tag: str) -> "Element | None":
        p = self.parent
        while p is not None and p.tag != tag:
            p = p.parent
        return p


class DomBuilder(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        el = Element(tag, dict(attrs), self.cur)
        self.cur.children.append(el)
        if tag not in self.VOID:
            self.cur = el

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Element(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.text += data  # enough for "is this text shown in that element" checks


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def png_info(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium is not installed at /usr/bin/chromium")
def test_report_renders_in_a_browser(committed, pkic, tmp_path):
    repo = committed
    edit_spec(repo, add=API, drop=("payments",))
    commit_spec(pkic, repo, "pki: add api, retire payments")
    pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    subject = git(pkic, repo, "log", "-1", "--format=%s").stdout.strip()
    sha = head(pkic, repo)
    act = active(repo)
    revoked = state(repo)["certificates"]["payments"][0]
    report = tmp_path / "report.html"
    pkic.ok("report", "--out", str(report), "--now", T1, cwd=repo)
    raw = report.read_text()

    # self-contained: nothing fetched from anywhere (the SVG namespace is a name, not a fetch)
    no_ns = raw.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://", no_ns), re.findall(r".{40}https?://.{40}", no_ns)
    assert not re.search(r"<(script|link|iframe|img|object|embed)\b", raw, re.I) and "@import" not in raw and "url(" not in raw

    dom_text = chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    builder = DomBuilder()
    builder.feed(dom_text)
    dom = builder.root

    # the hierarchy: every active name once, nested under its issuer
    tree = dom.find("ul", id="hierarchy")
    items = {li.attrs["data-name"]: li for li in tree.find_all("li") if "data-name" in li.attrs}
    assert set(items) == set(act) == {"root-ca", "services-ca", "web", "api"}
    for name, li in items.items():
        parent = li.ancestor("li")
        assert (parent.attrs["data-name"] if parent is not None else None) == act[name].get("issuer"), name
        assert act[name]["serial"][:16] in li.all_text() and act[name]["not_after"][:10] in li.all_text()

    # the timeline: one bar per active certificate, a today line
    svg = dom.find("svg", id="timeline")
    bars = [r.attrs["data-name"] for r in svg.find_all("rect") if "data-name" in r.attrs]
    assert sorted(bars) == sorted(act)
    assert "today" in svg.all_text()
    today = float(svg.find("line", id="today").attrs["x1"])
    for rect in svg.find_all("rect"):
        x, w = float(rect.attrs["x"]), float(rect.attrs["width"])
        assert w > 0 and x <= today <= x + w, rect.attrs  # every active certificate is valid today
        assert "renews" in rect.find("title").all_text()

    # revocations, with the reason; the last changes, with the commit
    rows = dom.find("table", id="revocations").find_all("tr", **{"data-name": "payments"})
    assert len(rows) == 1
    cells = [td.all_text().strip() for td in rows[0].find_all("td")]
    assert cells[:3] == ["payments", revoked["serial"], "cessation_of_operation"]
    changes = dom.find("table", id="changes").all_text()
    assert subject in changes and sha[:12] in changes
    assert subject.startswith("pkic apply: 1 issue, 1 revoke")
    crls = {tr.attrs["data-name"] for tr in dom.find("table", id="crls").find_all("tr") if "data-name" in tr.attrs}
    assert crls == {"root-ca", "services-ca"}

    # a screenshot, kept as a test artifact (never committed)
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", report.as_uri())
    width, height, pixels = png_info(shot.read_bytes())
    assert (width, height) == (1280, 1600)
    assert len(set(pixels[::97])) > 8, "the screenshot looks blank"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shutil.copyfile(shot, ARTIFACTS / "report.png")


def test_commit_out_takes_a_message_larger_than_one_argument(tmp_path, pkic):
    """A cold apply of 10,000 leaves commits with one trailer per certificate (~700 KB
    of message): more than one command-line argument may hold (E2BIG). It failed after
    signing; the benchmark's W10k apply --commit now measures it."""
    from compiler.gitops import commit_out

    repo = tmp_path / "big"
    (repo / "out").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=pkic.env)
    paths = []
    for i in range(500):
        rel = f"out/f{i:05d}.pem"
        (repo / rel).write_text(str(i))
        paths.append(rel)
    message = "pkic apply: 10000 issue\n\n" + "".join(f"Pki-Issued: svc-{i:05d} {'ab' * 20} {'cd' * 8}\n" for i in range(10000))
    assert len(message) > 131072  # MAX_ARG_STRLEN
    env = {k: v for k, v in pkic.env.items() if k.startswith("GIT_")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        done = commit_out(repo, paths + ["out/gone.pem"], message, None)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert done.sha and done.files == 500
    body = git(pkic, repo, "log", "-1", "--format=%B").stdout
    assert body.count("Pki-Issued:") == 10000
