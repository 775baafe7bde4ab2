"""Signing certificates: one change of the plan becomes a signed certificate, its state
record and its journal step, then the revocations the change brings."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from compiler import layout
from compiler.apply.bundle import pem
from compiler.apply.context import Context, Steps
from compiler.apply.signers import authority_signer
from compiler.keys import keystore
from compiler.keys.keystore import KeyHandle
from compiler.model.errors import fail
from compiler.model.keytype import key_id as key_id_of
from compiler.model.keytype import public_key_sha256
from compiler.model.stamp import Stamp
from compiler.plan import Change, KeyDisposition
from compiler.spec import Entry
from compiler.spec.sops_rules import rule_digest
from compiler.state import IssuedOp, Record, RevokedOp, parse_ts, ts
from compiler.x509.build import BACKDATE, IssuerRef, build
from compiler.x509.csr import CsrError, load_csr


def hex_serial(value: bytes | int) -> str:
    """A serial or key identifier as the state records it: lower-case hex, even length."""
    if isinstance(value, int):
        h = format(value, "x")
        return h if len(h) % 2 == 0 else "0" + h
    return value.hex()


def _subject_string(cert: x509.Certificate, spec_subject: list[list[str]], known: dict[tuple[tuple[str, ...], ...], str]) -> str:
    """RFC 4514 form of the subject, once per distinct subject in ``known`` (the apply's:
    many leaves share one)."""
    key = tuple(tuple(a) for a in spec_subject)
    if key not in known:
        known[key] = cert.subject.rfc4514_string()
    return known[key]


def make_record(
    name: str,
    entry: Entry,
    cert: x509.Certificate,
    issuer_rec: Record | None,
    action: str,
    reasons: list[str],
    key_source: str,
    now: datetime,
    public_sha256: str | None = None,
    key_id: bytes | None = None,
    issuer_key_id: bytes | None = None,
    subjects: dict[tuple[tuple[str, ...], ...], str] | None = None,
) -> Record:
    """The state's record of a certificate just signed."""
    ski = key_id or cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    aki = issuer_key_id or cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None  # pkic writes the key identifier into every certificate
    return {
        "name": name,
        "kind": entry.kind,
        "status": "active",
        "serial": hex_serial(cert.serial_number),
        "subject": _subject_string(cert, entry.spec["subject"], {} if subjects is None else subjects),
        "issuer": entry.issuer,
        "issuer_serial": issuer_rec["serial"] if issuer_rec else None,
        "issuer_key_id": hex_serial(aki),
        "key_id": hex_serial(ski),
        "key_type": entry.key_type,
        "key_source": key_source,
        "public_key_sha256": public_sha256 or public_key_sha256(cert.public_key()),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "not_before": Stamp.of(cert.not_valid_before_utc),
        "not_after": Stamp.of(cert.not_valid_after_utc),
        "issued_at": Stamp.of(now),
        "action": action,
        "reasons": reasons,
        "spec": entry.spec,
        "spec_digest": entry.digest,
    }


def sign(ctx: Context, change: Change) -> Steps:
    """Sign one change in this process: a new key, a CSR's or the kept one."""
    name = change.name
    entry = ctx.spec.entries[name]
    handle: KeyHandle | None = None
    public: CertificatePublicKeyTypes
    if change.key == KeyDisposition.NEW:
        handle = keystore.generate(entry.key_type)
        public = handle.public_key()
    elif change.key == KeyDisposition.EXTERNAL:
        assert entry.csr_path is not None  # an external key comes from a CSR
        try:
            public = load_csr(ctx.repo / entry.csr_path, ctx.repo).public_key
        except CsrError as exc:
            raise fail(entry.csr_path, str(exc)) from None
    else:
        public = ctx.certs.get(name).public_key()
        active = ctx.state.active(name)
        if active is None or public_key_sha256(public) != active["public_key_sha256"]:
            raise fail(layout.cert_path(name), f"the certificate of '{name}' does not match the state", "restore out/ from git")
    issuer_ref: IssuerRef | None
    if entry.issuer is None:
        signer = handle if handle is not None else ctx.store.load(name)
        issuer_ref = None
    else:
        signer = authority_signer(entry.issuer, ctx.store, ctx.handles)
        issuer_ref = IssuerRef.from_certificate(ctx.certs.get(entry.issuer), ctx.spec.entries[entry.issuer].key_type)
    cert = keystore.sign(build(entry, public, issuer_ref, x509.random_serial_number(), ctx.now), signer)
    key_doc = ctx.store.seal(name, handle) if handle is not None else None
    if handle is not None and entry.kind == "authority":
        ctx.handles[name] = handle
    source = "generated" if handle else ("csr" if change.key == "external" else "kept")
    return issued(ctx, change, cert, public, issuer_ref, key_doc, source)


