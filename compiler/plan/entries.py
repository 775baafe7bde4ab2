"""Does this entry need a new certificate, and why? One small named check per family of
reason codes (``codes.ReasonCode``), in the manner of cert-manager's reissue checks, but
each returns every reason that applies rather than the first.

A spec-driven reason (the spec, the key or the issuer changed) makes a ``reissue``; with
none, a time-driven one (expired, renewal due) makes a ``renew``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from compiler.model.bounded import quote
from compiler.model.errors import Diagnostic, PkicError
from compiler.plan.codes import Action, KeyDisposition, ReasonCode
from compiler.plan.model import Change, Plan, Reason, Revocation
from compiler.spec import EffectiveSpec, Entry
from compiler.spec.effective import san_lists
from compiler.state import Record, State, ts

# what a certificate is built from, in the order the reasons are listed, with the code a
# change of it gives
SPEC_FIELDS: dict[str, ReasonCode] = {
    "kind": ReasonCode.KIND_CHANGED,
    "issuer": ReasonCode.ISSUER_CHANGED,
    "subject": ReasonCode.SUBJECT_CHANGED,
    "key": ReasonCode.KEY_CHANGED,
    "profile": ReasonCode.PROFILE_CHANGED,
    "dns": ReasonCode.DNS_CHANGED,
    "ip": ReasonCode.IP_CHANGED,
    "uri": ReasonCode.URI_CHANGED,
    "email": ReasonCode.EMAIL_CHANGED,
    "lifetime": ReasonCode.LIFETIME_CHANGED,
    "path_length": ReasonCode.PATH_LENGTH_CHANGED,
    "name_constraints": ReasonCode.NAME_CONSTRAINTS_CHANGED,
    "ocsp_signer": ReasonCode.OCSP_SIGNER_CHANGED,
    "crl_url": ReasonCode.CRL_URL_CHANGED,
    "ocsp_url": ReasonCode.OCSP_URL_CHANGED,
    "ca_issuers_url": ReasonCode.CA_ISSUERS_URL_CHANGED,
}
SAN_FIELDS = ("dns", "ip", "uri", "email")
# reasons that need a new key
KEY_REASONS = (ReasonCode.KEY_CHANGED, ReasonCode.REKEY_REQUESTED, ReasonCode.KEY_COMPROMISED)


def _fmt(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ", ".join(f"{k}={v}" for k, v in value)  # subject
    if value is None or value == []:
        return "none"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def spec_reasons(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Reason[ReasonCode]]:
    """The effective spec differs from the one the certificate was built from:
    ``<field>_changed``, ``csr_key_changed``, ``rekey_requested``."""
    if old == new:  # (one comparison in C: nearly every entry of a plan)
        return []
    reasons: list[Reason[ReasonCode]] = []
    for f, code in SPEC_FIELDS.items():
        a, b = old.get(f), new.get(f)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and f in SAN_FIELDS:
            added = [x for x in b if x not in a]
            removed = [x for x in a if x not in b]
            parts = [f"+{x}" for x in added] + [f"-{x}" for x in removed]
            reasons.append(Reason(code, f"{f}: {' '.join(parts)}"))
        else:
            reasons.append(Reason(code, f"{f}: {_fmt(a)} -> {_fmt(b)}"))
    if old.get("csr_key") != new.get("csr_key"):
        if old.get("csr_key") and new.get("csr_key"):
            reasons.append(Reason(ReasonCode.CSR_KEY_CHANGED, "CSR key changed"))
        elif new.get("csr_key"):
            reasons.append(Reason(ReasonCode.CSR_KEY_CHANGED, "now issued from a CSR: the key stays on its host"))
        else:
            reasons.append(Reason(ReasonCode.CSR_KEY_CHANGED, "no longer from a CSR: pkic makes the key"))
    if old.get("rekey", 0) != new.get("rekey", 0):
        reasons.append(Reason(ReasonCode.REKEY_REQUESTED, f"rekey: {old.get('rekey', 0)} -> {new.get('rekey', 0)}"))
    return reasons


def compromise_reasons(
    entry: Entry, rec: Record, compromised_keys: set[str], compromised: dict[str, list[Revocation]]
) -> list[Reason[ReasonCode]]:
    """Its key is compromised: declared now (``compromised``: see
    revocation.declared_compromises) or recorded earlier (``compromised_keys``, the
    state's): ``key_compromised``."""
    if entry.name in compromised:
        n = len(compromised[entry.name])
        return [Reason(ReasonCode.KEY_COMPROMISED, f"key compromised on {entry.key_compromised}: {n} certificate(s) with it are revoked")]
    if rec["public_key_sha256"] in compromised_keys:
        return [Reason(ReasonCode.KEY_COMPROMISED, "its key was declared compromised")]
    return []


def issuer_reasons(entry: Entry, rec: Record, state: State, issuer_change: Change | None) -> list[Reason[ReasonCode]]:
    """Its issuer gets a new key or subject in this plan (``issuer_reissued``), or already
    signs with a key other than the one that signed it (``issuer_key_mismatch``)."""
    if entry.issuer is None:
        return []
    if issuer_change is not None and (
        issuer_change.key == KeyDisposition.NEW or any(r.code == ReasonCode.SUBJECT_CHANGED for r in issuer_change.reasons)
    ):
        what = "a new key" if issuer_change.key == KeyDisposition.NEW else "a new subject"
        return [Reason(ReasonCode.ISSUER_REISSUED, f"issuer {entry.issuer} is {issuer_change.action}d with {what}")]
    issuer_rec = state.active(entry.issuer)
    if issuer_rec is not None and rec.get("issuer_key_id") != issuer_rec.get("key_id"):
        return [Reason(ReasonCode.ISSUER_KEY_MISMATCH, f"signed by a key that is no longer {entry.issuer}'s")]
    return []


def time_reasons(entry: Entry, rec: Record, now: datetime) -> list[Reason[ReasonCode]]:
    """Past notAfter (``expired``) or inside the renewal window (``renewal_due``)."""
    not_after = rec["not_after"]
    renew_at = not_after - entry.renew_before
    if now >= not_after:
        return [Reason(ReasonCode.EXPIRED, f"expired at {rec['not_after']}")]
    if now >= renew_at:
        return [Reason(ReasonCode.RENEWAL_DUE, f"renewal window opened at {ts(renew_at)} ({(not_after - now).days}d left)")]
    return []


def key_disposition(entry: Entry, reasons: list[Reason[ReasonCode]]) -> KeyDisposition:
    """An authority keeps its key unless a reason needs a new one; a leaf gets a new key
    at every renewal unless it sets reuse_key; a CSR's key is its host's."""
    key_changes = any(r.code in KEY_REASONS for r in reasons)
    if entry.kind == "authority":
        return KeyDisposition.NEW if key_changes else KeyDisposition.KEEP
    if entry.csr_path is not None:
        return KeyDisposition.EXTERNAL
    return KeyDisposition.KEEP if (entry.reuse_key and not key_changes) else KeyDisposition.NEW


def revocation(name: str, rec: Record, reason: str) -> Revocation:
    """``rec`` on its issuer's CRL for ``reason``, with no invalidity date."""
    return {"name": name, "serial": rec["serial"], "reason": reason, "invalidity": None, "public_key_sha256": rec["public_key_sha256"]}


def _revoke_requested(entry: Entry, rec: Record, reason: str) -> Change:
    """Revoked in pki.yaml (``revoke_requested``): an authority keeps its key and
    certificate, and signs its CRL and OCSP responses on (see revocation.revoked_below)."""
    revoke = revocation(entry.name, rec, reason)
    if entry.kind == "authority":
        revoke["keeps_signing"] = True
    why = Reason(ReasonCode.REVOKE_REQUESTED, f"revoked in pki.yaml: {reason}")
    return Change(entry.name, entry.kind, Action.REVOKE, [why], None, entry.issuer, entry.key_type, rec["serial"], revokes=[revoke])


def _compromised_csr(plan: Plan, entry: Entry, rec: Record, revokes: list[Revocation]) -> Change:
    """The CSR still carries the compromised key: revoked now (``key_compromised``), no
    replacement until a CSR for a new key is committed."""
    plan.warnings.append(f"{entry.name}: its CSR carries the compromised key; commit a CSR for a new key to get a replacement")
    why = Reason(ReasonCode.KEY_COMPROMISED, f"key compromised on {entry.key_compromised}; no replacement until a new CSR")
    return Change(entry.name, entry.kind, Action.REVOKE, [why], None, entry.issuer, entry.key_type, rec["serial"], revokes=list(revokes))


def _replaced(plan: Plan, spec: EffectiveSpec, change: Change, entry: Entry, rec: Record) -> None:
    """What happens to the certificate a reissue or renewal replaces: revoked as
    superseded when its issuer says so, else a warning when names are dropped."""
    issuer_ca = spec.entries[entry.issuer].ca if entry.issuer else None
    if issuer_ca is not None and issuer_ca.revoke_superseded and not any(r["serial"] == rec["serial"] for r in change.revokes):
        change.revokes.append(revocation(entry.name, rec, "superseded"))
    elif change.action == Action.REISSUE:
        old, new = san_lists(rec["spec"]), san_lists(entry.spec)
        narrowed = [x for f in SAN_FIELDS for x in old.get(f, []) if x not in new.get(f, [])]
        if narrowed and not change.revokes:
            plan.warnings.append(
                f"{entry.name}: the reissue drops {', '.join(narrowed)}, but the old certificate stays valid until {rec['not_after']} (set revoke_superseded on {entry.issuer} to revoke it)"
            )


def entry_changes(
    plan: Plan, spec: EffectiveSpec, state: State, now: datetime, compromised: dict[str, list[Revocation]]
) -> tuple[dict[str, Change], set[str]]:
    """Each entry of pki.yaml against its record, parents first (a child sees its
    issuer's change). Returns the changes by name and the unusable authorities: revoked
    in pki.yaml, and everything below them (orphans, listed in the plan)."""
    changes: dict[str, Change] = {}
    unusable: set[str] = set()
    compromised_keys = state.compromised_keys()
    for name, entry in spec.entries.items():
        rec = state.active(name)
        if entry.revoke:
            unusable.add(name)
            if rec is not None:
                changes[name] = _revoke_requested(entry, rec, entry.revoke)
            continue
        if entry.issuer in unusable:
            unusable.add(name)
            plan.orphans.append(name)
            continue
        if rec is None:
            key = KeyDisposition.EXTERNAL if entry.csr_path is not None else KeyDisposition.NEW
            changes[name] = Change(
                name, entry.kind, Action.ISSUE, [Reason(ReasonCode.NEW, "not issued yet")], key, entry.issuer, entry.key_type
            )
            continue
        if name in compromised and entry.spec.get("csr_key") == rec["public_key_sha256"]:
            changes[name] = _compromised_csr(plan, entry, rec, compromised[name])
            continue
        issuer_change = changes.get(entry.issuer) if entry.issuer else None
        reasons = spec_reasons(rec["spec"], entry.spec)
        reasons += compromise_reasons(entry, rec, compromised_keys, compromised)
        if not any(r.code == ReasonCode.ISSUER_CHANGED for r in reasons):
            reasons += issuer_reasons(entry, rec, state, issuer_change)
        if reasons:
            action = Action.REISSUE
        else:
            reasons = time_reasons(entry, rec, now)
            if not reasons:
                continue
            action = Action.RENEW
        change = Change(name, entry.kind, action, reasons, key_disposition(entry, reasons), entry.issuer, entry.key_type, rec["serial"])
        change.revokes = list(compromised.get(name, []))
        _replaced(plan, spec, change, entry, rec)
        changes[name] = change
    return changes, unusable


def outlived_by_child(changes: dict[str, Change], spec: EffectiveSpec, state: State, now: datetime) -> None:
    """A child never outlives its issuer: the issuer is renewed (same key) first when a
    child being issued would (``outlived_by_child``)."""
    entries = spec.entries

    def planned_not_after(name: str) -> datetime:
        if name in changes:
            return now + entries[name].lifetime
        rec = state.active(name)
        assert rec is not None  # an entry with an issued child has a record or a change
        return rec["not_after"]

    for name in reversed(list(entries)):
        entry = entries[name]
        if entry.issuer is None or name not in changes or changes[name].action == Action.REVOKE:
            continue
        mine = now + entry.lifetime
        if mine > planned_not_after(entry.issuer):
            parent = entries[entry.issuer]
            prec = state.active(entry.issuer)
            reason = Reason(ReasonCode.OUTLIVED_BY_CHILD, f"{name} would outlive it (until {ts(mine)}); renewed first, same key")
            if entry.issuer in changes:
                changes[entry.issuer].reasons.append(reason)
            else:
                changes[entry.issuer] = Change(
                    entry.issuer,
                    parent.kind,
                    Action.RENEW,
                    [reason],
                    KeyDisposition.KEEP,
                    parent.issuer,
                    parent.key_type,
                    prec["serial"] if prec else None,
                )


def removed_entries(plan: Plan, spec: EffectiveSpec, state: State, now: datetime, moved_from: set[str]) -> None:
    """No longer in pki.yaml: revoked (``removed``). An authority whose key still vouches
    for unexpired certificates cannot just go: its CRL would leave out/ and what it
    revoked (its children, removed with it) would be on no CRL: revocation gone silent."""
    gone: list[tuple[str, Record]] = []
    silent = []
    for name in sorted(state.active_names()):
        rec = state.active(name)
        if name in spec.entries or name in moved_from or rec is None:
            continue
        gone.append((name, rec))
        if rec["kind"] != "authority":
            continue
        last = state.last_issued(name, rec["key_id"])
        if last is not None and last > now:
            silent.append(
                Diagnostic(
                    "pki.yaml",
                    None,
                    None,
                    "authorities",
                    f"'{name}' was removed, but certificates it signed are valid until {last}: its CRL would leave out/ "
                    "and their revocation would go silent",
                    f"keep it and revoke it in place (authorities.{name}.revoke: cessation_of_operation): it then "
                    "revokes everything below it and signs its CRL until the last of it expires; remove it after that",
                )
            )
    if silent:
        raise PkicError(silent)
    for name, rec in gone:
        why = Reason(ReasonCode.REMOVED, "no longer in pki.yaml")
        revoke = revocation(name, rec, "cessation_of_operation")
        plan.changes.append(
            Change(
                name, rec["kind"], Action.REVOKE, [why], None, rec.get("issuer"), rec["spec"].get("key"), rec["serial"], revokes=[revoke]
            )
        )


def csr_warnings(plan: Plan, spec: EffectiveSpec) -> None:
    """A CSR that asks for names pki.yaml does not list: they are not issued, said once."""
    for name, entry in spec.entries.items():
        if entry.csr_extra_names:
            values = [v for vals in entry.csr_extra_names.values() for v in vals]
            asked = ", ".join(quote(v, 60) for v in values[:5]) + (f" and {len(values) - 5} more" if len(values) > 5 else "")
            plan.warnings.append(f"{name}: the CSR also asks for {asked}, which pki.yaml does not list (not issued)")
