"""Revocation end to end, through the real CLI, sops, openssl, pkilint and Python's ssl:

* what the first apply publishes (CRLs, delegated responders, pre-signed OCSP
  responses) is lint-clean and verifies with openssl;
* revoking by removal, in place with a reason, and by key compromise (every
  certificate sharing the key, earlier ``reuse_key`` renewals included) shows in the
  plan, on the CRL (serials, reasons, invalidity dates, CRL numbers), in OCSP, to
  ``openssl verify -crl_check`` and to a TLS server checking client certificates;
* time: CRLs and OCSP responses are re-signed inside their refresh windows, and a
  revoked serial drops off the CRL only after one CRL issued past its notAfter;
* ``revoke_superseded``, revoking an authority (and everything below it), issuer URLs (CDP, AIA),
  ``ocsp_signer: self``, ``publish.ocsp_dir``;
* ``pkic serve`` answering OCSP (good, revoked, unauthorized, malformed) and CRLs, and
  picking up a new apply without a restart.

Time is injected with ``--now``; openssl gets ``-attime``. Python's ``ssl`` can only
check at the wall clock, so the TLS test applies at the real current time.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import NOW, snapshot, write_spec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID
from helpers import active, decrypt_key, epoch, ocsp_request, pkilint_many, state, tls_exchange

UTC = timezone.utc
NOW_DT = datetime.fromisoformat(NOW.replace("Z", "+00:00"))


def _revokes(items: list[dict]) -> list[dict]:
    """A plan's revocations without the public key each hits (bound by the reviewed digest)."""
    for r in items:
        assert len(r.pop("public_key_sha256")) == 64
    return items


