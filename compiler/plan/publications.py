"""What pkic (re-)signs besides certificates: CRLs, delegated OCSP responder
certificates and OCSP responses, each with its reasons (``codes.PublicationCode``);
and, with ``publish.ocsp`` false, the responses and responders that go.

A revoked authority signs on with its own key while what it signed is unexpired
(``revoked_authority``); for a compromised key, once more (``final``).
"""

from __future__ import annotations

from datetime import datetime

from compiler.model.durations import responder_renew_before
from compiler.plan.codes import Action, KeyDisposition, PublicationCode, PublicationKind, ReasonCode
from compiler.plan.model import Change, Plan, Publication, Reason
from compiler.plan.revocation import RevokedSigner
from compiler.spec import CaSettings, EffectiveSpec
from compiler.state import CrlInfo, Record, State, ts
from compiler.state.revocation import crl_entries, crl_status, refresh_point, revoked_by_issuer

Reasons = list[Reason[PublicationCode]]


def _newly_revoked(crl: CrlInfo, revoked: list[Record], key_id: str | None) -> Reasons:
    """Certificates revoked (signed with ``key_id``) that the CRL does not list yet."""
    listed = set(crl.get("serials", []))
    added = [r for r in crl_entries(revoked, key_id) if r["serial"] not in listed]
    if not added:
        return []
    return [Reason(PublicationCode.REVOCATIONS, f"{len(added)} newly revoked: " + ", ".join(sorted({r["name"] for r in added})))]


def _crl_due(crl: CrlInfo, ca: CaSettings, now: datetime) -> Reasons:
    """Past its next update, or inside its refresh window (crl_renew_before)."""
    status = crl_status(crl, now, ca.crl_renew_before)
    if status == "expired":
        return [Reason(PublicationCode.EXPIRED, f"the CRL expired at {crl['next_update']}")]
    if status == "due":
        return [Reason(PublicationCode.DUE, f"next update {crl['next_update']}: inside the refresh window")]
    return []


def crl_reasons(crl: CrlInfo | None, ca: CaSettings, kid: str | None, revoked: list[Record], now: datetime) -> Reasons:
    """The CRL of an authority in use: none yet, a new key (``kid`` None: made by this
    plan), new revocations, expired or due."""
    if crl is None:
        return [Reason(PublicationCode.NEW, "no CRL yet")]
    reasons: Reasons = []
    if kid is None or crl.get("key_id") != kid:
        reasons.append(Reason(PublicationCode.AUTHORITY_REKEYED, "the authority has a new key"))
    reasons += _newly_revoked(crl, revoked, crl.get("key_id"))
    return reasons + _crl_due(crl, ca, now)


def responder_reasons(resp: Record | None, ca: CaSettings, kid: str | None, change: Change | None, now: datetime) -> Reasons:
    """The delegated OCSP responder certificate: none yet, its authority has a new key or
    subject, expired, or within max(a third of its lifetime, an OCSP lifetime) of it."""
    if resp is None:
        return [Reason(PublicationCode.NEW, "no responder certificate yet")]
    reasons: Reasons = []
    if kid is None or resp.get("issuer_key_id") != kid:
        reasons.append(Reason(PublicationCode.AUTHORITY_REKEYED, "the authority has a new key"))
    elif change is not None and any(r.code == ReasonCode.SUBJECT_CHANGED for r in change.reasons):
        reasons.append(Reason(PublicationCode.AUTHORITY_REISSUED, "the authority has a new subject"))
    not_after = resp["not_after"]
    window = responder_renew_before(ca.responder_lifetime, ca.ocsp_lifetime)
    if now >= not_after:
        reasons.append(Reason(PublicationCode.EXPIRED, f"expired at {resp['not_after']}"))
    elif now >= not_after - window:
        reasons.append(Reason(PublicationCode.DUE, f"expires {resp['not_after']}"))
    return reasons


