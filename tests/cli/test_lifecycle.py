"""End-to-end lifecycle through the CLI in temporary git repos, with the real sops,
openssl and git: issue, reissue, renew, rekey, rename, saved plans, crashes, locks."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path

import pytest
from conftest import NOW, snapshot, write_spec
from helpers import active, assert_all_verify, assert_keys_match, decrypt_key, scan_for_leaks, state

LATER = "2027-02-01T12:00:00Z"  # 66 days after NOW: web (90d, renew_before 30d) is due


def spec_text(repo: Path) -> str:
    return (repo / "pki.yaml").read_text()


def changed_files(before: dict, after: dict) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


def test_first_apply_verifies_and_keys_match(applied, pkic):
    assert set(active(applied)) == {"root-ca", "services-ca", "web", "payments"}
    assert_all_verify(applied)
    assert_keys_match(applied, pkic.env)
    s = state(applied)
    assert s["format"] == "pkic-state" and s["serial"] == 1 and s["lineage"]


def test_san_change_reissues_exactly_one(applied, pkic):
    before = snapshot(applied / "out")
    old_serial = active(applied)["web"]["serial"]
    write_spec(applied, spec_text(applied).replace("dns: [web.example.com, www.example.com]", "dns: [web.example.com, www.example.com, api.example.com]"))
    plan = json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=applied).stdout)
    assert [(c["name"], c["action"], [r["code"] for r in c["reasons"]]) for c in plan["changes"]] == [("web", "reissue", ["dns_changed"])]
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    after = snapshot(applied / "out")
    recs = state(applied)["certificates"]["web"]
    # the old certificate is still valid (not revoked): its OCSP response moves aside, by serial
    assert changed_files(before, after) == {"certs/web.pem", "certs/web.chain.pem", "keys/web.sops.yaml", "state.json",
                                            "ocsp/web.der", f"ocsp/web.{old_serial}.der"}
    assert recs[0]["status"] == "active" and recs[1]["serial"] == old_serial and recs[1]["status"] == "superseded"
    assert_all_verify(applied)
    assert_keys_match(applied, pkic.env)


def test_renewal_window_renews_exactly_the_due(applied, pkic):
    plan = json.loads(pkic.ok("plan", "--json", "--now", LATER, cwd=applied).stdout)
    got = {c["name"]: (c["action"], c["key"]) for c in plan["changes"]}
    # web: 90d with renew_before 30d -> due at day 60; payments: 90d, default a third -> due at day 60 too
    assert got == {"web": ("renew", "new"), "payments": ("renew", "new")}
    p = pkic("plan", "--detailed-exitcode", "--now", LATER, cwd=applied)
    assert p.returncode == 2
    pkic.ok("apply", "--yes", "--now", LATER, cwd=applied)
    assert pkic("plan", "--detailed-exitcode", "--now", LATER, cwd=applied).returncode == 0
    a = active(applied)
    assert a["web"]["not_after"].startswith("2027-05-02") and a["services-ca"]["issued_at"] == NOW
    assert_all_verify(applied, at=LATER)


def test_authority_rekey_reissues_its_subtree(applied, pkic):
    before = active(applied)
    write_spec(applied, spec_text(applied).replace("    path_length: 0\n", "    path_length: 0\n    rekey: 1\n"))
    plan = json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=applied).stdout)
    got = {c["name"]: (c["action"], sorted(r["code"] for r in c["reasons"]), c["key"]) for c in plan["changes"]}
    assert got == {
        "services-ca": ("reissue", ["rekey_requested"], "new"),
        "web": ("reissue", ["issuer_reissued"], "new"),
        "payments": ("reissue", ["issuer_reissued"], "new"),
    }
    text = pkic.ok("plan", "--now", NOW, cwd=applied).stdout
    assert "blast radius: 2 certificate(s) below must be reissued: payments, web" in text
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    after = active(applied)
    assert after["root-ca"]["serial"] == before["root-ca"]["serial"]
    assert after["services-ca"]["key_id"] != before["services-ca"]["key_id"]
    assert_all_verify(applied)
    assert_keys_match(applied, pkic.env)


def test_authority_renewal_keeps_key_and_rewrites_children_chains(repo, pkic):
    # web lives 900d (renew_before 10d) so it is not due when services-ca (3y) enters its window at 2y
    write_spec(repo, spec_text(repo).replace("    lifetime: 90d\n    renew_before: 30d\n", "    lifetime: 900d\n    renew_before: 10d\n"))
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    before = active(repo)
    web_pem = (repo / "out/certs/web.pem").read_bytes()
    later = "2028-12-01T12:00:00Z"
    plan = json.loads(pkic.ok("plan", "--json", "--now", later, cwd=repo).stdout)
    got = {c["name"]: (c["action"], c["key"]) for c in plan["changes"]}
    assert got == {"services-ca": ("renew", "keep"), "payments": ("renew", "new")}
    assert plan["chain_updates"] == ["web"]
    pkic.ok("apply", "--yes", "--now", later, cwd=repo)
    after = active(repo)
    assert after["services-ca"]["key_id"] == before["services-ca"]["key_id"]
    assert after["services-ca"]["serial"] != before["services-ca"]["serial"]
    assert (repo / "out/certs/web.pem").read_bytes() == web_pem
    chain = (repo / "out/certs/web.chain.pem").read_text()
    assert (repo / "out/certs/services-ca.pem").read_text() in chain
    assert_all_verify(repo, at=later)


def test_removed_certificate_is_revoked_and_its_files_go(applied, pkic):
    text = spec_text(applied)
    start = text.index("  payments:")
    write_spec(applied, text[:start])
    plan = json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=applied).stdout)
    assert [(c["name"], c["action"]) for c in plan["changes"]] == [("payments", "revoke")]
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    rec = state(applied)["certificates"]["payments"][0]
    assert rec["status"] == "revoked" and rec["revocation_reason"] == "cessation_of_operation"
    assert not (applied / "out/certs/payments.pem").exists()
    assert not (applied / "out/keys/payments.sops.yaml").exists()
    assert "payments" not in pkic.ok("status", cwd=applied).stdout


def test_rename_with_moved_carries_state(applied, pkic):
    serial = active(applied)["web"]["serial"]
    key_file = (applied / "out/keys/web.sops.yaml").read_bytes()
    write_spec(applied, spec_text(applied).replace("  web:\n", "  website:\n") + "moved:\n  - {from: web, to: website}\n")
    text = pkic.ok("plan", "--now", NOW, cwd=applied).stdout
    assert "move     web -> website" in text and "revoke" not in text.split("Plan:")[0].replace("nothing revoked", "")
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    a = active(applied)
    assert "web" not in a and a["website"]["serial"] == serial
    assert (applied / "out/keys/website.sops.yaml").read_bytes() == key_file
    assert not (applied / "out/certs/web.pem").exists()
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied).returncode == 0
    assert_all_verify(applied)


def test_rename_an_authority_with_moved_while_its_children_renew(applied, pkic):
    """The authority's key is decrypted (and checked against its record) before the move
    step renames its files: it must be found under the old name."""
    ca = active(applied)["services-ca"]
    text = spec_text(applied).replace("  services-ca:\n", "  svc-ca:\n").replace("issuer: services-ca", "issuer: svc-ca")
    write_spec(applied, text + "moved:\n  - {from: services-ca, to: svc-ca}\n")
    later = "2027-02-01T12:00:00Z"  # web is due: svc-ca signs under its new name
    pkic.ok("apply", "--yes", "--now", later, cwd=applied)
    a = active(applied)
    assert a["svc-ca"]["serial"] == ca["serial"] and a["web"]["issuer"] == "svc-ca" and a["web"]["issuer_key_id"] == ca["key_id"]
    assert pkic("plan", "--detailed-exitcode", "--now", later, cwd=applied).returncode == 0
    assert_all_verify(applied, later)


@pytest.mark.slow
def test_saved_plan_applies_exactly_and_stale_plan_is_refused(repo, pkic):
    pkic.ok("plan", "--out", "plan.json", "--now", NOW, cwd=repo)
    pkic.ok("apply", "plan.json", "--now", NOW, cwd=repo)
    assert len(active(repo)) == 4
    # a plan saved against serial 1, then the state moves on
    write_spec(repo, spec_text(repo).replace("www.example.com]", "www.example.com, a.example.com]"))
    pkic.ok("plan", "--out", "old.json", "--now", NOW, cwd=repo)
    write_spec(repo, spec_text(repo).replace("a.example.com]", "b.example.com]"))
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    before = snapshot(repo / "out")
    p = pkic("apply", "old.json", "--now", NOW, cwd=repo)
    assert p.returncode == 1 and "stale plan" in p.stderr, p.stderr
    assert snapshot(repo / "out") == before
    # same serial but a different spec: also stale
    pkic.ok("plan", "--out", "new.json", "--now", NOW, cwd=repo)
    write_spec(repo, spec_text(repo).replace("b.example.com]", "c.example.com]"))
    p = pkic("apply", "new.json", "--now", NOW, cwd=repo)
    assert p.returncode == 1 and "stale plan" in p.stderr


@pytest.mark.slow
def test_killed_apply_is_reported_and_finished(repo, pkic):
    for point in ("journal:3", "files:2"):
        serial_before = state(repo)["serial"] if (repo / "out/state.json").exists() else None
        p = pkic("apply", "--yes", "--now", NOW, cwd=repo, env={"PKIC_FAULT": point})
        assert p.returncode == 137, (point, p.stdout, p.stderr)
        plan = pkic.ok("plan", "--now", NOW, cwd=repo).stdout
        assert "interrupted" in plan
        # the state file is only written at the end: the kill left it as it was
        assert (state(repo)["serial"] if (repo / "out/state.json").exists() else None) == serial_before
        pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
        assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=repo).returncode == 0
        assert set(active(repo)) == {"root-ca", "services-ca", "web", "payments"}
        assert not (repo / ".pkic/journal.jsonl").exists()
        assert not [p for p in (repo / "out").rglob(".*tmp-*")]
        assert_all_verify(repo)
        assert_keys_match(repo, pkic.env)
        # every serial ever recorded is distinct
        serials = [r["serial"] for recs in state(repo)["certificates"].values() for r in recs]
        assert len(serials) == len(set(serials))
        # next round: rekey the intermediate and kill that apply too
        write_spec(repo, spec_text(repo).replace("path_length: 0\n", "path_length: 0\n    rekey: 1\n"))


def test_a_new_file_cut_short_by_a_kill_is_rewritten(repo, pkic):
    """New files are created in place, not staged (for speed). A kill in the middle of
    such a write leaves a short file; its journal step is complete, so the next apply
    rewrites it. Simulated: kill after the 3rd step's files, then cut them short."""
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo, env={"PKIC_FAULT": "files:3"})
    assert p.returncode == 137
    steps = [json.loads(line) for line in (repo / ".pkic/journal.jsonl").read_text().splitlines()]
    third = [s for s in steps if s["op"] == "issued"][2]["name"]
    for rel in (f"out/certs/{third}.pem", f"out/keys/{third}.sops.yaml"):
        path = repo / rel
        path.write_bytes(path.read_bytes()[:100])
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    assert third in active(repo)
    assert_all_verify(repo)
    assert_keys_match(repo, pkic.env)
    assert pkic("verify", "--now", NOW, cwd=repo).returncode == 0


