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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from compiler.layout import key_path, responder_key_path
from compiler.model.bounded import quote
from compiler.model.durations import format_duration
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.spec import EffectiveSpec, spec_digest
from compiler.spec.sops_config import RuleError
from compiler.spec.sops_rules import masters, resolved_from, rule_digest, rules_digest
from compiler.state import State, parse_ts, ts

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
    key: str | None  # "new" | "keep" | "external" (from a CSR) | None for revoke
    issuer: str | None
    key_type: str | None = None
    serial: str | None = None  # the certificate being replaced or revoked
    not_after: str | None = None  # of the new certificate, for issue/reissue/renew
    # certificates this change revokes: {"name", "serial", "reason", "invalidity", "public_key_sha256"}
    revokes: list[dict] = field(default_factory=list)
    # what the reviewer approves (see Plan.reviewed_body): the spec before and after,
    # the key the issuer signs with ("new": a key made by this plan), and who can
    # decrypt the new key (a normalised SOPS rule; None: no key written)
    old_spec: dict | None = None
    new_spec: dict | None = None
    issuer_key: str | None = None
    recipients: dict | None = None
    # a renewal of unchanged content under an unchanged rule: may run unreviewed
    time_driven: bool = False

    def to_json(self) -> dict:
        # spelled out: dataclasses.asdict deep-copies field by field, 60 us a change
        return {
            "name": self.name,
            "kind": self.kind,
            "action": self.action,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "key": self.key,
            "issuer": self.issuer,
            "key_type": self.key_type,
            "serial": self.serial,
            "not_after": self.not_after,
            "revokes": [dict(r) for r in self.revokes],
            "old_spec": self.old_spec,
            "new_spec": self.new_spec,
            "issuer_key": self.issuer_key,
            "recipients": self.recipients,
            "time_driven": self.time_driven,
        }

    def content(self) -> dict:
        """What is bound by the reviewed digest: no serial, no date."""
        return {
            "name": self.name,
            "action": self.action,
            "key": self.key,
            "key_type": self.key_type,
            "issuer": self.issuer,
            "issuer_key": self.issuer_key,
            "old_spec": self.old_spec,
            "new_spec": self.new_spec,
            "recipients": rule_digest(self.recipients) if self.recipients is not None else None,
            "revokes": sorted([r["name"], r["reason"], r.get("public_key_sha256"), r.get("invalidity")] for r in self.revokes),
        }


def _rule_json(rule: dict | None) -> dict | None:
    if rule is None:
        return None
    return {"digest": rule_digest(rule), **rule}


@dataclass
class Reencrypt:
    """A key file whose recorded SOPS rule is not the one .sops.yaml gives it now: apply
    re-encrypts it in memory under a fresh data key (never `sops updatekeys`)."""

    name: str  # the certificate (or "<authority> OCSP responder")
    path: str  # the key file
    old: str | None  # the recorded rule's digest (None: not recorded by older pkic)
    rule: dict  # the rule now
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "from": self.old,
            "to": _rule_json(self.rule),
            "added": self.added,
            "removed": self.removed,
        }