def at(delta: timedelta, base: datetime = NOW_DT) -> str:
    return (base + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- the spec

WEB_DNS = "web.example.com, www.example.com"


def spec_yaml(*, top: str = "", root: str = "", services: str = "", web: str = "", web_dns: str = WEB_DNS,
              payments: str = "", extra: str = "", with_payments: bool = True) -> str:
    """The `pkic init` example (same effective spec), with lines added where asked."""
    text = f"""\
version: 1
defaults:
  key: ecdsa-p256
  subject: {{O: Example Corp, C: US}}
{top}authorities:
  root-ca:
    subject: {{CN: Example Root CA}}
    key: ecdsa-p384
    lifetime: 10y
{root}  services-ca:
    issuer: root-ca
    subject: {{CN: Example Services CA}}
    lifetime: 3y
    path_length: 0
    name_constraints: {{permitted_dns: [svc.internal, example.com]}}
{services}certificates:
  web:
    issuer: services-ca
    profile: server
    dns: [{web_dns}]
    ip: [10.0.0.5]
    lifetime: 90d
    renew_before: 30d
{web}"""
    if with_payments:
        text += f"""\
  payments:
    issuer: services-ca
    profile: client
    subject: {{CN: payments}}
    uri: [spiffe://example.com/payments]
{payments}"""
    return text + extra


def leaf(name: str, *, profile: str = "server", lifetime: str | None = None, more: str = "") -> str:
    lines = f"  {name}:\n    issuer: services-ca\n    profile: {profile}\n"
    lines += f"    dns: [{name}.example.com]\n" if profile != "client" else f"    subject: {{CN: {name}}}\n"
    if lifetime:
        lines += f"    lifetime: {lifetime}\n"
    return lines + more


# --------------------------------------------------------------------------- CLI helpers


def plan(pkic, repo: Path, now: str = NOW) -> dict:
    return json.loads(pkic.ok("plan", "--json", "--now", now, cwd=repo).stdout)


def apply(pkic, repo: Path, now: str = NOW) -> str:
    return pkic.ok("apply", "--yes", "--now", now, cwd=repo).stdout


def codes(item: dict) -> list[str]:
    return [r["code"] for r in item["reasons"]]


def assert_quiet(pkic, repo: Path, now: str) -> None:
    """A second apply right after writes nothing, and the plan has nothing to do."""
    before = snapshot(repo / "out")
    apply(pkic, repo, now)
    assert snapshot(repo / "out") == before
    text = pkic.ok("plan", "--now", now, cwd=repo).stdout
    assert "No changes." in text, text
    assert pkic("plan", "--detailed-exitcode", "--now", now, cwd=repo).returncode == 0


def serial_int(text: str) -> int:
    return int(text, 16)


def keep(repo: Path, tmp: Path, name: str) -> Path:
    """A copy of a certificate that is about to leave out/ (revoked), for openssl."""
    dest = tmp / "kept" / f"{name}-{active(repo)[name]['serial'][:8]}.pem"
    dest.parent.mkdir(exist_ok=True)
    shutil.copyfile(repo / "out" / "certs" / f"{name}.pem", dest)
    return dest


# --------------------------------------------------------------------------- CRLs


def load_crl(repo: Path, authority: str) -> x509.CertificateRevocationList:
    der = (repo / "out" / "crl" / f"{authority}.crl").read_bytes()
    crl = x509.load_der_x509_crl(der)
    pem = x509.load_pem_x509_crl((repo / "out" / "crl" / f"{authority}.crl.pem").read_bytes())
    assert pem.public_bytes(serialization.Encoding.DER) == der, "the .crl.pem is not the .crl"
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def crl_entries(crl: x509.CertificateRevocationList) -> dict[int, tuple[str | None, datetime | None]]:
    """serial -> (reason, invalidity date)."""
    out = {}
    for r in crl:
        try:
            reason = r.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = None
        try:
            inv = r.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc
        except x509.ExtensionNotFound:
            inv = None
        out[r.serial_number] = (reason, inv)
    return out


def cert_of(repo: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((repo / "out" / "certs" / f"{name}.pem").read_bytes())


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


BACKDATE = timedelta(minutes=1)  # thisUpdate, notBefore and revocation dates: a minute before the signing


def assert_crl_well_formed(repo: Path, authority: str, lifetime: timedelta, signed: str) -> x509.CertificateRevocationList:
    """The CRL signed at ``signed``: thisUpdate a minute before, nextUpdate ``lifetime`` after it."""
    crl = load_crl(repo, authority)
    issuer = cert_of(repo, authority)
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski(issuer)
    assert crl.last_update_utc == dt(signed) - BACKDATE
    assert crl.next_update_utc == dt(signed) + lifetime
    for entry in crl:
        assert entry.revocation_date_utc <= crl.last_update_utc
    info = state(repo)["crls"][authority]
    assert info["number"] == crl_number(crl) and info["this_update"] == at(-BACKDATE, dt(signed))
    assert info["next_update"] == at(lifetime, dt(signed))
    return crl


# --------------------------------------------------------------------------- openssl


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def verify_with_crl(repo: Path, cert: Path, now: str = NOW, authority: str = "services-ca") -> subprocess.CompletedProcess:
    """openssl verify -crl_check against the authority's CRL, as a CRL-checking client would."""
    args = ["verify", "-attime", epoch(now), "-crl_check", "-CRLfile", str(repo / "out" / "crl" / f"{authority}.crl.pem"),
            "-CAfile", str(repo / "out" / "trust" / "bundle.pem")]
    if authority != "root-ca":
        args += ["-untrusted", str(repo / "out" / "certs" / f"{authority}.pem")]
    return openssl(*args, str(cert))


def assert_verify_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr


def assert_verify_revoked(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def ocsp_check(repo: Path, cert: Path, *, issuer: str = "services-ca", respin: Path | None = None, url: str | None = None,
               now: str = NOW) -> subprocess.CompletedProcess:
    """openssl ocsp on a pre-signed response file, or against a responder URL."""
    args = ["ocsp", "-issuer", str(repo / "out" / "certs" / f"{issuer}.pem"), "-cert", str(cert),
            "-CAfile", str(repo / "out" / "trust" / "bundle.pem"), "-no_nonce", "-attime", str(int(epoch(now)) + 60)]
    # openssl checks thisUpdate/nextUpdate at the wall clock (-attime covers only the chain):
    # allow the distance to the pretended time; the tests check those times with cryptography
    args += ["-validity_period", str(int(abs(int(epoch(now)) - time.time())) + 300)]
    if respin is not None:
        args += ["-respin", str(respin)]
    if url is not None:
        args += ["-url", url, "-timeout", "10"]
    return openssl(*args)


def assert_ocsp(proc: subprocess.CompletedProcess, cert: Path, status: str, reason: str | None = None) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"{cert}: {status}" in out, out
    assert "Response verify OK" in out, out
    if reason:
        assert f"Reason: {reason}" in out, out


def load_ocsp(path: Path) -> ocsp.OCSPResponse:
    resp = ocsp.load_der_ocsp_response(path.read_bytes())
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return resp


# --------------------------------------------------------------------------- pkilint


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def _spiffe_false_positive(code: str, message: str) -> bool:
    """pkilint checks URIs with a web-URL validator, which rejects spiffe:// (see test_x509)."""
    return code == "pkix.invalid_uri_syntax" and message == 'Invalid URI syntax: "spiffe://example.com/payments"'


def lint(tool: str, *args: str) -> list:
    proc = subprocess.run([_tool(tool), "lint", "--format", "JSON", "--severity", "WARNING", *args], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), f"no output from {tool} (exit {proc.returncode}): {proc.stderr}"
    return findings(json.loads(proc.stdout))


def lint_all(calls: list[list[str]]) -> dict[str, list]:
    """Each call's findings, by its last argument (the file), from one linter process."""
    return {call[-1]: findings(report) for call, report in zip(calls, pkilint_many(calls), strict=True)}


def findings(report: dict) -> list:
    return [
        (r.get("node_path"), f["severity"], f["code"], f.get("message"))
        for r in report["results"]
        for f in r["finding_descriptions"]
        if f["severity"] in ("FATAL", "ERROR", "WARNING") and not _spiffe_false_positive(f["code"], f.get("message"))
    ]


# =========================================================================== 1. first apply


@pytest.mark.slow
def test_first_apply_publishes_lint_clean_crls_responders_and_ocsp(applied, pkic):
    repo = applied
    out = repo / "out"
    s = state(repo)
    # a CRL for every authority: empty, number 1, signed, AKI, 7d / 90d
    root_crl = assert_crl_well_formed(repo, "root-ca", timedelta(days=90), NOW)
    svc_crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), NOW)
    assert crl_number(root_crl) == 1 and crl_number(svc_crl) == 1
    assert list(root_crl) == [] and list(svc_crl) == []
    assert sorted(p.name for p in (out / "crl").iterdir()) == ["root-ca.crl", "root-ca.crl.pem", "services-ca.crl", "services-ca.crl.pem"]
    # authorities' DER certificates, for AIA caIssuers
    for a in ("root-ca", "services-ca"):
        assert (out / "certs" / f"{a}.der").read_bytes() == cert_of(repo, a).public_bytes(serialization.Encoding.DER)

    # a delegated responder per authority: 365d for roots, 30d for intermediates (+ the 1 minute backdate)
    for a, days in (("root-ca", 365), ("services-ca", 30)):
        rc = x509.load_pem_x509_certificate((out / "certs" / "ocsp-responders" / f"{a}.pem").read_bytes())
        assert rc.issuer == cert_of(repo, a).subject
        rc.verify_directly_issued_by(cert_of(repo, a))
        assert rc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
        assert rc.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert not rc.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert (out / "keys" / "ocsp-responders" / f"{a}.sops.yaml").exists()
        assert b"PRIVATE KEY" not in (out / "keys" / "ocsp-responders" / f"{a}.sops.yaml").read_bytes()
        assert rc.not_valid_after_utc - rc.not_valid_before_utc == timedelta(days=days, minutes=1)

    # an OCSP response for every unexpired certificate with an issuer
    assert sorted(p.name for p in (out / "ocsp").iterdir()) == ["payments.der", "services-ca.der", "web.der"]
    for name, issuer in (("web", "services-ca"), ("payments", "services-ca"), ("services-ca", "root-ca")):
        resp = load_ocsp(out / "ocsp" / f"{name}.der")
        assert resp.serial_number == serial_int(s["certificates"][name][0]["serial"])
        assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert resp.issuer_key_hash == ski(cert_of(repo, issuer))
        assert isinstance(resp.hash_algorithm, hashes.SHA1)
        assert resp.this_update_utc == NOW_DT - BACKDATE and resp.next_update_utc == NOW_DT + timedelta(days=4)
        responder = x509.load_pem_x509_certificate((out / "certs" / "ocsp-responders" / f"{issuer}.pem").read_bytes())
        assert [c.fingerprint(hashes.SHA256()) for c in resp.certificates] == [responder.fingerprint(hashes.SHA256())]
        assert resp.responder_key_hash == ski(responder)
        responder.public_key().verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
        assert s["certificates"][name][0]["ocsp"]["status"] == "good"

    # pkilint: CRLs, OCSP responses, responder certificates
    calls = [["lint_crl", "-t", "CRL", "-p", "PKIX", str(f)] for f in sorted((out / "crl").glob("*.crl"))]
    calls += [["lint_ocsp_response", str(f)] for f in sorted((out / "ocsp").glob("*.der"))]
    calls += [["lint_pkix_cert", str(f)] for f in sorted((out / "certs" / "ocsp-responders").glob("*.pem"))]
    assert len(calls) == 7
    assert lint_all(calls) == {call[-1]: [] for call in calls}

    # openssl: the stapled response of web is good and verifies against the trust bundle
    assert_ocsp(ocsp_check(repo, out / "certs" / "web.pem", respin=out / "ocsp" / "web.der"), out / "certs" / "web.pem", "good")
    assert_ocsp(ocsp_check(repo, out / "certs" / "services-ca.pem", issuer="root-ca", respin=out / "ocsp" / "services-ca.der"),
                out / "certs" / "services-ca.pem", "good")
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem"))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "services-ca.pem", authority="root-ca"))

    # the spec this file writes is the init example: nothing to do
    write_spec(repo, spec_yaml())
    assert_quiet(pkic, repo, NOW)
    assert pkic.ok("verify", "--now", NOW, cwd=repo)


# =========================================================================== 2. revoke


LATER = at(timedelta(days=66))  # web (90d, renew_before 30d) is due for renewal; the first web is still valid


@pytest.mark.slow
def test_revoke_by_removal_in_place_and_key_compromise(repo, pkic, tmp_path):
    out = repo / "out"
    reuse = "    reuse_key: true\n"
    write_spec(repo, spec_yaml(web=reuse, extra=leaf("legacy")))
    apply(pkic, repo, NOW)
    assert crl_number(load_crl(repo, "services-ca")) == 1
    legacy_pem, payments_pem = keep(repo, tmp_path, "legacy"), keep(repo, tmp_path, "payments")
    legacy_serial, payments_serial = active(repo)["legacy"]["serial"], active(repo)["payments"]["serial"]
    assert_verify_ok(verify_with_crl(repo, legacy_pem))

    # ---- removal: cessationOfOperation
    write_spec(repo, spec_yaml(web=reuse))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c)) for c in p["changes"]] == [("legacy", "revoke", ["removed"])]
    assert _revokes(p["changes"][0]["revokes"]) == [{"name": "legacy", "serial": legacy_serial, "reason": "cessation_of_operation", "invalidity": None}]
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["revocations"])]
    assert [(o["name"], o["serial"], codes(o)) for o in p["ocsp"]] == [("legacy", legacy_serial, ["status_changed"])]
    apply(pkic, repo, NOW)
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), NOW)
    assert crl_number(crl) == 2
    assert crl_entries(crl) == {serial_int(legacy_serial): ("cessation_of_operation", None)}
    assert crl_number(load_crl(repo, "root-ca")) == 1  # nothing changed there
    assert not (out / "certs" / "legacy.pem").exists() and not (out / "keys" / "legacy.sops.yaml").exists()
    assert_verify_revoked(verify_with_crl(repo, legacy_pem))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem"))
    assert_ocsp(ocsp_check(repo, legacy_pem, respin=out / "ocsp" / "legacy.der"), legacy_pem, "revoked", "cessationOfOperation")
    assert_quiet(pkic, repo, NOW)

    # ---- in place, with a reason: privilegeWithdrawn; it stays revoked
    write_spec(repo, spec_yaml(web=reuse, payments="    revoke: privilege_withdrawn\n"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c)) for c in p["changes"]] == [("payments", "revoke", ["revoke_requested"])]
    assert _revokes(p["changes"][0]["revokes"]) == [{"name": "payments", "serial": payments_serial, "reason": "privilege_withdrawn", "invalidity": None}]
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["revocations"])]
    apply(pkic, repo, NOW)
    crl = load_crl(repo, "services-ca")
    assert crl_number(crl) == 3
    assert crl_entries(crl) == {serial_int(legacy_serial): ("cessation_of_operation", None),
                                serial_int(payments_serial): ("privilege_withdrawn", None)}
    rec = state(repo)["certificates"]["payments"][0]
    assert (rec["status"], rec["revocation_reason"], rec["revoked_at"]) == ("revoked", "privilege_withdrawn", at(-BACKDATE))
    assert_verify_revoked(verify_with_crl(repo, payments_pem))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem"))
    # openssl 3.0 prints "(UNKNOWN)" for privilegeWithdrawn (9): it only names reasons 0-8; check the DER instead
    assert_ocsp(ocsp_check(repo, payments_pem, respin=out / "ocsp" / "payments.der"), payments_pem, "revoked")
    resp = load_ocsp(out / "ocsp" / "payments.der")
    assert (resp.certificate_status, resp.revocation_reason, resp.revocation_time_utc) == (
        ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.privilege_withdrawn, NOW_DT - BACKDATE)
    assert_quiet(pkic, repo, NOW)

    # ---- two more certificates with web's key: a reissue (new name) and a renewal, both keeping the key
    first_web = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(web=reuse, web_dns=WEB_DNS + ", api.example.com", payments="    revoke: privilege_withdrawn\n"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], c["key"]) for c in p["changes"]] == [("web", "reissue", "keep")]
    apply(pkic, repo, NOW)
    second_web = keep(repo, tmp_path, "web")
    p = plan(pkic, repo, LATER)
    got = {c["name"]: (c["action"], c["key"]) for c in p["changes"]}
    assert got == {"web": ("renew", "keep")}  # payments stays revoked: never renewed
    apply(pkic, repo, LATER)
    third_web = keep(repo, tmp_path, "web")
    recs = state(repo)["certificates"]["web"]
    assert len(recs) == 3 and len({r["public_key_sha256"] for r in recs}) == 1
    assert all(dt(r["not_after"]) > dt(LATER) for r in recs)
    web_serials = [r["serial"] for r in recs]
    old_pk = recs[0]["public_key_sha256"]
    # the renewal's apply re-signed the expired CRL (7d) on the way
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), LATER)
    number_before = crl_number(crl)
    assert number_before == 4

    # ---- key compromise: every unexpired certificate with the key, keyCompromise + invalidity date, new key
    spec_compromised = spec_yaml(web=reuse + "    key_compromised: 2027-01-30\n", web_dns=WEB_DNS + ", api.example.com",
                                 payments="    revoke: privilege_withdrawn\n")
    write_spec(repo, spec_compromised)
    p = plan(pkic, repo, LATER)
    assert [(c["name"], c["action"], codes(c), c["key"]) for c in p["changes"]] == [("web", "reissue", ["key_compromised"], "new")]
    assert _revokes(p["changes"][0]["revokes"]) == [
        {"name": "web", "serial": s, "reason": "key_compromise", "invalidity": "2027-01-30T00:00:00Z"} for s in sorted(web_serials)
    ]
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["revocations"])]
    assert sorted((o["serial"] or "new", codes(o)[0]) for o in p["ocsp"] if o["name"] == "web") == sorted(
        [("new", "new")] + [(s, "status_changed") for s in web_serials])
    text = pkic.ok("plan", "--now", LATER, cwd=repo).stdout
    for s in web_serials:
        assert f"revokes web serial {s} (key_compromise)" in text, text
    apply(pkic, repo, LATER)

    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), LATER)
    assert crl_number(crl) == number_before + 1
    invalidity = datetime(2027, 1, 30, tzinfo=UTC)
    assert crl_entries(crl) == {
        serial_int(legacy_serial): ("cessation_of_operation", None),
        serial_int(payments_serial): ("privilege_withdrawn", None),
        **{serial_int(s): ("key_compromise", invalidity) for s in web_serials},
    }
    recs = state(repo)["certificates"]["web"]
    assert recs[0]["status"] == "active" and recs[0]["public_key_sha256"] != old_pk
    assert recs[0]["key_source"] == "generated"
    assert all(r["status"] == "revoked" and r["revocation_reason"] == "key_compromise" and r["invalidity_date"] == "2027-01-30T00:00:00Z"
               for r in recs[1:])
    assert state(repo)["compromised"] == [{"name": "web", "at": "2027-01-30T00:00:00Z", "public_key_sha256": old_pk, "applied_at": LATER}]
    # the key file really holds a new key, matching the new certificate
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    new_key = load_pem_private_key(decrypt_key(repo, "web", pkic.env), None)
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    assert spki(new_key.public_key()) == spki(cert_of(repo, "web").public_key())
    assert spki(new_key.public_key()) != spki(x509.load_pem_x509_certificate(first_web.read_bytes()).public_key())

    for old in (first_web, second_web, third_web):
        assert_verify_revoked(verify_with_crl(repo, old, LATER))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem", LATER))
    assert_ocsp(ocsp_check(repo, out / "certs" / "web.pem", respin=out / "ocsp" / "web.der", now=LATER), out / "certs" / "web.pem", "good")
    for old, s in zip((third_web, second_web, first_web), web_serials):
        assert_ocsp(ocsp_check(repo, old, respin=out / "ocsp" / f"web.{s}.der", now=LATER), old, "revoked", "keyCompromise")

    # done once per date: the line may stay; a second apply writes nothing
    assert_quiet(pkic, repo, LATER)
    # the compromised key never comes back: reuse_key renewals keep the *new* key
    much_later = at(timedelta(days=66), dt(LATER))
    p = plan(pkic, repo, much_later)
    web_change = next(c for c in p["changes"] if c["name"] == "web")
    assert (web_change["action"], web_change["key"], web_change["revokes"]) == ("renew", "keep", [])
    apply(pkic, repo, much_later)
    assert state(repo)["certificates"]["web"][0]["public_key_sha256"] not in {old_pk}
    assert pkic.ok("verify", "--keys", "--now", much_later, cwd=repo)