def git(repo: Path, env: dict, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def test_a_committed_journal_is_refused(applied, pkic):
    """A pull request that slips in a .pkic/journal.jsonl (force-added past .gitignore)
    would have the next apply 'finish' it: write its certificates into out/ and the
    state, signed by no key of ours (say, a root of the author's own into the trust
    bundle). A journal tracked by git is refused, by plan and apply, and nothing moves."""
    git(applied, pkic.env, "add", "-A")
    git(applied, pkic.env, "commit", "-qm", "pki")
    forged = {"op": "begin", "lineage": state(applied)["lineage"], "base_serial": state(applied)["serial"], "plan": "x", "at": NOW}
    (applied / ".pkic").mkdir(exist_ok=True)
    (applied / ".pkic/journal.jsonl").write_text(json.dumps(forged) + "\n" + json.dumps({"op": "revoked", "name": "web", "serial": "01", "reason": "superseded", "remove_files": True, "at": NOW}) + "\n")
    git(applied, pkic.env, "add", "-f", ".pkic/journal.jsonl")
    git(applied, pkic.env, "commit", "-qm", "innocent")
    before = snapshot(applied / "out")
    for cmd in (["plan", "--now", NOW], ["apply", "--yes", "--now", NOW]):
        p = pkic(*cmd, cwd=applied)
        assert p.returncode == 1 and ".pkic/journal.jsonl: is committed to git" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert snapshot(applied / "out") == before
    # the same journal, not tracked (a real interrupted apply here): it is finished
    git(applied, pkic.env, "rm", "-q", "--cached", ".pkic/journal.jsonl")
    assert "interrupted" in pkic.ok("plan", "--now", NOW, cwd=applied).stdout


def test_a_symlinked_work_dir_is_refused(applied, pkic):
    """.pkic committed as a symlink to a directory holding a forged journal: git does not
    list the journal (it is 'beyond a symlink'), so the symlink itself is refused."""
    git(applied, pkic.env, "add", "-A")
    git(applied, pkic.env, "commit", "-qm", "pki")
    forged = {"op": "begin", "lineage": state(applied)["lineage"], "base_serial": state(applied)["serial"], "plan": "x", "at": NOW}
    (applied / "evil").mkdir()
    (applied / "evil/journal.jsonl").write_text(json.dumps(forged) + "\n" + json.dumps({"op": "revoked", "name": "web", "serial": "01", "reason": "superseded", "remove_files": True, "at": NOW}) + "\n")
    if (applied / ".pkic").exists():
        import shutil

        shutil.rmtree(applied / ".pkic")
    (applied / ".pkic").symlink_to("evil")
    git(applied, pkic.env, "add", "-f", ".pkic", "evil")
    git(applied, pkic.env, "commit", "-qm", "innocent")
    before = snapshot(applied / "out")
    for cmd in (["plan", "--now", NOW], ["apply", "--yes", "--now", NOW], ["status", "--now", NOW]):
        p = pkic(*cmd, cwd=applied)
        assert p.returncode == 1 and ".pkic: is not a plain directory" in p.stderr and "Traceback" not in p.stderr, (cmd, p.stderr)
    assert snapshot(applied / "out") == before


def test_a_journal_git_cannot_vouch_for_is_refused(repo, pkic):
    """When git cannot say whether the journal is committed (here: the checkout belongs
    to another user, 'dubious ownership'), the journal is not trusted either."""
    import os
    import pwd

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to hand the checkout to another user")
    assert pkic("apply", "--yes", "--now", NOW, cwd=repo, env={"PKIC_FAULT": "journal:2"}).returncode == 137
    nobody = pwd.getpwnam("nobody")
    for dirpath, dirs, files in os.walk(repo):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in dirs + files]:
            os.lchown(n, nobody.pw_uid, nobody.pw_gid)
    p = pkic("plan", "--now", NOW, cwd=repo)
    assert p.returncode == 1 and "cannot be checked against git" in p.stderr and "dubious ownership" in p.stderr, p.stderr
    for dirpath, dirs, files in os.walk(repo):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in dirs + files]:
            os.lchown(n, 0, 0)
    assert "interrupted" in pkic.ok("plan", "--now", NOW, cwd=repo).stdout


