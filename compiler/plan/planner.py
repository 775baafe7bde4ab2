"""The planner: effective spec + recorded state + a clock -> the changes, each with
every reason that applies, and the publications to (re-)sign. Pure: it reads no key,
signs nothing and touches no file.

``make_plan`` is the order of the steps; each step lives in the module that owns it:

* ``entries``: each entry against its record, as small named checks (cert-manager's
  "does this certificate need reissuing?"), and entries removed from pki.yaml;
* ``revocation``: declared key compromises, and what a revoked authority takes with it;
* ``publications``: CRLs, delegated OCSP responders and OCSP responses;
* ``cleanup``: published files renamed or removed, nothing signed;
* ``content``: what the reviewer approves (specs, recipients, re-encryptions, settings).

The vocabulary is in ``codes``: ``Action`` (issue, reissue, renew, revoke),
``KeyDisposition``, ``ReasonCode`` (why a change), ``PublicationKind`` and
``PublicationCode`` (why a publication), each member with its one-line description.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime

from compiler.plan.cleanup import plan_cleanup
from compiler.plan.codes import Action, ReasonCode
from compiler.plan.content import bind_content
from compiler.plan.entries import csr_warnings, entry_changes, outlived_by_child, removed_entries
from compiler.plan.limits import check_horizon, verifier_caveats
from compiler.plan.model import Change, Plan
from compiler.plan.publications import plan_publications
from compiler.plan.revocation import declared_compromises, revoked_below
from compiler.spec import EffectiveSpec
from compiler.state import State, ts


def _moves(plan: Plan, spec: EffectiveSpec, state: State) -> State:
    """Renames (``moved:``) come first: the rest of the planner sees the state as if
    they were done. Returns that state (a copy when anything moves)."""
    moves = []
    for old, new in sorted(spec.moved.items()):
        if state.certificates.get(old) and not state.certificates.get(new):
            moves.append((old, new))
        elif state.certificates.get(old) and state.certificates.get(new):
            plan.notices.append(f"moved {old} -> {new}: both names have state; the move is ignored")
        elif not state.certificates.get(old):
            plan.notices.append(f"moved {old} -> {new} is done; the moved entry can be deleted from pki.yaml")
    plan.moves = moves
    if not moves:
        return state
    state = replace(
        state,
        certificates=copy.deepcopy(state.certificates),
        crls=copy.deepcopy(state.crls),
        responders=copy.deepcopy(state.responders),
    )
    for old, new in moves:
        state.record_moved(old, new)
    return state


def _chain_updates(plan: Plan, spec: EffectiveSpec, changes: dict[str, Change]) -> None:
    """Chain files follow their intermediates: a certificate not changed itself gets a
    new chain file when an intermediate above it changes."""
    entries = spec.entries
    changed_cas = {n for n, c in changes.items() if entries[n].kind == "authority" and not entries[n].is_root and c.action != Action.REVOKE}
    if not changed_cas:
        return
    for name, entry in entries.items():
        if name in changes:
            continue
        anc = entry.issuer
        while anc is not None:
            if anc in changed_cas:
                plan.chain_updates.append(name)
                break
            anc = entries[anc].issuer


def make_plan(spec: EffectiveSpec, state: State, now: datetime) -> Plan:
    check_horizon(spec, now)
    plan = Plan(now, state.lineage, state.serial, spec.digest, pending_journal=state.pending)
    if state.pending:
        plan.notices.append(
            f"an earlier apply was interrupted: {state.pending} completed step(s) wait in the journal; the next apply finishes them"
        )
    state = _moves(plan, spec, state)

    compromised = declared_compromises(plan, spec, state, now)
    changes, unusable = entry_changes(plan, spec, state, now, compromised)
    outlived_by_child(changes, spec, state, now)
    for name, change in changes.items():
        if change.action != Action.REVOKE:
            change.not_after = ts(now + spec.entries[name].lifetime)
    plan.changes = [changes[n] for n in spec.entries if n in changes]
    removed_entries(plan, spec, state, now, {old for old, _ in plan.moves})

    signing = revoked_below(plan, spec, state, now)
    if plan.orphans:
        plan.warnings.append(f"below a revoked authority (and revoked with it), these need a new issuer: {', '.join(plan.orphans)}")
    plan.warnings.extend(verifier_caveats(spec, [c.name for c in plan.changes if c.action != Action.REVOKE]))
    _chain_updates(plan, spec, changes)
    csr_warnings(plan, spec)
    plan_publications(plan, spec, state, now, changes, unusable, signing)
    plan_cleanup(plan, spec, state, now)
    bind_content(plan, spec, state, now, unusable)
    return plan


def blast_radius(plan: Plan, spec: EffectiveSpec) -> dict[str, list[str]]:
    """For each authority change: the descendants reissued because of it."""
    out: dict[str, list[str]] = {}
    by_name = {c.name: c for c in plan.changes}
    for c in plan.changes:
        if c.kind != "authority" or c.action == Action.REVOKE:
            continue
        below: list[str] = []
        stack = list(spec.children.get(c.name, []))
        while stack:
            n = stack.pop()
            ch = by_name.get(n)
            if ch and any(r.code == ReasonCode.ISSUER_REISSUED for r in ch.reasons):
                below.append(n)
                stack.extend(spec.children.get(n, []))
        if below:
            out[c.name] = sorted(below)
    return out
