"""The public bundle in out/: certificates by name, chain files, the trust bundle and
the CRL bundle, assembled from the state and the certificates on disk. Paths, the
layout of out/ and the safe (no-follow) file access live in layout.py; writing is
writer.py's.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from compiler import layout
from compiler.apply.writer import Writer
from compiler.model.errors import fail
from compiler.state import State


def read_text(repo: Path, rel: str) -> str | None:
    data = layout.read_file(repo, rel, max_size=None)
    return None if data is None else data.decode("ascii")


def read_bytes(repo: Path, rel: str) -> bytes | None:
    return layout.read_file(repo, rel, max_size=None)


def pem_of(der: bytes, label: str = "CERTIFICATE") -> str:
    """The PEM text cryptography writes for ``der`` (64-character lines)."""
    b64 = base64.b64encode(der).decode("ascii")
    return f"-----BEGIN {label}-----\n" + "".join(b64[i : i + 64] + "\n" for i in range(0, len(b64), 64)) + f"-----END {label}-----\n"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class Certs:
    """Certificates by name: issued in this run, or read once from out/certs."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._certs: dict[str, x509.Certificate] = {}
        self._pems: dict[str, str] = {}

    def get(self, name: str) -> x509.Certificate:
        if name not in self._certs:
            rel = layout.cert_path(name)
            text = self._pems.get(name) or read_text(self.repo, rel)
            if text is None:
                raise fail(rel, f"the certificate of '{name}' is missing", f"restore it from git (`git checkout -- {rel}`)")
            try:
                self._certs[name] = x509.load_pem_x509_certificate(text.encode())
            except ValueError:
                raise fail(
                    rel, f"the certificate of '{name}' is not a PEM certificate", f"restore it from git (`git checkout -- {rel}`)"
                ) from None
        return self._certs[name]

    def put(self, name: str, cert: x509.Certificate) -> None:
        self._certs[name] = cert
        self._pems.pop(name, None)

    def put_pem(self, name: str, text: str) -> None:
        """A leaf issued in this run: its PEM text only (chains need nothing more; the
        parsed certificates of 100,000 leaves would be hundreds of MB)."""
        self._certs.pop(name, None)
        self._pems[name] = text

    def pem(self, name: str) -> str:
        """The PEM text, encoded once per certificate (chains ask for issuers often)."""
        if name not in self._pems:
            self._pems[name] = pem(self.get(name))
        return self._pems[name]


def chain_names(state: State, name: str) -> list[str]:
    """Whose certificates out/chains/<name>.pem holds, in order: ``name`` and its active
    issuers up to the root, the root left out (a client has it in its trust store).
    Apply writes the chain from this and ``verify`` checks it against the same."""
    names = [name]
    rec = state.active(name)
    issuer = rec["issuer"] if rec else None
    while issuer is not None:
        irec = state.active(issuer)
        if irec is None or irec["issuer"] is None:  # stop before the root
            break
        names.append(issuer)
        issuer = irec["issuer"]
    return names


def root_names(state: State) -> list[str]:
    """Whose certificates out/trust/bundle.pem holds: every active root, by name (what
    apply writes and ``verify`` checks)."""
    roots = []
    for n in sorted(state.active_names()):
        rec = state.active(n)
        if rec is not None and rec["kind"] == "authority" and rec["issuer"] is None:
            roots.append(n)
    return roots


def chain_pem(state: State, certs: Certs, name: str) -> str:
    """out/chains/<name>.pem: the certificate and its issuers, the root left out."""
    return "".join(certs.pem(n) for n in chain_names(state, name))


def trust_bundle(state: State, certs: Certs) -> str:
    """out/trust/bundle.pem: every active root, by name."""
    return "".join(certs.pem(n) for n in root_names(state))


def crl_bundle_authorities(state: State) -> list[str]:
    """The authorities whose CRLs out/trust/crls.pem holds, in its order: every one that
    still signs its CRL (active, or revoked and signing on for what it issued; one
    removed from the spec takes its CRL files along)."""
    return [a for a in sorted(state.crls) if state.signer_record(a) is not None]


def crl_bundle(repo: Path, state: State) -> bytes:
    """out/trust/crls.pem: the PEM of every current CRL (read from out/crl/<authority>.crl),
    one after another, by authority name. Empty: there is none (the file is removed)."""
    parts = []
    for a in crl_bundle_authorities(state):
        der = read_bytes(repo, layout.crl_path(a))
        if der is not None:
            parts.append(pem_of(der, "X509 CRL"))
    return "".join(parts).encode("ascii")


def write_crl_bundle(repo: Path, state: State, writer: Writer) -> None:
    """out/trust/crls.pem from the CRLs in out/crl/ (removed when there is none)."""
    data = crl_bundle(repo, state)
    if data:
        writer.write(layout.CRL_BUNDLE, data)
    elif layout.exists(repo, layout.CRL_BUNDLE):
        writer.remove(layout.CRL_BUNDLE)


def clean_staging(repo: Path) -> None:
    """Remove staging files left by a killed write (they were never renamed into place)."""
    out = repo / "out"
    if not layout.exists(repo, "out") or out.is_symlink():
        return
    for dirpath, _dirs, files in os.walk(out):
        for f in files:
            if f.startswith(".") and ".tmp-" in f:
                os.unlink(os.path.join(dirpath, f))