# =========================================================================== 3. TLS with CRL checking


def _handshake(server_files: tuple[str, str], client_files: tuple[str, str], bundle: Path, crl_pem: Path, hostname: str) -> dict:
    """One mTLS connection on loopback; the server checks the client's certificate against the CRL."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*server_files)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(bundle))
    server_ctx.load_verify_locations(cafile=str(crl_pem))
    server_ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=str(bundle))
    client_ctx.load_cert_chain(*client_files)
    return tls_exchange(server_ctx, client_ctx, hostname)


def test_tls_server_with_crl_check_rejects_a_revoked_client(repo, pkic, tmp_path):
    # Python's ssl checks certificates and CRLs at the wall clock: apply at the real time
    now = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_spec(repo, spec_yaml(extra=leaf("ops", profile="client")))
    apply(pkic, repo, now)
    out = repo / "out"
    keydir = tmp_path / "tls-keys"
    keydir.mkdir(mode=0o700)

    def files(name: str) -> tuple[str, str]:
        """The chain and the decrypted key, copied into this test's own temp dir."""
        key = keydir / f"{name}.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(decrypt_key(repo, name, pkic.env))
        chain = keydir / f"{name}.chain.pem"
        shutil.copyfile(out / "certs" / f"{name}.chain.pem", chain)
        return str(chain), str(key)

    web, payments, ops = files("web"), files("payments"), files("ops")
    bundle, crl_pem = out / "trust" / "bundle.pem", out / "crl" / "services-ca.crl.pem"
    # before: both clients are accepted with the (empty) CRL loaded
    for client in (payments, ops):
        got = _handshake(web, client, bundle, crl_pem, "web.example.com")
        assert got.get("reply") == b"pong:ping" and "server_error" not in got, got

    write_spec(repo, spec_yaml(extra=leaf("ops", profile="client", more="    revoke: key_compromise\n")))
    apply(pkic, repo, now)
    assert serial_int(state(repo)["certificates"]["ops"][0]["serial"]) in crl_entries(load_crl(repo, "services-ca"))
    assert not (out / "certs" / "ops.pem").exists()

    good = _handshake(web, payments, bundle, crl_pem, "web.example.com")
    assert good.get("reply") == b"pong:ping" and "server_error" not in good and "client_error" not in good, good
    assert good["client_cert"] == cert_of(repo, "payments").public_bytes(serialization.Encoding.DER)

    bad = _handshake(web, ops, bundle, crl_pem, "web.example.com")
    assert isinstance(bad.get("server_error"), ssl.SSLCertVerificationError), bad
    assert "certificate revoked" in str(bad["server_error"]), bad
    assert bad.get("reply") != b"pong:ping"