def ocsp_reasons(r: Record, status: str, ca: CaSettings, ocsp_dir: str, now: datetime) -> Reasons:
    """The OCSP response of an unexpired certificate: none (or none published), in
    another directory, its status or signer changed, or due (ocsp_renew_before)."""
    info = r.get("ocsp")
    if info is None or ("file" in info and info["file"] is None):  # never signed, or removed while OCSP was off
        return [Reason(PublicationCode.NEW, "no response yet" if info is None else "no response published")]
    file = info.get("file")
    if file and not file.startswith(ocsp_dir + "/"):
        return [Reason(PublicationCode.DIR_CHANGED, f"moves to {ocsp_dir}/")]
    reasons: Reasons = []
    if info.get("status") != status:
        reasons.append(Reason(PublicationCode.STATUS_CHANGED, f"now {status}"))
    if info.get("signer") != ca.ocsp_signer:
        reasons.append(Reason(PublicationCode.SIGNER_CHANGED, f"signed by {ca.ocsp_signer} now"))
    if now >= refresh_point(info, ca.ocsp_renew_before):
        reasons.append(Reason(PublicationCode.DUE, f"next update {info['next_update']}"))
    return reasons


def _overwritten(state: State) -> set[tuple[str, str]]:
    """(name, serial) of each older certificate whose recorded response file a newer
    certificate of its name records too: the file holds the newer one's response (an
    apply killed after it signed the new response, before it renamed the old one)."""
    out: set[tuple[str, str]] = set()
    for name, recs in state.certificates.items():
        if len(recs) > 1:
            files = {(recs[0].get("ocsp") or {}).get("file")}
            for r in recs[1:]:
                file = (r.get("ocsp") or {}).get("file")
                if file and file in files:
                    out.add((name, r["serial"]))
                files.add(file)
    return out


def plan_publications(
    plan: Plan,
    spec: EffectiveSpec,
    state: State,
    now: datetime,
    changes: dict[str, Change],
    unusable: set[str],
    signing: dict[str, RevokedSigner] | None = None,
) -> None:
    """CRLs, delegated OCSP responders and OCSP responses that must be (re-)signed;
    ``signing``: revoked authorities that keep signing for what they issued (see
    revocation.revoked_below)."""
    signing = signing or {}
    entries = spec.entries
    revoked_now = {(r["name"], r["serial"]) for c in plan.changes for r in c.revokes}
    revoked_by = revoked_by_issuer(state, revoked_now)
    live = [r for recs in state.certificates.values() for r in recs if r.get("issuer") is not None and r["not_after"] > now]

    def key_after(name: str) -> str | None:
        """The key id an authority signs with after this plan (None: a new key)."""
        c = changes.get(name)
        if c is not None and c.action != Action.REVOKE and c.key == KeyDisposition.NEW:
            return None
        rec = state.active(name)
        return rec["key_id"] if rec else None

    for name, entry in entries.items():
        if entry.kind != "authority" or entry.ca is None:
            continue
        if name in signing:
            _revoked_crl(plan, name, entry.ca, state, now, signing[name], revoked_by)
            continue
        if name in unusable:
            continue
        kid = key_after(name)
        reasons = crl_reasons(state.crls.get(name), entry.ca, kid, revoked_by.get(name, []), now)
        if reasons:
            plan.crls.append(Publication(PublicationKind.CRL, name, reasons))
        if spec.publish.ocsp and entry.ca.ocsp_signer == "delegated":
            reasons = responder_reasons(state.responder(name), entry.ca, kid, changes.get(name), now)
            if reasons:
                plan.responders.append(Publication(PublicationKind.RESPONDER, name, reasons))

    if not spec.publish.ocsp:
        plan_ocsp_off(plan, state)
        return
    # OCSP responses: for the certificates this plan issues, and every unexpired one
    for c in plan.changes:
        if c.action != Action.REVOKE and c.issuer is not None and c.issuer not in unusable:
            plan.ocsp.append(Publication(PublicationKind.OCSP, c.name, [Reason(PublicationCode.NEW, "new certificate")], c.issuer, None))
    overwritten = _overwritten(state)
    for r in sorted(live, key=lambda r: (r["name"], r["serial"])):
        issuer = r["issuer"]
        if issuer not in entries or entries[issuer].kind != "authority":
            continue
        ca = entries[issuer].ca
        assert ca is not None  # an authority has its settings
        held = signing.get(issuer)
        if held is not None:
            if r.get("issuer_key_id") == held.key_id:
                _revoked_ocsp(plan, r, ca, now, held, revoked_now)
            continue
        if issuer in unusable:
            continue
        if r.get("issuer_key_id") != key_after(issuer):
            continue  # signed by a key the authority no longer has: nobody can vouch for it
        status = "revoked" if (r["status"] == "revoked" or (r["name"], r["serial"]) in revoked_now) else "good"
        reasons = ocsp_reasons(r, status, ca, spec.publish.ocsp_dir, now)
        if (r["name"], r["serial"]) in overwritten:
            reasons = [Reason(PublicationCode.NEW, "its published response was replaced by a newer certificate's (an interrupted apply)")]
        if reasons:
            plan.ocsp.append(Publication(PublicationKind.OCSP, r["name"], reasons, issuer, r["serial"]))


