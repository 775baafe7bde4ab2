"""What a plan is: the changes, each with its reasons, the publications to (re-)sign,
and what the reviewer approves (``Plan.reviewed_body``). Data only: the decisions are
made in the other modules of this package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NotRequired, TypedDict, TypeVar

from compiler.plan.codes import Action, KeyDisposition, PublicationCode, PublicationKind, ReasonCode
from compiler.spec import EntrySpec
from compiler.spec.sops_rules import SopsRule, rule_digest
from compiler.state import ts

PLAN_FORMAT_VERSION = 1

# a normalised SOPS creation rule (keys.sops): open JSON
Rule = SopsRule  # a normalised .sops.yaml rule (spec.sops_rules)

C = TypeVar("C", ReasonCode, PublicationCode)


class Revocation(TypedDict):
    """A certificate a change revokes: the entry its issuer's CRL gets."""

    name: str
    serial: str
    reason: str  # the CRL reason (pki.yaml's revoke: spelling), "unspecified" for none
    invalidity: str | None  # the declared compromise time, for a compromised key
    public_key_sha256: str
    keeps_signing: NotRequired[bool]  # a revoked authority signs its CRL and OCSP on


class Compromise(TypedDict):
    """A declared key compromise the plan carries out."""

    name: str
    at: str
    public_key_sha256: str | None  # None: no certificate is active, nothing to revoke


@dataclass(frozen=True)
class Reason(Generic[C]):
    """One reason for a change (a ReasonCode) or a publication (a PublicationCode)."""

    code: C
    message: str


@dataclass
class Change:
    name: str
    kind: str  # "authority" | "certificate"
    action: Action
    reasons: list[Reason[ReasonCode]]
    key: KeyDisposition | None  # None for revoke
    issuer: str | None
    key_type: str | None = None
    serial: str | None = None  # the certificate being replaced or revoked
    not_after: str | None = None  # of the new certificate, for issue/reissue/renew
    revokes: list[Revocation] = field(default_factory=list)
    # what the reviewer approves (see Plan.reviewed_body): the spec before and after,
    # the key the issuer signs with ("new": a key made by this plan), and who can
    # decrypt the new key (a normalised SOPS rule; None: no key written)
    old_spec: EntrySpec | None = None
    new_spec: EntrySpec | None = None
    issuer_key: str | None = None
    recipients: Rule | None = None
    # a renewal of unchanged content under an unchanged rule: may run unreviewed
    time_driven: bool = False

    def to_json(self) -> dict[str, Any]:
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

    def content(self) -> dict[str, Any]:
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


def _rule_json(rule: Rule | None) -> dict[str, Any] | None:
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
    rule: Rule  # the rule now
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
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

    kind: PublicationKind
    name: str  # the authority (crl, responder) or the certificate (ocsp)
    reasons: list[Reason[PublicationCode]]
    issuer: str | None = None  # for ocsp: the authority that issued the certificate
    serial: str | None = None  # for ocsp: the certificate (None: the one issued by this plan)
    # signed by a revoked authority (its own key, never a delegated responder) ...
    signer: str | None = None
    # ... whose key is compromised: signed once, valid until then (None: the usual lifetime)
    until: str | None = None

    def to_json(self) -> dict[str, Any]:
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
class Cleanup:
    """A published file apply renames or removes, signing nothing: the response of a
    renamed or replaced certificate moved to where it belongs, an expired certificate's
    response removed, the CRL files of an authority that no longer signs removed.

    Time-driven housekeeping, or the consequence of a change the reviewer already
    approves (a move, a reissue, a revocation): like CRL and OCSP re-signing, it is in
    :attr:`Plan.digest` (a saved plan without it is stale) but not in the reviewed digest."""

    kind: PublicationKind  # the file's kind: OCSP (a response) or CRL
    name: str  # the certificate (ocsp) or the authority (crl)
    reasons: list[Reason[PublicationCode]]
    file: str  # the file in out/ as the apply finds it
    to: str | None = None  # renamed to (None: removed)
    serial: str | None = None  # for ocsp: the certificate whose response it is

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "serial": self.serial,
            "file": self.file,
            "to": self.to,
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
    # published files renamed or removed, nothing signed (plan.cleanup)
    cleanup: list[Cleanup] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # below a revoked authority: need a new issuer
    compromises: list[Compromise] = field(default_factory=list)
    reencrypt: list[Reencrypt] = field(default_factory=list)
    # delegated OCSP responders whose new key goes to recipients its last key did not
    # have (or a first one): [authority, rule digest]
    responder_keys: list[list[str]] = field(default_factory=list)
    # lifecycle settings now, and how they differ from what the state records
    settings: dict[str, Any] = field(default_factory=dict)
    settings_changes: list[str] = field(default_factory=list)
    # a master key no recorded rule had -> the keys this plan encrypts for it
    new_recipients: dict[str, list[str]] = field(default_factory=dict)
    # a master key removed from a rule -> every key it could ever decrypt (still exposed
    # through git history: only a rekey ends that)
    exposed: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)  # digest -> rule, for the state
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
            or self.cleanup
            or self.reencrypt
            or self.settings_changes
        )

    @property
    def needs_review(self) -> bool:
        """Spec-driven work: anything but renewals of unchanged content under unchanged
        rules, CRL/OCSP re-signing and cleanup (a cleanup follows from time or from a
        change that needs review on its own)."""
        return bool(
            self.moves
            or self.reencrypt
            or self.compromises
            or self.responder_keys
            or self.settings_changes
            or any(not c.time_driven for c in self.changes)
        )

    def counts(self) -> dict[Action, int]:
        out = dict.fromkeys(Action, 0)
        for c in self.changes:
            out[c.action] += 1
        return out

    def reviewed_body(self) -> dict[str, Any]:
        """What a reviewer approves in a pull request, bound by content: for each
        spec-driven change its name, action, spec before and after (subject, SANs,
        profile, key type, lifetime, constraints...), key disposition, issuer and the key
        it signs with, who can decrypt its new key, what it revokes (reason and public
        key); re-encryptions; moves; declared compromises; the policies and the SOPS rules
        as data. No serial, no date, no state serial: time-driven work (renewals of
        unchanged content, CRL and OCSP re-signing, cleanup of published files) that
        comes due between review and merge does not change it."""
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
        if self.cleanup:  # absent when there is none: a plan saved before cleanup was planned keeps its digest
            body["cleanup"] = [p.to_json() for p in self.cleanup]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
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
            "cleanup": [p.to_json() for p in self.cleanup],
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
