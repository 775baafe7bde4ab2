"""Publishing: delegated OCSP responders, then CRLs, then OCSP responses, each signed
and yielded as a journal step (folded into the state before the next is made)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from compiler import layout
from compiler.apply import cleanup
from compiler.apply.bundle import pem, read_text
from compiler.apply.context import Context, Steps
from compiler.apply.issue import hex_serial
from compiler.apply.signers import authority_signer
from compiler.keys import keystore
from compiler.keys.keystore import KeyHandle
from compiler.model.errors import fail
from compiler.model.keytype import public_key_sha256
from compiler.model.stamp import Stamp
from compiler.plan import PublicationKind
from compiler.state import CertRecord, CrlInfo, CrlOp, OcspInfo, OcspOp, ResponderOp, ResponderRetiredOp, parse_ts
from compiler.state.revocation import crl_entries, revoked_by_issuer
from compiler.x509.build import BACKDATE, IssuerRef, Revoked, ocsp_response, responder_certificate
from compiler.x509.build import crl as build_crl


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def publish(ctx: Context) -> Steps:
    """Delegated responders, then CRLs, then OCSP responses (the planned renames before
    them, the planned removals of expired ones after), then the planned removals of CRLs."""
    responders: dict[str, tuple[x509.Certificate, KeyHandle]] = {}
    yield from _responders(ctx, responders)
    yield from _crls(ctx)
    if ctx.spec.publish.ocsp:
        yield from cleanup.responses_renamed(ctx)
        yield from _ocsp(ctx, responders)
        yield from cleanup.responses_removed(ctx)
    else:
        yield from _ocsp_off(ctx)
    yield from cleanup.crls_removed(ctx)


def _responders(ctx: Context, made: dict[str, tuple[x509.Certificate, KeyHandle]]) -> Steps:
    """A new delegated OCSP responder (certificate and key) for each authority planned."""
    plan, spec, state, store, now, at = ctx.plan, ctx.spec, ctx.state, ctx.store, ctx.now, ctx.at
    for pub in plan.responders:
        a = pub.name
        entry = spec.entries[a]
        assert entry.ca is not None  # only authorities have responders
        handle = keystore.generate(entry.key_type)
        issuer_ref = IssuerRef.from_certificate(ctx.certs.get(a), entry.key_type)
        builder = responder_certificate(
            entry, entry.spec["subject"], handle.public_key(), issuer_ref, x509.random_serial_number(), now, entry.ca.responder_lifetime
        )
        cert = keystore.sign(builder, authority_signer(a, store, ctx.handles))
        rel = layout.responder_key_path(a)
        key_doc = store.seal(f"{a} OCSP responder", handle, rel)
        store.remember(rel, handle)
        made[a] = (cert, handle)
        authority = state.active(a)
        assert authority is not None  # the planner plans responders for active authorities only
        record: CertRecord = {
            "serial": hex_serial(cert.serial_number),
            "status": "active",
            "subject": cert.subject.rfc4514_string(),
            "not_before": Stamp.of(cert.not_valid_before_utc),
            "not_after": Stamp.of(cert.not_valid_after_utc),
            "issuer_key_id": authority["key_id"],
            "public_key_sha256": public_key_sha256(cert.public_key()),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
            "issued_at": Stamp.of(ctx.now),
            "key_file_sha256": hashlib.sha256(key_doc.encode()).hexdigest(),
            "key_rules": [plan.rule_of[rel]],
        }
        rules = {plan.rule_of[rel]: plan.rules[plan.rule_of[rel]]}
        yield ResponderOp(authority=a, record=record, cert_pem=pem(cert), key_doc=key_doc, rules=rules, at=at)
        ctx.result.responders.append(a)


def _crls(ctx: Context) -> Steps:
    """A CRL for each authority planned: every revoked certificate under its current key."""
    spec, state, now = ctx.spec, ctx.state, ctx.now
    for pub in ctx.plan.crls:
        a = pub.name
        entry = spec.entries[a]
        assert entry.ca is not None  # only authorities sign CRLs
        arec = state.signer_record(a)  # a revoked authority signs with its revoked record's key
        assert arec is not None  # the planner plans CRLs for signing authorities only
        issuer_ref = IssuerRef.from_certificate(ctx.certs.get(a), entry.key_type)
        listed = crl_entries(revoked_by_issuer(state).get(a, []), arec["key_id"])
        revoked = [
            Revoked(
                int(r["serial"], 16),
                r["revoked_at"],
                r["revocation_reason"],
                r["invalidity_date"] if r.get("invalidity_date") else None,
            )
            for r in listed
        ]
        previous = state.crls.get(a)
        number = (previous["number"] + 1) if previous else 1
        # thisUpdate a minute back (a verifier a little behind must not find it "not yet
        # valid"); nextUpdate a full crl_lifetime from the signing (or a revoked authority's
        # final date), as the refresh expects
        this_update = now - BACKDATE
        next_update = parse_ts(pub.until) if pub.until else now + entry.ca.crl_lifetime
        crl_obj = keystore.sign(
            build_crl(issuer_ref, number, revoked, this_update, next_update), authority_signer(a, ctx.store, ctx.handles)
        )
        der = crl_obj.public_bytes(serialization.Encoding.DER)
        info: CrlInfo = {
            "number": number,
            "this_update": Stamp.of(this_update),
            "next_update": Stamp.of(next_update),
            "key_id": arec["key_id"],
            "refresh_at": Stamp.of(next_update - entry.ca.crl_renew_before),
            "serials": sorted(r["serial"] for r in listed),
            "names": sorted({r["name"] for r in listed}),
            "sha256": hashlib.sha256(der).hexdigest(),
            "bundled": True,  # out/trust/crls.pem holds it (written at the end of this apply)
        }
        yield CrlOp(authority=a, info=info, der=_b64(der), at=ctx.at)
        ctx.result.crls.append(a)


def _ocsp(ctx: Context, responders: dict[str, tuple[x509.Certificate, KeyHandle]]) -> Steps:
    """An OCSP response for each certificate planned, signed by its authority or its
    delegated responder."""
    spec, state, now = ctx.spec, ctx.state, ctx.now
    ocsp_dir = spec.publish.ocsp_dir
    for pub in ctx.plan.ocsp:
        a = pub.issuer
        assert a is not None  # an OCSP publication names its issuer
        ca = spec.entries[a].ca
        assert ca is not None
        recs = state.certificates[pub.name]
        rec = recs[0] if pub.serial is None else next(r for r in recs if r["serial"] == pub.serial)
        issuer_cert = ctx.certs.get(a)
        issuer_ref = IssuerRef(issuer_cert.subject, bytes.fromhex(rec["issuer_key_id"]), spec.entries[a].key_type)
        revoked = None
        if rec["status"] == "revoked":
            revoked = Revoked(int(rec["serial"], 16), rec["revoked_at"], rec["revocation_reason"])
        if ca.ocsp_signer == "self" or pub.signer == "self":
            signer_cert, signer, delegated = issuer_cert, authority_signer(a, ctx.store, ctx.handles), False
        else:
            made = responders.get(a)
            signer_cert = made[0] if made else _responder_cert(ctx.repo, a)
            signer = made[1] if made else ctx.store.load(a, layout.responder_key_path(a))
            delegated = True
        this_update = now - BACKDATE  # as for CRLs
        next_update = parse_ts(pub.until) if pub.until else now + ca.ocsp_lifetime
        response = keystore.sign(
            ocsp_response(issuer_ref, int(rec["serial"], 16), revoked, this_update, next_update, signer_cert, delegated), signer
        )
        der = response.public_bytes(serialization.Encoding.DER)
        latest = recs[0]["serial"] == rec["serial"]
        info: OcspInfo = {
            "status": "revoked" if revoked else "good",
            "signer": pub.signer or ca.ocsp_signer,
            "this_update": Stamp.of(this_update),
            "next_update": Stamp.of(next_update),
            "file": layout.ocsp_path(ocsp_dir, pub.name, None if latest else rec["serial"]),
            "sha256": hashlib.sha256(der).hexdigest(),
        }
        previous = (rec.get("ocsp") or {}).get("file")
        # publish.ocsp_dir moved: the old file goes
        removed = previous if previous and previous != info["file"] and not previous.startswith(ocsp_dir + "/") else None
        yield OcspOp(name=pub.name, serial=rec["serial"], info=info, der=_b64(der), removed=removed, at=ctx.at)
        ctx.result.ocsp += 1


def _ocsp_off(ctx: Context) -> Steps:
    """publish.ocsp is false: remove every published response (the state keeps its last
    record, with no file) and retire the delegated responders (certificate and key)."""
    at, result = ctx.at, ctx.result
    for pub in ctx.plan.ocsp_off:
        if pub.kind == PublicationKind.RESPONDER:
            yield ResponderRetiredOp(authority=pub.name, at=at)
            result.responders_retired.append(pub.name)
            continue
        rec = next((r for r in ctx.state.certificates.get(pub.name, []) if r["serial"] == pub.serial), None)
        info = (rec or {}).get("ocsp") or {}
        if not info.get("file"):
            continue
        assert pub.serial is not None  # a response to remove names its certificate's serial
        gone: OcspInfo = {**info, "file": None, "removed_at": Stamp.of(ctx.now), "removed_because": "ocsp_off"}
        yield OcspOp(name=pub.name, serial=pub.serial, info=gone, removed=info["file"], at=at)
        result.ocsp_removed += 1


def _responder_cert(repo: Path, authority: str) -> x509.Certificate:
    text = read_text(repo, layout.responder_cert_path(authority))
    if text is None:
        raise fail(
            layout.responder_cert_path(authority), f"the OCSP responder certificate of '{authority}' is missing", "restore it from git"
        )
    return x509.load_pem_x509_certificate(text.encode())