# =========================================================================== 4. time


@pytest.mark.slow
def test_crls_and_ocsp_are_refreshed_in_time_and_expired_serials_drop_off(repo, pkic, tmp_path):
    out = repo / "out"
    write_spec(repo, spec_yaml(extra=leaf("short", lifetime="2d")))
    apply(pkic, repo, NOW)
    short_serial = active(repo)["short"]["serial"]
    write_spec(repo, spec_yaml())
    apply(pkic, repo, NOW)
    assert crl_entries(load_crl(repo, "services-ca")) == {serial_int(short_serial): ("cessation_of_operation", None)}
    assert crl_number(load_crl(repo, "services-ca")) == 2
    assert (out / "ocsp" / "short.der").exists()

    # just inside an hour before the OCSP refresh point (4d, half left at 2d): nothing to do
    assert plan(pkic, repo, at(timedelta(days=2, hours=-1)))["ocsp"] == []
    # OCSP: 2 of its 4 days left -> due; the CRL (7d, refresh at 3.5d left) is not
    t_ocsp = at(timedelta(days=2, minutes=1))
    p = plan(pkic, repo, t_ocsp)
    assert p["changes"] == [] and p["crls"] == [] and p["responders"] == []
    assert sorted((o["name"], codes(o)) for o in p["ocsp"]) == [("payments", ["due"]), ("services-ca", ["due"]), ("web", ["due"])]
    assert "3 due" in pkic.ok("plan", "--now", t_ocsp, cwd=repo).stdout
    crl_before = (out / "crl" / "services-ca.crl").read_bytes()
    apply(pkic, repo, t_ocsp)
    assert (out / "crl" / "services-ca.crl").read_bytes() == crl_before
    for name in ("web", "payments", "services-ca"):
        resp = load_ocsp(out / "ocsp" / f"{name}.der")
        assert resp.this_update_utc == dt(t_ocsp) - BACKDATE and resp.next_update_utc == dt(t_ocsp) + timedelta(days=4)
    assert not (out / "ocsp" / "short.der").exists()  # expired: its response goes
    assert_ocsp(ocsp_check(repo, out / "certs" / "web.pem", respin=out / "ocsp" / "web.der", now=t_ocsp), out / "certs" / "web.pem", "good")
    assert_quiet(pkic, repo, t_ocsp)

    # CRL: 3.5 of its 7 days left -> due (the OCSP responses signed at t_ocsp are not)
    t_crl = at(timedelta(days=3, hours=12, minutes=1))
    p = plan(pkic, repo, t_crl)
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["due"])]
    assert p["changes"] == [] and p["ocsp"] == [] and p["responders"] == []
    apply(pkic, repo, t_crl)
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), t_crl)
    assert crl_number(crl) == 3
    # the short certificate expired before this CRL: it is listed once more, after its notAfter
    assert crl_entries(crl) == {serial_int(short_serial): ("cessation_of_operation", None)}
    assert dt(state(repo)["certificates"]["short"][0]["not_after"]) < dt(t_crl)
    assert crl_number(load_crl(repo, "root-ca")) == 1  # 90d: not due
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem", t_crl))
    assert_quiet(pkic, repo, t_crl)

    # the next CRL leaves it off
    t_crl2 = at(timedelta(days=3, hours=12, minutes=1), dt(t_crl))
    p = plan(pkic, repo, t_crl2)
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["due"])]
    apply(pkic, repo, t_crl2)
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), t_crl2)
    assert crl_number(crl) == 4 and list(crl) == []
    assert state(repo)["crls"]["services-ca"]["serials"] == []
    assert_quiet(pkic, repo, t_crl2)
    # status shouts before the CRL expires; verify fails once it has; the next apply re-signs it (reason expired)
    t_due = at(timedelta(days=3, hours=13), dt(t_crl2))
    crls = {r["authority"]: r for r in json.loads(pkic.ok("status", "--json", "--now", t_due, cwd=repo).stdout)["crls"]}
    assert crls["services-ca"]["status"] == "due" and crls["root-ca"]["status"] == "fresh"
    t_expired = at(timedelta(days=8), dt(t_crl2))
    proc = pkic("verify", "--now", t_expired, cwd=repo)
    assert proc.returncode == 1 and "services-ca" in proc.stderr and "expired" in proc.stderr, proc.stdout + proc.stderr
    p = plan(pkic, repo, t_expired)
    assert ("services-ca", ["expired"]) in [(c["name"], codes(c)) for c in p["crls"]]

    # the delegated responder (30d) is renewed when a third of its life is left, and signs what is re-signed
    old_responder = (out / "certs" / "ocsp-responders" / "services-ca.pem").read_bytes()
    t_resp = at(timedelta(days=20, hours=1))
    p = plan(pkic, repo, t_resp)
    assert [(r["name"], codes(r)) for r in p["responders"]] == [("services-ca", ["due"])]
    apply(pkic, repo, t_resp)
    responder = x509.load_pem_x509_certificate((out / "certs" / "ocsp-responders" / "services-ca.pem").read_bytes())
    assert responder.public_bytes(serialization.Encoding.PEM) != old_responder
    assert responder.not_valid_before_utc == dt(t_resp) - timedelta(minutes=1)
    assert [r["status"] for r in state(repo)["responders"]["services-ca"]] == ["active", "superseded"]
    resp = load_ocsp(out / "ocsp" / "web.der")
    assert [c.serial_number for c in resp.certificates] == [responder.serial_number]
    assert_ocsp(ocsp_check(repo, out / "certs" / "web.pem", respin=out / "ocsp" / "web.der", now=t_resp), out / "certs" / "web.pem", "good")
    assert_quiet(pkic, repo, t_resp)