@dataclass
class Publication:
    """Revocation information to (re-)sign: a CRL, an OCSP response, a responder certificate."""

    kind: str  # "crl" | "ocsp" | "responder"
    name: str  # the authority (crl, responder) or the certificate (ocsp)
    reasons: list[Reason]
    issuer: str | None = None  # for ocsp: the authority that issued the certificate
    serial: str | None = None  # for ocsp: the certificate (None: the one issued by this plan)
    # signed by a revoked authority (its own key, never a delegated responder) ...
    signer: str | None = None
    # ... whose key is compromised: signed once, valid until then (None: the usual lifetime)
    until: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "issuer": self.issuer,
            "serial": self.serial,
            "signer": self.signer,
            "until": self.until,
        }


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
    warnings: list[str] = field(default_factory=list)
    pending_journal: int = 0
    crls: list[Publication] = field(default_factory=list)
    responders: list[Publication] = field(default_factory=list)
    ocsp: list[Publication] = field(default_factory=list)
    # publish.ocsp is false: published responses to remove ("ocsp": name, issuer, serial)
    # and delegated responders to retire ("responder": the authority)
    ocsp_off: list[Publication] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # below a revoked authority: need a new issuer
    compromises: list[dict] = field(default_factory=list)  # {"name", "at", "public_key_sha256"}
    reencrypt: list[Reencrypt] = field(default_factory=list)
    # delegated OCSP responders whose new key goes to recipients its last key did not
    # have (or a first one): [authority, rule digest]
    responder_keys: list[list[str]] = field(default_factory=list)
    # lifecycle settings now, and how they differ from what the state records
    settings: dict = field(default_factory=dict)
    settings_changes: list[str] = field(default_factory=list)
    # a master key no recorded rule had -> the keys this plan encrypts for it
    new_recipients: dict[str, list[str]] = field(default_factory=dict)
    # a master key removed from a rule -> every key it could ever decrypt (still exposed
    # through git history: only a rekey ends that)
    exposed: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, dict] = field(default_factory=dict)  # digest -> rule, for the state
    rule_of: dict[str, str] = field(default_factory=dict)  # key file written -> its rule's digest
    policies_digest: str = ""
    sops_rules_digest: str = ""

    @property
    def empty(self) -> bool:
        return not (
            self.changes
            or self.moves
            or self.chain_updates
            or self.pending_journal
            or self.crls
            or self.responders
            or self.ocsp
            or self.ocsp_off
            or self.reencrypt
            or self.settings_changes
        )

    @property
    def needs_review(self) -> bool:
        """Spec-driven work: anything but renewals of unchanged content under unchanged
        rules, and CRL/OCSP re-signing."""
        return bool(
            self.moves
            or self.reencrypt
            or self.compromises
            or self.responder_keys
            or self.settings_changes
            or any(not c.time_driven for c in self.changes)
        )

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((ISSUE, REISSUE, RENEW, REVOKE), 0)
        for c in self.changes:
            out[c.action] += 1
        return out

    def reviewed_body(self) -> dict:
        """What a reviewer approves in a pull request, bound by content: for each
        spec-driven change its name, action, spec before and after (subject, SANs,
        profile, key type, lifetime, constraints...), key disposition, issuer and the key
        it signs with, who can decrypt its new key, what it revokes (reason and public
        key); re-encryptions; moves; declared compromises; the policies and the SOPS rules
        as data. No serial, no date, no state serial: time-driven work (renewals of
        unchanged content, CRL and OCSP re-signing) that comes due between review and
        merge does not change it."""
        return {
            "format": 2,
            "lineage": self.lineage,
            "changes": [c.content() for c in self.changes if not c.time_driven],
            "moves": [list(m) for m in self.moves],
            "reencrypt": [[r.name, r.path, r.old, rule_digest(r.rule)] for r in self.reencrypt],
            "responder_keys": self.responder_keys,
            "settings": hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest(),
            "compromises": sorted([c["name"], c["at"]] for c in self.compromises),
            "policies": self.policies_digest,
            "sops_rules": self.sops_rules_digest,
        }

    @property
    def reviewed_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.reviewed_body(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def digest(self) -> str:
        """What the plan does, independent of when it was made: for stale-plan checks."""
        body = {
            "reviewed": self.reviewed_body(),
            "changes": [{k: v for k, v in c.to_json().items() if k != "not_after"} for c in self.changes],
            "moves": self.moves,
            "chain_updates": self.chain_updates,
            "crls": [p.to_json() for p in self.crls],
            "responders": [p.to_json() for p in self.responders],
            "ocsp": [p.to_json() for p in self.ocsp],
            "ocsp_off": [p.to_json() for p in self.ocsp_off],
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
            "reviewed_digest": self.reviewed_digest,
            "needs_review": self.needs_review,
            "summary": self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "moves": [{"from": a, "to": b} for a, b in self.moves],
            "chain_updates": self.chain_updates,
            "crls": [p.to_json() for p in self.crls],
            "responders": [p.to_json() for p in self.responders],
            "ocsp": [p.to_json() for p in self.ocsp],
            "ocsp_off": [p.to_json() for p in self.ocsp_off],
            "reencrypt": [r.to_json() for r in self.reencrypt],
            "responder_keys": [{"authority": a, "rule": self.rules.get(d)} for a, d in self.responder_keys],
            "settings_changes": self.settings_changes,
            "new_recipients": self.new_recipients,
            "exposed": self.exposed,
            "policies_digest": self.policies_digest,
            "sops_rules_digest": self.sops_rules_digest,
            "orphans": self.orphans,
            "notices": self.notices,
            "warnings": self.warnings,
            "pending_journal": self.pending_journal,
        }


SPEC_FIELDS = (
    "kind",
    "issuer",
    "subject",
    "key",
    "profile",
    "dns",
    "ip",
    "uri",
    "email",
    "lifetime",
    "path_length",
    "name_constraints",
    "ocsp_signer",
    "crl_url",
    "ocsp_url",
    "ca_issuers_url",
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
    if old.get("csr_key") != new.get("csr_key"):
        if old.get("csr_key") and new.get("csr_key"):
            reasons.append(Reason("csr_key_changed", "CSR key changed"))
        elif new.get("csr_key"):
            reasons.append(Reason("csr_key_changed", "now issued from a CSR: the key stays on its host"))
        else:
            reasons.append(Reason("csr_key_changed", "no longer from a CSR: pkic makes the key"))
    if old.get("rekey", 0) != new.get("rekey", 0):
        reasons.append(Reason("rekey_requested", f"rekey: {old.get('rekey', 0)} -> {new.get('rekey', 0)}"))
    return reasons


LAST_X509_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def check_horizon(spec: EffectiveSpec, now: datetime) -> None:
    """Every validity pkic would compute from ``now`` must fit an X.509 date (GeneralizedTime
    ends in 9999): a lifetime past it is an error on that field, not an overflow later."""
    room = LAST_X509_TIME - now
    diags = []
    for name, e in spec.entries.items():
        section = "authorities" if e.kind == "authority" else "certificates"
        fields = [("lifetime", e.lifetime)]
        if e.ca is not None:
            fields += [
                ("crl_lifetime", e.ca.crl_lifetime),
                ("ocsp_lifetime", e.ca.ocsp_lifetime),
                ("ocsp_responder_lifetime", e.ca.responder_lifetime),
            ]
        for field_name, value in fields:
            if value > room:
                diags.append(
                    Diagnostic(
                        "pki.yaml",
                        None,
                        None,
                        f"{section}.{name}.{field_name}",
                        f"{format_duration(value)} from {ts(now)} is past the last date X.509 can express (9999-12-31)",
                        "choose a shorter lifetime",
                    )
                )
    if diags:
        raise PkicError(diags)


def verifier_caveats(spec: EffectiveSpec, names: list[str]) -> list[str]:
    """Known verifier limits that certificates this plan signs run into (issue 13 item 9;
    tests/interop holds each against the real verifier). Valid X.509, refused by some:

    * URI or email name constraints above a leaf with a URI or email SAN: cryptography's
      verifier (PolicyBuilder) and webpki-based ones (rustls) refuse the leaf (the SPIFFE
      case); OpenSSL, GnuTLS and Go accept it;
    * an Ed25519 authority: the same verifiers refuse chains through it."""
    out = []
    entries = spec.entries
    for name in names:
        entry = entries.get(name)
        if entry is None:
            continue
        if entry.kind == "authority" and entry.key_type == "ed25519":
            out.append(
                f"{name}: an Ed25519 authority; cryptography's verifier (PolicyBuilder) and webpki-based clients (rustls) "
                "refuse chains through it (OpenSSL, GnuTLS, Go and Node accept them)"
            )
        if entry.kind != "certificate" or not (entry.spec.get("uri") or entry.spec.get("email")):
            continue
        anc = entry.issuer
        while anc is not None:
            nc = entries[anc].spec.get("name_constraints") or {}
            kinds = [k for k in ("uri", "email") if entry.spec.get(k) and (nc.get(f"permitted_{k}") or nc.get(f"excluded_{k}"))]
            if kinds:
                out.append(
                    f"{name}: {' and '.join(kinds)} name constraints on {anc} above its {' and '.join(k.upper() if k == 'uri' else k for k in kinds)} "
                    "SAN; cryptography's verifier (PolicyBuilder) and webpki-based clients (rustls) refuse such a leaf "
                    "(OpenSSL, GnuTLS, Go and Node accept it)"
                )
                break
            anc = entries[anc].issuer
    return out


def make_plan(spec: EffectiveSpec, state: State, now: datetime) -> Plan:
    check_horizon(spec, now)
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

        state = replace(
            state,
            certificates=copy.deepcopy(state.certificates),
            crls=copy.deepcopy(state.crls),
            responders=copy.deepcopy(state.responders),
        )
        for old, new in moves:
            state.record_moved(old, new)
    plan.moves = moves

    changes: dict[str, Change] = {}
    entries = spec.entries

    # declared key compromises not yet carried out: every unexpired certificate with that key
    compromised: dict[str, list[dict]] = {}
    by_key: dict[str, list[dict]] | None = None
    for name, entry in entries.items():
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
        hits = [r for r in by_key.get(pk, []) if r["status"] != "revoked" and parse_ts(r["not_after"]) > now]
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

    unusable: set[str] = set()  # authorities revoked in pki.yaml, and everything below them
    for name, entry in entries.items():
        rec = state.active(name)
        if entry.revoke:
            unusable.add(name)
            if rec is not None:
                why = Reason("revoke_requested", f"revoked in pki.yaml: {entry.revoke}")
                revoke = {
                    "name": name,
                    "serial": rec["serial"],
                    "reason": entry.revoke,
                    "invalidity": None,
                    "public_key_sha256": rec["public_key_sha256"],
                }
                if entry.kind == "authority":
                    revoke["keeps_signing"] = True  # its key and certificate stay: it signs its CRL and OCSP on
                changes[name] = Change(name, entry.kind, REVOKE, [why], None, entry.issuer, entry.key_type, rec["serial"], revokes=[revoke])
            continue
        if entry.issuer in unusable:
            unusable.add(name)
            plan.orphans.append(name)
            continue
        issuer_change = changes.get(entry.issuer) if entry.issuer else None
        if rec is None:
            key = "external" if entry.csr_path is not None else "new"
            changes[name] = Change(name, entry.kind, ISSUE, [Reason("new", "not issued yet")], key, entry.issuer, entry.key_type)
            continue

        if name in compromised and entry.spec.get("csr_key") == rec["public_key_sha256"]:
            # the CSR still carries the compromised key: revoke now, reissue on a new CSR
            changes[name] = Change(
                name,
                entry.kind,
                REVOKE,
                [Reason("key_compromised", f"key compromised on {entry.key_compromised}; no replacement until a new CSR")],
                None,
                entry.issuer,
                entry.key_type,
                rec["serial"],
                revokes=list(compromised[name]),
            )
            plan.warnings.append(f"{name}: its CSR carries the compromised key; commit a CSR for a new key to get a replacement")
            continue
        reasons = spec_reasons(rec["spec"], entry.spec)
        if name in compromised:
            reasons.append(
                Reason(
                    "key_compromised",
                    f"key compromised on {entry.key_compromised}: {len(compromised[name])} certificate(s) with it are revoked",
                )
            )
        elif rec["public_key_sha256"] in state.compromised_keys():
            reasons.append(Reason("key_compromised", "its key was declared compromised"))
        key_changes = any(r.code in ("key_changed", "rekey_requested", "key_compromised") for r in reasons)

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
        elif entry.csr_path is not None:
            key = "external"
        else:
            key = "keep" if (entry.reuse_key and not key_changes) else "new"
        change = Change(name, entry.kind, action, reasons, key, entry.issuer, entry.key_type, rec["serial"])
        change.revokes = list(compromised.get(name, []))
        issuer_ca = entries[entry.issuer].ca if entry.issuer else None
        if issuer_ca is not None and issuer_ca.revoke_superseded and not any(r["serial"] == rec["serial"] for r in change.revokes):
            change.revokes.append(
                {
                    "name": name,
                    "serial": rec["serial"],
                    "reason": "superseded",
                    "invalidity": None,
                    "public_key_sha256": rec["public_key_sha256"],
                }
            )
        elif action == REISSUE:
            narrowed = [x for f in ("dns", "ip", "uri", "email") for x in rec["spec"].get(f, []) if x not in entry.spec.get(f, [])]
            if narrowed and not change.revokes:
                plan.warnings.append(
                    f"{name}: the reissue drops {', '.join(narrowed)}, but the old certificate stays valid until {rec['not_after']} (set revoke_superseded on {entry.issuer} to revoke it)"
                )
        changes[name] = change

    # a child never outlives its issuer: renew the issuer (same key) first when needed
    def planned_not_after(name: str) -> datetime:
        if name in changes:
            return now + entries[name].lifetime
        return parse_ts(state.active(name)["not_after"])

    for name in reversed(list(entries)):
        entry = entries[name]
        if entry.issuer is None or name not in changes or changes[name].action == REVOKE:
            continue
        mine = now + entry.lifetime
        if mine > planned_not_after(entry.issuer):
            parent = entries[entry.issuer]
            prec = state.active(entry.issuer)
            reason = Reason("outlived_by_child", f"{name} would outlive it (until {ts(mine)}); renewed first, same key")
            if entry.issuer in changes:
                changes[entry.issuer].reasons.append(reason)
            else:
                changes[entry.issuer] = Change(
                    entry.issuer, parent.kind, RENEW, [reason], "keep", parent.issuer, parent.key_type, prec["serial"] if prec else None
                )

    for name, change in changes.items():
        if change.action != REVOKE:
            change.not_after = ts(now + entries[name].lifetime)

    plan.changes = [changes[n] for n in entries if n in changes]

    # removed from the spec: revoked. An authority whose key still vouches for unexpired
    # certificates cannot just go: its CRL would leave out/ and what it revoked (its
    # children, removed with it) would be on no CRL: revocation gone silent
    moved_from = {old for old, _ in moves}
    silent = []
    for name in sorted(state.active_names()):
        rec = state.active(name)
        if name in entries or name in moved_from or rec is None or rec["kind"] != "authority":
            continue
        last = state.last_issued(name, rec["key_id"])
        if last is not None and parse_ts(last) > now:
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
    for name in sorted(state.active_names()):
        if name in entries or name in moved_from:
            continue
        rec = state.active(name)
        plan.changes.append(
            Change(
                name,
                rec["kind"],
                REVOKE,
                [Reason("removed", "no longer in pki.yaml")],
                None,
                rec.get("issuer"),
                rec["spec"].get("key"),
                rec["serial"],
                revokes=[
                    {
                        "name": name,
                        "serial": rec["serial"],
                        "reason": "cessation_of_operation",
                        "invalidity": None,
                        "public_key_sha256": rec["public_key_sha256"],
                    }
                ],
            )
        )
    signing = revoked_below(plan, spec, state, now)
    if plan.orphans:
        plan.warnings.append(f"below a revoked authority (and revoked with it), these need a new issuer: {', '.join(plan.orphans)}")
    plan.warnings.extend(verifier_caveats(spec, [c.name for c in plan.changes if c.action != REVOKE]))

    # chain files follow their intermediates
    changed_cas = {n for n, c in changes.items() if entries[n].kind == "authority" and not entries[n].is_root and c.action != REVOKE}
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

    plan_publications(plan, spec, state, now, changes, unusable, signing)
    bind_content(plan, spec, state, now, unusable)
    return plan


COMPROMISE = ("key_compromise", "ca_compromise")


def revoked_below(plan: Plan, spec: EffectiveSpec, state: State, now: datetime) -> dict[str, dict]:
    """Revoking an authority revokes every unexpired certificate below it (issue 13,
    item 6): what it signed with the revoked key, on its CRL, and, for an intermediate
    below, what that one signed, on its own CRL, and so on down. The entries carry
    cACompromise (and the invalidity date) when the authority's key is compromised
    (``revoke: key_compromise`` or ``ca_compromise``, or ``key_compromised`` set), else
    no reason code (``unspecified``, which RFC 5280 §5.3.1 prefers left out).

    Adds the revocations to ``plan.changes`` (one ``revoke`` change per name, reason
    ``issuer_revoked``, or to the change the name already has) and returns the revoked
    authorities that keep signing their CRL and OCSP responses: name -> key_id,
    compromised, last (the latest notAfter of what that key signed)."""
    entries = spec.entries
    roots: list[tuple[str, dict, bool, str | None]] = []
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
                    entry.key_compromised or rec.get("invalidity_date"),
                )
            )
    for name in state.revoked_signers():
        if name not in entries and (last := state.last_issued(name, state.certificates[name][0]["key_id"])) and parse_ts(last) > now:
            plan.warnings.append(
                f"{name} is revoked and no longer in pki.yaml, but what it signed is unexpired until {last}: its CRL and "
                "OCSP responses are no longer re-signed (keep its entry, with revoke:, until then)"
            )
    if not roots:
        return {}
    by_issuer: dict[str, list[dict]] = {}
    for recs in state.certificates.values():
        for r in recs:
            if r.get("issuer") is not None:
                by_issuer.setdefault(r["issuer"], []).append(r)
    planned = {(r["name"], r["serial"]) for c in plan.changes for r in c.revokes}
    signing: dict[str, dict] = {}
    found: dict[str, list[dict]] = {}
    cause: dict[str, tuple[str, bool]] = {}
    stack = list(reversed(roots))
    while stack:
        name, rec, comp, invalidity = stack.pop()
        if name in signing:
            continue
        kid = rec["key_id"]
        last = None
        for r in by_issuer.get(name, []):
            if r.get("issuer_key_id") != kid:
                continue  # signed by an earlier key of the authority: not what is revoked
            if last is None or r["not_after"] > last:
                last = r["not_after"]
            if parse_ts(r["not_after"]) <= now:
                continue
            latest = r["kind"] == "authority" and state.certificates[r["name"]][0] is r
            if latest:
                stack.append((r["name"], r, comp, invalidity))
            if r["status"] == "revoked" or (r["name"], r["serial"]) in planned:
                continue
            revoke = {
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
        signing[name] = {"key_id": kid, "compromised": comp, "last": last}

    # the authority's own earlier certificates (a rekey superseded them, unexpired): revoked
    # with it, on its issuer's CRL; a verifier must not find an older key of it still trusted
    for name, _rec, comp, invalidity in roots:
        entry = entries[name]
        if not entry.revoke or state.active(name) is None:
            continue
        for r in state.certificates[name][1:]:
            if r["status"] == "revoked" or parse_ts(r["not_after"]) <= now or (r["name"], r["serial"]) in planned:
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

    by_name = {c.name: c for c in plan.changes}
    for n in found:
        issuer, comp = cause[n]
        revokes = sorted(found[n], key=lambda r: r["serial"])
        why = Reason(
            "issuer_revoked",
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
        entry = entries.get(n)
        c = Change(
            n,
            rec["kind"],
            REVOKE,
            [why],
            None,
            rec.get("issuer"),
            entry.key_type if entry else rec["spec"].get("key"),
            revokes[0]["serial"],
            revokes=revokes,
        )
        plan.changes.append(c)
        by_name[n] = c
    return signing


def bind_content(plan: Plan, spec: EffectiveSpec, state: State, now: datetime, unusable: set[str]) -> None:
    """What the reviewer approves, beyond names and actions: each change's content and
    who can decrypt its key; key files whose SOPS rule changed (re-encrypted); what a
    removed recipient can still read in git history; the policies and rules as data."""
    plan.settings = lifecycle_settings(spec)
    recorded = state.settings
    if recorded is not None and plan.moves:  # the recorded settings follow a move, as the records do
        moved = {k: dict(recorded.get(k) or {}) for k in ("authorities", "certificates")}
        for old, new in plan.moves:
            for table in moved.values():
                if old in table and new not in table:
                    table[new] = table.pop(old)
        recorded = {**recorded, **moved}
    plan.settings_changes = settings_diff(recorded, plan.settings, set(state.active_names()))
    rules = spec.sops_rules
    plan.sops_rules_digest = rules_digest(rules)
    plan.policies_digest = hashlib.sha256(json.dumps(spec.policy_data, sort_keys=True).encode()).hexdigest()
    resolved: dict[str, dict] = {}
    digests: dict[int, str] = {}  # id(normalised rule) -> its digest: one per rule, not per key file
    problems: list[str] = []

    def rule_of(rel: str) -> dict | None:
        if rules is None:
            return None  # said below, once; apply refuses to write a key without rules
        if rel not in resolved:
            try:
                resolved[rel] = resolved_from(rules, rel)
            except RuleError as exc:
                problems.append(f"{rel}: {exc}")
                return None
            rule = resolved[rel]
            digest = digests.get(id(rule))
            if digest is None:
                digest = digests[id(rule)] = rule_digest(rule)
                plan.rules.setdefault(digest, rule)
            plan.rule_of[rel] = digest
        return resolved[rel]

    def recorded(rec: dict | None) -> str | None:
        kr = rec.get("key_rules") if rec else None
        return kr[-1] if isinstance(kr, list) and kr and isinstance(kr[-1], str) else None

    by_name = {c.name: c for c in plan.changes}
    for c in plan.changes:
        entry = spec.entries.get(c.name)
        rec = state.active(c.name)
        c.old_spec = rec["spec"] if rec else None
        if c.action == REVOKE or entry is None:
            continue
        c.new_spec = entry.spec
        if entry.issuer is not None:
            ic = by_name.get(entry.issuer)
            irec = state.active(entry.issuer)
            c.issuer_key = "new" if (ic is not None and ic.action != REVOKE and ic.key == "new") else (irec["key_id"] if irec else None)
        if c.key == "new":
            c.recipients = rule_of(key_path(c.name))
        same_content = rec is not None and spec_digest(rec["spec"]) == entry.digest
        same_rule = c.key != "new" or (c.recipients is not None and recorded(rec) == plan.rule_of[key_path(c.name)])
        c.time_driven = c.action == RENEW and same_content and same_rule

    # key files that stay, under a rule that changed: re-encrypted with a fresh data key
    held: list[tuple[str, str, dict]] = []
    for name in sorted(state.active_names()):
        rec = state.active(name)
        c = by_name.get(name)
        if name not in spec.entries or name in unusable or rec is None or rec.get("key_source") == "csr":
            continue
        if c is not None and (c.action == REVOKE or c.key in ("new", "external")):
            continue
        held.append((name, key_path(name), rec))
    if spec.publish.ocsp:
        renewed = {p.name for p in plan.responders}
        for authority in sorted(state.responders):
            resp = state.responder(authority)
            if resp is None or authority not in spec.entries or authority in unusable or authority in renewed:
                continue
            if spec.entries[authority].ca is None or spec.entries[authority].ca.ocsp_signer != "delegated":
                continue
            held.append((f"{authority} OCSP responder", responder_key_path(authority), resp))
    for p in plan.responders:  # a responder's new key, under a rule its last one was not: spec-driven
        rel = responder_key_path(p.name)
        if rule_of(rel) is not None and recorded(state.responders.get(p.name, [None])[0]) != plan.rule_of[rel]:
            plan.responder_keys.append([p.name, plan.rule_of[rel]])
    for name, rel, rec in held:
        rule = rule_of(rel)
        if rule is None or recorded(rec) == plan.rule_of[rel]:
            continue
        old = state.rules.get(recorded(rec) or "")
        r = Reencrypt(name, rel, recorded(rec), rule)
        if old is not None:
            r.added = sorted(masters(rule) - masters(old))
            r.removed = sorted(masters(old) - masters(rule))
        plan.reencrypt.append(r)
    if problems:
        raise fail(
            ".sops.yaml",
            "pkic cannot tell who would decrypt these key files: " + "; ".join(sorted(set(problems))[:5]),
            "give every out/keys/ file a creation rule (path_regex in plain syntax) naming its master keys",
        )
    if rules is None and any(c.key == "new" for c in plan.changes):
        plan.warnings.append("there is no .sops.yaml: apply cannot encrypt the new keys (pkic init writes one)")

    # a master key no recorded rule had: named, with every key this plan encrypts for it
    known = {m for rule in state.rules.values() for m in masters(rule)}
    reach: list[tuple[str, str | None]] = [(c.name, plan.rule_of.get(key_path(c.name))) for c in plan.changes if c.recipients is not None]
    reach += [(r.path, plan.rule_of.get(r.path)) for r in plan.reencrypt]
    reach += [(f"{a} OCSP responder", d) for a, d in plan.responder_keys]
    for what, digest in reach:
        for m in sorted(masters(plan.rules[digest]) - known) if digest in plan.rules else []:
            plan.new_recipients.setdefault(m, []).append(what)

    # a removed master key keeps what it could decrypt: every key file in git history
    removed = {m for r in plan.reencrypt for m in r.removed}
    if removed:
        live = [
            (n, r) for n, recs in state.certificates.items() for r in recs if r["status"] != "revoked" and parse_ts(r["not_after"]) > now
        ]
        live += [
            (f"{a} OCSP responder", r)
            for a, recs in state.responders.items()
            for r in recs
            if r["status"] != "revoked" and parse_ts(r["not_after"]) > now
        ]
        for m in sorted(removed):
            hit = sorted({n for n, r in live for d in (r.get("key_rules") or []) if m in masters(state.rules.get(d) or {"groups": []})})
            if hit:
                plan.exposed[m] = hit


def plan_publications(
    plan: Plan,
    spec: EffectiveSpec,
    state: State,
    now: datetime,
    changes: dict[str, Change],
    unusable: set[str],
    signing: dict[str, dict] | None = None,
) -> None:
    """CRLs, delegated OCSP responders and OCSP responses that must be (re-)signed;
    ``signing``: revoked authorities that keep signing for what they issued (see
    revoked_below)."""
    signing = signing or {}
    entries = spec.entries
    revoked_now = {(r["name"], r["serial"]) for c in plan.changes for r in c.revokes}
    # one pass over every record ever issued: what each authority has revoked, and who needs OCSP
    revoked_by: dict[str, list[dict]] = {}
    live: list[dict] = []
    for recs in state.certificates.values():
        for r in recs:
            if r["status"] == "revoked" or (r["name"], r["serial"]) in revoked_now:
                if r.get("issuer") is not None:
                    revoked_by.setdefault(r["issuer"], []).append(r)
            if r.get("issuer") is not None and parse_ts(r["not_after"]) > now:
                live.append(r)

    def key_after(name: str) -> str | None:
        """The key id an authority signs with after this plan (None: a new key)."""
        c = changes.get(name)
        if c is not None and c.action != REVOKE and c.key == "new":
            return None
        rec = state.active(name)
        return rec["key_id"] if rec else None

    for name, entry in entries.items():
        if entry.csr_extra_names:
            values = [v for vals in entry.csr_extra_names.values() for v in vals]
            asked = ", ".join(quote(v, 60) for v in values[:5]) + (f" and {len(values) - 5} more" if len(values) > 5 else "")
            plan.warnings.append(f"{name}: the CSR also asks for {asked}, which pki.yaml does not list (not issued)")
        if entry.kind != "authority":
            continue
        if name in signing:
            _revoked_crl(plan, name, entry.ca, state, now, signing[name], revoked_by)
            continue
        if name in unusable:
            continue
        ca = entry.ca
        kid = key_after(name)
        change = changes.get(name)
        # CRL
        crl = state.crls.get(name)
        reasons: list[Reason] = []
        if crl is None:
            reasons.append(Reason("new", "no CRL yet"))
        else:
            if kid is None or crl.get("key_id") != kid:
                reasons.append(Reason("authority_rekeyed", "the authority has a new key"))
            listed = set(crl.get("serials", []))
            added = [
                r
                for r in revoked_by.get(name, [])
                if r.get("issuer_key_id") == crl.get("key_id") and r["serial"] not in listed and not r.get("crl_listed_after_expiry")
            ]
            if added:
                reasons.append(Reason("revocations", f"{len(added)} newly revoked: " + ", ".join(sorted({r["name"] for r in added}))))
            next_update = parse_ts(crl["next_update"])
            if now >= next_update:
                reasons.append(Reason("expired", f"the CRL expired at {crl['next_update']}"))
            elif now >= next_update - ca.crl_renew_before:
                reasons.append(Reason("due", f"next update {crl['next_update']}: inside the refresh window"))
        if reasons:
            plan.crls.append(Publication("crl", name, reasons))
        if not spec.publish.ocsp:
            continue
        # delegated responder
        if ca.ocsp_signer == "delegated":
            resp = state.responder(name)
            rr: list[Reason] = []
            if resp is None:
                rr.append(Reason("new", "no responder certificate yet"))
            else:
                if kid is None or resp.get("issuer_key_id") != kid:
                    rr.append(Reason("authority_rekeyed", "the authority has a new key"))
                elif change is not None and any(r.code == "subject_changed" for r in change.reasons):
                    rr.append(Reason("authority_reissued", "the authority has a new subject"))
                not_after = parse_ts(resp["not_after"])
                window = max(ca.responder_lifetime / 3, ca.ocsp_lifetime)
                if now >= not_after:
                    rr.append(Reason("expired", f"expired at {resp['not_after']}"))
                elif now >= not_after - window:
                    rr.append(Reason("due", f"expires {resp['not_after']}"))
            if rr:
                plan.responders.append(Publication("responder", name, rr))

    if not spec.publish.ocsp:
        plan_ocsp_off(plan, state)
        return
    # OCSP responses: for the certificates this plan issues, and every unexpired one
    for c in plan.changes:
        if c.action != REVOKE and c.issuer is not None and c.issuer not in unusable:
            plan.ocsp.append(Publication("ocsp", c.name, [Reason("new", "new certificate")], c.issuer, None))
    for r in sorted(live, key=lambda r: (r["name"], r["serial"])):
        issuer = r["issuer"]
        if issuer not in entries or entries[issuer].kind != "authority":
            continue
        held = signing.get(issuer)
        if held is not None:
            if r.get("issuer_key_id") == held["key_id"]:
                _revoked_ocsp(plan, r, entries[issuer].ca, now, held, revoked_now)
            continue
        if issuer in unusable:
            continue
        if r.get("issuer_key_id") != key_after(issuer):
            continue  # signed by a key the authority no longer has: nobody can vouch for it
        ca = entries[issuer].ca
        info = r.get("ocsp")
        status = "revoked" if (r["status"] == "revoked" or (r["name"], r["serial"]) in revoked_now) else "good"
        reasons = []
        if info is None or ("file" in info and info["file"] is None):  # never signed, or removed while OCSP was off
            reasons.append(Reason("new", "no response yet" if info is None else "no response published"))
        elif info.get("file") and not info["file"].startswith(spec.publish.ocsp_dir + "/"):
            reasons.append(Reason("dir_changed", f"moves to {spec.publish.ocsp_dir}/"))
        else:
            if info.get("status") != status:
                reasons.append(Reason("status_changed", f"now {status}"))
            if info.get("signer") != ca.ocsp_signer:
                reasons.append(Reason("signer_changed", f"signed by {ca.ocsp_signer} now"))
            next_update = parse_ts(info["next_update"])
            if now >= next_update - ca.ocsp_renew_before:
                reasons.append(Reason("due", f"next update {info['next_update']}"))
        if reasons:
            plan.ocsp.append(Publication("ocsp", r["name"], reasons, issuer, r["serial"]))


def _revoked_crl(plan: Plan, name: str, ca, state: State, now: datetime, held: dict, revoked_by: dict[str, list[dict]]) -> None:
    """The CRL of a revoked authority: re-signed (with the revoked key) while anything it
    signed with that key is unexpired; for a compromised key, signed once more, valid
    until after the last of it expires (no further use of the key)."""
    last = held["last"]
    if last is None or parse_ts(last) <= now:
        return  # nothing it signed is unexpired: its last CRL is its final one
    crl = state.crls.get(name)
    kid = held["key_id"]
    until = ts(max(now, parse_ts(last)) + ca.crl_lifetime) if held["compromised"] else None
    reasons: list[Reason] = []
    if crl is None:
        reasons.append(Reason("new", "no CRL yet"))
    else:
        listed = set(crl.get("serials", []))
        added = [
            r
            for r in revoked_by.get(name, [])
            if r.get("issuer_key_id") == kid and r["serial"] not in listed and not r.get("crl_listed_after_expiry")
        ]
        if added:
            reasons.append(Reason("revocations", f"{len(added)} newly revoked: " + ", ".join(sorted({r["name"] for r in added}))))
        if crl.get("key_id") != kid:
            reasons.append(Reason("authority_rekeyed", "signed with another key of the authority"))
        next_update = parse_ts(crl["next_update"])
        if held["compromised"]:
            if next_update < parse_ts(last) and not reasons:
                reasons.append(Reason("final", f"valid until {crl['next_update']}, before the last certificate it signed expires ({last})"))
        elif now >= next_update:
            reasons.append(Reason("expired", f"the CRL expired at {crl['next_update']}"))
        elif now >= next_update - ca.crl_renew_before:
            reasons.append(Reason("due", f"next update {crl['next_update']}: inside the refresh window"))
    if reasons:
        reasons.append(
            Reason(
                "revoked_authority",
                f"{name} is revoked: "
                + (
                    f"its key is compromised: this CRL is its last, valid until {until}, after the last certificate it signed expires ({last})"
                    if held["compromised"]
                    else f"it re-signs its CRL until the last certificate it signed expires ({last})"
                ),
            )
        )
        plan.crls.append(Publication("crl", name, reasons, until=until))


def _revoked_ocsp(plan: Plan, r: dict, ca, now: datetime, held: dict, revoked_now: set) -> None:
    """The OCSP response of a certificate below a revoked authority: revoked, signed by the
    authority's own key (its delegated responder is not renewed under a revoked
    certificate); for a compromised key, once, valid until the certificate expires."""
    info = r.get("ocsp")
    status = "revoked" if (r["status"] == "revoked" or (r["name"], r["serial"]) in revoked_now) else "good"
    until = ts(max(now + ca.ocsp_lifetime, parse_ts(r["not_after"]))) if held["compromised"] else None
    reasons = []
    if info is None:
        reasons.append(Reason("new", "no response yet"))
    else:
        if info.get("status") != status:
            reasons.append(Reason("status_changed", f"now {status}"))
        if info.get("signer") != "self":
            reasons.append(Reason("signer_changed", "signed by the revoked authority itself now"))
        next_update = parse_ts(info["next_update"])
        if held["compromised"]:
            if next_update < parse_ts(r["not_after"]) and not reasons:
                reasons.append(Reason("final", f"its issuer's key is compromised: one last response, valid until {until}"))
        elif now >= next_update - ca.ocsp_renew_before:
            reasons.append(Reason("due", f"next update {info['next_update']}"))
    if reasons:
        plan.ocsp.append(Publication("ocsp", r["name"], reasons, r["issuer"], r["serial"], signer="self", until=until))


def plan_ocsp_off(plan: Plan, state: State) -> None:
    """publish.ocsp is false: every published response goes (a stale "good" would outlive
    a revocation), and every delegated responder is retired (its certificate and key
    leave out/; made only to sign responses, it would otherwise sit unused, unrenewed,
    and be reported as expiring)."""
    why = [Reason("ocsp_off", "publish.ocsp is false")]
    for a in sorted(state.responders):
        if state.responder(a) is not None:
            plan.ocsp_off.append(Publication("responder", a, why))
    for name in sorted(state.certificates):
        for r in state.certificates[name]:
            info = r.get("ocsp")
            if isinstance(info, dict) and info.get("file"):
                plan.ocsp_off.append(Publication("ocsp", name, why, r.get("issuer"), r["serial"]))


def lifecycle_settings(spec: EffectiveSpec) -> dict:
    """What decides when and how pkic signs, besides the certificates' content:
    publication lifetimes and refresh windows, the OCSP signer, revoke_superseded, each
    entry's renewal window and key reuse, and the publish settings."""

    def secs(td) -> int:
        return int(td.total_seconds())

    authorities = {}
    leaves = {}
    for name, e in spec.entries.items():
        if e.ca is not None:
            ca = e.ca
            authorities[name] = {
                "crl_lifetime": secs(ca.crl_lifetime),
                "crl_renew_before": secs(ca.crl_renew_before),
                "ocsp_signer": ca.ocsp_signer,
                "ocsp_lifetime": secs(ca.ocsp_lifetime),
                "ocsp_renew_before": secs(ca.ocsp_renew_before),
                "responder_lifetime": secs(ca.responder_lifetime),
                "revoke_superseded": ca.revoke_superseded,
                "renew_before": secs(e.renew_before),
            }
        elif e.reuse_key or e.renew_before != e.lifetime / 3:  # only what differs from the defaults
            leaves[name] = [secs(e.renew_before), e.reuse_key]
    return {"publish": {"ocsp": spec.publish.ocsp, "ocsp_dir": spec.publish.ocsp_dir}, "authorities": authorities, "certificates": leaves}


def _days(x: object) -> str:
    return f"{x // 86400}d" if isinstance(x, int) and not isinstance(x, bool) and x % 86400 == 0 else str(x)


def _leaf_setting(v: list | None) -> str:
    return "defaults" if v is None else f"renew_before {v[0] // 86400}d, reuse_key {v[1]}"


def settings_diff(old: dict | None, new: dict, names: set[str]) -> list[str]:
    """What changed in the lifecycle settings of the entries the state has (``names``;
    a new entry is spec-driven anyway), one line each."""
    if old is None:
        return ["lifecycle settings recorded (publication lifetimes, renewal windows, revoke_superseded, publish) for the first time"]
    out = []
    if old.get("publish") != new["publish"]:
        out.append(f"publish: {json.dumps(old.get('publish'), sort_keys=True)} -> {json.dumps(new['publish'], sort_keys=True)}")
    was = old.get("authorities") or {}
    for name, now in new["authorities"].items():
        if name not in was:
            if name in names:  # issued before its settings were recorded: recorded now, reviewed
                out.append(f"{name}: settings recorded ({', '.join(f'{k} {v}' for k, v in sorted(now.items()))})")
            continue
        before = was[name]
        for k, v in now.items():
            if before.get(k) != v:
                out.append(f"{name}: {k} {_days(before.get(k))} -> {_days(v)}")
    was_leaves = old.get("certificates") if isinstance(old.get("certificates"), dict) else {}
    for name in sorted(names & (set(was_leaves) | set(new["certificates"]))):
        a, b = was_leaves.get(name), new["certificates"].get(name)
        if a != b:
            out.append(f"{name}: {_leaf_setting(a)} -> {_leaf_setting(b)}")
    if len(out) > 30:
        out[30:] = [f"… and {len(out) - 30} more settings changed"]
    return out


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
