"""`pkic verify`: check out/ against the state, and (with --keys) every key against its
certificate. Signatures are checked with cryptography (``verify_directly_issued_by``) up
to a root in the trust bundle; openssl stays the independent verifier in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
import hashlib

from cryptography.hazmat.primitives import hashes, serialization

from . import bundle, keystore
from .state import State, parse_ts


@dataclass(frozen=True)
class Finding:
    name: str
    problem: str


def _load_pems(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode()) if text.strip() else []


def verify_repo(repo: Path, state: State, now: datetime, store: keystore.Keystore | None = None) -> tuple[int, list[Finding]]:
    findings: list[Finding] = []
    roots_text = bundle.read_text(repo, bundle.TRUST_BUNDLE) or ""
    roots = {c.subject.public_bytes(): c for c in _load_pems(roots_text)}
    names = sorted(state.active_names())
    for name in names:
        rec = state.active(name)
        pem = bundle.read_text(repo, bundle.cert_path(name))
        if pem is None:
            findings.append(Finding(name, f"{bundle.cert_path(name)} is missing"))
            continue
        cert = x509.load_pem_x509_certificate(pem.encode())
        if cert.fingerprint(hashes.SHA256()).hex() != rec["sha256"]:
            findings.append(Finding(name, f"{bundle.cert_path(name)} is not the certificate the state records"))
            continue
        if not (parse_ts(rec["not_before"]) <= now < parse_ts(rec["not_after"])):
            findings.append(Finding(name, f"not valid at {now:%Y-%m-%dT%H:%M:%SZ} ({rec['not_before']} .. {rec['not_after']})"))
        chain_text = bundle.read_text(repo, bundle.chain_path(name))
        chain = _load_pems(chain_text or "")
        if not chain or chain[0] != cert:
            findings.append(Finding(name, f"{bundle.chain_path(name)} does not start with the certificate"))
            continue
        problem = _walk(chain, roots)
        if problem:
            findings.append(Finding(name, problem))
        if store is not None and rec.get("key_source") == "csr":
            continue  # the key is on its host
        if store is not None:
            try:
                handle = store.load(name)
            except Exception as exc:  # PkicError: report and go on
                findings.append(Finding(name, str(exc).splitlines()[0]))
                continue
            if keystore.public_key_sha256(handle.public_key()) != rec["public_key_sha256"]:
                findings.append(Finding(name, f"{keystore.key_path(name)} holds a key that does not match the certificate"))
    for authority in sorted(state.crls):
        info = state.crls[authority]
        try:
            crl = x509.load_der_x509_crl((repo / bundle.crl_path(authority)).read_bytes())
        except (OSError, ValueError):
            findings.append(Finding(authority, f"{bundle.crl_path(authority)} is missing or not a CRL"))
            continue
        if hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest() != info.get("sha256"):
            findings.append(Finding(authority, f"{bundle.crl_path(authority)} is not the CRL the state records"))
        pem = bundle.read_text(repo, bundle.cert_path(authority))
        if pem and not crl.is_signature_valid(x509.load_pem_x509_certificate(pem.encode()).public_key()):
            findings.append(Finding(authority, f"{bundle.crl_path(authority)} is not signed by {authority}"))
        if crl.next_update_utc is not None and crl.next_update_utc <= now:
            findings.append(Finding(authority, f"the CRL expired at {info['next_update']}: run `pkic apply`"))
    return len(names), findings


def _walk(chain: list[x509.Certificate], roots: dict[bytes, x509.Certificate]) -> str | None:
    """Each certificate signed by the next; the last by a root in the trust bundle."""
    for child, parent in zip(chain, chain[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature and friends
            return f"chain broken at '{child.subject.rfc4514_string()}': {type(exc).__name__}"
    last = chain[-1]
    root = roots.get(last.issuer.public_bytes())
    if root is None:
        return f"no root in {bundle.TRUST_BUNDLE} issued '{last.subject.rfc4514_string()}'"
    try:
        last.verify_directly_issued_by(root)
    except Exception as exc:
        return f"not signed by the trusted root '{root.subject.rfc4514_string()}': {type(exc).__name__}"
    return None


def hand_edits(repo: Path, state: State) -> list[str]:
    """Files in out/ whose content is not what the state records (edited by hand).

    Checked: every active certificate (DER fingerprint), its key file, every CRL and
    every OCSP response the state knows. Cheap: base64 decoding, no X.509 parsing."""
    import base64

    bad = []
    for name in sorted(state.active_names()):
        rec = state.active(name)
        rel = bundle.cert_path(name)
        try:
            text = (repo / rel).read_text(encoding="ascii")
            body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
            der = base64.b64decode("".join(body.split()))
            if hashlib.sha256(der).hexdigest() != rec["sha256"] or text.count("-----BEGIN") != 1:
                bad.append(rel)
        except (OSError, IndexError, ValueError, UnicodeDecodeError):
            bad.append(rel)
        want = rec.get("key_file_sha256")
        if want and rec.get("key_source") != "csr":
            krel = keystore.key_path(name)
            try:
                if hashlib.sha256((repo / krel).read_bytes()).hexdigest() != want:
                    bad.append(krel)
            except OSError:
                bad.append(krel)
        for r in state.certificates[name]:
            info = r.get("ocsp") or {}
            if info.get("file") and info.get("sha256"):
                try:
                    if hashlib.sha256((repo / info["file"]).read_bytes()).hexdigest() != info["sha256"]:
                        bad.append(info["file"])
                except OSError:
                    bad.append(info["file"])
    for authority, info in sorted(state.crls.items()):
        if state.active(authority) is None:
            continue
        rel = bundle.crl_path(authority)
        try:
            if hashlib.sha256((repo / rel).read_bytes()).hexdigest() != info.get("sha256"):
                bad.append(rel)
        except OSError:
            bad.append(rel)
    return bad