def test_the_spec_cache_lives_outside_the_repo(applied, pkic):
    """The resolved spec is cached by content in the user's cache directory (the entry
    cache, for a pki.yaml the split reads). A cache file in the repository (committed by
    anyone) is never read: plan follows pki.yaml. (Plans here hold no seal key, as a pull
    request's does; where the key is, plan keeps apply's authenticated caches instead.)"""
    keyless = {"PKIC_SEAL_KEY_FILE": str(applied.parent / "no-seal-key")}
    pkic.ok("plan", "--now", NOW, cwd=applied, env=keyless)
    cached = list((pkic.home / ".cache" / "pkic" / "spec").rglob("entries.json"))
    assert len(cached) == 1 and not (applied / ".pkic" / "cache").exists()
    # the cache is what the next plan reads: tampering with it shows (so the test above
    # is about the real cache, not a dead file)
    body = cached[0].read_text()
    cached[0].write_text(body.replace("www.example.com", "wwx.example.com"))
    assert "wwx.example.com" in pkic.ok("plan", "--now", NOW, cwd=applied, env=keyless).stdout
    # where the seal key is, plan takes only what apply authenticated: not the tampered record
    assert "wwx.example.com" not in pkic.ok("plan", "--now", NOW, cwd=applied).stdout
    cached[0].unlink()
    # a copy planted inside the repository is ignored
    planted = applied / ".pkic" / "cache" / cached[0].name
    planted.parent.mkdir(parents=True)
    planted.write_text(body.replace("www.example.com", "wwx.example.com"))
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied, env=keyless).returncode == 0


