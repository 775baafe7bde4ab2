"""Revocation that follows from other revocations: a declared key compromise revokes
every unexpired certificate with that key, and a revoked authority everything below it
(``issuer_revoked``), while it keeps signing its CRL and OCSP responses for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from compiler.model.stamp import Stamp
from compiler.plan.codes import Action, ReasonCode
from compiler.plan.model import Change, Plan, Reason, Revocation
from compiler.spec import EffectiveSpec
from compiler.state import Record, State

# the revoke: reasons that say the authority's key is compromised
COMPROMISE = ("key_compromise", "ca_compromise")


# a revoked authority: its name, its record, whether its key is compromised, the invalidity date
_Root = tuple[str, Record, bool, str | None]


def _text(stamp: Stamp | None) -> str | None:
    return str(stamp) if stamp is not None else None


@dataclass(frozen=True)
class RevokedSigner:
    """A revoked authority that keeps signing its CRL and OCSP responses for what it
    signed with its revoked key, until the last of it expires."""

    key_id: str
    compromised: bool  # then: one final CRL and responses, and the key is used no more
    last: Stamp | None  # the latest notAfter of what that key signed (None: nothing)


def declared_compromises(plan: Plan, spec: EffectiveSpec, state: State, now: datetime) -> dict[str, list[Revocation]]:
    """Declared key compromises (``key_compromised:``) not yet carried out: every
    unexpired certificate with that key, by the entry that declared it. Records each in
    ``plan.compromises``."""
    compromised: dict[str, list[Revocation]] = {}
    by_key: dict[str, list[Record]] | None = None
    for name, entry in spec.entries.items():
        if not entry.key_compromised or state.compromise_done(name, entry.key_compromised):
            continue
        rec = state.active(name)
        if rec is None:
            plan.notices.append(f"{name}: key_compromised is set but no certificate is active; nothing to revoke")
            plan.compromises.append({"name": name, "at": entry.key_compromised, "public_key_sha256": None})
            continue
        if by_key is None:
            by_key = {}
            for recs in state.certificates.values():
                for r in recs:
                    by_key.setdefault(r["public_key_sha256"], []).append(r)
        pk = rec["public_key_sha256"]
        hits = [r for r in by_key.get(pk, []) if r["status"] != "revoked" and r["not_after"] > now]
        compromised[name] = [
            {
                "name": r["name"],
                "serial": r["serial"],
                "reason": "key_compromise",
                "invalidity": entry.key_compromised,
                "public_key_sha256": r["public_key_sha256"],
            }
            for r in sorted(hits, key=lambda r: (r["name"], r["serial"]))
        ]
        plan.compromises.append({"name": name, "at": entry.key_compromised, "public_key_sha256": pk})
    return compromised


def revoked_below(plan: Plan, spec: EffectiveSpec, state: State, now: datetime) -> dict[str, RevokedSigner]:
    """Revoking an authority revokes every unexpired certificate below it (issue 13,
    item 6): what it signed with the revoked key, on its CRL, and, for an intermediate
    below, what that one signed, on its own CRL, and so on down. The entries carry
    cACompromise (and the invalidity date) when the authority's key is compromised
    (``revoke: key_compromise`` or ``ca_compromise``, or ``key_compromised`` set), else
    no reason code (``unspecified``, which RFC 5280 §5.3.1 prefers left out).

    Adds the revocations to ``plan.changes`` (one ``revoke`` change per name, reason
    ``issuer_revoked``, or to the change the name already has) and returns the revoked
    authorities that keep signing their CRL and OCSP responses, by name."""
    roots = _revoked_authorities(plan, spec, state, now)
    if not roots:
        return {}
    planned = {(r["name"], r["serial"]) for c in plan.changes for r in c.revokes}
    signing, found, cause = _below(roots, state, now, planned)
    _earlier_certificates(roots, spec, state, now, planned, found, cause)
    _revoke_changes(plan, spec, state, found, cause)
    return signing


def _revoked_authorities(plan: Plan, spec: EffectiveSpec, state: State, now: datetime) -> list[_Root]:
    """The authorities revoked in pki.yaml that have a key to sign with: revoked by this
    plan, or earlier and still signing. Warns about a revoked reason changed in pki.yaml,
    and about a revoked authority removed while what it signed is unexpired."""
    entries = spec.entries
    roots: list[_Root] = []
    for name, entry in entries.items():
        if entry.kind != "authority":
            continue
        rec = state.active(name)
        if entry.revoke and rec is not None:  # revoked by this plan
            roots.append((name, rec, entry.revoke in COMPROMISE or bool(entry.key_compromised), entry.key_compromised))
        elif entry.revoke and rec is None and (rec := state.signer_record(name)) is not None:  # revoked earlier, still signing
            # (revoke: taken out of pki.yaml again is a new authority: a new key, a new CRL)
            was = rec.get("revocation_reason")
            escalated = entry.revoke in COMPROMISE and was not in COMPROMISE
            if entry.revoke != was:
                plan.warnings.append(
                    f"{name} was revoked as {was}; pki.yaml now says {entry.revoke}. A revocation's reason is not changed: "
                    + (
                        "its key is treated as compromised from now on (one final CRL and OCSP responses, then the key is no longer used); "
                        "the entry on its issuer's CRL keeps the recorded reason"
                        if escalated
                        else f"{was} stays recorded"
                    )
                )
            roots.append(
                (
                    name,
                    rec,
                    was in COMPROMISE or escalated or bool(entry.key_compromised),
                    entry.key_compromised or _text(rec.get("invalidity_date")),
                )
            )
    for name in state.revoked_signers():
        if name not in entries and (last := state.last_issued(name, state.certificates[name][0]["key_id"])) and last > now:
            plan.warnings.append(
                f"{name} is revoked and no longer in pki.yaml, but what it signed is unexpired until {last}: its CRL and "
                "OCSP responses are no longer re-signed (keep its entry, with revoke:, until then)"
            )
    return roots


def _below(
    roots: list[_Root], state: State, now: datetime, planned: set[tuple[str, str]]
) -> tuple[dict[str, RevokedSigner], dict[str, list[Revocation]], dict[str, tuple[str, bool]]]:
    """Down from each revoked authority: what it signed with its revoked key (an
    authority below in turn), unexpired and not yet revoked. Returns the authorities that
    keep signing, the revocations by name, and for each name the revoked authority above
    it and whether its key is compromised."""
    by_issuer: dict[str, list[Record]] = {}
    for recs in state.certificates.values():
        for r in recs:
            issuer = r.get("issuer")
            if issuer is not None:
                by_issuer.setdefault(issuer, []).append(r)
    signing: dict[str, RevokedSigner] = {}
    found: dict[str, list[Revocation]] = {}
    cause: dict[str, tuple[str, bool]] = {}
    stack = list(reversed(roots))
    while stack:
        name, rec, comp, invalidity = stack.pop()
        if name in signing:
            continue
        kid = rec["key_id"]
        last: Stamp | None = None
        for r in by_issuer.get(name, []):
            if r.get("issuer_key_id") != kid:
                continue  # signed by an earlier key of the authority: not what is revoked
            if last is None or r["not_after"] > last:
                last = r["not_after"]
            if r["not_after"] <= now:
                continue
            latest = r["kind"] == "authority" and state.certificates[r["name"]][0] is r
            if latest:
                stack.append((r["name"], r, comp, invalidity))
            if r["status"] == "revoked" or (r["name"], r["serial"]) in planned:
                continue
            revoke: Revocation = {
                "name": r["name"],
                "serial": r["serial"],
                "reason": "ca_compromise" if comp else "unspecified",
                "invalidity": invalidity if comp else None,
                "public_key_sha256": r["public_key_sha256"],
            }
            if latest:
                revoke["keeps_signing"] = True
            found.setdefault(r["name"], []).append(revoke)
            cause[r["name"]] = (name, comp)
        signing[name] = RevokedSigner(kid, comp, last)
    return signing, found, cause


def _earlier_certificates(
    roots: list[_Root],
    spec: EffectiveSpec,
    state: State,
    now: datetime,
    planned: set[tuple[str, str]],
    found: dict[str, list[Revocation]],
    cause: dict[str, tuple[str, bool]],
) -> None:
    """The revoked authority's own earlier certificates (a rekey superseded them,
    unexpired): revoked with it, on its issuer's CRL; a verifier must not find an older
    key of it still trusted."""
    for name, _rec, comp, invalidity in roots:
        entry = spec.entries[name]
        if not entry.revoke or state.active(name) is None:
            continue
        for r in state.certificates[name][1:]:
            if r["status"] == "revoked" or r["not_after"] <= now or (r["name"], r["serial"]) in planned:
                continue
            found.setdefault(name, []).append(
                {
                    "name": name,
                    "serial": r["serial"],
                    "reason": entry.revoke,
                    "invalidity": invalidity if comp else None,
                    "public_key_sha256": r["public_key_sha256"],
                }
            )
            cause[name] = (name, comp)


def _revoke_changes(
    plan: Plan, spec: EffectiveSpec, state: State, found: dict[str, list[Revocation]], cause: dict[str, tuple[str, bool]]
) -> None:
    """One ``revoke`` change per name (``issuer_revoked``), or the revocations added to
    the change the name already has."""
    by_name = {c.name: c for c in plan.changes}
    for n in found:
        issuer, comp = cause[n]
        revokes = sorted(found[n], key=lambda r: r["serial"])
        why = Reason(
            ReasonCode.ISSUER_REVOKED,
            f"issued by {issuer}, which is revoked: {len(revokes)} unexpired certificate(s) revoked with it"
            + (" (cACompromise: its key is compromised)" if comp else " (no reason code)"),
        )
        c = by_name.get(n)
        if c is not None:  # e.g. moved to a new issuer: the one signed by the revoked authority is revoked
            c.revokes.extend(revokes)
            c.reasons.append(why)
            continue
        recs = state.certificates[n]
        rec = recs[0]
        entry = spec.entries.get(n)
        c = Change(
            n,
            rec["kind"],
            Action.REVOKE,
            [why],
            None,
            rec.get("issuer"),
            entry.key_type if entry else rec["spec"].get("key"),
            revokes[0]["serial"],
            revokes=revokes,
        )
        plan.changes.append(c)
        by_name[n] = c
