"""What the reviewer approves, beyond names and actions: each change's content and who
can decrypt its key, key files whose SOPS rule changed (re-encrypted), who can newly
decrypt and what a removed recipient can still read in git history, the lifecycle
settings, the policies and the SOPS rules as data (see ``Plan.reviewed_body``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from compiler.layout import key_path, responder_key_path
from compiler.model.durations import default_renew_before
from compiler.model.errors import fail
from compiler.plan.codes import Action, KeyDisposition
from compiler.plan.model import Change, Plan, Reencrypt, Rule
from compiler.spec import EffectiveSpec, spec_digest
from compiler.spec.sops_config import RuleError
from compiler.spec.sops_rules import masters, resolved_from, rule_digest, rules_digest
from compiler.state import Record, State


def lifecycle_settings(spec: EffectiveSpec) -> dict[str, Any]:
    """What decides when and how pkic signs, besides the certificates' content:
    publication lifetimes and refresh windows, the OCSP signer, revoke_superseded, each
    entry's renewal window and key reuse, and the publish settings."""

    def secs(td: timedelta) -> int:
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
        elif e.reuse_key or e.renew_before != default_renew_before(e.lifetime):  # only what differs from the defaults
            leaves[name] = [secs(e.renew_before), e.reuse_key]
    return {"publish": {"ocsp": spec.publish.ocsp, "ocsp_dir": spec.publish.ocsp_dir}, "authorities": authorities, "certificates": leaves}


def _days(x: object) -> str:
    return f"{x // 86400}d" if isinstance(x, int) and not isinstance(x, bool) and x % 86400 == 0 else str(x)


def _leaf_setting(v: list[Any] | None) -> str:
    return "defaults" if v is None else f"renew_before {v[0] // 86400}d, reuse_key {v[1]}"


def settings_diff(old: dict[str, Any] | None, new: dict[str, Any], names: set[str]) -> list[str]:
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
    recorded_leaves = old.get("certificates")
    was_leaves: dict[str, Any] = recorded_leaves if isinstance(recorded_leaves, dict) else {}
    for name in sorted(names & (set(was_leaves) | set(new["certificates"]))):
        a, b = was_leaves.get(name), new["certificates"].get(name)
        if a != b:
            out.append(f"{name}: {_leaf_setting(a)} -> {_leaf_setting(b)}")
    if len(out) > 30:
        out[30:] = [f"… and {len(out) - 30} more settings changed"]
    return out


def _settings(plan: Plan, spec: EffectiveSpec, state: State) -> None:
    """The lifecycle settings now, and how they differ from the recorded ones (which
    follow a move, as the records do)."""
    plan.settings = lifecycle_settings(spec)
    recorded = state.settings
    if recorded is not None and plan.moves:
        moved = {k: dict(recorded.get(k) or {}) for k in ("authorities", "certificates")}
        for old, new in plan.moves:
            for table in moved.values():
                if old in table and new not in table:
                    table[new] = table.pop(old)
        recorded = {**recorded, **moved}
    plan.settings_changes = settings_diff(recorded, plan.settings, set(state.active_names()))


class _Rules:
    """The SOPS rule of each key file, resolved once and recorded in the plan by digest
    (``plan.rules``, ``plan.rule_of``); the files no rule covers, collected."""

    def __init__(self, plan: Plan, rules: list[Any] | None):
        self.plan = plan
        self.rules = rules
        self.resolved: dict[str, Rule] = {}
        self.digests: dict[int, str] = {}  # id(normalised rule) -> its digest: one per rule, not per key file
        self.problems: list[str] = []

    def of(self, rel: str) -> Rule | None:
        if self.rules is None:
            return None  # said once, by bind_content; apply refuses to write a key without rules
        if rel not in self.resolved:
            try:
                self.resolved[rel] = resolved_from(self.rules, rel)
            except RuleError as exc:
                self.problems.append(f"{rel}: {exc}")
                return None
            rule = self.resolved[rel]
            digest = self.digests.get(id(rule))
            if digest is None:
                digest = self.digests[id(rule)] = rule_digest(rule)
                self.plan.rules.setdefault(digest, rule)
            self.plan.rule_of[rel] = digest
        return self.resolved[rel]


def _recorded(rec: Record | None) -> str | None:
    """The digest of the rule a record's key was last encrypted under."""
    kr = rec.get("key_rules") if rec else None
    return kr[-1] if isinstance(kr, list) and kr and isinstance(kr[-1], str) else None


def _bind_changes(plan: Plan, spec: EffectiveSpec, state: State, rules: _Rules) -> None:
    """Each change's spec before and after, the key its issuer signs with, who can
    decrypt its new key; a renewal of unchanged content under an unchanged rule is
    time-driven (it needs no review)."""
    by_name = {c.name: c for c in plan.changes}
    for c in plan.changes:
        entry = spec.entries.get(c.name)
        rec = state.active(c.name)
        c.old_spec = rec["spec"] if rec else None
        if c.action == Action.REVOKE or entry is None:
            continue
        c.new_spec = entry.spec
        if entry.issuer is not None:
            ic = by_name.get(entry.issuer)
            irec = state.active(entry.issuer)
            new_key = ic is not None and ic.action != Action.REVOKE and ic.key == KeyDisposition.NEW
            c.issuer_key = "new" if new_key else (irec["key_id"] if irec else None)
        if c.key == KeyDisposition.NEW:
            c.recipients = rules.of(key_path(c.name))
        same_content = rec is not None and spec_digest(rec["spec"]) == entry.digest
        same_rule = c.key != KeyDisposition.NEW or (c.recipients is not None and _recorded(rec) == plan.rule_of[key_path(c.name)])
        c.time_driven = c.action == Action.RENEW and same_content and same_rule


