"""Issue 13: every certificate pkic issues works in every TLS stack, and revocation never
goes silent. Through the real CLI, openssl, Node's tls and pkilint:

* item 3: ``out/trust/crls.pem`` holds every current CRL of the hierarchy, so servers
  that check the CRL of every CA in the chain from one file (nginx ``ssl_crl``, HAProxy
  ``crl-file``, Node's ``crl``) accept good clients and refuse revoked ones; it follows
  every re-signed CRL and every authority that goes away, and the seal and ``pkic
  verify`` cover it;
* item 4: CRLs and OCSP responses start a minute before they are signed (as
  certificates do), so a verifier whose clock is a little behind accepts a fresh one;
  no revocation date is later than its CRL's or response's thisUpdate;
* item 5: ``pkic serve`` answers an OCSP request it cannot use (unloadable, or more than
  one CertID) with an unsigned ``malformedRequest`` (HTTP 200), GET and POST alike;
* item 7: ``publish: {ocsp: false}`` removes the published responses and retires the
  delegated responders, says so in the plan, commits and seals the result, and a
  re-enable signs them again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import NOW, init_applied_committed, write_spec
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from helpers import active, decrypt_key, epoch, ocsp_request, state
from test_revocation import (
    BACKDATE,
    apply,
    assert_ocsp,
    assert_quiet,
    cert_of,
    crl_number,
    dt,
    keep,
    lint_all,
    load_crl,
    load_ocsp,
    ocsp_check,
    openssl,
    plan,
    serial_int,
    spec_yaml,
)

UTC = timezone.utc
NOW_DT = datetime.fromisoformat(NOW.replace("Z", "+00:00"))
CRL_BLOCK = re.compile(r"-----BEGIN X509 CRL-----\n.*?-----END X509 CRL-----\n", re.S)


def at(delta: timedelta, base: datetime = NOW_DT) -> str:
    return (base + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def crl_bundle(repo: Path) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(b.encode()) for b in CRL_BLOCK.findall((repo / "out" / "trust" / "crls.pem").read_text())]


def assert_bundle_is_the_crls(repo: Path, authorities: list[str]) -> None:
    """crls.pem is exactly the .crl.pem files of ``authorities``, in this order."""
    text = (repo / "out" / "trust" / "crls.pem").read_text()
    assert text == "".join((repo / "out" / "crl" / f"{a}.crl.pem").read_text() for a in authorities)
    assert [c.issuer for c in crl_bundle(repo)] == [cert_of(repo, a).subject for a in authorities]


def verify_chain_crls(repo: Path, cert: Path, crl_file: Path, now: str = NOW, attime: int | None = None) -> subprocess.CompletedProcess:
    """openssl verify checking the CRL of every certificate in the chain (-crl_check_all),
    as nginx ssl_crl, HAProxy crl-file and Node's crl do, with one CRL file."""
    return openssl("verify", "-attime", str(attime if attime is not None else epoch(now)), "-crl_check_all", "-CRLfile", str(crl_file),
                   "-CAfile", str(repo / "out" / "trust" / "bundle.pem"), "-untrusted", str(repo / "out" / "certs" / "services-ca.pem"), str(cert))


# =========================================================================== item 3: out/trust/crls.pem


@pytest.mark.slow
def test_crls_pem_lets_chain_wide_crl_checks_pass_and_follows_every_crl(applied, pkic, tmp_path):
    repo, out = applied, applied / "out"
    web, bundle = out / "certs" / "web.pem", out / "trust" / "crls.pem"
    assert_bundle_is_the_crls(repo, ["root-ca", "services-ca"])
    # the issuer's CRL alone: a chain-wide check has no CRL for services-ca's own certificate
    alone = verify_chain_crls(repo, web, out / "crl" / "services-ca.crl.pem")
    assert alone.returncode != 0 and "unable to get certificate CRL" in alone.stdout + alone.stderr, alone.stdout + alone.stderr
    proc = verify_chain_crls(repo, web, bundle)
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr

    # a revocation re-signs services-ca's CRL: crls.pem follows
    payments = keep(repo, tmp_path, "payments")
    write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n"))
    apply(pkic, repo, NOW)
    assert_bundle_is_the_crls(repo, ["root-ca", "services-ca"])
    assert [crl_number(c) for c in crl_bundle(repo)] == [1, 2]
    proc = verify_chain_crls(repo, payments, bundle)
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert verify_chain_crls(repo, web, bundle).returncode == 0
    assert_quiet(pkic, repo, NOW)

    # a new authority joins it, in name order; when it goes, its CRL leaves the bundle
    extra = "  ops-ca:\n    issuer: root-ca\n    subject: {CN: Example Ops CA}\n    lifetime: 3y\n"
    write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n").replace("certificates:\n", extra + "certificates:\n"))
    apply(pkic, repo, NOW)
    assert_bundle_is_the_crls(repo, ["ops-ca", "root-ca", "services-ca"])
    write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n"))
    apply(pkic, repo, NOW)
    assert not (out / "crl" / "ops-ca.crl").exists()
    assert_bundle_is_the_crls(repo, ["root-ca", "services-ca"])
    assert [crl_number(c) for c in crl_bundle(repo)] == [2, 2]  # root-ca's lists ops-ca now

    # a timed re-sign (services-ca's 7-day CRL is due at 3.5 days) rewrites it too
    later = at(timedelta(days=3, hours=13))
    apply(pkic, repo, later)
    assert_bundle_is_the_crls(repo, ["root-ca", "services-ca"])
    assert [crl_number(c) for c in crl_bundle(repo)] == [2, 3]
    assert verify_chain_crls(repo, web, bundle, later).returncode == 0
    assert pkic.ok("verify", "--now", later, cwd=repo)
    assert pkic.ok("verify", "--seal", "--now", later, cwd=repo)


