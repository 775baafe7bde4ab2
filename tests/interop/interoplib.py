"""The interop suite's PKI and the certificates it shows to every verifier.

One PKI, applied by the real CLI in a temporary repo:

* ``root-ca`` (P-384);
* two intermediates in a chain, ``policy-ca`` (RSA-2048, path_length 1, permitted DNS
  and IP ranges) and below it ``issuing-ca`` (P-256, path_length 0, excluded DNS names
  and an excluded IP range): leaves of every profile (server, client, peer) and key type
  (P-256, P-384, RSA-2048, Ed25519) with DNS, IP and URI SANs, a leaf whose key is
  declared compromised and one removed from pki.yaml;
* ``ed-ca`` (an Ed25519 authority), ``uri-ca`` (a permitted_uri name constraint) and
  ``retired-ca`` (revoked in the second apply), one peer leaf each;
* OCSP on: a delegated responder per authority, a pre-signed response per certificate.

The first apply runs ten days in the past, so its CRLs (7 days, the root's too) have
expired by now: they are kept as the *expired CRLs*. The second apply, a minute ago,
revokes (key compromise, removal, the authority) and re-signs every CRL. Live TLS stacks
(nginx, gnutls-serv, Node, curl) verify at the wall clock only, so the PKI is issued at
the real current time rather than conftest's fixed NOW.

*Crafted* certificates are made here with ``cryptography``, signed by the real
intermediates' keys (decrypted with the real sops binary into the temp dir): they break
name constraints or the path length, and every verifier must refuse them. A crafted
*control*, made by the same code inside every constraint, must be accepted: it proves
that the crafted ones are refused for their violation, not for being test-made.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import Path

import pytest
from conftest import make_pkic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import decrypt_key

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- tools

#: every program the suite drives, and the Debian package that has it (.ci/run installs them)
TOOLS = {
    "openssl": "openssl",
    "certtool": "gnutls-bin",
    "gnutls-cli": "gnutls-bin",
    "gnutls-serv": "gnutls-bin",
    "nginx": "nginx-light",
    "curl": "curl",
    "go": "golang-go",
    "node": "nodejs",
    "stdbuf": "coreutils",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
}


def need(tool: str) -> str:
    """The path of ``tool``; a missing tool fails the test (never a skip: CI has them all)."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"the interop suite needs {tool!r}: install it (apt-get install {TOOLS.get(tool, tool)}; .ci/run does)", pytrace=False)
    return path


def free_port() -> int:
    """An ephemeral port on 127.0.0.1, free right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, host: str = "127.0.0.1", timeout: float = 10.0,
                  connect=None) -> None:
    """Poll until something accepts on ``host:port`` (or the server died, or time is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) before listening on {port}")
        try:
            if connect is not None:
                if connect(port):
                    return
            else:
                with socket.create_connection((host, port), timeout=1):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


