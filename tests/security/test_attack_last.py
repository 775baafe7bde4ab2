"""Red-team review of the revoked-authority work (keeps_signing, crls.pem, OCSP off,
removal refusals): attacks that got through, each a test that fails until pkic
handles it.

The PKI is `pkic init`'s example: root-ca > services-ca > web, payments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NOW, write_spec
from cryptography import x509

T1 = "2026-11-28T12:00:00Z"
T2 = "2026-11-29T12:00:00Z"


def _state(repo: Path) -> dict:
    return json.loads((repo / "out" / "state.json").read_text())


@pytest.mark.slow
def test_escalating_a_revoked_authoritys_reason_to_key_compromise_is_not_silently_ignored(repo, pkic):
    """Attack/mistake: services-ca is revoked in place with `revoke: superseded`; it keeps
    its key to re-sign its CRL and OCSP responses (keeps_signing). Later its key is found
    compromised and the line becomes `revoke: key_compromise`. The plan says "No
    changes": root-ca's CRL keeps reason superseded for services-ca, the revoked records
    below keep no cACompromise, and CI goes on decrypting the key the operator has just
    declared compromised to re-sign services-ca's CRL and OCSP responses every week,
    until 2027 (a reviewer sees nothing, because nothing is planned). Setting
    `key_compromised:` on the same entry instead plans a final CRL and final OCSP
    responses, so pkic knows how to stop; the reason change alone is dropped silently.

    Expected: the plan for the reason change is not "No changes": it either refuses
    (the reason of a revocation cannot change) or treats the key as compromised (final
    CRL / OCSP responses, keyCompromise/cACompromise), and says so."""
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    base = (repo / "pki.yaml").read_text()
    assert "    path_length: 0\n" in base
    write_spec(repo, base.replace("    path_length: 0\n", "    path_length: 0\n    revoke: superseded\n", 1))
    pkic.ok("apply", "--yes", "--now", T1, cwd=repo)
    rec = _state(repo)["certificates"]["services-ca"][0]
    assert rec["status"] == "revoked" and rec.get("keeps_signing"), rec
    write_spec(repo, base.replace("    path_length: 0\n", "    path_length: 0\n    revoke: key_compromise\n", 1))
    p = pkic("plan", "--now", T2, cwd=repo)
    out = p.stdout + p.stderr
    assert "No changes" not in out, "changing the revocation reason to key_compromise plans nothing:\n" + out
    assert "compromis" in out.lower(), out
    # applied: one final CRL, valid past the last certificate it signed; then the key rests
    pkic.ok("apply", "--yes", "--now", T2, cwd=repo)
    crl = x509.load_der_x509_crl((repo / "out" / "crl" / "services-ca.crl").read_bytes())
    last = max(r["not_after"] for recs in _state(repo)["certificates"].values() for r in recs if r.get("issuer") == "services-ca")
    assert crl.next_update_utc.strftime("%Y-%m-%dT%H:%M:%SZ") > last
    later = json.loads(pkic("plan", "--json", "--now", "2027-06-01T00:00:00Z", cwd=repo).stdout)
    assert [c["name"] for c in later["crls"] if c["name"] == "services-ca"] == [], later["crls"]
    assert [o for o in later["ocsp"] if o["issuer"] == "services-ca"] == [], later["ocsp"]


@pytest.mark.slow
def test_moving_an_authority_keeps_its_crl_number_growing(repo, pkic):
    """Attack/mistake: services-ca revoked web (CRL number 2, signed by key K). A PR then
    renames it (`moved: services-ca -> svc2`): the plan says "state and files carried
    over; nothing revoked or reissued", yet plans "re-sign CRL: no CRL yet" for svc2 and
    signs CRL number 1 with the same key K and the same issuer name. The CRL number of
    one issuer goes back (RFC 5280 5.2.3: monotonically increasing), so two different
    CRLs of the same issuer share numbers from now on, and a relying party or cache that
    keeps the highest-numbered CRL keeps the old one, which lacks every later
    revocation; state.crls keeps the orphaned 'services-ca' record next to 'svc2'.

    Expected: the move carries the CRL record over: svc2's first CRL has a number above
    the last one services-ca published."""
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    base = (repo / "pki.yaml").read_text()
    write_spec(repo, base.replace("  web:\n", "  web:\n    revoke: key_compromise\n", 1))
    pkic.ok("apply", "--yes", "--now", T1, cwd=repo)
    before = _state(repo)["crls"]["services-ca"]["number"]
    responder = repo / "out" / "certs" / "ocsp-responders" / "services-ca.pem"
    had_responder = responder.exists()
    assert before >= 2
    moved = base.replace("  web:\n", "  web:\n    revoke: key_compromise\n", 1)
    moved = moved.replace("  services-ca:", "  svc2:").replace("issuer: services-ca", "issuer: svc2")
    write_spec(repo, moved + "\nmoved:\n  - {from: services-ca, to: svc2}\n")
    pkic.ok("apply", "--yes", "--now", T2, cwd=repo)
    crl = x509.load_der_x509_crl((repo / "out" / "crl" / "svc2.crl").read_bytes())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number >= before, f"CRL number of the same issuer and key went back: {before} -> {number}"
    state = _state(repo)
    assert "services-ca" not in state["crls"] and state["crls"]["svc2"]["number"] == number
    assert not (repo / "out" / "crl" / "services-ca.crl").exists() and not (repo / "out" / "crl" / "services-ca.crl.pem").exists()
    assert not responder.exists()
    assert (repo / "out" / "certs" / "ocsp-responders" / "svc2.pem").exists() == had_responder
    assert ("svc2" in state["responders"]) == had_responder and "services-ca" not in state["responders"]
    # the next CRL of the moved authority goes on from there
    write_spec(repo, moved.replace("  payments:\n", "  payments:\n    revoke: superseded\n", 1) + "\nmoved:\n  - {from: services-ca, to: svc2}\n")
    pkic.ok("apply", "--yes", "--now", "2026-11-30T12:00:00Z", cwd=repo)
    crl = x509.load_der_x509_crl((repo / "out" / "crl" / "svc2.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    assert crl.get_revoked_certificate_by_serial_number(int(state["certificates"]["web"][0]["serial"], 16)) is not None
    pkic.ok("verify", cwd=repo)