def test_custom_crl_and_ocsp_lifetimes(repo, pkic):
    out = repo / "out"
    write_spec(repo, spec_yaml(services="    crl_lifetime: 2d\n    crl_renew_before: 12h\n    ocsp_lifetime: 1d\n"
                                         "    ocsp_responder_lifetime: 10d\n"))
    apply(pkic, repo, NOW)
    assert_crl_well_formed(repo, "services-ca", timedelta(days=2), NOW)
    resp = load_ocsp(out / "ocsp" / "web.der")
    assert resp.next_update_utc - resp.this_update_utc == timedelta(days=1) + BACKDATE
    responder = x509.load_pem_x509_certificate((out / "certs" / "ocsp-responders" / "services-ca.pem").read_bytes())
    assert responder.not_valid_after_utc == NOW_DT + timedelta(days=10)
    # OCSP: half of 1d; CRL: 12h before its nextUpdate
    p = plan(pkic, repo, at(timedelta(hours=12, minutes=1)))
    assert p["crls"] == [] and sorted(o["name"] for o in p["ocsp"]) == ["payments", "web"]
    p = plan(pkic, repo, at(timedelta(days=1, hours=12, minutes=1)))
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["due"])]


def test_publish_ocsp_false_writes_no_responses_and_no_responders(repo, pkic):
    write_spec(repo, spec_yaml(top="publish: {ocsp: false}\n"))
    p = plan(pkic, repo)
    assert p["ocsp"] == [] and p["responders"] == [] and sorted(c["name"] for c in p["crls"]) == ["root-ca", "services-ca"]
    apply(pkic, repo, NOW)
    assert not (repo / "out" / "ocsp").exists() and not (repo / "out" / "certs" / "ocsp-responders").exists()
    assert (repo / "out" / "crl" / "services-ca.crl").exists()
    assert_quiet(pkic, repo, NOW)


# =========================================================================== 5. superseded


@pytest.mark.slow
def test_revoke_superseded_revokes_the_old_certificate_on_reissue(applied, pkic, tmp_path):
    repo, out = applied, applied / "out"
    old_serial = active(repo)["web"]["serial"]
    old_pem = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(services="    revoke_superseded: true\n", web_dns=WEB_DNS + ", api.example.com"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c)) for c in p["changes"]] == [("web", "reissue", ["dns_changed"])]
    assert _revokes(p["changes"][0]["revokes"]) == [{"name": "web", "serial": old_serial, "reason": "superseded", "invalidity": None}]
    assert [(c["name"], codes(c)) for c in p["crls"]] == [("services-ca", ["revocations"])]
    assert p["warnings"] == []
    apply(pkic, repo, NOW)
    assert crl_entries(load_crl(repo, "services-ca")) == {serial_int(old_serial): ("superseded", None)}
    assert crl_number(load_crl(repo, "services-ca")) == 2
    assert_verify_revoked(verify_with_crl(repo, old_pem))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem"))
    assert_ocsp(ocsp_check(repo, old_pem, respin=out / "ocsp" / f"web.{old_serial}.der"), old_pem, "revoked", "superseded")
    assert_ocsp(ocsp_check(repo, out / "certs" / "web.pem", respin=out / "ocsp" / "web.der"), out / "certs" / "web.pem", "good")
    assert_quiet(pkic, repo, NOW)

    # a time-driven renewal supersedes too
    second_serial, payments_serial = active(repo)["web"]["serial"], active(repo)["payments"]["serial"]
    p = plan(pkic, repo, LATER)
    assert {c["name"]: (c["action"], _revokes(c["revokes"])) for c in p["changes"]} == {
        "web": ("renew", [{"name": "web", "serial": second_serial, "reason": "superseded", "invalidity": None}]),
        "payments": ("renew", [{"name": "payments", "serial": payments_serial, "reason": "superseded", "invalidity": None}]),
    }
    apply(pkic, repo, LATER)
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), LATER)
    assert crl_entries(crl) == {serial_int(s): ("superseded", None) for s in (old_serial, second_serial, payments_serial)}
    assert lint("lint_crl", "-t", "CRL", "-p", "PKIX", str(out / "crl" / "services-ca.crl")) == []
    assert_quiet(pkic, repo, LATER)


def test_narrowing_names_without_revoke_superseded_warns(applied, pkic, tmp_path):
    repo = applied
    old_serial = active(repo)["web"]["serial"]
    old_pem = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(web_dns="web.example.com"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c), c["revokes"]) for c in p["changes"]] == [("web", "reissue", ["dns_changed"], [])]
    assert len(p["warnings"]) == 1
    w = p["warnings"][0]
    assert w.startswith("web:") and "www.example.com" in w and "revoke_superseded" in w and "stays valid" in w, w
    assert "www.example.com" in pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    assert p["crls"] == []
    apply(pkic, repo, NOW)
    assert list(load_crl(repo, "services-ca")) == []
    assert_verify_ok(verify_with_crl(repo, old_pem))  # still valid, as the warning says
    old = state(repo)["certificates"]["web"][1]
    assert old["serial"] == old_serial and old["status"] == "superseded"


# =========================================================================== 6. revoking an authority


