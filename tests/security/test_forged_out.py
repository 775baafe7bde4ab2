"""Attack: a pull request rewrites out/ (the CA's own output) and CI signs with it.

The attacker cannot decrypt the CA keys, but anyone can *encrypt* to CI's public age
recipient, so they can put a key of their own in out/keys/ that CI will decrypt. The
pull request:

* rewrites root-ca consistently (key file, certificate, DER, chain, trust bundle and the
  state's record), re-sealing out.seal with the attacker's own Ed25519 key, or keeping
  the genuine out.seal;
* swaps one CA key file only (out/keys/services-ca.sops.yaml);
* flips a revoked record back to active in state.json;
* appends a root of its own to the trust bundle.

Each is merged; CI's plan (no secret) and apply (identity and seal key) must refuse,
name the problem, sign nothing and commit nothing. Reverting the merge restores service.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import decrypt_key, state

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import (  # noqa: E402
    API,
    T1,
    T_WEB,
    UTC,
    assert_applied,
    assert_refused,
    ed25519_public_text,
    edit_spec,
    forge_seal,
    read_state,
    replace_root,
    self_signed,
    sops_encrypt_key,
    write_state,
)

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

REKEY_SERVICES = ("    path_length: 0\n", "    path_length: 0\n    rekey: 1\n")


def _rewrite_root(forge, reseal: bool, attacker_seal: Ed25519PrivateKey):
    """The attacker's branch: root-ca replaced everywhere, services-ca to be re-keyed
    (so CI would sign with root-ca's key), optionally re-sealed with their own key."""
    scratch = forge.root / "attacker"

    def change(a: Path) -> None:
        replace_root(a, scratch)
        spec = a / "pki.yaml"
        spec.write_text(edit_spec(spec.read_text(), replace=(REKEY_SERVICES,)))
        if reseal:
            forge_seal(forge.pkic.env, a, attacker_seal)

    return change


@pytest.mark.slow
def test_consistent_rewrite_resealed_with_the_attackers_key_is_refused(forge):
    attacker_seal = Ed25519PrivateKey.generate()
    genuine_root = read_state(forge.main)["certificates"]["root-ca"][0]["serial"]
    a = forge.branch("new-root", _rewrite_root(forge, True, attacker_seal), "rotate the root (trust me)")
    # the forgery is good: CI's identity decrypts the attacker's key, and the seal holds under the attacker's key
    assert b"BEGIN PRIVATE KEY" in decrypt_key(a, "root-ca", forge.pkic.env)
    own = forge.pkic("verify", "--seal", "--seal-key", ed25519_public_text(attacker_seal), cwd=a)
    assert "out/ is sealed" in own.stdout, own.stdout + own.stderr
    # the pull request's check (plan against the target branch's seal key) already says so
    forge.git(a, "fetch", "-q", "origin")
    pr = forge.pkic("plan", "--base", "origin/main", "--now", T1, cwd=a)
    assert pr.returncode == 1 and "is not sealed by the seal key" in pr.stderr and "signed by another key" in pr.stderr, pr.stdout + pr.stderr

    merge = forge.merge("new-root")
    run = forge.ci(T1)
    assert_refused(run, "out.seal: is not sealed by the seal key", "signed by another key")
    assert "seal: NOT the sealed out/" in run.plan.stdout
    # verify --seal, with the key taken from HEAD^1 (the target branch), says the same
    v = forge.pkic("verify", "--seal", cwd=run.repo)
    assert v.returncode == 1 and "is not sealed by the seal key" in v.stderr, v.stdout + v.stderr

    # the legitimate twin: revert the merge; CI applies again (a renewal: it signs)
    forge.revert(merge)
    run = forge.ci(T_WEB)
    assert_applied(run)
    body = read_state(run.repo)["certificates"]
    assert body["root-ca"][0]["serial"] == genuine_root and body["web"][0]["serial"] not in run.serials_before
    forge.pkic.ok("verify", "--seal", "--now", T_WEB, cwd=forge.clone("check"))


def test_consistent_rewrite_under_the_genuine_seal_is_refused(forge):
    forge.pull_request("new-root", _rewrite_root(forge, False, Ed25519PrivateKey.generate()), "rotate the root (trust me)")
    run = forge.ci(T1)
    assert_refused(run, "out/keys/root-ca.sops.yaml: edited by hand (changed): not what the seal covers",
                   "out/state.json: edited by hand (changed)", "out/trust/bundle.pem: edited by hand (changed)",
                   "HEAD:out: the committed out/ is not the sealed tree", "git checkout -- out/")
    assert "out/keys/root-ca.sops.yaml" in run.plan.stderr and "out/state.json" in run.plan.stderr


def test_a_swapped_ca_key_file_is_refused(forge):
    """Only out/keys/services-ca.sops.yaml changes: a key of the attacker's, encrypted
    to CI's recipient; pki.yaml adds a leaf, so CI would sign with it."""
    def change(a: Path) -> None:
        sops_encrypt_key(a, "services-ca", ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256", forge.root / "attacker")
        (a / "pki.yaml").write_text((a / "pki.yaml").read_text() + API)

    forge.pull_request("add-api", change, "pki: add api")
    run = forge.ci(T1)
    assert_refused(run, "out/keys/services-ca.sops.yaml: edited by hand (changed): not what the seal covers")
    assert "api" not in read_state(run.repo)["certificates"]


def test_a_swapped_key_file_is_refused_even_unsealed(local):
    """Without a seal (a local experiment), the key check is what stands: a decrypted
    key must be the one the state records."""
    pk, repo = local
    before = state(repo)
    sops_encrypt_key(repo, "services-ca", ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256", repo.parent / "attacker")
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + API)
    p = pk("apply", "--yes", "--now", T1, cwd=repo)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "out/keys/services-ca.sops.yaml: decrypts to a key that is not the one the state records" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert state(repo) == before and not (repo / "out/certs/api.pem").exists()


SMALL_EDITS = {
    "mode": ("out/state.json", "changed", lambda a: (a / "out" / "state.json").chmod(0o755)),
    "added": ("out/certs/notes.pem", "added", lambda a: (a / "out" / "certs" / "notes.pem").write_text("see services-ca.pem\n")),
    "removed": ("out/ocsp/web.der", "removed", lambda a: (a / "out" / "ocsp" / "web.der").unlink()),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(SMALL_EDITS), ids=list(SMALL_EDITS))
def test_any_one_file_changed_added_or_removed_is_refused(forge, how):
    rel, what, edit = SMALL_EDITS[how]
    forge.pull_request(f"small-{how}", edit, "out: small fix")
    run = forge.ci(T1)
    assert_refused(run, f"{rel}: edited by hand ({what}): not what the seal covers", "HEAD:out: the committed out/ is not the sealed tree")


@pytest.fixture
def revoked(forge):
    """main after a reviewed change revoked payments (key_compromise), applied by CI."""
    run = forge.reviewed_change("revoke-payments", lambda t: edit_spec(t, replace=(("    subject: {CN: payments}\n", "    subject: {CN: payments}\n    revoke: key_compromise\n"),)), T1)
    rec = read_state(run.repo)["certificates"]["payments"][0]
    assert rec["status"] == "revoked"
    return forge, rec


@pytest.mark.slow
def test_flipping_a_revoked_record_back_to_active_is_refused(revoked):
    forge, rec = revoked

    def change(a: Path) -> None:
        body = read_state(a)
        r = body["certificates"]["payments"][0]
        r["status"] = "active"
        for k in ("revoked_at", "revocation_reason", "invalidity_date"):
            r.pop(k, None)
        write_state(a, body)
        spec = a / "pki.yaml"
        spec.write_text(spec.read_text().replace("    revoke: key_compromise\n", ""))

    forge.pull_request("unrevoke", change, "pki: payments is fine after all")
    run = forge.ci(T1)
    assert_refused(run, "out/state.json: edited by hand (changed): not what the seal covers")
    plan = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=run.repo).stdout)
    assert plan["seal"]["ok"] is False
    assert any(f"payments serial {rec['serial']} was revoked in the sealed state and is not any more" in f["message"] for f in plan["seal"]["findings"]), plan["seal"]