def issued(
    ctx: Context,
    change: Change,
    cert: x509.Certificate,
    public: CertificatePublicKeyTypes,
    issuer_ref: IssuerRef | None,
    key_doc: str | None,
    source: str,
) -> Steps:
    """Record a signed certificate: its state record and journal step, then its files."""
    name = change.name
    entry = ctx.spec.entries[name]
    state = ctx.state
    issuer_rec = state.active(entry.issuer) if entry.issuer else None
    key_id = key_id_of(public)
    issuer_key_id = issuer_ref.key_id if issuer_ref else key_id
    record = make_record(
        name,
        entry,
        cert,
        issuer_rec,
        change.action,
        [r.code for r in change.reasons],
        source,
        ctx.now,
        public_key_sha256(public),
        key_id,
        issuer_key_id,
        ctx.subjects,
    )
    rules = None
    if key_doc is not None:
        record["key_file_sha256"] = hashlib.sha256(key_doc.encode()).hexdigest()
        rule = ctx.store.planned[layout.key_path(name)]
        digest = rule_digest(rule)
        record["key_rules"] = [digest]
        rules = {digest: rule}
    elif change.key == KeyDisposition.KEEP and (prev := state.active(name)):
        if prev.get("key_file_sha256"):
            record["key_file_sha256"] = prev["key_file_sha256"]
        if prev.get("key_rules"):
            record["key_rules"] = list(prev["key_rules"])
    der = cert.public_bytes(serialization.Encoding.DER) if entry.kind == "authority" else None  # authorities: a .der too
    cert_pem = pem(cert)
    op = IssuedOp(
        name=name,
        record=record,
        cert_pem=cert_pem,
        key_doc=key_doc,
        rules=rules,
        remove_key=change.key == "external",  # the key lives on its host; an old generated one goes
        cert_der=base64.b64encode(der).decode("ascii") if der is not None else None,
        at=ctx.at,
    )
    if entry.kind == "authority":
        ctx.certs.put(name, cert)
    else:
        ctx.certs.put_pem(name, cert_pem)
    yield op
    ctx.result.issued.append(name)
    yield from revocations(ctx, change, remove_own_files=False)


def revocations(ctx: Context, change: Change, remove_own_files: bool) -> Steps:
    """The revocations a change brings (its own files go only when the change is the
    revocation of the entry itself)."""
    # a revocation takes effect a minute before the apply, like thisUpdate: the CRL and
    # OCSP responses signed now list it at a date no later than their own thisUpdate,
    # and every later one at the same date
    revoked_at = ts(parse_ts(ctx.at) - BACKDATE)
    certificates = ctx.state.certificates
    for r in change.revokes:
        yield RevokedOp(
            name=r["name"],
            serial=r["serial"],
            reason=r["reason"],
            invalidity=r.get("invalidity"),
            # the files are the latest record's: an earlier certificate revoked with it takes none along
            remove_files=(
                remove_own_files
                and r["name"] == change.name
                and not r.get("keeps_signing")
                and bool(certificates.get(r["name"]))
                and certificates[r["name"]][0]["serial"] == r["serial"]
            ),
            revoked_at=revoked_at,
            # an authority: its certificate and key stay, to sign its CRL and OCSP on
            keeps_signing=bool(r.get("keeps_signing")),
            at=ctx.at,
        )