@pytest.mark.slow
def test_revoking_an_authority_puts_it_on_its_parents_crl_and_revokes_its_children(applied, pkic, tmp_path):
    """Its children are revoked with it (no reason code), on its CRL, which it keeps
    signing; tests/revocation/test_revoked_authority.py goes deeper."""
    repo, out = applied, applied / "out"
    before = active(repo)
    ca_serial = before["services-ca"]["serial"]
    ca_pem = keep(repo, tmp_path, "services-ca")
    web_pem = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(services="    revoke: affiliation_changed\n"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c)) for c in p["changes"]] == [
        ("services-ca", "revoke", ["revoke_requested"]), ("payments", "revoke", ["issuer_revoked"]), ("web", "revoke", ["issuer_revoked"])]
    assert _revokes(p["changes"][0]["revokes"]) == [{"name": "services-ca", "serial": ca_serial, "reason": "affiliation_changed", "invalidity": None, "keeps_signing": True}]
    assert _revokes(p["changes"][2]["revokes"]) == [{"name": "web", "serial": before["web"]["serial"], "reason": "unspecified", "invalidity": None}]
    assert p["orphans"] == ["payments", "web"]
    assert any("need a new issuer" in w and "payments, web" in w for w in p["warnings"]), p["warnings"]
    assert sorted((c["name"], codes(c)) for c in p["crls"]) == [("root-ca", ["revocations"]), ("services-ca", ["revocations", "revoked_authority"])]
    assert sorted((o["name"], codes(o)) for o in p["ocsp"]) == [("payments", ["status_changed", "signer_changed"]), ("services-ca", ["status_changed"]),
                                                                ("web", ["status_changed", "signer_changed"])]
    text = pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    assert "need a new issuer: payments, web" in text
    apply(pkic, repo, NOW)
    root_crl = assert_crl_well_formed(repo, "root-ca", timedelta(days=90), NOW)
    assert crl_number(root_crl) == 2
    assert crl_entries(root_crl) == {serial_int(ca_serial): ("affiliation_changed", None)}
    assert_verify_revoked(verify_with_crl(repo, ca_pem, authority="root-ca"))
    assert_ocsp(ocsp_check(repo, ca_pem, issuer="root-ca", respin=out / "ocsp" / "services-ca.der"), ca_pem, "revoked", "affiliationChanged")
    assert state(repo)["certificates"]["services-ca"][0]["status"] == "revoked"
    svc_crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), NOW)
    assert crl_entries(svc_crl) == {serial_int(before[n]["serial"]): (None, None) for n in ("web", "payments")}
    assert_verify_revoked(verify_with_crl(repo, web_pem))
    assert_ocsp(ocsp_check(repo, web_pem, respin=out / "ocsp" / "web.der"), web_pem, "revoked")
    # nothing is issued from it any more, and the warning stays
    p = plan(pkic, repo)
    assert p["changes"] == [] and p["orphans"] == ["payments", "web"]
    assert_quiet(pkic, repo, NOW)


def test_verify_passes_after_revoking_an_authority(applied, pkic):
    """`pkic verify` after a legitimate revocation of an intermediate."""
    write_spec(applied, spec_yaml(services="    revoke: affiliation_changed\n"))
    apply(pkic, applied, NOW)
    proc = pkic("verify", "--now", NOW, cwd=applied)
    assert proc.returncode == 0, proc.stdout + proc.stderr


REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded", "cessation_of_operation", "privilege_withdrawn")


@pytest.mark.slow
def test_every_revocation_reason_reaches_the_crl_and_ocsp(repo, pkic):
    out = repo / "out"
    names = {reason: f"r-{reason}" for reason in REASONS}
    write_spec(repo, spec_yaml(extra="".join(leaf(n, profile="client") for n in names.values())))
    apply(pkic, repo, NOW)
    serials = {reason: active(repo)[n]["serial"] for reason, n in names.items()}
    write_spec(repo, spec_yaml(extra="".join(leaf(n, profile="client", more=f"    revoke: {reason}\n") for reason, n in names.items())))
    p = plan(pkic, repo)
    assert sorted((c["name"], c["action"], c["revokes"][0]["reason"]) for c in p["changes"]) == sorted(
        (n, "revoke", reason) for reason, n in names.items())
    apply(pkic, repo, NOW)
    crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), NOW)
    # RFC 5280 5.3.1: the reason code is omitted rather than 'unspecified'
    assert crl_entries(crl) == {serial_int(serials[r]): (None if r == "unspecified" else r, None) for r in REASONS}
    calls = [["lint_crl", "-t", "CRL", "-p", "PKIX", str(out / "crl" / "services-ca.crl")]]
    calls += [["lint_ocsp_response", str(out / "ocsp" / f"{n}.der")] for n in names.values()]
    assert lint_all(calls) == {call[-1]: [] for call in calls}
    for reason, n in names.items():
        resp = load_ocsp(out / "ocsp" / f"{n}.der")
        assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED, n
        assert resp.revocation_reason == (None if reason == "unspecified" else x509.ReasonFlags[reason]), n
        assert state(repo)["certificates"][n][0]["revocation_reason"] == reason
    assert_quiet(pkic, repo, NOW)


@pytest.mark.slow
def test_authority_key_compromise_revokes_it_and_reissues_below(applied, pkic, tmp_path):
    repo, out = applied, applied / "out"
    before = active(repo)
    old_ca = keep(repo, tmp_path, "services-ca")
    old_web = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(services="    key_compromised: 2026-11-25T08:00:00Z\n"))
    p = plan(pkic, repo)
    got = {c["name"]: (c["action"], codes(c), c["key"]) for c in p["changes"]}
    assert got == {"services-ca": ("reissue", ["key_compromised"], "new"),
                   "web": ("reissue", ["issuer_reissued"], "new"), "payments": ("reissue", ["issuer_reissued"], "new")}
    assert _revokes(next(c for c in p["changes"] if c["name"] == "services-ca")["revokes"]) == [
        {"name": "services-ca", "serial": before["services-ca"]["serial"], "reason": "key_compromise", "invalidity": "2026-11-25T08:00:00Z"}]
    assert sorted((c["name"], codes(c)) for c in p["crls"]) == [("root-ca", ["revocations"]), ("services-ca", ["authority_rekeyed"])]
    assert [(r["name"], codes(r)) for r in p["responders"]] == [("services-ca", ["authority_rekeyed"])]
    assert "blast radius: 2 certificate(s) below must be reissued: payments, web" in pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    apply(pkic, repo, NOW)
    after = active(repo)
    assert after["services-ca"]["public_key_sha256"] != before["services-ca"]["public_key_sha256"]
    assert state(repo)["compromised"][0]["public_key_sha256"] == before["services-ca"]["public_key_sha256"]
    root_crl = assert_crl_well_formed(repo, "root-ca", timedelta(days=90), NOW)
    assert crl_entries(root_crl) == {serial_int(before["services-ca"]["serial"]): ("key_compromise", datetime(2026, 11, 25, 8, tzinfo=UTC))}
    assert lint("lint_crl", "-t", "CRL", "-p", "PKIX", str(out / "crl" / "root-ca.crl")) == []
    # the new services-ca signs its CRL and responder with the new key; the old one is revoked
    svc_crl = assert_crl_well_formed(repo, "services-ca", timedelta(days=7), NOW)
    assert crl_number(svc_crl) == 2 and list(svc_crl) == []
    responder = x509.load_pem_x509_certificate((out / "certs" / "ocsp-responders" / "services-ca.pem").read_bytes())
    responder.verify_directly_issued_by(cert_of(repo, "services-ca"))
    assert_verify_revoked(verify_with_crl(repo, old_ca, authority="root-ca"))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "services-ca.pem", authority="root-ca"))
    assert_verify_ok(verify_with_crl(repo, out / "certs" / "web.pem"))
    assert_ocsp(ocsp_check(repo, old_ca, issuer="root-ca", respin=out / "ocsp" / f"services-ca.{before['services-ca']['serial']}.der"),
                old_ca, "revoked", "keyCompromise")
    web = out / "certs" / "web.pem"
    assert old_web.read_bytes() != web.read_bytes()
    assert_ocsp(ocsp_check(repo, web, respin=out / "ocsp" / "web.der"), web, "good")
    assert_quiet(pkic, repo, NOW)
    assert pkic.ok("verify", "--keys", "--now", NOW, cwd=repo)


