"""Revoking an authority never goes silent (issue 13, item 6).

``revoke:`` on an authority revokes every unexpired certificate below it (what it
signed, and what the intermediates below it signed, each on its issuer's CRL), with
reason cACompromise when its key is compromised and no reason code otherwise; the
revoked authority's CRL stays in out/ and is re-signed (with its revoked key) until the
last of those certificates expires (a compromised key signs once, valid past that); the
children's OCSP responses become revoked, signed by the authority itself. Leaf-only
revocation checks (``openssl verify -crl_check``, stapled OCSP) then refuse them.

The tree: root-ca > services-ca > web, payments, team-ca > api (depth 2 below the
revoked services-ca).
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import NOW, write_spec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from helpers import active, epoch, state
from test_revocation import (apply, at, assert_verify_revoked, codes, crl_entries, crl_number, dt, keep, lint_all, load_crl, load_ocsp, plan,
                             serial_int, verify_with_crl)

CHILDREN = ("web", "payments", "team-ca", "api")


def deep_spec(repo: Path, revoke: str | None = None) -> None:
    """The `pkic init` example with an intermediate below services-ca and a leaf below it."""
    text = (repo / "pki.yaml").read_text()
    text = text.replace("    path_length: 0\n", "    path_length: 1\n" + (f"    revoke: {revoke}\n" if revoke else ""), 1)
    text = text.replace("certificates:\n", """\
  team-ca:
    issuer: services-ca
    subject: {CN: Team CA}
    lifetime: 1y
    path_length: 0
certificates:
  api:
    issuer: team-ca
    profile: server
    dns: [api.svc.internal]
    lifetime: 60d
