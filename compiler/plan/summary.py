"""The plan in short phrases, for every rendering and the commit message: who can
decrypt the new keys, what is signed besides certificates, what is cleaned up, what
OCSP-off removes. Text only; each caller escapes it for the output it goes to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compiler.plan.codes import PublicationKind
from compiler.plan.model import Cleanup, Plan, Reencrypt
from compiler.spec.sops_rules import SopsRule


def keys_by_rule(plan: Plan) -> list[tuple[str, list[str]]]:
    """New keys grouped by the SOPS rule that encrypts them (who can decrypt them)."""
    from compiler.layout import responder_key_path
    from compiler.spec.sops_rules import rule_digest

    groups: dict[str, list[str]] = {}
    for c in plan.changes:
        if c.recipients is not None:
            groups.setdefault(rule_digest(c.recipients), []).append(c.name)
    for p in plan.responders:
        digest = plan.rule_of.get(responder_key_path(p.name))
        if digest is not None:
            groups.setdefault(digest, []).append(f"{p.name} OCSP responder")
    return sorted(groups.items())


def rule_summary(rule: SopsRule | dict[str, Any]) -> str:
    """Who can decrypt under a normalised SOPS rule, in one line."""
    groups = [", ".join(m.removeprefix("age:") for m in g) for g in rule["groups"]]
    if len(groups) == 1:
        text = groups[0]
    else:
        need = rule.get("threshold") or len(groups)
        text = f"{need} of {len(groups)} key groups: " + " | ".join(f"[{g}]" for g in groups)
    enc = rule.get("encrypt") or {}
    if enc != {"encrypted_regex": "^private_key$"}:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(enc.items())) + ")"
    return text


def reencrypt_delta(r: Reencrypt) -> str:
    if r.old is None:
        return f"its rule is not recorded yet; now for {rule_summary(r.rule)}"
    parts = [f"+{m.removeprefix('age:')}" for m in r.added] + [f"−{m.removeprefix('age:')}" for m in r.removed]
    return " ".join(parts) if parts else f"the rule changed: now {rule_summary(r.rule)}"


def publications_summary(plan: Plan, names: bool = False) -> list[str]:
    """What the plan signs besides certificates, as short phrases."""
    pubs = []
    if plan.crls:
        pubs.append(f"{len(plan.crls)} CRL(s)" + (f" ({', '.join(p.name for p in plan.crls)})" if names else ""))
    if plan.ocsp:
        pubs.append(f"{len(plan.ocsp)} OCSP response(s)")
    if plan.responders:
        pubs.append(f"{len(plan.responders)} OCSP responder(s)")
    return pubs


CLEANUP_SHOWN = 20  # cleanup lines in the text plan; the rest are counted


def cleanup_line(item: Cleanup, escape: Callable[[str], str]) -> str:
    """'rename A -> B' or 'remove A', the paths escaped for the output they go to."""
    if item.to is None:
        return f"remove {escape(item.file)}"
    return f"rename {escape(item.file)} -> {escape(item.to)}"


def cleanup_counts(plan: Plan) -> str:
    """'R to rename, M to remove': the published files apply renames or removes."""
    renamed = sum(1 for c in plan.cleanup if c.to is not None)
    parts = [f"{renamed} to rename"] if renamed else []
    if len(plan.cleanup) - renamed:
        parts.append(f"{len(plan.cleanup) - renamed} to remove")
    return ", ".join(parts)


def cleanup_summary(plan: Plan) -> str:
    """'N file(s) to clean up (R to rename, M to remove)' ('' if none)."""
    return f"{len(plan.cleanup)} file(s) to clean up ({cleanup_counts(plan)})" if plan.cleanup else ""


def ocsp_off_summary(plan: Plan) -> str:
    """'OCSP off: N published responses removed[, M delegated responders retired]' ('' if none)."""
    if not plan.ocsp_off:
        return ""
    responses = sum(1 for p in plan.ocsp_off if p.kind == PublicationKind.OCSP)
    retired = sum(1 for p in plan.ocsp_off if p.kind == PublicationKind.RESPONDER)
    return f"OCSP off: {responses} published response(s) removed" + (f", {retired} delegated responder(s) retired" if retired else "")