def test_a_second_apply_is_locked_out(applied, pkic):
    write_spec(applied, spec_text(applied).replace("www.example.com]", "www.example.com, x.example.com]"))
    before = snapshot(applied / "out")
    lock = applied / ".pkic" / "lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = pkic("apply", "--yes", "--now", NOW, cwd=applied)
    assert p.returncode == 1 and "another pkic apply is running" in p.stderr
    assert snapshot(applied / "out") == before
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)


def test_no_clear_key_in_repo_history_or_temp(tmp_path, applied, pkic):
    write_spec(applied, spec_text(applied).replace("www.example.com]", "www.example.com, y.example.com]"))
    subprocess.run(["git", "add", "-A"], cwd=applied, check=True, env=pkic.env)
    subprocess.run(["git", "commit", "-qm", "pki"], cwd=applied, check=True, env=pkic.env)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    subprocess.run(["git", "add", "-A"], cwd=applied, check=True, env=pkic.env)
    subprocess.run(["git", "commit", "-qm", "apply"], cwd=applied, check=True, env=pkic.env)
    # the base64 body of every key, decrypted in memory only
    secrets = []
    for name in active(applied):
        body = decrypt_key(applied, name, pkic.env).decode().splitlines()[1:-1]
        secrets += [line.encode() for line in body if len(line) >= 40]
    assert secrets
    assert scan_for_leaks(tmp_path, secrets) == []
    history = subprocess.run(["git", "log", "-p", "--all", "--format=%H"], cwd=applied, capture_output=True, env=pkic.env).stdout
    assert b"PRIVATE KEY-----" not in history and not any(s in history for s in secrets)
    for out in (pkic.ok("plan", "--json", cwd=applied).stdout, pkic.ok("status", "--json", cwd=applied).stdout):
        assert "PRIVATE" not in out