""", 1)
    write_spec(repo, text)


@pytest.fixture
def deep(repo, pkic):
    base = (repo / "pki.yaml").read_text()
    deep_spec(repo)
    apply(pkic, repo)
    return repo, base


def revoke_services(repo: Path, base: str, reason: str) -> None:
    write_spec(repo, base)
    deep_spec(repo, reason)


def openssl_crl_check(repo: Path, cert: Path, crl_of: str, untrusted: list[str], when: str = NOW) -> subprocess.CompletedProcess:
    """Leaf-only CRL checking (`-crl_check`), the chain through possibly revoked intermediates."""
    bundle = repo.parent / f"untrusted-{crl_of}.pem"
    bundle.write_text("".join((repo / "out" / "certs" / f"{n}.pem").read_text() for n in untrusted))
    return subprocess.run(["openssl", "verify", "-attime", epoch(when), "-crl_check", "-CRLfile", str(repo / "out" / "crl" / f"{crl_of}.crl.pem"),
                           "-CAfile", str(repo / "out" / "trust" / "bundle.pem"), "-untrusted", str(bundle), str(cert)],
                          capture_output=True, text=True, timeout=60)


def public_key(repo: Path, name: str):
    return x509.load_pem_x509_certificate((repo / "out" / "certs" / f"{name}.pem").read_bytes()).public_key()


@pytest.mark.slow
@pytest.mark.parametrize("reason", ["key_compromise", "cessation_of_operation"])
def test_revoking_an_authority_revokes_everything_below_it(deep, pkic, tmp_path, reason):
    repo, base = deep
    out = repo / "out"
    compromised = reason == "key_compromise"
    entry_reason = "ca_compromise" if compromised else "unspecified"
    before = active(repo)
    kept = {n: keep(repo, tmp_path, n) for n in CHILDREN}
    revoke_services(repo, base, reason)

    p = plan(pkic, repo)
    got = {c["name"]: (c["action"], codes(c), [(r["name"], r["serial"], r["reason"]) for r in c["revokes"]]) for c in p["changes"]}
    want = {"services-ca": ("revoke", ["revoke_requested"], [("services-ca", before["services-ca"]["serial"], reason)])}
    for n in CHILDREN:
        want[n] = ("revoke", ["issuer_revoked"], [(n, before[n]["serial"], entry_reason)])
    assert got == want
    assert p["needs_review"]
    assert sorted((c["name"], "revocations" in codes(c)) for c in p["crls"]) == [("root-ca", True), ("services-ca", True), ("team-ca", True)]
    assert {o["name"]: o.get("signer") for o in p["ocsp"]} == {"services-ca": None, "web": "self", "payments": "self", "team-ca": "self", "api": "self"}
    text = pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    for n in CHILDREN:
        assert f"revoke   {n}" in text, text
    assert "issued by services-ca, which is revoked" in text and "issued by team-ca, which is revoked" in text
    assert ("cACompromise" in text) == compromised
    md = pkic.ok("plan", "--format", "markdown", "--now", NOW, cwd=repo).stdout
    assert all(n in md for n in CHILDREN) and "issued by services-ca, which is revoked" in md
    # the revocations are what a reviewer approves
    without = json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=repo).stdout)["reviewed_digest"]
    assert without == p["reviewed_digest"]

    apply(pkic, repo)
    st = state(repo)["certificates"]
    for n in CHILDREN:
        assert (st[n][0]["status"], st[n][0]["revocation_reason"]) == ("revoked", entry_reason), n
    assert st["services-ca"][0]["keeps_signing"] and st["team-ca"][0]["keeps_signing"]
    # the revoked authorities keep their certificate and key, to sign on
    for n in ("services-ca", "team-ca"):
        assert (out / "certs" / f"{n}.pem").exists() and (out / "keys" / f"{n}.sops.yaml").exists(), n

    # leaf-only CRL checks refuse the leaves (and team-ca) of the revoked authority
    assert_verify_revoked(verify_with_crl(repo, kept["web"]))
    assert_verify_revoked(verify_with_crl(repo, kept["team-ca"]))
    assert_verify_revoked(openssl_crl_check(repo, kept["api"], "team-ca", ["team-ca", "services-ca"]))

    last = max(dt(before[n]["not_after"]) for n in ("web", "payments", "team-ca"))
    for ca, below in (("services-ca", ("web", "payments", "team-ca")), ("team-ca", ("api",))):
        crl = load_crl(repo, ca)
        assert crl.is_signature_valid(public_key(repo, ca)), ca
        assert crl_number(crl) == 2
        inv = None
        assert crl_entries(crl) == {serial_int(before[n]["serial"]): (entry_reason if compromised else None, inv) for n in below}, ca
        if compromised:  # signed once, valid past the last certificate it signed
            mine = last if ca == "services-ca" else dt(before["api"]["not_after"])
            assert crl.next_update_utc > mine
        else:
            assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7, seconds=60)  # thisUpdate a minute back

    # pkilint, in one linter process: both CRLs and every child's response
    calls = [["lint_crl", "-t", "CRL", "-p", "PKIX", str(out / "crl" / f"{ca}.crl")] for ca in ("services-ca", "team-ca")]
    calls += [["lint_ocsp_response", str(out / "ocsp" / f"{n}.der")] for n in CHILDREN]
    assert lint_all(calls) == {call[-1]: [] for call in calls}
    for n in CHILDREN:
        f = out / "ocsp" / f"{n}.der"
        resp = load_ocsp(f)
        issuer = "team-ca" if n == "api" else "services-ca"
        assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED, n
        assert resp.serial_number == serial_int(before[n]["serial"])
        assert resp.revocation_reason == (x509.ReasonFlags.ca_compromise if compromised else None), n
        public_key(repo, issuer).verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
        if compromised:
            assert resp.next_update_utc >= dt(before[n]["not_after"]), n

    status = json.loads(pkic.ok("status", "--json", "--now", NOW, cwd=repo).stdout)
    assert {c["authority"]: c["status"] for c in status["crls"]} == {"root-ca": "fresh", "services-ca": "fresh", "team-ca": "fresh"}
    pkic.ok("verify", "--keys", "--now", NOW, cwd=repo)
    # right after: nothing to do
    p = plan(pkic, repo)
    assert (p["changes"], p["crls"], p["ocsp"], p["responders"]) == ([], [], [], [])
    assert "No changes." in pkic.ok("plan", "--now", NOW, cwd=repo).stdout


@pytest.mark.slow
def test_a_revoked_authority_re_signs_its_crl_until_the_last_child_expires(deep, pkic):
    repo, base = deep
    before = active(repo)
    revoke_services(repo, base, "cessation_of_operation")
    apply(pkic, repo)
    # past the refresh point (7d CRLs, re-signed with 3.5d left), children all unexpired
    later = at(timedelta(days=4))
    p = plan(pkic, repo, later)
    crls = {c["name"]: codes(c) for c in p["crls"]}
    assert "due" in crls["services-ca"] and "due" in crls["team-ca"], crls
    assert p["changes"] == []
    assert not p["needs_review"]
    apply(pkic, repo, later)
    for ca in ("services-ca", "team-ca"):
        crl = load_crl(repo, ca)
        assert crl_number(crl) == 3 and crl.last_update_utc == dt(later) - timedelta(seconds=60)
        assert crl.is_signature_valid(public_key(repo, ca))
    assert serial_int(before["web"]["serial"]) in crl_entries(load_crl(repo, "services-ca"))
    assert load_ocsp(repo / "out" / "ocsp" / "web.der").certificate_status == ocsp.OCSPCertStatus.REVOKED
    pkic.ok("verify", "--now", later, cwd=repo)
    # api (60d) expired: team-ca has nothing unexpired below it, its CRL is final
    after_api = at(timedelta(days=61))
    p = plan(pkic, repo, after_api)
    assert "team-ca" not in {c["name"] for c in p["crls"]}
    assert "services-ca" in {c["name"] for c in p["crls"]}
    assert "api" not in {o["name"] for o in p["ocsp"]}
    apply(pkic, repo, after_api)
    assert crl_number(load_crl(repo, "team-ca")) == 3
    status = json.loads(pkic.ok("status", "--json", "--now", after_api, cwd=repo).stdout)
    assert {c["authority"]: c["status"] for c in status["crls"]}["team-ca"] == "final"
    pkic.ok("verify", "--now", after_api, cwd=repo)
    # everything below services-ca expired (team-ca, 1y): no more re-signing
    past = at(timedelta(days=366))
    p = plan(pkic, repo, past)
    assert not {"services-ca", "team-ca"} & {c["name"] for c in p["crls"]}
    assert not {o["name"] for o in p["ocsp"]} & set(CHILDREN)


def test_a_compromised_authority_signs_once(deep, pkic):
    repo, base = deep
    revoke_services(repo, base, "key_compromise")
    apply(pkic, repo)
    crl = load_crl(repo, "services-ca")
    later = at(timedelta(days=30))
    p = plan(pkic, repo, later)
    assert not {"services-ca", "team-ca"} & {c["name"] for c in p["crls"]}
    assert not {o["name"] for o in p["ocsp"]} & set(CHILDREN)
    assert crl.next_update_utc > dt(later)
    pkic.ok("verify", "--now", later, cwd=repo)