def test_a_reissue_keeps_the_latest_response_at_name_der(applied, pkic, tmp_path):
    """Regression: the layout pass once ran after signing and moved the new <name>.der aside under the old serial."""
    repo, out = applied, applied / "out"
    old_serial = active(repo)["web"]["serial"]
    old_pem = keep(repo, tmp_path, "web")
    write_spec(repo, spec_yaml(web_dns=WEB_DNS + ", api.example.com"))
    apply(pkic, repo, NOW)
    new_serial = active(repo)["web"]["serial"]
    files = {r["serial"]: r["ocsp"]["file"] for r in state(repo)["certificates"]["web"]}
    assert files == {new_serial: "out/ocsp/web.der", old_serial: f"out/ocsp/web.{old_serial}.der"}
    for serial, rel in files.items():
        assert (repo / rel).exists(), rel
        assert load_ocsp(repo / rel).serial_number == serial_int(serial), rel
    web = out / "certs" / "web.pem"
    assert_ocsp(ocsp_check(repo, web, respin=out / "ocsp" / "web.der"), web, "good")
    assert_ocsp(ocsp_check(repo, old_pem, respin=out / "ocsp" / f"web.{old_serial}.der"), old_pem, "good")


def test_a_rename_does_not_redo_a_key_compromise_or_resign_everything(applied, pkic):
    repo = applied
    compromised = "    key_compromised: 2026-11-20\n"
    write_spec(repo, spec_yaml(web=compromised))
    apply(pkic, repo, NOW)
    assert [c["name"] for c in state(repo)["compromised"]] == ["web"]
    assert "No changes." in pkic.ok("plan", "--now", NOW, cwd=repo).stdout  # done once per date
    web_serial = active(repo)["web"]["serial"]
    # rename payments -> billing: only the move
    write_spec(repo, spec_yaml(web=compromised).replace("  payments:\n", "  billing:\n") + "moved:\n  - {from: payments, to: billing}\n")
    p = plan(pkic, repo)
    assert p["moves"] == [{"from": "payments", "to": "billing"}]
    assert p["changes"] == [] and p["crls"] == [] and p["responders"] == []
    apply(pkic, repo, NOW)
    assert active(repo)["web"]["serial"] == web_serial


def test_a_rename_carries_the_ocsp_response(applied, pkic):
    repo, out = applied, applied / "out"
    response = (out / "ocsp" / "web.der").read_bytes()
    write_spec(repo, spec_yaml().replace("  web:\n", "  website:\n") + "moved:\n  - {from: web, to: website}\n")
    apply(pkic, repo, NOW)
    assert (out / "ocsp" / "website.der").exists() and not (out / "ocsp" / "web.der").exists()
    assert (out / "ocsp" / "website.der").read_bytes() == response
    assert state(repo)["certificates"]["website"][0]["ocsp"]["file"] == "out/ocsp/website.der"


def test_key_compromised_before_first_issue_does_not_revoke_the_fresh_key(repo, pkic):
    write_spec(repo, spec_yaml(web="    key_compromised: 2026-11-20\n"))
    p = plan(pkic, repo)
    assert any("nothing to revoke" in n for n in p["notices"]), p["notices"]
    apply(pkic, repo, NOW)
    serial = active(repo)["web"]["serial"]
    assert "No changes." in pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    apply(pkic, repo, NOW)
    assert active(repo)["web"]["serial"] == serial


# =========================================================================== 7. issuer URLs


ROOT_URLS = ("    crl_url: http://pki.example.com/crl/root-ca.crl\n    ocsp_url: http://ocsp.example.com/root\n"
             "    ca_issuers_url: http://pki.example.com/certs/root-ca.der\n")
SVC_URLS = ("    crl_url: http://pki.example.com/crl/services-ca.crl\n    ocsp_url: http://ocsp.example.com/services\n"
            "    ca_issuers_url: http://pki.example.com/certs/services-ca.der\n")