def run(cmd: list[str], *, timeout: float = 20, input: bytes | str | None = None, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A bounded run of a tool, its output captured (text unless the input is bytes)."""
    text = not isinstance(input, bytes)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, env=env, cwd=cwd, text=text)


def stop(proc: subprocess.Popen) -> None:
    """End a server this suite started (by its own handle, never by name)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- the spec

KEY_TYPES = {"p256": "ecdsa-p256", "p384": "ecdsa-p384", "rsa": "rsa-2048", "ed25519": "ed25519"}
PROFILES = {"srv": "server", "cli": "client", "peer": "peer"}
LEAVES = [f"{p}-{k}" for p in PROFILES for k in KEY_TYPES]

AUTHORITIES = """\
authorities:
  root-ca:
    subject: {CN: Interop Root CA}
    key: ecdsa-p384
    lifetime: 10y
    crl_lifetime: 7d  # like the intermediates': the first apply's CRLs have all expired
    crl_url: http://pki.example.com/crl/root-ca.crl
    ocsp_url: http://pki.example.com/ocsp
  policy-ca:
    issuer: root-ca
    subject: {CN: Interop Policy CA}
    key: rsa-2048
    lifetime: 5y
    path_length: 1
    name_constraints:
      permitted_dns: [example.com, svc.internal]
      permitted_ip: [127.0.0.0/8, 10.0.0.0/8]
    crl_url: http://pki.example.com/crl/policy-ca.crl
    ocsp_url: http://pki.example.com/ocsp
  issuing-ca:
    issuer: policy-ca
    subject: {CN: Interop Issuing CA}
    lifetime: 3y
    path_length: 0
    name_constraints:
      excluded_dns: [secret.example.com]
      excluded_ip: [10.66.0.0/16]
    crl_url: http://pki.example.com/crl/issuing-ca.crl
    ocsp_url: http://pki.example.com/ocsp
  ed-ca:
    issuer: root-ca
    subject: {CN: Interop Ed25519 CA}
    key: ed25519
    path_length: 0
  uri-ca:
    issuer: root-ca
    subject: {CN: Interop URI CA}
    path_length: 0
    name_constraints: {permitted_uri: [example.com]}
  retired-ca:
    issuer: root-ca
    subject: {CN: Interop Retired CA}
    path_length: 0
%(retire)s"""


def spec(*, second: bool, compromised_at: str = "") -> str:
    """pki.yaml of the first apply, or of the second (key compromise, removal, authority revoked)."""
    lines = ["version: 1", "defaults:", "  key: ecdsa-p256", "  subject: {O: pkic interop, C: US}", "publish: {ocsp: true}",
             AUTHORITIES % {"retire": "    revoke: ca_compromise\n" if second else ""}, "certificates:"]
    for i, name in enumerate(LEAVES):
        profile, kt = name.split("-")
        lines.append(f"  {name}: {{issuer: issuing-ca, profile: {PROFILES[profile]}, key: {KEY_TYPES[kt]}, "
                     f"dns: [{name}.example.com], ip: [10.1.0.{i + 1}], uri: ['spiffe://example.com/{name}']}}")
    kc = f"key_compromised: '{compromised_at}', " if second else ""
    lines.append(f"  kc-leaf: {{{kc}issuer: issuing-ca, profile: peer, dns: [kc-leaf.example.com], ip: [10.1.0.20]}}")
    if not second:
        lines.append("  gone-leaf: {issuer: issuing-ca, profile: peer, dns: [gone-leaf.example.com], ip: [10.1.0.21]}")
    lines += [
        "  ed-leaf: {issuer: ed-ca, profile: peer, dns: [ed-leaf.example.com], ip: [10.2.0.1]}",
        "  uri-leaf: {issuer: uri-ca, profile: peer, dns: [uri-leaf.example.com], uri: ['spiffe://example.com/uri-leaf']}",
        "  retired-leaf: {issuer: retired-ca, profile: peer, dns: [retired-leaf.example.com], ip: [10.3.0.1]}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Subject:
    """A certificate shown to verifiers: its files, the name to check, its purposes."""

    id: str
    cert: Path  # the certificate alone
    chain: Path  # the certificate then its intermediates (what a TLS peer presents)
    key: Path  # its private key, in clear, in the temp dir
    host: str  # a DNS name in its SAN: the name clients check
    server: bool  # EKU serverAuth
    client: bool  # EKU clientAuth
    ocsp: Path | None = None  # its pre-signed OCSP response (pkic's certificates only)

    @property
    def inter(self) -> Path:
        """Its intermediates alone (what openssl's -untrusted and -cert_chain take)."""
        return self.chain.parent / "inter.pem"

    @property
    def issuer(self) -> Path:
        """Its issuer's certificate alone."""
        return self.chain.parent / "issuer.pem"


def split_chain(chain: Path) -> None:
    blocks = pem_blocks(chain.read_bytes())
    (chain.parent / "inter.pem").write_bytes(b"".join(blocks[1:]))
    (chain.parent / "issuer.pem").write_bytes(blocks[1])


def ocsp_response(out: Path, cert: Path) -> Path | None:
    """The pre-signed OCSP response in out/ocsp for this certificate (by serial), if any."""
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    for p in sorted((out / "ocsp").glob("*.der")):
        if ocsp.load_der_ocsp_response(p.read_bytes()).serial_number == serial:
            return p
    return None


@dataclass
class World:
    base: Path
    repo: Path
    env: dict
    issued_at: datetime
    root: Path  # out/trust/bundle.pem
    crls: Path  # out/trust/crls.pem (or its stand-in): every current CRL
    crls_expired: Path  # the first apply's CRLs, the intermediates' expired
    crl_set: Path  # crls + the crafted sub-CA's CRL: what CRL-checking verifiers load
    subjects: dict[str, Subject] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    saved: Path | None = None  # the first apply's out/ (keys aside): what the second one removed or replaced

    def out(self, *parts: str) -> Path:
        return self.repo.joinpath("out", *parts)


def pem_blocks(data: bytes) -> list[bytes]:
    """The PEM blocks of a file, each with its BEGIN/END lines."""
    blocks, cur = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN"):
            cur = [line]
        elif cur:
            cur.append(line)
            if line.startswith(b"-----END"):
                blocks.append(b"".join(cur))
                cur = []
    return blocks


def _minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_world(base: Path) -> World:
    pkic = make_pkic(base)
    repo = base / "pki"
    pkic.ok("init", str(repo))
    t1 = _minute(datetime.now(timezone.utc)) - timedelta(minutes=1)
    t0 = t1 - timedelta(days=10)

    # first apply, ten days ago
    (repo / "pki.yaml").write_text(spec(second=False), encoding="utf-8")
    pkic.ok("apply", "--yes", "--now", iso(t0), cwd=repo)
    saved = base / "first-apply-out"
    shutil.copytree(repo / "out", saved, ignore=shutil.ignore_patterns("keys"))
    w = World(base=base, repo=repo, env=pkic.env, issued_at=t1, root=repo / "out/trust/bundle.pem",
              crls=base / "crls.pem", crls_expired=base / "crls-expired.pem", crl_set=base / "crl-set.pem", saved=saved)
    files = base / "subjects"
    files.mkdir()

    def keep(sid: str, name: str, server: bool, client: bool, host: str | None = None, out: Path | None = None) -> None:
        """Copy name's certificate, chain and key (as they are now) for subject sid."""
        out = out or repo / "out"
        d = files / sid
        d.mkdir()
        shutil.copy(out / "certs" / f"{name}.pem", d / "cert.pem")
        shutil.copy(out / "certs" / f"{name}.chain.pem", d / "chain.pem")
        (d / "key.pem").write_bytes(decrypt_key(repo, name, pkic.env))
        split_chain(d / "chain.pem")
        w.subjects[sid] = Subject(sid, d / "cert.pem", d / "chain.pem", d / "key.pem", host or f"{name}.example.com", server, client)

    # what the second apply revokes: kept from the first (its files leave out/ or are replaced)
    keep("kc-old", "kc-leaf", True, True)
    keep("gone-leaf", "gone-leaf", True, True)
    keep("retired-leaf", "retired-leaf", True, True)
    expired = sorted((repo / "out/crl").glob("*.crl.pem"))
    w.crls_expired.write_bytes(b"".join(p.read_bytes() for p in expired))

    # second apply, now: revocations, every CRL re-signed
    (repo / "pki.yaml").write_text(spec(second=True, compromised_at=iso(t0)), encoding="utf-8")
    pkic.ok("apply", "--yes", "--now", iso(t1), cwd=repo)
    for name in LEAVES + ["kc-leaf", "ed-leaf", "uri-leaf"]:
        profile = name.split("-")[0]
        keep(name, name, profile in ("srv", "peer") or name in ("kc-leaf", "ed-leaf", "uri-leaf"),
             profile in ("cli", "peer") or name in ("kc-leaf", "ed-leaf", "uri-leaf"))

    # every current CRL in one file, as pkic publishes it for nginx, HAProxy and Node
    published = repo / "out/trust/crls.pem"
    assert published.is_file(), "pkic did not publish out/trust/crls.pem"
    shutil.copy(published, w.crls)

    # their OCSP responses, as the second apply left them (revoked ones included)
    for sid, s in list(w.subjects.items()):
        w.subjects[sid] = replace(s, ocsp=ocsp_response(repo / "out", s.cert))
    craft_all(w, files)
    return w


# --------------------------------------------------------------------------- crafted certificates


def _load_key(w: World, name: str):
    return serialization.load_pem_private_key(decrypt_key(w.repo, name, w.env), None)


def _sign_hash(key):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    return hashes.SHA256()


def craft(issuer: x509.Certificate, issuer_key, cn: str, *, dns=(), ips=(), uris=(), ca: bool = False, now: datetime,
          key=None) -> tuple[x509.Certificate, object]:
    """A certificate as pkic would make it (same extensions), made and signed by the test."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pkic interop"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(issuer.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - timedelta(minutes=5))
         .not_valid_after(now + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
             issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ip_address(i)) for i in ips] + [x509.UniformResourceIdentifier(u) for u in uris]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, _sign_hash(issuer_key)), key


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


#: crafted subject id -> (issuer, SAN DNS, SAN IPs, SAN URIs); all peers (serverAuth and clientAuth)
CRAFTED = {
    "crafted-ok": ("issuing-ca", ["crafted-ok.example.com"], ["10.1.9.1"], ["spiffe://example.com/crafted-ok"]),
    "crafted-dns-outside": ("issuing-ca", ["www.outside.test"], [], []),
    "crafted-dns-excluded": ("issuing-ca", ["db.secret.example.com"], [], []),
    "crafted-ip-outside": ("issuing-ca", ["crafted-ip-outside.example.com"], ["192.0.2.7"], []),
    "crafted-ip-excluded": ("issuing-ca", ["crafted-ip-excluded.example.com"], ["10.66.0.9"], []),
    "crafted-uri-outside": ("uri-ca", ["crafted-uri-outside.example.com"], [], ["spiffe://outside.test/x"]),
}


def craft_all(w: World, files: Path) -> None:
    now = datetime.now(timezone.utc)
    certs = {n: x509.load_pem_x509_certificate(w.out("certs", f"{n}.pem").read_bytes()) for n in ("issuing-ca", "uri-ca")}
    keys = {n: _load_key(w, n) for n in certs}

    def save(sid: str, leaf, key, chain_rest: list[bytes], host: str) -> None:
        d = files / sid
        d.mkdir()
        (d / "cert.pem").write_bytes(_pem(leaf))
        (d / "chain.pem").write_bytes(_pem(leaf) + b"".join(chain_rest))
        (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        split_chain(d / "chain.pem")
        w.subjects[sid] = Subject(sid, d / "cert.pem", d / "chain.pem", d / "key.pem", host, True, True)

    for sid, (issuer, dns, ips, uris) in CRAFTED.items():
        leaf, key = craft(certs[issuer], keys[issuer], sid, dns=dns, ips=ips, uris=uris, now=now)
        rest = pem_blocks(w.out("certs", f"{issuer}.chain.pem").read_bytes())
        save(sid, leaf, key, rest, dns[0])

    # path length: a sub-authority below issuing-ca (path_length 0), and a leaf below it
    sub, sub_key = craft(certs["issuing-ca"], keys["issuing-ca"], "Crafted Sub CA", ca=True, now=now)
    leaf, key = craft(sub, sub_key, "crafted-pathlen", dns=["crafted-pathlen.example.com"], now=now)
    rest = pem_blocks(w.out("certs", "issuing-ca.chain.pem").read_bytes())
    save("crafted-pathlen", leaf, key, [_pem(sub)] + rest, "crafted-pathlen.example.com")
    # the sub-authority "publishes" an empty CRL, so that verifiers which need a CRL for
    # every authority of the chain can refuse it only for its path length
    crl = (x509.CertificateRevocationListBuilder().issuer_name(sub.subject).last_update(now - timedelta(minutes=5))
           .next_update(now + timedelta(days=1))
           .add_extension(x509.CRLNumber(1), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(sub_key.public_key()), critical=False)
           .sign(sub_key, hashes.SHA256()))
    w.crl_set.write_bytes(w.crls.read_bytes() + crl.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------- reasons


REVOKED, MISSING_CRL, STALE, OTHER = "revoked", "missing CRL", "stale CRL or OCSP", "other"


def reason_kind(text: str) -> str:
    """What a refusal message is about: a revocation, a missing CRL, stale revocation data
    (a CRL or OCSP response past its nextUpdate), or something else (a violation)."""
    t = " ".join(text.lower().replace("_", " ").split())
    if any(s in t for s in ("crl has expired", "crl expired", "response has expired", "status times invalid", "data are old", "crl is not yet valid")):
        return STALE
    if any(s in t for s in ("unable to get certificate crl", "unable to get crl")):
        return MISSING_CRL
    if "revoked" in t or "revocation reason" in t:
        return REVOKED
    return OTHER


# --------------------------------------------------------------------------- fixtures (pytest_plugins = ["interoplib"])


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """The PKI, applied twice, with its crafted certificates: built once for the suite."""
    return build_world(tmp_path_factory.mktemp("interop"))
