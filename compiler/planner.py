"""The planner: effective spec + recorded state + a clock -> the changes, each with its
reasons. Pure: it reads no key, signs nothing and touches no file.

The decision is a chain of small named checks, in the manner of cert-manager's
"does this certificate need reissuing?", but every reason that applies is returned:

==========================  ==========================================================
reason code                 meaning
==========================  ==========================================================
``new``                     not issued yet
``<field>_changed``         the effective spec differs (subject, dns, ip, uri, email,
                            key, profile, lifetime, issuer, path_length,
                            name_constraints, kind)
``rekey_requested``         the ``rekey`` counter was bumped
``issuer_reissued``         the issuer gets a new key or subject (blast radius)
``issuer_key_mismatch``     the recorded issuer key is not the one that signed it
``expired``                 past notAfter
``renewal_due``             inside its renewal window (``renew_before``)
``outlived_by_child``       a child being issued would outlive it: renewed first
``removed``                 no longer in pki.yaml
==========================  ==========================================================

Actions: ``issue`` (new), ``reissue`` (spec or issuer changed), ``renew`` (same spec,
time-driven), ``revoke`` (removed). Keys: ``new`` or ``keep``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from .durations import parse_duration
from .spec import EffectiveSpec, Entry
from .state import State, parse_ts, ts

ISSUE, REISSUE, RENEW, REVOKE = "issue", "reissue", "renew", "revoke"
PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass
class Change:
    name: str
    kind: str
    action: str
    reasons: list[Reason]
    key: str | None  # "new" | "keep" | None for revoke
    issuer: str | None
    key_type: str | None = None
    serial: str | None = None  # the certificate being replaced or revoked
    not_after: str | None = None  # of the new certificate, for issue/reissue/renew

    def to_json(self) -> dict:
        d = asdict(self)
        d["reasons"] = [asdict(r) for r in self.reasons]
        return d


@dataclass
class Plan:
    now: datetime
    lineage: str | None
    state_serial: int
    spec_digest: str
    changes: list[Change] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)
    chain_updates: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    pending_journal: int = 0

    @property
    def empty(self) -> bool:
        return not (self.changes or self.moves or self.chain_updates or self.pending_journal)

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in (ISSUE, REISSUE, RENEW, REVOKE)}
        for c in self.changes:
            out[c.action] += 1
        return out

    @property
    def digest(self) -> str:
        """What the plan does, independent of when it was made: for stale-plan checks."""
        body = {
            "changes": [{k: v for k, v in c.to_json().items() if k != "not_after"} for c in self.changes],
            "moves": self.moves,
            "chain_updates": self.chain_updates,
            "lineage": self.lineage,
            "state_serial": self.state_serial,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "now": ts(self.now),
            "lineage": self.lineage,
            "state_serial": self.state_serial,
            "spec_digest": self.spec_digest,
            "digest": self.digest,
            "summary": self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "moves": [{"from": a, "to": b} for a, b in self.moves],
            "chain_updates": self.chain_updates,
            "notices": self.notices,
            "pending_journal": self.pending_journal,
        }


SPEC_FIELDS = (
    "kind", "issuer", "subject", "key", "profile", "dns", "ip", "uri", "email",
    "lifetime", "path_length", "name_constraints",
)


def _fmt(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ", ".join(f"{k}={v}" for k, v in value)  # subject
    if value is None or value == []:
        return "none"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def spec_reasons(old: dict, new: dict) -> list[Reason]:
    reasons = []
    for f in SPEC_FIELDS:
        a, b = old.get(f), new.get(f)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and f in ("dns", "ip", "uri", "email"):
            added = [x for x in b if x not in a]
            removed = [x for x in a if x not in b]
            parts = [f"+{x}" for x in added] + [f"-{x}" for x in removed]
            reasons.append(Reason(f"{f}_changed", f"{f}: {' '.join(parts)}"))
        else:
            reasons.append(Reason(f"{f}_changed", f"{f}: {_fmt(a)} -> {_fmt(b)}"))
    if old.get("rekey", 0) != new.get("rekey", 0):
        reasons.append(Reason("rekey_requested", f"rekey: {old.get('rekey', 0)} -> {new.get('rekey', 0)}"))
    return reasons


def make_plan(spec: EffectiveSpec, state: State, now: datetime) -> Plan:
    plan = Plan(now, state.lineage, state.serial, spec.digest, pending_journal=state.pending)
    if state.pending:
        plan.notices.append(
            f"an earlier apply was interrupted: {state.pending} completed step(s) wait in the journal; the next apply finishes them"
        )

    # renames first: the planner sees the state as if they were done
    moves = []
    for old, new in sorted(spec.moved.items()):
        if state.certificates.get(old) and not state.certificates.get(new):
            moves.append((old, new))
        elif state.certificates.get(old) and state.certificates.get(new):
            plan.notices.append(f"moved {old} -> {new}: both names have state; the move is ignored")
        elif not state.certificates.get(old):
            plan.notices.append(f"moved {old} -> {new} is done; the moved entry can be deleted from pki.yaml")
    if moves:
        import copy

        state = State(state.lineage, state.serial, copy.deepcopy(state.certificates), state.pending)
        for old, new in moves:
            state.record_moved(old, new)
    plan.moves = moves

    changes: dict[str, Change] = {}
    entries = spec.entries

    for name, entry in entries.items():
        rec = state.active(name)
        issuer_change = changes.get(entry.issuer) if entry.issuer else None
        if rec is None:
            key = "new"
            if entry.reuse_key and (latest := state.latest(name)) and latest["status"] != "revoked" and latest["spec"]["key"] == entry.key_type:
                key = "new"  # a superseded key is never brought back
            changes[name] = Change(name, entry.kind, ISSUE, [Reason("new", "not issued yet")], key, entry.issuer, entry.key_type)
            continue

        reasons = spec_reasons(rec["spec"], entry.spec)
        key_changes = any(r.code in ("key_changed", "rekey_requested") for r in reasons)

        if entry.issuer is not None and not any(r.code == "issuer_changed" for r in reasons):
            issuer_rec = state.active(entry.issuer)
            if issuer_change is not None and (
                issuer_change.key == "new" or any(r.code == "subject_changed" for r in issuer_change.reasons)
            ):
                what = "a new key" if issuer_change.key == "new" else "a new subject"
                reasons.append(Reason("issuer_reissued", f"issuer {entry.issuer} is {issuer_change.action}d with {what}"))
            elif issuer_rec is not None and rec.get("issuer_key_id") != issuer_rec.get("key_id"):
                reasons.append(Reason("issuer_key_mismatch", f"signed by a key that is no longer {entry.issuer}'s"))

        if reasons:
            action = REISSUE
        else:
            not_after = parse_ts(rec["not_after"])
            renew_at = not_after - entry.renew_before
            if now >= not_after:
                reasons.append(Reason("expired", f"expired at {rec['not_after']}"))
            elif now >= renew_at:
                reasons.append(Reason("renewal_due", f"renewal window opened at {ts(renew_at)} ({(not_after - now).days}d left)"))
            action = RENEW if reasons else None
        if action is None:
            continue
        if entry.kind == "authority":
            key = "new" if key_changes else "keep"
        else:
            key = "keep" if (entry.reuse_key and not key_changes) else "new"
        changes[name] = Change(name, entry.kind, action, reasons, key, entry.issuer, entry.key_type, rec["serial"])

    # a child never outlives its issuer: renew the issuer (same key) first when needed
    def planned_not_after(name: str) -> datetime:
        if name in changes:
            return now + entries[name].lifetime
        return parse_ts(state.active(name)["not_after"])

    for name in reversed(list(entries)):
        entry = entries[name]
        if entry.issuer is None or name not in changes:
            continue
        mine = now + entry.lifetime
        if mine > planned_not_after(entry.issuer):
            parent = entries[entry.issuer]
            prec = state.active(entry.issuer)
            reason = Reason("outlived_by_child", f"{name} would outlive it (until {ts(mine)}); renewed first, same key")
            if entry.issuer in changes:
                changes[entry.issuer].reasons.append(reason)
            else:
                changes[entry.issuer] = Change(entry.issuer, parent.kind, RENEW, [reason], "keep", parent.issuer, parent.key_type, prec["serial"] if prec else None)

    for name, change in changes.items():
        change.not_after = ts(now + entries[name].lifetime)

    plan.changes = [changes[n] for n in entries if n in changes]

    # removed from the spec: revoked
    moved_from = {old for old, _ in moves}
    for name in sorted(state.active_names()):
        if name in entries or name in moved_from:
            continue
        rec = state.active(name)
        plan.changes.append(Change(name, rec["kind"], REVOKE, [Reason("removed", "no longer in pki.yaml")], None, rec.get("issuer"), rec["spec"].get("key"), rec["serial"]))

    # chain files follow their intermediates
    changed_cas = {n for n, c in changes.items() if entries[n].kind == "authority" and not entries[n].is_root}
    if changed_cas:
        for name, entry in entries.items():
            if name in changes:
                continue
            anc = entry.issuer
            while anc is not None:
                if anc in changed_cas:
                    plan.chain_updates.append(name)
                    break
                anc = entries[anc].issuer
    return plan


def blast_radius(plan: Plan, spec: EffectiveSpec) -> dict[str, list[str]]:
    """For each authority change: the descendants reissued because of it."""
    out: dict[str, list[str]] = {}
    by_name = {c.name: c for c in plan.changes}
    for c in plan.changes:
        if c.kind != "authority" or c.action == REVOKE:
            continue
        below = []
        stack = list(spec.children.get(c.name, []))
        while stack:
            n = stack.pop()
            ch = by_name.get(n)
            if ch and any(r.code == "issuer_reissued" for r in ch.reasons):
                below.append(n)
                stack.extend(spec.children.get(n, []))
        if below:
            out[c.name] = sorted(below)
    return out


def load_saved_plan(data: dict) -> dict:
    return data


__all__ = ["make_plan", "Plan", "Change", "Reason", "blast_radius", "parse_duration", "timedelta"]
