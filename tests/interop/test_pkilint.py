"""pkilint on everything the interop PKI published, in both applies: every certificate
(authorities, leaves of every profile and key type, revoked ones, delegated OCSP
responders), every CRL (current and expired), every OCSP response (good and revoked),
and ``lint_pkix_signer_signee_cert_chain`` on every issuer/subject pair, responder
certificates included. No finding of severity WARNING or above is allowed, but one:

pkilint checks URIs with a web-URL validator (``validators.url``), which rejects valid
non-web URIs such as ``spiffe://example.com/srv-p256`` (``pkix.invalid_uri_syntax``).
That finding alone is ignored, and only for a non-web scheme whose URI passes the same
check once its scheme is https (so the scheme is the linter's one objection).

The linters' own command lines run in one process (lintmany.py calls each CLI's entry
point with its arguments): a start of ``lint_pkix_cert`` costs 0.6 s of imports, and
there are over a hundred documents and pairs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.register_assert_rewrite("interoplib")
import validators  # noqa: E402  (pkilint's own syntax checker: keeps the filter narrow)
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from interoplib import HERE, World, run  # noqa: E402

pytest_plugins = ["interoplib"]
pytestmark = pytest.mark.interop

WEB_SCHEMES = ("http", "https", "ftp", "ftps", "ws", "wss")


def need_pkilint() -> None:
    for name in ("lint_pkix_cert", "lint_crl", "lint_ocsp_response", "lint_pkix_signer_signee_cert_chain"):
        if not (shutil.which(name) or (Path(sys.executable).parent / name).exists()):
            pytest.fail(f"{name} is missing: pip install pkilint (the [test] extra has it)", pytrace=False)


def spiffe_false_positive(code: str, message: str | None) -> bool:
    """pkilint's URI check rejecting a valid non-web URI (see the module docstring)."""
    if code != "pkix.invalid_uri_syntax":
        return False
    m = re.fullmatch(r'Invalid URI syntax: "(.+)"', message or "")
    if not m:
        return False
    uri = m.group(1)
    scheme = urlsplit(uri).scheme.lower()
    if not scheme or scheme in WEB_SCHEMES:
        return False
    return validators.url("https" + uri[len(scheme):]) is True


def test_false_positive_filter_is_narrow():
    assert spiffe_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "spiffe://example.com/srv-p256"')
    assert not spiffe_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "spiffe://bad host/x"')
    assert not spiffe_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "https://exa mple.com/"')
    assert not spiffe_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "example.com"')
    assert not spiffe_false_positive("pkix.some_other_error", 'Invalid URI syntax: "spiffe://example.com/x"')


def findings(tool: str, result: dict) -> list:
    """Findings of WARNING and above (bar the one false positive) of one pkilint run."""
    # the linters exit non-zero whenever they report anything: the JSON is what counts
    assert result["stdout"].strip(), f"no output from {tool} (exit {result['exit']}): {result['stderr']}"
    return [(r.get("node_path"), f["severity"], f["code"], f.get("message"))
            for r in json.loads(result["stdout"])["results"] for f in r["finding_descriptions"]
            if f["severity"] in ("FATAL", "ERROR", "WARNING") and not spiffe_false_positive(f["code"], f.get("message"))]


def lint_all(jobs: list[tuple[str, tuple]]) -> dict[str, list]:
    """Run the jobs (label, (tool, *args)), return the findings of those that have some."""
    need_pkilint()
    argv = [[tool, "lint", "--format", "JSON", "--severity", "WARNING", *args] for _, (tool, *args) in jobs]
    p = run([sys.executable, str(HERE / "lintmany.py")], input=json.dumps(argv), timeout=300)
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    found = {label: findings(tool, r) for (label, (tool, *_)), r in zip(jobs, results, strict=True)}
    return {label: f for label, f in found.items() if f}


def unique(paths) -> list[Path]:
    seen, out = set(), []
    for p in sorted(paths):
        digest = hashlib.sha256(p.read_bytes()).digest()
        if digest not in seen:
            seen.add(digest)
            out.append(p)
    return out


def certificates(w: World) -> list[Path]:
    """Every certificate either apply published (revoked and removed ones included)."""
    found = []
    for out in (w.saved, w.out()):
        found += [p for p in (out / "certs").glob("*.pem") if not p.name.endswith(".chain.pem")]
        found += list((out / "certs" / "ocsp-responders").glob("*.pem"))
    return unique(found)


def test_pkilint_every_certificate(world: World):
    certs = certificates(world)
    assert len(certs) >= 30, [p.name for p in certs]
    assert lint_all([(str(p), ("lint_pkix_cert", str(p))) for p in certs]) == {}


def test_pkilint_every_crl(world: World):
    crls = unique(list((world.saved / "crl").glob("*.crl")) + list(world.out("crl").glob("*.crl")))
    assert len(crls) >= 11  # six authorities' CRLs in the first apply, five in the second (retired-ca's is gone today)
    assert lint_all([(str(p), ("lint_crl", "-t", "CRL", "-p", "PKIX", str(p))) for p in crls]) == {}


def test_pkilint_every_ocsp_response(world: World):
    responses = unique(list((world.saved / "ocsp").glob("*.der")) + list(world.out("ocsp").glob("*.der")))
    assert len(responses) >= 40
    assert lint_all([(str(p), ("lint_ocsp_response", str(p))) for p in responses]) == {}


def test_pkilint_every_issuer_subject_pair(world: World):
    certs = {p: x509.load_pem_x509_certificate(p.read_bytes()) for p in certificates(world)}
    authorities = {p: c for p, c in certs.items() if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca}

    def issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
        try:
            child.verify_directly_issued_by(issuer)
            return True
        except (ValueError, TypeError, Exception):  # noqa: BLE001 - not this issuer
            return False

    pairs = []
    for p, c in certs.items():
        if c.issuer == c.subject:
            continue  # a root: no pair
        issuers = [ip for ip, ic in authorities.items() if issued_by(c, ic)]
        assert issuers, f"no issuer found for {p}"
        pairs += [(ip, p) for ip in issuers]
    responders = [p for _, p in pairs if "ocsp-responders" in str(p)]
    assert len(responders) >= 6 and len(pairs) >= 29, (len(responders), len(pairs))
    jobs = [(f"{i.name} -> {s}", ("lint_pkix_signer_signee_cert_chain", str(i), str(s))) for i, s in pairs]
    assert lint_all(jobs) == {}
    assert len({certs[s].fingerprint(hashes.SHA256()) for _, s in pairs}) == len([c for c in certs.values() if c.issuer != c.subject])