def test_status_json_and_days_left(applied, pkic):
    rows = json.loads(pkic.ok("status", "--json", "--now", LATER, cwd=applied).stdout)["certificates"]
    by = {r["name"]: r for r in rows}
    assert by["web"]["days_left"] == 24 and by["web"]["issuer"] == "services-ca" and by["root-ca"]["issuer"] == "(self)"
    text = pkic.ok("status", "--now", LATER, cwd=applied).stdout
    assert "web" in text and "services-ca" in text


def test_schema_and_dash_c(tmp_path, applied, pkic):
    schema = json.loads(pkic.ok("schema").stdout)
    assert "certificates" in schema["properties"] and schema["title"] == "pki.yaml"
    p = pkic.ok("-C", str(applied), "plan", "--now", NOW, cwd=tmp_path)
    assert "No changes" in p.stdout


@pytest.mark.slow
def test_init_identity_is_appended_private_and_outside_the_repo(tmp_path, pkic):
    pkic.ok("init", str(tmp_path / "a"))
    pkic.ok("init", str(tmp_path / "b"))
    keys = Path(pkic.env["SOPS_AGE_KEY_FILE"])
    text = keys.read_text()
    assert text.count("AGE-SECRET-KEY-") == 2
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    for d in ("a", "b"):
        repo = tmp_path / d
        assert (repo / ".git").is_dir() and (repo / "policies").is_dir()
        assert "age1" in (repo / ".sops.yaml").read_text()
        assert not [p for p in repo.rglob("*") if p.is_file() and b"AGE-SECRET-KEY" in p.read_bytes()]
    p = pkic("init", str(tmp_path / "a"))
    assert p.returncode == 1 and "already exists" in p.stderr
    # default location when SOPS_AGE_KEY_FILE is unset: ~/.config/sops/age/keys.txt
    env = {k: v for k, v in pkic.env.items() if k != "SOPS_AGE_KEY_FILE"}
    import subprocess as sp
    import sys
    sp.run([sys.executable, "-m", "compiler.cli", "init", str(tmp_path / "c")], env=env, check=True, capture_output=True)
    assert (pkic.home / ".config/sops/age/keys.txt").read_text().count("AGE-SECRET-KEY-") == 1


def test_ci_identity_from_environment_variable(applied, pkic):
    """CI passes the identity in SOPS_AGE_KEY and the seal key in PKIC_SEAL_KEY, with no key file at all."""
    identity = [ln for ln in Path(pkic.env["SOPS_AGE_KEY_FILE"]).read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")][0]
    seal_key = Path(pkic.env["PKIC_SEAL_KEY_FILE"]).read_text()
    write_spec(applied, spec_text(applied).replace("www.example.com]", "www.example.com, ci.example.com]"))
    env = {"SOPS_AGE_KEY_FILE": str(applied.parent / "nope.txt"), "SOPS_AGE_KEY": identity, "PKIC_SEAL_KEY_FILE": str(applied.parent / "nope.key")}
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert p.returncode == 1 and "no seal key" in p.stderr, p.stderr  # the seal key is needed as much as the identity
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied, env={**env, "PKIC_SEAL_KEY": seal_key})
    assert_all_verify(applied)