def _pointers(cert: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    try:
        cdp = [n.value for p in cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value for n in p.full_name]
    except x509.ExtensionNotFound:
        cdp = []
    try:
        aia = list(cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value)
    except x509.ExtensionNotFound:
        aia = []
    ocsp_urls = [a.access_location.value for a in aia if a.access_method == AuthorityInformationAccessOID.OCSP]
    issuers = [a.access_location.value for a in aia if a.access_method == AuthorityInformationAccessOID.CA_ISSUERS]
    return cdp, ocsp_urls, issuers


@pytest.mark.slow
def test_issuer_urls_go_into_what_the_authority_issues(repo, pkic):
    write_spec(repo, spec_yaml(root=ROOT_URLS, services=SVC_URLS))
    apply(pkic, repo, NOW)
    assert _pointers(cert_of(repo, "root-ca")) == ([], [], [])
    root = cert_of(repo, "root-ca")
    assert ExtensionOID.CRL_DISTRIBUTION_POINTS not in [e.oid for e in root.extensions]
    assert _pointers(cert_of(repo, "services-ca")) == (
        ["http://pki.example.com/crl/root-ca.crl"], ["http://ocsp.example.com/root"], ["http://pki.example.com/certs/root-ca.der"])
    for name in ("web", "payments"):
        c = cert_of(repo, name)
        assert _pointers(c) == (
            ["http://pki.example.com/crl/services-ca.crl"], ["http://ocsp.example.com/services"], ["http://pki.example.com/certs/services-ca.der"]), name
        assert not c.extensions.get_extension_for_class(x509.CRLDistributionPoints).critical
        assert not c.extensions.get_extension_for_class(x509.AuthorityInformationAccess).critical
    calls = [["lint_pkix_cert", str(repo / "out" / "certs" / f"{name}.pem")] for name in ("root-ca", "services-ca", "web", "payments")]
    assert lint_all(calls) == {call[-1]: [] for call in calls}
    # the caIssuers URL points at what out/certs/<name>.der holds
    assert (repo / "out" / "certs" / "services-ca.der").read_bytes() == cert_of(repo, "services-ca").public_bytes(serialization.Encoding.DER)
    assert_quiet(pkic, repo, NOW)

    # a new CRL URL reissues what carries the old one, nothing else
    write_spec(repo, spec_yaml(root=ROOT_URLS, services=SVC_URLS.replace("crl/services-ca.crl", "crl/v2/services-ca.crl")))
    p = plan(pkic, repo)
    assert sorted((c["name"], c["action"], codes(c)) for c in p["changes"]) == [
        ("payments", "reissue", ["crl_url_changed"]), ("web", "reissue", ["crl_url_changed"])]
    apply(pkic, repo, NOW)
    assert _pointers(cert_of(repo, "web"))[0] == ["http://pki.example.com/crl/v2/services-ca.crl"]
    assert_verify_ok(verify_with_crl(repo, repo / "out" / "certs" / "web.pem"))


# =========================================================================== 8. ocsp_signer: self


@pytest.mark.slow
def test_ocsp_signer_self_signs_responses_with_the_authority(applied, pkic):
    repo, out = applied, applied / "out"
    before_key = active(repo)["services-ca"]["key_id"]
    write_spec(repo, spec_yaml(services="    ocsp_signer: self\n"))
    p = plan(pkic, repo)
    assert [(c["name"], c["action"], codes(c), c["key"]) for c in p["changes"]] == [("services-ca", "reissue", ["ocsp_signer_changed"], "keep")]
    assert sorted((o["name"], codes(o)) for o in p["ocsp"] if o["name"] != "services-ca") == [
        ("payments", ["signer_changed"]), ("web", ["signer_changed"])]
    apply(pkic, repo, NOW)
    ca = cert_of(repo, "services-ca")
    assert active(repo)["services-ca"]["key_id"] == before_key
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_cert_sign and ku.crl_sign
    assert not cert_of(repo, "root-ca").extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    calls = [["lint_pkix_cert", str(out / "certs" / "services-ca.pem")]]
    calls += [["lint_ocsp_response", str(out / "ocsp" / f"{name}.der")] for name in ("web", "payments")]
    assert lint_all(calls) == {call[-1]: [] for call in calls}
    for name in ("web", "payments"):
        resp = load_ocsp(out / "ocsp" / f"{name}.der")
        assert resp.responder_key_hash == ski(ca)
        assert list(resp.certificates) == []
        ca.public_key().verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
        assert state(repo)["certificates"][name][0]["ocsp"]["signer"] == "self"
        pem = out / "certs" / f"{name}.pem"
        assert_ocsp(ocsp_check(repo, pem, respin=out / "ocsp" / f"{name}.der"), pem, "good")
    assert_quiet(pkic, repo, NOW)


def test_ocsp_signer_self_from_the_first_apply(repo, pkic):
    write_spec(repo, spec_yaml(services="    ocsp_signer: self\n"))
    apply(pkic, repo, NOW)
    out = repo / "out"
    assert sorted(p.name for p in (out / "certs" / "ocsp-responders").iterdir()) == ["root-ca.pem"]
    assert cert_of(repo, "services-ca").extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    pem = out / "certs" / "web.pem"
    assert_ocsp(ocsp_check(repo, pem, respin=out / "ocsp" / "web.der"), pem, "good")


# =========================================================================== 9. publish.ocsp_dir


def test_ocsp_dir_puts_responses_elsewhere(repo, pkic):
    write_spec(repo, spec_yaml(top="publish: {ocsp_dir: out/ocsp-out}\n"))
    apply(pkic, repo, NOW)
    assert not (repo / "out" / "ocsp").exists()
    assert sorted(p.name for p in (repo / "out/ocsp-out").iterdir()) == ["payments.der", "services-ca.der", "web.der"]
    assert state(repo)["certificates"]["web"][0]["ocsp"]["file"] == "out/ocsp-out/web.der"
    pem = repo / "out" / "certs" / "web.pem"
    assert_ocsp(ocsp_check(repo, pem, respin=repo / "out/ocsp-out" / "web.der"), pem, "good")
    assert_quiet(pkic, repo, NOW)


@pytest.mark.parametrize("where", ["ocsp-out", ".github/workflows", "out/certs", "out/../x", "/tmp/x", "out"])
def test_ocsp_dir_must_be_a_directory_of_its_own_inside_out(repo, pkic, where):
    write_spec(repo, spec_yaml(top=f"publish: {{ocsp_dir: '{where}'}}\n"))
    p = pkic("validate", cwd=repo)
    assert p.returncode == 1 and "publish.ocsp_dir" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_changing_ocsp_dir_moves_the_responses(applied, pkic):
    repo = applied
    write_spec(repo, spec_yaml(top="publish: {ocsp_dir: out/ocsp-out}\n"))
    p = plan(pkic, repo)
    assert sorted(o["name"] for o in p["ocsp"]) == ["payments", "services-ca", "web"], p["ocsp"]
    apply(pkic, repo, NOW)
    assert sorted(f.name for f in (repo / "out/ocsp-out").iterdir()) == ["payments.der", "services-ca.der", "web.der"]
    assert not list((repo / "out" / "ocsp").glob("*.der"))


# =========================================================================== 10. pkic serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pkic serve exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pkic serve did not open port {port} within {timeout}s")


def _http(url: str, data: bytes | None = None, ctype: str = "application/ocsp-request") -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.mark.slow
def test_serve_answers_ocsp_and_crls_and_follows_applies(applied, pkic, tmp_path):
    repo, out = applied, applied / "out"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
                            cwd=repo, env=pkic.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        web, payments = out / "certs" / "web.pem", keep(repo, tmp_path, "payments")
        assert_ocsp(ocsp_check(repo, web, url=base), web, "good")
        assert_ocsp(ocsp_check(repo, payments, url=base + "/ocsp"), payments, "good")
        ca = out / "certs" / "services-ca.pem"
        assert_ocsp(ocsp_check(repo, ca, issuer="root-ca", url=base), ca, "good")

        # wrong issuer: no pre-signed response for that CertID -> unsigned "unauthorized"
        wrong = ocsp_check(repo, web, issuer="root-ca", url=base)
        assert "unauthorized" in (wrong.stdout + wrong.stderr).lower(), wrong.stdout + wrong.stderr
        assert ": good" not in wrong.stdout

        # GET form (RFC 6960 appendix A.1): base64 of a DER request
        b64 = base64.b64encode(ocsp_request(cert_of(repo, "web"), cert_of(repo, "services-ca"))).decode()
        status, body, ctype = _http(f"{base}/ocsp/{urllib.request.quote(b64, safe='')}")
        assert status == 200 and ctype == "application/ocsp-response"
        assert body == (out / "ocsp" / "web.der").read_bytes()
        assert load_ocsp_bytes(body).certificate_status == ocsp.OCSPCertStatus.GOOD

        # only SHA-1 CertIDs are pre-signed: a SHA-256 one gets "unauthorized", not someone else's response
        req256 = ocsp_request(cert_of(repo, "web"), cert_of(repo, "services-ca"), hashes.SHA256())
        status, body, _ = _http(base + "/", data=req256)
        assert status == 200 and ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED

        # CRLs and certificates
        status, body, ctype = _http(f"{base}/crl/services-ca.crl")
        assert status == 200 and ctype == "application/pkix-crl"
        crl = x509.load_der_x509_crl(body)
        assert crl.is_signature_valid(cert_of(repo, "services-ca").public_key()) and crl_number(crl) == 1
        status, body, _ = _http(f"{base}/crl/services-ca.crl.pem")
        assert status == 200 and x509.load_pem_x509_crl(body).public_bytes(serialization.Encoding.DER) == (out / "crl" / "services-ca.crl").read_bytes()
        status, body, ctype = _http(f"{base}/certs/services-ca.der")
        assert status == 200 and ctype == "application/pkix-cert" and body == (out / "certs" / "services-ca.der").read_bytes()
        assert _http(f"{base}/certs/web.pem")[1] == web.read_bytes()
        assert _http(f"{base}/crl/nope.crl")[0] == 404
        assert _http(f"{base}/crl/..%2Fstate.json.crl")[0] == 404

        # garbage: the unsigned malformedRequest (an OCSP answer: HTTP 200), and the server keeps answering
        status, body, ctype = _http(base + "/", data=b"\x30\x03garbage, not an OCSP request")
        assert (status, ctype) == (200, "application/ocsp-response")
        assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        status, body, _ = _http(base + "/ocsp/" + "A" * 12)
        assert status == 200 and ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        assert_ocsp(ocsp_check(repo, web, url=base), web, "good")

        # another apply (revoking payments) is served without a restart
        write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n"))
        apply(pkic, repo, NOW)
        assert_ocsp(ocsp_check(repo, payments, url=base), payments, "revoked", "keyCompromise")
        assert_ocsp(ocsp_check(repo, web, url=base), web, "good")
        crl = x509.load_der_x509_crl(_http(f"{base}/crl/services-ca.crl")[1])
        assert crl_number(crl) == 2 and serial_int(state(repo)["certificates"]["payments"][0]["serial"]) in crl_entries(crl)
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    served = (tmp_path / "serve.log").read_text(errors="replace")
    assert "POST" in served and "GET /crl/services-ca.crl" in served, served


def load_ocsp_bytes(data: bytes) -> ocsp.OCSPResponse:
    resp = ocsp.load_der_ocsp_response(data)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return resp
