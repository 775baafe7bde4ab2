"""Red-team review of issue 13 (CN rules, revoked authorities, interop): attacks that
got through, each a test that fails until pkic refuses or handles it.

The PKI is `pkic init`'s example: root-ca > services-ca (name constraints
svc.internal, example.com) > web, payments; a test that needs a policy writes
policies/services.yaml and attaches it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NOW, write_spec
from cryptography import x509

T1 = "2026-11-28T12:00:00Z"
T2 = "2026-11-29T12:00:00Z"


def _apply(pkic, repo: Path, when: str):
    return pkic.ok("apply", "--yes", "--now", when, cwd=repo)


def _state(repo: Path) -> dict:
    return json.loads((repo / "out" / "state.json").read_text())


def test_wildcard_cn_on_an_ip_only_server_certificate_is_held_to_the_dns_rules(repo, pkic):
    """Attack: the policy forbids wildcards (allow_wildcards: false) and admin.example.com
    (forbidden_dns). A server certificate with only an IP SAN and subject CN
    '*.example.com' passes: policy.check_entry holds a CN to the DNS rules only when
    openssl_hostlike() says so, and '*' is not host-like. But with no DNS SAN, OpenSSL's
    X509_check_host (nginx, curl, Python's ssl: hostname_checks_common_name is True by
    default) falls back to the CN *with wildcard matching*: `openssl verify
    -verify_hostname admin.example.com` accepts this certificate. The CN is a wildcard
    for admin.example.com that the policy never saw as one.

    Expected: plan refuses it (allow_wildcards / forbidden_dns on the CN)."""
    text = (repo / "pki.yaml").read_text()
    assert "    path_length: 0\n" in text
    text = text.replace("    path_length: 0\n", "    path_length: 0\n    policy: services\n", 1)
    (repo / "policies" / "services.yaml").write_text("allow_wildcards: false\nforbidden_dns: [admin.example.com]\n")
    write_spec(repo, text + "  adm:\n    issuer: services-ca\n    profile: server\n    ip: [10.0.0.9]\n    subject: {CN: '*.example.com'}\n")
    p = pkic("plan", "--now", NOW, cwd=repo)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "*.example.com" in out and ("allow_wildcards" in out or "forbidden_dns" in out), out
    assert not (repo / "out" / "certs" / "adm.pem").exists()


@pytest.mark.slow
def test_un_revoking_an_authority_publishes_a_crl_and_responder_of_its_new_key(repo, pkic):
    """Attack/mistake: services-ca is revoked (revoke: superseded; its children are revoked
    with it), then the `revoke:` line is removed. The plan re-issues services-ca with a
    new key and its children under it, but plans no CRL and no delegated responder for
    the new key: the revoked record still 'keeps_signing' (revoked_below treats it as a
    revoked authority still signing, and plan_publications `continue`s past it). After
    that apply out/crl/services-ca.crl (and crls.pem) is still signed by the *revoked*
    key and the new leaves' OCSP responses by a responder certified by the revoked key:
    every CRL- or OCSP-checking TLS stack refuses the freshly issued certificates, and
    `pkic verify` reports "out/crl/services-ca.crl is not signed by services-ca".

    Expected: the apply that re-issues the authority also signs its CRL (and responder)
    with the new key, so `pkic verify` passes right after it."""
    _apply(pkic, repo, NOW)
    base = (repo / "pki.yaml").read_text()
    write_spec(repo, base.replace("    path_length: 0\n", "    path_length: 0\n    revoke: superseded\n", 1))
    _apply(pkic, repo, T1)
    write_spec(repo, base)
    _apply(pkic, repo, T2)
    v = pkic("verify", "--now", T2, cwd=repo)
    assert v.returncode == 0, v.stdout + v.stderr
    ca = x509.load_pem_x509_certificate((repo / "out" / "certs" / "services-ca.pem").read_bytes())
    crl = x509.load_der_x509_crl((repo / "out" / "crl" / "services-ca.crl").read_bytes())
    assert crl.is_signature_valid(ca.public_key()), "services-ca's CRL is not signed by its current key"


def test_revoking_a_rekeyed_authority_revokes_its_superseded_certificate_too(repo, pkic):
    """Attack: services-ca was rekeyed (rekey: 1): its old certificate (old key K1, valid
    until 2029) is 'superseded' but not revoked (root-ca has no revoke_superseded), and
    the children K1 signed are still unexpired. Then services-ca is revoked with
    `revoke: ca_compromise`. revoked_below starts from the active record only and skips
    everything signed by 'an earlier key of the authority': root-ca's CRL lists the new
    services-ca certificate alone. The old services-ca CA certificate stays a valid,
    unrevoked CA under root-ca for three years, and whoever holds K1 (its SOPS file is in
    git history, encrypted to the same recipients) can sign leaves and a CRL for them
    that every stack accepts, after the operator 'revoked services-ca' for a CA compromise.

    Expected: revoking an authority (at least for ca_compromise) revokes every unexpired
    certificate of that authority, whatever its key, on its issuer's CRL."""
    _apply(pkic, repo, NOW)
    base = (repo / "pki.yaml").read_text()
    old_serial = _state(repo)["certificates"]["services-ca"][0]["serial"]
    rekeyed = base.replace("    path_length: 0\n", "    path_length: 0\n    rekey: 1\n", 1)
    write_spec(repo, rekeyed)
    _apply(pkic, repo, T1)
    write_spec(repo, rekeyed.replace("    rekey: 1\n", "    rekey: 1\n    revoke: ca_compromise\n", 1))
    _apply(pkic, repo, T2)
    recs = {r["serial"]: r for r in _state(repo)["certificates"]["services-ca"]}
    assert recs[old_serial]["status"] == "revoked", recs[old_serial]["status"]
    root_crl = x509.load_der_x509_crl((repo / "out" / "crl" / "root-ca.crl").read_bytes())
    assert root_crl.get_revoked_certificate_by_serial_number(int(old_serial, 16)) is not None, \
        "the superseded services-ca certificate is not on root-ca's CRL"
