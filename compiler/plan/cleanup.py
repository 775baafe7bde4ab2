"""Cleanup: the published files an apply renames or removes while signing nothing. They
are decided here, so that the plan lists them and apply does what the plan lists and
nothing more (issue 14). Pure: it reads the state (as the moves leave it), never out/.

* A certificate renamed (``moved:``) or replaced (issued again) has its responses moved
  to where ``layout.ocsp_path`` puts them: the latest at ``<name>.der``, older ones by
  serial, so the new certificate's response never overwrites the previous one's.
* An expired certificate's response is removed (the state keeps its record).
* An authority that no longer signs (removed from pki.yaml) has its CRL files removed
  (the state keeps its CRL number); the state then records them as removed
  (``removed_at``), so the next plan does not list them again.

With ``publish.ocsp`` false no response is renamed or removed here: every one goes
(``publications.plan_ocsp_off``).
"""

from __future__ import annotations

from datetime import datetime

from compiler import layout
from compiler.plan.codes import Action, PublicationCode, PublicationKind
from compiler.plan.model import Cleanup, Plan, Reason
from compiler.spec import EffectiveSpec
from compiler.state import State


def plan_cleanup(plan: Plan, spec: EffectiveSpec, state: State, now: datetime) -> None:
    """Fill ``plan.cleanup`` in the order apply carries it out: responses renamed (before
    new ones are signed), expired responses removed (after), CRL files removed."""
    if spec.publish.ocsp:
        where = _responses_renamed(plan, spec.publish.ocsp_dir, state)
        _expired_responses(plan, state, now, where)
    _crls_of_removed_authorities(plan, spec, state)


def _responses_renamed(plan: Plan, ocsp_dir: str, state: State) -> dict[tuple[str, str], str]:
    """The responses that are not where they belong once this plan is done: those of the
    names it issues or moves, and an older certificate's still at ``<name>.der`` (an
    apply killed after it issued, before it renamed). Returns (name, serial) -> the
    file's new path."""
    done = {Action.ISSUE: "issued", Action.REISSUE: "reissued", Action.RENEW: "renewed"}
    issued = {c.name: done[c.action] for c in plan.changes if c.action != Action.REVOKE}
    moved_from = {new: old for old, new in plan.moves}
    where: dict[tuple[str, str], str] = {}
    for name in sorted(state.certificates.keys() | issued.keys() | moved_from.keys()):
        first = 1 if name in issued else 0  # the new certificate takes the first place
        listed = name in issued or name in moved_from
        seen: set[str] = set()
        for i, r in enumerate(state.certificates.get(name, [])):
            file = (r.get("ocsp") or {}).get("file")
            if not file or file in seen:
                continue  # (an older record naming a newer one's file: that file is the newer one's)
            seen.add(file)
            want = layout.ocsp_path(ocsp_dir, name, None if i + first == 0 else r["serial"])
            if file == want or not file.startswith(ocsp_dir + "/") or not (listed or i > 0):
                continue  # in place, or in an older ocsp_dir (re-signed there: dir_changed)
            reasons: list[Reason[PublicationCode]] = []
            if not listed:
                reasons.append(
                    Reason(PublicationCode.REPLACED_RESPONSE_RENAMED, f"{name} was replaced: this response keeps its serial's name")
                )
            if name in moved_from:
                reasons.append(Reason(PublicationCode.MOVED_RESPONSE_RENAMED, f"renamed from {moved_from[name]}"))
            if name in issued:
                reasons.append(
                    Reason(PublicationCode.REPLACED_RESPONSE_RENAMED, f"{name} is {issued[name]}: this response keeps its serial's name")
                )
            plan.cleanup.append(Cleanup(PublicationKind.OCSP, name, reasons, file, want, r["serial"]))
            where[(name, r["serial"])] = want
    return where


def _expired_responses(plan: Plan, state: State, now: datetime, where: dict[tuple[str, str], str]) -> None:
    """The published responses of expired certificates (renamed first, if so planned);
    never a file an unexpired record names too (that file holds that record's response)."""
    for name, recs in state.certificates.items():
        live = {(r.get("ocsp") or {}).get("file") for r in recs if r["not_after"] > now}
        for r in recs:
            published = (r.get("ocsp") or {}).get("file")
            if published and r["not_after"] <= now and published not in live:
                file = where.get((name, r["serial"]), published)
                why = Reason(PublicationCode.EXPIRED_RESPONSE_REMOVED, f"the certificate expired at {r['not_after']}")
                plan.cleanup.append(Cleanup(PublicationKind.OCSP, name, [why], file, None, r["serial"]))


def _crls_of_removed_authorities(plan: Plan, spec: EffectiveSpec, state: State) -> None:
    """The CRL files of every authority that signs no more once this plan is done (its
    record revoked for good, or gone) and whose files the state does not record as
    removed. A revoked authority that keeps signing keeps its CRL."""
    issued = {c.name for c in plan.changes if c.action != Action.REVOKE}
    revoked = {(r["name"], r["serial"]) for c in plan.changes for r in c.revokes if not r.get("keeps_signing")}
    for a in sorted(state.crls):
        if state.crls[a].get("removed_at") or a in issued:
            continue
        rec = state.signer_record(a)
        if rec is not None and (a, rec["serial"]) not in revoked:
            continue
        why = Reason(
            PublicationCode.CRL_OF_REMOVED_AUTHORITY,
            f"{a} is no longer in pki.yaml: its CRL goes with it" if a not in spec.entries else f"{a} is revoked and signs no more",
        )
        for rel in (layout.crl_path(a), layout.crl_path(a, pem=True)):
            plan.cleanup.append(Cleanup(PublicationKind.CRL, a, [why], rel))