def _revoked_crl(
    plan: Plan, name: str, ca: CaSettings, state: State, now: datetime, held: RevokedSigner, revoked_by: dict[str, list[Record]]
) -> None:
    """The CRL of a revoked authority: re-signed (with the revoked key) while anything it
    signed with that key is unexpired; for a compromised key, signed once more, valid
    until after the last of it expires (no further use of the key)."""
    last = held.last
    if last is None or last <= now:
        return  # nothing it signed is unexpired: its last CRL is its final one
    crl = state.crls.get(name)
    kid = held.key_id
    until = ts(max(now, last) + ca.crl_lifetime) if held.compromised else None
    reasons: Reasons = []
    if crl is None:
        reasons.append(Reason(PublicationCode.NEW, "no CRL yet"))
    else:
        reasons += _newly_revoked(crl, revoked_by.get(name, []), kid)
        if crl.get("key_id") != kid:
            reasons.append(Reason(PublicationCode.AUTHORITY_REKEYED, "signed with another key of the authority"))
        if not held.compromised:
            reasons += _crl_due(crl, ca, now)
        elif crl["next_update"] < last and not reasons:
            reasons.append(
                Reason(PublicationCode.FINAL, f"valid until {crl['next_update']}, before the last certificate it signed expires ({last})")
            )
    if reasons:
        reasons.append(
            Reason(
                PublicationCode.REVOKED_AUTHORITY,
                f"{name} is revoked: "
                + (
                    f"its key is compromised: this CRL is its last, valid until {until}, after the last certificate it signed expires ({last})"
                    if held.compromised
                    else f"it re-signs its CRL until the last certificate it signed expires ({last})"
                ),
            )
        )
        plan.crls.append(Publication(PublicationKind.CRL, name, reasons, until=until))


def _revoked_ocsp(plan: Plan, r: Record, ca: CaSettings, now: datetime, held: RevokedSigner, revoked_now: set[tuple[str, str]]) -> None:
    """The OCSP response of a certificate below a revoked authority: revoked, signed by the
    authority's own key (its delegated responder is not renewed under a revoked
    certificate); for a compromised key, once, valid until the certificate expires."""
    info = r.get("ocsp")
    status = "revoked" if (r["status"] == "revoked" or (r["name"], r["serial"]) in revoked_now) else "good"
    until = ts(max(now + ca.ocsp_lifetime, r["not_after"])) if held.compromised else None
    reasons: Reasons = []
    if info is None:
        reasons.append(Reason(PublicationCode.NEW, "no response yet"))
    else:
        if info.get("status") != status:
            reasons.append(Reason(PublicationCode.STATUS_CHANGED, f"now {status}"))
        if info.get("signer") != "self":
            reasons.append(Reason(PublicationCode.SIGNER_CHANGED, "signed by the revoked authority itself now"))
        next_update = info["next_update"]
        if held.compromised:
            if next_update < r["not_after"] and not reasons:
                reasons.append(Reason(PublicationCode.FINAL, f"its issuer's key is compromised: one last response, valid until {until}"))
        elif now >= refresh_point(info, ca.ocsp_renew_before):
            reasons.append(Reason(PublicationCode.DUE, f"next update {info['next_update']}"))
    if reasons:
        plan.ocsp.append(Publication(PublicationKind.OCSP, r["name"], reasons, r["issuer"], r["serial"], signer="self", until=until))


def plan_ocsp_off(plan: Plan, state: State) -> None:
    """publish.ocsp is false: every published response goes (a stale "good" would outlive
    a revocation), and every delegated responder is retired (its certificate and key
    leave out/; made only to sign responses, it would otherwise sit unused, unrenewed,
    and be reported as expiring)."""
    why = [Reason(PublicationCode.OCSP_OFF, "publish.ocsp is false")]
    for a in sorted(state.responders):
        if state.responder(a) is not None:
            plan.ocsp_off.append(Publication(PublicationKind.RESPONDER, a, why))
    for name in sorted(state.certificates):
        for r in state.certificates[name]:
            info = r.get("ocsp")
            if isinstance(info, dict) and info.get("file"):
                plan.ocsp_off.append(Publication(PublicationKind.OCSP, name, why, r.get("issuer"), r["serial"]))