@pytest.mark.slow
def test_an_extra_root_in_the_trust_bundle_is_refused(forge, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    extra = self_signed(key, "Totally Legit Root", datetime(2026, 1, 1, tzinfo=UTC), datetime(2036, 1, 1, tzinfo=UTC))
    pem = extra.public_bytes(serialization.Encoding.PEM)

    def change(a: Path) -> None:
        with open(a / "out" / "trust" / "bundle.pem", "ab") as fh:
            fh.write(pem)

    forge.pull_request("more-trust", change, "trust: add our partner's root")
    run = forge.ci(T1)
    assert_refused(run, "out/trust/bundle.pem: edited by hand (changed): not what the seal covers")
    plan = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=run.repo).stdout)
    assert any(f["path"] == "out/trust/bundle.pem" and "is not the sealed roots: 1 certificate(s) added" in f["message"] for f in plan["seal"]["findings"]), plan["seal"]
    v = forge.pkic("verify", "--now", T1, cwd=run.repo)
    assert v.returncode == 1 and "is not exactly the roots the state records (1 other certificate(s), 0 missing)" in v.stderr, v.stdout + v.stderr


def test_plan_in_a_shallow_checkout_does_not_vouch_for_a_resealed_out(forge):
    """actions/checkout fetches one commit unless told otherwise: HEAD^1 (and the seal's
    history) is missing, so plan cannot check the seal against the target branch's key.
    It must say so and exit 1, never take HEAD's own (the attacker's) key and say "sealed"."""
    forge.pull_request("new-root", _rewrite_root(forge, True, Ed25519PrivateKey.generate()), "rotate the root (trust me)")
    shallow = forge.clone("pr-checkout", "--depth", "1")
    assert forge.git(shallow, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    p = forge.pkic("plan", "--now", T1, cwd=shallow)
    assert p.returncode == 1 and "seal: sealed" not in p.stdout, p.stdout + p.stderr
    assert "this is a shallow clone: the seal's history" in p.stderr and "fetch-depth: 0" in p.stderr, p.stderr
    v = forge.pkic("verify", "--seal", cwd=shallow)
    assert v.returncode == 1 and "out/ is sealed" not in v.stdout and "this is a shallow clone" in v.stderr, v.stdout + v.stderr


def _rebase_merged_forgery(forge) -> None:
    """A two-commit pull request merged by "rebase and merge" (main fast-forwards): the
    first commit re-seals a rewritten out/ with the attacker's key, the second re-seals
    again. HEAD^1 on main is now the attacker's own commit."""
    key = Ed25519PrivateKey.generate()
    a = forge.clone("pr-two-commits")
    forge.git(a, "switch", "-q", "-c", "two-commits")
    _rewrite_root(forge, True, key)(a)
    forge.git(a, "add", "-A")
    forge.git(a, "commit", "-q", "-m", "rotate the root")
    (a / "out" / "certs" / "notes.pem").write_text("see root-ca.pem\n")
    forge_seal(forge.pkic.env, a, key)
    forge.git(a, "add", "-A")
    forge.git(a, "commit", "-q", "-m", "notes")
    forge.git(a, "push", "-q", "origin", "two-commits")
    forge.git(forge.main, "fetch", "-q", "origin")
    forge.git(forge.main, "merge", "-q", "--ff-only", "origin/two-commits")
    forge.git(forge.main, "push", "-q", "origin", "main")


def test_a_rebase_merged_forgery_is_refused_by_apply(forge):
    sealed_at = forge.head()
    _rebase_merged_forgery(forge)
    run = forge.ci(T1, plan=False)
    assert_refused(run, "is not made with the seal key", f"commit {sealed_at[:12]} has seal serial 2")


def test_plan_after_a_rebase_merge_notices_the_seal_key_changed(forge):
    _rebase_merged_forgery(forge)
    ci = forge.clone("ci")
    p = forge.pkic("plan", "--now", T1, cwd=ci)
    assert p.returncode == 1 and "seal: sealed" not in p.stdout, p.stdout + p.stderr
    v = forge.pkic("verify", "--seal", cwd=ci)
    assert "out/ is sealed" not in v.stdout, v.stdout + v.stderr
