"""Attack: a pull request puts back a *genuine* out/ with its genuine seal, just not
the newest one, or takes the seal away.

* Restoring out/ and out.seal from before a revocation un-revokes the certificate
  (its CRL and OCSP response say "good" again): both were sealed by the real key, so
  only freshness can tell. Apply must refuse, naming the commit with the newer seal.
* A maintainer's side branch holds output sealed by the real key; copying it onto main
  after main moved on replays a seal that does not follow main's chain.
* Deleting out.seal (and out/) would make the repository look unsealed or new.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import (  # noqa: E402
    API,
    T1,
    T_WEB,
    assert_applied,
    assert_refused,
    edit_spec,
    read_state,
    trailers,
)

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

REVOKE_PAYMENTS = (("    subject: {CN: payments}\n", "    subject: {CN: payments}\n    revoke: key_compromise\n"),)


def _restore_from(forge, rev: str, paths: tuple[str, ...] = ("out", "out.seal")):
    def change(a: Path) -> None:
        for p in paths:
            forge.git(a, "rm", "-r", "-q", "--", p)
        forge.git(a, "checkout", rev, "--", *paths)
    return change


@pytest.mark.slow
def test_restoring_the_out_from_before_a_revocation_is_refused(forge):
    before_revocation = forge.head()  # the first apply: payments good, seal serial 2
    forge.reviewed_change("revoke-payments", lambda t: edit_spec(t, replace=REVOKE_PAYMENTS), T1)
    revocation = forge.head()
    assert read_state(forge.main)["certificates"]["payments"][0]["status"] == "revoked"
    serial = json.loads((forge.main / "out.seal").read_text())["serial"]
    assert ("Pki-Seal", f"{serial} " + hashlib.sha256((forge.main / "out.seal").read_bytes()).hexdigest()) in trailers(forge, forge.main)

    forge.pull_request("restore", _restore_from(forge, before_revocation), "out: restore the certificates from last week")
    run = forge.ci(T1)
    assert read_state(run.repo)["certificates"]["payments"][0]["status"] == "active"  # what the attacker wanted
    assert_refused(run, f"out.seal: restores an older out/: its seal has serial {serial - 1}, but commit {revocation[:12]} already has serial {serial}")
    plan = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=run.repo).stdout)
    assert plan["seal"]["ok"] is False and any("restores an older out/" in p["message"] for p in plan["seal"]["problems"])
    payments = read_state(forge.main)["certificates"]["payments"][0]["serial"]
    assert any(f"payments serial {payments} was revoked" in f["message"] and "was revoked in the sealed state and is not any more" in f["message"]
               for f in plan["seal"]["findings"]), plan["seal"]
    v = forge.pkic("verify", "--seal", cwd=run.repo)
    assert v.returncode == 1 and "restores an older out/" in v.stderr, v.stdout + v.stderr


@pytest.mark.slow
def test_restoring_only_the_old_seal_is_refused(forge):
    """out/ stays the newest; out.seal is the previous genuine one."""
    first = forge.head()
    forge.reviewed_change("add-api", lambda t: edit_spec(t, add=API), T1)
    forge.pull_request("old-seal", _restore_from(forge, first, ("out.seal",)), "out.seal: tidy up")
    run = forge.ci(T1)
    assert_refused(run, "out.seal: restores an older out/", "HEAD:out: the committed out/ is not the sealed tree")


@pytest.fixture
def diverged(forge):
    """A maintainer (holding the seal key) applies two changes on a side branch and
    pushes it; meanwhile main moves on with a reviewed change of its own."""
    fork = forge.head()
    side = forge.clone("maintainer")
    forge.git(side, "switch", "-q", "-c", "experiment", fork)
    for i, (extra, when) in enumerate(((API, T1), ("  db:\n    issuer: services-ca\n    dns: [db.svc.internal]\n", T_WEB))):
        (side / "pki.yaml").write_text((side / "pki.yaml").read_text() + extra)
        forge.git(side, "commit", "-q", "-am", f"experiment {i}")
        forge.pkic.ok("apply", "--yes", "--commit", "--now", when, cwd=side)
    forge.git(side, "push", "-q", "origin", "experiment")
    forge.reviewed_change("add-cache", lambda t: edit_spec(t, add="  cache:\n    issuer: services-ca\n    dns: [cache.svc.internal]\n"), T1)
    side_seal = json.loads((side / "out.seal").read_text())
    main_seal = json.loads((forge.main / "out.seal").read_text())
    assert side_seal["serial"] > main_seal["serial"]  # a higher serial: only the chain tells
    return forge


@pytest.mark.slow
def test_a_seal_replayed_from_another_branch_is_refused(diverged):
    forge = diverged
    forge.pull_request("take-experiment", _restore_from(forge, "origin/experiment", ("out", "out.seal", "pki.yaml")), "take the experiment's output")
    run = forge.ci(T_WEB)
    assert_refused(run, "does not follow the one of commit", "replayed from another branch or PKI?")
    assert "db" in read_state(run.repo)["certificates"]


@pytest.mark.slow
def test_deleting_the_seal_is_refused_and_revert_restores_service(forge):
    sealed_at = forge.head()
    merge = forge.pull_request("unseal", lambda a: (a / "out.seal").unlink(), "out.seal: not needed")
    run = forge.ci(T1)
    assert_refused(run, f"out.seal: is missing, but commit {sealed_at[:12]} has one")
    forge.revert(merge)
    run = forge.ci(T_WEB)
    assert_applied(run)
    forge.pkic.ok("verify", "--seal", "--now", T_WEB, cwd=forge.clone("check"))


@pytest.mark.parametrize("gone", [("out", "out.seal"), ("out",)], ids=["out-and-seal", "out-only"])
def test_deleting_out_is_refused(forge, gone):
    sealed_at = forge.head()

    def change(a: Path) -> None:
        for p in gone:
            forge.git(a, "rm", "-r", "-q", "--", p)

    forge.pull_request("start-over", change, "start the PKI over")
    run = forge.ci(T1)
    if "out.seal" in gone:
        assert_refused(run, f"out.seal: is missing, but commit {sealed_at[:12]} has one")
    else:
        assert_refused(run, "out/certs/root-ca.pem: edited by hand (removed): not what the seal covers", "out: more files are not what the seal covers",
                       "HEAD:out: the committed out/ is not the sealed tree")
    assert not (run.repo / "out").exists()  # nothing was issued afresh


@pytest.mark.slow
def test_a_seal_signed_by_another_key_in_history_does_not_count(forge):
    """An attacker's earlier (merged, refused) seal stays in history; once reverted, it
    neither blocks the real chain nor lends its serial to anything."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from seclib import forge_seal

    key = Ed25519PrivateKey.generate()

    def change(a: Path) -> None:
        (a / "out" / "notes.txt").write_text("harmless\n")
        forge_seal(forge.pkic.env, a, key)

    merge = forge.pull_request("notes", change, "out: notes")
    assert_refused(forge.ci(T1), "is not sealed by the seal key")
    forge.revert(merge)
    assert_applied(forge.ci(T_WEB))
