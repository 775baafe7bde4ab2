"""`pkic verify`: check out/ against the state, and (with --keys) every key against its
certificate. Signatures are checked with cryptography (``verify_directly_issued_by``) up
to a root in the trust bundle; openssl stays the independent verifier in the tests.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from compiler import layout
from compiler.apply import bundle
from compiler.keys import keystore
from compiler.model.keytype import public_key_sha256
from compiler.state import Record, State
from compiler.state.revocation import crl_retired


@dataclass(frozen=True)
class Finding:
    name: str
    problem: str


def _rec(state: State, name: str) -> Record:
    """The active record of a name known to be active (from ``state.active_names()``)."""
    rec = state.active(name)
    if rec is None:  # a programming error, not a user's
        raise KeyError(name)
    return rec


def _load_pems(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode()) if text.strip() else []


def verify_repo(repo: Path, state: State, now: datetime, store: keystore.Keystore | None = None) -> tuple[int, list[Finding]]:
    findings: list[Finding] = []
    roots_text = bundle.read_text(repo, layout.TRUST_BUNDLE) or ""
    roots = {c.subject.public_bytes(): c for c in _load_pems(roots_text)}
    names = sorted(state.active_names())
    for name in names:
        rec = _rec(state, name)
        pem = bundle.read_text(repo, layout.cert_path(name))
        if pem is None:
            findings.append(Finding(name, f"{layout.cert_path(name)} is missing"))
            continue
        cert = x509.load_pem_x509_certificate(pem.encode())
        if cert.fingerprint(hashes.SHA256()).hex() != rec["sha256"]:
            findings.append(Finding(name, f"{layout.cert_path(name)} is not the certificate the state records"))
            continue
        if not (rec["not_before"] <= now < rec["not_after"]):
            findings.append(Finding(name, f"not valid at {now:%Y-%m-%dT%H:%M:%SZ} ({rec['not_before']} .. {rec['not_after']})"))
        else:
            info = rec.get("ocsp") or {}
            if info.get("file") and info.get("this_update") and info.get("next_update"):
                if info["this_update"] > now:
                    findings.append(
                        Finding(
                            name,
                            f"its OCSP response is not valid yet (thisUpdate {info['this_update']}): signed with a clock, or --now, ahead of this one",
                        )
                    )
                elif info["next_update"] <= now:
                    findings.append(Finding(name, f"its OCSP response expired at {info['next_update']}: run `pkic apply`"))
        chain_text = bundle.read_text(repo, layout.chain_path(name))
        chain = _load_pems(chain_text or "")
        if not chain or chain[0] != cert:
            findings.append(Finding(name, f"{layout.chain_path(name)} does not start with the certificate"))
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
            if public_key_sha256(handle.public_key()) != rec["public_key_sha256"]:
                findings.append(Finding(name, f"{layout.key_path(name)} holds a key that does not match the certificate"))
    problem = bundle_problem(repo, state, roots_text)
    if names and problem:
        findings.append(Finding("trust bundle", problem))
    for authority in sorted(state.crls):
        if state.signer_record(authority) is None:
            continue  # an authority that left: its CRL left with it (the state keeps the number)
        recorded = state.crls[authority]
        retired = crl_retired(state, authority, now)
        try:
            crl = x509.load_der_x509_crl((repo / layout.crl_path(authority)).read_bytes())
        except (OSError, ValueError):
            findings.append(Finding(authority, f"{layout.crl_path(authority)} is missing or not a CRL"))
            continue
        if hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest() != recorded.get("sha256"):
            findings.append(Finding(authority, f"{layout.crl_path(authority)} is not the CRL the state records"))
        pem = bundle.read_text(repo, layout.cert_path(authority))
        if pem and not crl.is_signature_valid(
            cast(CertificateIssuerPublicKeyTypes, x509.load_pem_x509_certificate(pem.encode()).public_key())
        ):
            findings.append(Finding(authority, f"{layout.crl_path(authority)} is not signed by {authority}"))
        if crl.next_update_utc is not None and crl.next_update_utc <= now and not retired:
            findings.append(Finding(authority, f"the CRL expired at {recorded['next_update']}: run `pkic apply`"))
        if crl.last_update_utc > now:
            findings.append(
                Finding(
                    authority,
                    f"the CRL is not valid yet (thisUpdate {recorded['this_update']}): signed with a clock, or --now, ahead of this one",
                )
            )
    problem = crl_bundle_problem(repo, state)
    if problem:
        findings.append(Finding("CRL bundle", problem))
    return len(names), findings


def crl_bundle_problem(repo: Path, state: State) -> str | None:
    """Why out/trust/crls.pem is not exactly the current CRLs the state records, in order
    (None: it is, or a state from a pkic that did not write it yet has none)."""
    import base64
    import re

    authorities = bundle.crl_bundle_authorities(state)
    wanted = [state.crls[a].get("sha256") for a in authorities]
    try:
        data = bundle.read_bytes(repo, layout.CRL_BUNDLE)
    except Exception:  # a symlink or a directory in its place (PkicError, OSError)
        return f"{layout.CRL_BUNDLE} is not a regular file"
    if data is None:
        if any(state.crls[a].get("bundled") for a in authorities):
            return f"{layout.CRL_BUNDLE} is missing ({len(wanted)} CRL(s) expected): restore it from git"
        return None
    text = data.decode("ascii", "replace")
    try:
        ders = [
            base64.b64decode("".join(body.split()), validate=True)
            for body in re.findall(r"-----BEGIN X509 CRL-----\n(.*?)-----END X509 CRL-----\n", text, re.S)
        ]
    except ValueError:
        ders = []
    if [hashlib.sha256(d).hexdigest() for d in ders] == wanted and text == "".join(bundle.pem_of(d, "X509 CRL") for d in ders) and wanted:
        return None
    have = {hashlib.sha256(d).hexdigest() for d in ders}
    return (
        f"{layout.CRL_BUNDLE} is not exactly the current CRLs the state records, by authority name "
        f"({len(have - set(wanted))} other, {len(set(wanted) - have)} missing)"
    )


def bundle_problem(repo: Path, state: State, text: str | None = None) -> str | None:
    """Why out/trust/bundle.pem is not exactly the roots the state records (None: it is).
    An extra root in the trust bundle would be trusted by every client that uses it."""
    roots = bundle.root_names(state)
    if text is None:
        text = bundle.read_text(repo, layout.TRUST_BUNDLE) or ""
    wanted = {_rec(state, n)["sha256"] for n in roots}
    try:
        have = {c.fingerprint(hashes.SHA256()).hex() for c in _load_pems(text)}
    except ValueError:
        have = set()
    if have == wanted and text == "".join(bundle.read_text(repo, layout.cert_path(n)) or "" for n in roots):
        for cert in _load_pems(text):  # a trust anchor is self-signed, or it is no root
            try:
                cert.verify_directly_issued_by(cert)
            except Exception:  # InvalidSignature, ValueError (issuer is not subject), a key type mismatch
                return f"{layout.TRUST_BUNDLE} holds '{cert.subject.rfc4514_string()[:80]}', which is not a self-signed root"
        return None
    return f"{layout.TRUST_BUNDLE} is not exactly the roots the state records ({len(have - wanted)} other certificate(s), {len(wanted - have)} missing)"


def _walk(chain: list[x509.Certificate], roots: dict[bytes, x509.Certificate]) -> str | None:
    """Each certificate signed by the next; the last by a root in the trust bundle."""
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except Exception as exc:  # InvalidSignature, a mismatched key type...
            return f"chain broken at '{child.subject.rfc4514_string()}': {type(exc).__name__}"
    last = chain[-1]
    root = roots.get(last.issuer.public_bytes())
    if root is None:
        return f"no root in {layout.TRUST_BUNDLE} issued '{last.subject.rfc4514_string()}'"
    try:
        last.verify_directly_issued_by(root)
    except Exception as exc:
        return f"not signed by the trusted root '{root.subject.rfc4514_string()}': {type(exc).__name__}"
    return None


def _der_of(text: str) -> bytes:
    import base64

    body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    return base64.b64decode("".join(body.split()))


def hand_edits(repo: Path, state: State) -> list[str]:
    """Files in out/ whose content is not what the state says it must be (edited by hand).

    Checked, byte for byte: every active certificate (its PEM re-derived from the
    recorded fingerprint), its chain file and, for authorities, its DER file; key files;
    the trust bundle; CRLs (DER and PEM); OCSP responses; delegated responders. Cheap:
    no X.509 parsing, only base64 and hashes."""
    bad: list[str] = []
    pems: dict[str, str] = {}

    def read(rel: str) -> bytes | None:
        try:
            return (repo / rel).read_bytes()
        except OSError:
            return None

    names = sorted(state.active_names())
    for name in names:
        rec = _rec(state, name)
        rel = layout.cert_path(name)
        data = read(rel)
        try:
            der = _der_of(data.decode("ascii")) if data else None
        except (IndexError, ValueError, UnicodeDecodeError):
            der = None
        if data is None or der is None or hashlib.sha256(der).hexdigest() != rec["sha256"] or data.decode("ascii") != bundle.pem_of(der):
            bad.append(rel)
            continue
        pems[name] = data.decode("ascii")
        if rec["kind"] == "authority":
            dpath = layout.der_path(name)
            d = read(dpath)
            if d is not None and d != der:
                bad.append(dpath)
        want = rec.get("key_file_sha256")
        if want and rec.get("key_source") != "csr":
            krel = layout.key_path(name)
            k = read(krel)
            if k is None or hashlib.sha256(k).hexdigest() != want:
                bad.append(krel)
        for r in state.certificates[name]:
            info = r.get("ocsp") or {}
            file = info.get("file")
            if file and info.get("sha256"):
                o = read(file)
                if o is None or hashlib.sha256(o).hexdigest() != info["sha256"]:
                    bad.append(file)
    for name in names:  # chains: the certificate and its intermediates, not the root
        if name not in pems:
            continue
        crel = layout.chain_path(name)
        c = read(crel)
        if c is not None and c.decode("ascii", "replace") != "".join(pems.get(n, "") for n in bundle.chain_names(state, name)):
            bad.append(crel)
    roots = bundle.root_names(state)
    b = read(layout.TRUST_BUNDLE)
    if b is not None and all(n in pems for n in roots) and b.decode("ascii", "replace") != "".join(pems[n] for n in roots):
        bad.append(layout.TRUST_BUNDLE)
    for authority, crl in sorted(state.crls.items()):
        if state.signer_record(authority) is None:
            continue
        rel = layout.crl_path(authority)
        d = read(rel)
        if d is None or hashlib.sha256(d).hexdigest() != crl.get("sha256"):
            bad.append(rel)
            continue
        prel = layout.crl_path(authority, pem=True)
        p = read(prel)
        if p is not None and p.decode("ascii", "replace") != bundle.pem_of(d, "X509 CRL"):
            bad.append(prel)
    if crl_bundle_problem(repo, state):
        bad.append(layout.CRL_BUNDLE)
    for authority in sorted(state.responders):
        resp = state.responder(authority)
        if resp is None or state.active(authority) is None:
            continue
        rel = layout.responder_cert_path(authority)
        d = read(rel)
        try:
            ok = (
                d is not None
                and hashlib.sha256(_der_of(d.decode("ascii"))).hexdigest() == resp["sha256"]
                and d.decode("ascii") == bundle.pem_of(_der_of(d.decode("ascii")))
            )
        except (IndexError, ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            bad.append(rel)
        if resp.get("key_file_sha256"):
            k = read(layout.responder_key_path(authority))
            if k is None or hashlib.sha256(k).hexdigest() != resp["key_file_sha256"]:
                bad.append(layout.responder_key_path(authority))
    return bad