def _held_keys(plan: Plan, spec: EffectiveSpec, state: State, unusable: set[str]) -> list[tuple[str, str, Record]]:
    """Key files that stay (name, path, record): certificates' and delegated responders'."""
    by_name: dict[str, Change] = {c.name: c for c in plan.changes}
    held: list[tuple[str, str, Record]] = []
    for name in sorted(state.active_names()):
        rec = state.active(name)
        c = by_name.get(name)
        if name not in spec.entries or name in unusable or rec is None or rec.get("key_source") == "csr":
            continue
        if c is not None and (c.action == Action.REVOKE or c.key in (KeyDisposition.NEW, KeyDisposition.EXTERNAL)):
            continue
        held.append((name, key_path(name), rec))
    if spec.publish.ocsp:
        renewed = {p.name for p in plan.responders}
        for authority in sorted(state.responders):
            resp = state.responder(authority)
            if resp is None or authority not in spec.entries or authority in unusable or authority in renewed:
                continue
            ca = spec.entries[authority].ca
            if ca is None or ca.ocsp_signer != "delegated":
                continue
            held.append((f"{authority} OCSP responder", responder_key_path(authority), resp))
    return held


def _who_can_decrypt(plan: Plan, state: State, now: datetime) -> None:
    """A master key no recorded rule had: named, with every key this plan encrypts for
    it. A removed master key keeps what it could decrypt: every key file in git history
    (only a rekey ends that)."""
    known = {m for rule in state.rules.values() for m in masters(rule)}
    reach: list[tuple[str, str | None]] = [(c.name, plan.rule_of.get(key_path(c.name))) for c in plan.changes if c.recipients is not None]
    reach += [(r.path, plan.rule_of.get(r.path)) for r in plan.reencrypt]
    reach += [(f"{a} OCSP responder", d) for a, d in plan.responder_keys]
    for what, digest in reach:
        for m in sorted(masters(plan.rules[digest]) - known) if digest in plan.rules else []:
            plan.new_recipients.setdefault(m, []).append(what)

    removed = {m for r in plan.reencrypt for m in r.removed}
    if removed:
        live = [(n, r) for n, recs in state.certificates.items() for r in recs if r["status"] != "revoked" and r["not_after"] > now]
        live += [
            (f"{a} OCSP responder", r)
            for a, recs in state.responders.items()
            for r in recs
            if r["status"] != "revoked" and r["not_after"] > now
        ]
        for m in sorted(removed):
            hit = sorted(
                {n for n, r in live for d in (r.get("key_rules") or []) if (rule := state.rules.get(d)) is not None and m in masters(rule)}
            )
            if hit:
                plan.exposed[m] = hit


def bind_content(plan: Plan, spec: EffectiveSpec, state: State, now: datetime, unusable: set[str]) -> None:
    """Fills in what the reviewed digest binds (see the module docstring). Refuses a key
    file no SOPS rule covers: pkic cannot say who would decrypt it."""
    _settings(plan, spec, state)
    plan.sops_rules_digest = rules_digest(spec.sops_rules)
    plan.policies_digest = hashlib.sha256(json.dumps(spec.policy_data, sort_keys=True).encode()).hexdigest()
    rules = _Rules(plan, spec.sops_rules)
    _bind_changes(plan, spec, state, rules)

    # key files that stay, under a rule that changed: re-encrypted with a fresh data key
    held = _held_keys(plan, spec, state, unusable)
    for p in plan.responders:  # a responder's new key, under a rule its last one was not: spec-driven
        rel = responder_key_path(p.name)
        if rules.of(rel) is not None and _recorded(state.responders.get(p.name, [None])[0]) != plan.rule_of[rel]:
            plan.responder_keys.append([p.name, plan.rule_of[rel]])
    for name, rel, rec in held:
        rule = rules.of(rel)
        if rule is None or _recorded(rec) == plan.rule_of[rel]:
            continue
        old = state.rules.get(_recorded(rec) or "")
        r = Reencrypt(name, rel, _recorded(rec), rule)
        if old is not None:
            r.added = sorted(masters(rule) - masters(old))
            r.removed = sorted(masters(old) - masters(rule))
        plan.reencrypt.append(r)
    if rules.problems:
        raise fail(
            ".sops.yaml",
            "pkic cannot tell who would decrypt these key files: " + "; ".join(sorted(set(rules.problems))[:5]),
            "give every out/keys/ file a creation rule (path_regex in plain syntax) naming its master keys",
        )
    if spec.sops_rules is None and any(c.key == KeyDisposition.NEW for c in plan.changes):
        plan.warnings.append("there is no .sops.yaml: apply cannot encrypt the new keys (pkic init writes one)")
    _who_can_decrypt(plan, state, now)