def test_crls_pem_is_checked_by_verify_and_covered_by_the_seal(applied, pkic):
    repo, bundle = applied, applied / "out" / "trust" / "crls.pem"
    good = bundle.read_bytes()
    bundle.write_bytes((repo / "out" / "crl" / "services-ca.crl.pem").read_bytes())  # root-ca's CRL dropped
    proc = pkic("verify", "--now", NOW, cwd=repo)
    assert proc.returncode == 1 and "out/trust/crls.pem is not exactly the current CRLs" in proc.stderr, proc.stdout + proc.stderr
    proc = pkic("plan", "--now", NOW, cwd=repo)
    assert proc.returncode == 1 and "out/trust/crls.pem" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    bundle.unlink()
    proc = pkic("verify", "--now", NOW, cwd=repo)
    assert proc.returncode == 1 and "out/trust/crls.pem is missing" in proc.stderr, proc.stdout + proc.stderr
    bundle.write_bytes(good)
    assert pkic.ok("verify", "--seal", "--now", NOW, cwd=repo)


NODE_TLS = r"""
// A TLS server as the docs configure Node: crl takes one CRL per entry, so crls.pem is
// split into its PEM blocks. Prints how it judged the client certificate.
const tls = require('tls'), fs = require('fs');
const [out, keys, crlFile, whole] = process.argv.slice(2);
const read = (f) => fs.readFileSync(f, 'utf8');
const crl = whole ? [read(crlFile)] : read(crlFile).match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----\n?/g);
const server = tls.createServer({
  key: read(`${keys}/web.key`), cert: read(`${keys}/web.chain.pem`), ca: read(`${out}/trust/bundle.pem`),
  crl, requestCert: true, rejectUnauthorized: false,
}, (s) => {
  console.log(JSON.stringify({crls: crl.length, authorized: s.authorized, error: s.authorizationError ? String(s.authorizationError) : null}));
  s.end(); server.close();
});
server.listen(0, '127.0.0.1', () => {
  const c = tls.connect({port: server.address().port, host: '127.0.0.1', servername: 'web.example.com',
    key: read(`${keys}/payments.key`), cert: read(`${keys}/payments.chain.pem`), ca: read(`${out}/trust/bundle.pem`)});
  c.on('data', () => {}); c.on('error', () => {}); c.on('end', () => c.end());
});
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_node_tls_server_with_crls_pem_split_as_documented(repo, pkic, tmp_path):
    # Node checks certificates and CRLs at the wall clock: apply at the real time
    now = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply(pkic, repo, now)
    out = repo / "out"
    keys = tmp_path / "node-keys"
    keys.mkdir(mode=0o700)
    for name in ("web", "payments"):
        fd = os.open(keys / f"{name}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(decrypt_key(repo, name, pkic.env))
        shutil.copyfile(out / "certs" / f"{name}.chain.pem", keys / f"{name}.chain.pem")  # payments' leaves out/ when revoked
    script = tmp_path / "server.js"
    script.write_text(NODE_TLS)

    def judged(crl_file: Path, *whole: str) -> dict:
        proc = subprocess.run(["node", str(script), str(out), str(keys), str(crl_file), *whole], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert judged(out / "crl" / "services-ca.crl.pem") == {"crls": 1, "authorized": False, "error": "UNABLE_TO_GET_CRL"}
    assert judged(out / "trust" / "crls.pem") == {"crls": 2, "authorized": True, "error": None}
    # given whole, Node reads only the first CRL of the file (root-ca's): why the docs split it
    assert judged(out / "trust" / "crls.pem", "whole") == {"crls": 1, "authorized": False, "error": "UNABLE_TO_GET_CRL"}
    write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n"))
    apply(pkic, repo, now)
    assert judged(out / "trust" / "crls.pem") == {"crls": 2, "authorized": False, "error": "CERT_REVOKED"}


# =========================================================================== item 4: backdating


@pytest.mark.slow
def test_crls_and_ocsp_start_a_minute_before_signing_and_no_revocation_is_later(applied, pkic, tmp_path):
    repo, out = applied, applied / "out"
    signed = at(timedelta(hours=1))
    payments = keep(repo, tmp_path, "payments")
    write_spec(repo, spec_yaml(payments="    revoke: key_compromise\n"))
    apply(pkic, repo, signed)  # revokes payments and re-signs services-ca's CRL in the same apply

    crl = load_crl(repo, "services-ca")
    assert crl.last_update_utc == dt(signed) - BACKDATE
    assert crl.next_update_utc == dt(signed) + timedelta(days=7)  # the full lifetime from the signing
    (entry,) = list(crl)
    assert entry.serial_number == serial_int(state(repo)["certificates"]["payments"][0]["serial"])
    assert entry.revocation_date_utc <= crl.last_update_utc
    rec = state(repo)["certificates"]["payments"][0]
    assert rec["revoked_at"] == at(-BACKDATE, dt(signed))
    assert state(repo)["crls"]["services-ca"]["this_update"] == at(-BACKDATE, dt(signed))

    for name, when in (("payments", signed), ("web", NOW), ("services-ca", NOW)):  # web's and services-ca's from the first apply
        resp = load_ocsp(out / "ocsp" / f"{name}.der")
        assert resp.this_update_utc == dt(when) - BACKDATE, name
        assert resp.next_update_utc == dt(when) + timedelta(days=4), name
        assert state(repo)["certificates"][name][0]["ocsp"]["this_update"] == at(-BACKDATE, dt(when))
    resp = load_ocsp(out / "ocsp" / "payments.der")
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED and resp.revocation_time_utc <= resp.this_update_utc

    # a verifier whose clock is a second behind the signing accepts the fresh CRL
    behind = int(epoch(signed)) - 1
    proc = verify_chain_crls(repo, out / "certs" / "web.pem", out / "trust" / "crls.pem", attime=behind)
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
    proc = verify_chain_crls(repo, payments, out / "trust" / "crls.pem", attime=behind)
    assert "certificate revoked" in proc.stdout + proc.stderr, proc.stdout + proc.stderr

    calls = [["lint_crl", "-t", "CRL", "-p", "PKIX", str(out / "crl" / "services-ca.crl")]]
    calls += [["lint_ocsp_response", str(out / "ocsp" / f"{name}.der")] for name in ("payments", "web", "services-ca")]
    assert lint_all(calls) == {call[-1]: [] for call in calls}  # one linter process

    # the refresh windows still count from nextUpdate: nothing is due early
    assert_quiet(pkic, repo, signed)
    p = plan(pkic, repo, at(timedelta(days=3, hours=12, minutes=-1), dt(signed)))
    assert p["crls"] == []
    p = plan(pkic, repo, at(timedelta(days=3, hours=12, minutes=1), dt(signed)))
    assert [c["name"] for c in p["crls"]] == ["services-ca"]


def test_revocation_dates_are_clamped_to_this_update():
    """Unit: a revocation recorded after the CRL's or response's thisUpdate (an older
    pkic recorded the signing time itself) is listed at thisUpdate."""
    from compiler.model.keytype import KeyType
    from compiler.x509.build import IssuerRef, Revoked, crl, ocsp_response

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "t")])
    kid = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    issuer = IssuerRef(name, kid, KeyType.ECDSA_P256)
    this_update = NOW_DT - BACKDATE
    late = Revoked(5, NOW_DT, "key_compromise")
    early = Revoked(6, NOW_DT - timedelta(days=1), "superseded")
    signed = crl(issuer, 1, [late, early], this_update, NOW_DT + timedelta(days=7)).sign(key, hashes.SHA256())
    assert {r.serial_number: r.revocation_date_utc for r in signed} == {5: this_update, 6: NOW_DT - timedelta(days=1)}
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW_DT - timedelta(days=1)).not_valid_after(NOW_DT + timedelta(days=1)).sign(key, hashes.SHA256()))
    resp = ocsp_response(issuer, 5, late, this_update, NOW_DT + timedelta(days=4), cert, False).sign(key, hashes.SHA256())
    assert resp.revocation_time_utc == this_update and resp.this_update_utc == this_update


# =========================================================================== item 5: pkic serve and odd OCSP requests


def two_certid_request(repo: Path, tmp_path: Path) -> bytes:
    """A valid OCSP request asking for two certificates at once, as openssl makes one."""
    der = tmp_path / "two.der"
    certs = repo / "out" / "certs"
    proc = openssl("ocsp", "-issuer", str(certs / "services-ca.pem"), "-cert", str(certs / "web.pem"), "-cert", str(certs / "payments.pem"),
                   "-no_nonce", "-reqout", str(der))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = openssl("ocsp", "-reqin", str(der), "-req_text").stdout
    assert text.count("Certificate ID:") == 2, text
    return der.read_bytes()


@pytest.mark.slow
def test_serve_answers_unusable_ocsp_requests_with_malformed_request(applied, tmp_path):
    import base64
    import urllib.request

    from test_serve_hostile import Running

    repo = applied
    two = two_certid_request(repo, tmp_path)
    one = ocsp_request(cert_of(repo, "web"), cert_of(repo, "services-ca"))
    sha256 = ocsp_request(cert_of(repo, "web"), cert_of(repo, "services-ca"), hashes.SHA256())

    def post(srv: Running, body: bytes) -> tuple[int, bytes, str]:
        head = b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % len(body)
        with srv.connect() as s:
            s.sendall(head + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, answer = data.partition(b"\r\n\r\n")
        ctype = re.search(rb"(?im)^content-type: *([^\r\n]*)", head)
        return int(head.split(b" ", 2)[1]), answer, ctype.group(1).decode() if ctype else ""

    def get(srv: Running, body: bytes | str) -> tuple[int, bytes, str]:
        text = base64.b64encode(body).decode() if isinstance(body, bytes) else body
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/ocsp/{urllib.request.quote(text, safe='')}")
        with urllib.request.urlopen(req, timeout=5) as resp:  # an HTTP error would raise
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")

    def status_of(answer: tuple[int, bytes, str]) -> ocsp.OCSPResponseStatus:
        code, body, ctype = answer
        assert (code, ctype) == (200, "application/ocsp-response"), answer
        return ocsp.load_der_ocsp_response(body).response_status

    malformed, unauthorized = ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED
    with Running(repo) as srv:
        for send in (post, get):
            assert status_of(send(srv, two)) == malformed, send  # two CertIDs: RFC 5019 allows one
            assert status_of(send(srv, b"\x30\x03not an OCSP request")) == malformed, send
            assert status_of(send(srv, one[:-3])) == malformed, send  # cut short
            assert status_of(send(srv, sha256)) == unauthorized, send  # pre-signed for SHA-1 CertIDs only
            code, body, ctype = send(srv, one)
            assert (code, ctype, body) == (200, "application/ocsp-response", (repo / "out" / "ocsp" / "web.der").read_bytes())
        assert status_of(post(srv, b"")) == malformed
        assert status_of(get(srv, "AAAAAAAAAAAA")) == malformed  # base64 of nothing
        assert status_of(get(srv, "not_base64%21%21")) == malformed
        # HTTP-level problems keep their HTTP status
        assert srv.raw(b"POST /ocsp HTTP/1.0\r\nContent-Length: 1x\r\n\r\n" + two)[0] == 400
        assert srv.raw(b"POST /ocsp HTTP/1.0\r\n\r\n" + two)[0] == 411
        assert srv.raw(b"POST /ocsp HTTP/1.0\r\nContent-Length: 20000\r\n\r\n")[0] == 413

        # openssl, asking for two certificates, reads the answer as malformedRequest
        certs = repo / "out" / "certs"
        proc = openssl("ocsp", "-url", f"http://127.0.0.1:{srv.port}/ocsp", "-issuer", str(certs / "services-ca.pem"),
                       "-cert", str(certs / "web.pem"), "-cert", str(certs / "payments.pem"), "-no_nonce", "-timeout", "10")
        assert "malformedrequest" in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    log = "\n".join(srv.lines)
    assert '"POST /ocsp HTTP/1.0" 200' in log, log


# =========================================================================== item 7: turning OCSP off


@pytest.mark.slow
def test_turning_ocsp_off_removes_the_responses_and_retires_the_responders(pkic, tmp_path):
    repo = init_applied_committed(pkic, tmp_path / "pki")
    out = repo / "out"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=pkic.env).stdout

    def commit_spec(text: str) -> None:
        write_spec(repo, text)
        git("commit", "-qam", "spec")

    serials = {n: r["serial"] for n, r in active(repo).items()}
    payments = keep(repo, tmp_path, "payments")
    published = sorted(f"out/ocsp/{n}.der" for n in ("payments", "services-ca", "web"))
    responder_files = [f"out/{d}/ocsp-responders/{a}.{e}" for a in ("root-ca", "services-ca") for d, e in (("certs", "pem"), ("keys", "sops.yaml"))]
    assert all((repo / f).exists() for f in published + responder_files)

    # OCSP off, and payments revoked in the same change: no stale "good" response may stay
    off = spec_yaml(top="publish: {ocsp: false}\n", payments="    revoke: key_compromise\n")
    commit_spec(off)
    p = plan(pkic, repo)
    assert p["ocsp"] == [] and p["responders"] == []
    assert [(o["kind"], o["name"], o["serial"], [r["code"] for r in o["reasons"]]) for o in p["ocsp_off"]] == [
        ("responder", "root-ca", None, ["ocsp_off"]), ("responder", "services-ca", None, ["ocsp_off"]),
        *[("ocsp", n, serials[n], ["ocsp_off"]) for n in ("payments", "services-ca", "web")]]
    text = pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    assert "OCSP off: 3 published response(s) removed, 2 delegated responder(s) retired" in text, text
    md = pkic.ok("plan", "--format", "markdown", "--now", NOW, cwd=repo).stdout
    assert "OCSP off: 3 published response(s) removed, 2 delegated responder(s) retired" in md, md
    done = pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo).stdout
    assert "OCSP off: 3 published response(s) removed, 2 responder(s) retired" in done, done

    assert not list((out / "ocsp").glob("*.der"))
    assert not any((repo / f).exists() for f in published + responder_files)
    s = state(repo)
    for name in ("payments", "services-ca", "web"):
        info = s["certificates"][name][0]["ocsp"]
        assert (info["file"], info["removed_because"], info["removed_at"]) == (None, "ocsp_off", NOW), name
    for a in ("root-ca", "services-ca"):
        assert s["responders"][a][0]["status"] == "superseded" and s["responders"][a][0]["retired_at"] == NOW
    assert s["settings"]["publish"]["ocsp"] is False
    # the commit removes them, says why, and the seal covers the result
    message = git("log", "-1", "--format=%B")
    assert "OCSP off" in message.splitlines()[0] and "- OCSP off: 3 published response(s) removed" in message, message
    removed = git("show", "--name-status", "--format=", "HEAD").split("\n")
    revoked_files = ["out/certs/payments.pem", "out/certs/payments.chain.pem", "out/keys/payments.sops.yaml"]
    assert sorted(line.split("\t")[1] for line in removed if line.startswith("D\t")) == sorted(published + responder_files + revoked_files)
    assert pkic.ok("verify", "--seal", "--now", NOW, cwd=repo)
    checked = json.loads(pkic("check", "--json", "--now", NOW, cwd=repo).stdout)
    assert {i["kind"] for i in checked["items"]} == {"certificate", "crl"}, checked
    assert_quiet(pkic, repo, NOW)
    git("add", "-A")
    git("commit", "-qm", "quiet apply wrote nothing", "--allow-empty")

    # turned on again: new responders, every unexpired certificate's response signed again
    on = spec_yaml(payments="    revoke: key_compromise\n")
    commit_spec(on)
    p = plan(pkic, repo)
    assert p["ocsp_off"] == []
    assert [(r["name"], [c["code"] for c in r["reasons"]]) for r in p["responders"]] == [("root-ca", ["new"]), ("services-ca", ["new"])]
    assert sorted((o["name"], o["serial"], [c["code"] for c in o["reasons"]]) for o in p["ocsp"]) == [
        (n, serials[n], ["new"]) for n in ("payments", "services-ca", "web")]
    pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
    assert all((repo / f).exists() for f in published + responder_files)
    assert_ocsp(ocsp_check(repo, payments, respin=out / "ocsp" / "payments.der"), payments, "revoked", "keyCompromise")
    web = out / "certs" / "web.pem"
    assert_ocsp(ocsp_check(repo, web, respin=out / "ocsp" / "web.der"), web, "good")
    assert pkic.ok("verify", "--seal", "--now", NOW, cwd=repo)
    assert_quiet(pkic, repo, NOW)
