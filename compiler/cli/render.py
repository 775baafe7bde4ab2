"""Human-readable renderings (rich renderables and text); the CLI prints them.

Every string that comes from pki.yaml, a CSR, .sops.yaml, out/state.json or git is
escaped here, for the output it goes to: for the terminal and logs (rich ``Text``, never
markup) by ``_p`` (control characters shown as ``\\n``, ``\\x1b``); for markdown by
``_md`` and ``_code``. Stored data is never changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from compiler.model.errors import printable as _p
from compiler.plan import Action, Cleanup, KeyDisposition, Plan, PublicationKind, ReasonCode, blast_radius
from compiler.spec import EffectiveSpec
from compiler.state import State, parse_ts, ts
from compiler.state.revocation import crl_retired, crl_status

if TYPE_CHECKING:
    from compiler.gitops import ReviewContext


STYLE = {Action.ISSUE: ("+", "green"), Action.REISSUE: ("~", "yellow"), Action.RENEW: ("↻", "cyan"), Action.REVOKE: ("-", "red")}


def plan_text(plan: Plan, spec: EffectiveSpec | None) -> Group:
    lines: list = []
    head = Text()
    head.append("pkic plan", style="bold")
    head.append(f"  now {ts(plan.now)} · state serial {plan.state_serial}", style="dim")
    lines.append(head)
    for notice in plan.notices:
        lines.append(Text(f"! {_p(notice)}", style="yellow"))
    if plan.empty:
        for w in plan.warnings:
            lines.append(Text(f"! {_p(w)}", style="yellow"))
        lines.append(
            Text("No changes. The certificates match pki.yaml, none is due for renewal, CRLs and OCSP responses are fresh.", style="green")
        )
        return Group(*lines)
    lines.append(Text(""))
    radius = blast_radius(plan, spec) if spec else {}
    width = max([len(c.name) for c in plan.changes] + [1])
    for old, new in plan.moves:
        t = Text("  → ", style="blue")
        t.append("move     ", style="bold blue")
        t.append(f"{old} -> {new}", style="bold")
        t.append("  (state and files carried over; nothing revoked or reissued)", style="dim")
        lines.append(t)
    for c in plan.changes:
        sym, colour = STYLE[c.action]
        t = Text(f"  {sym} ", style=colour)
        t.append(f"{c.action:<8} ", style=f"bold {colour}")
        t.append(f"{c.name:<{width}}", style="bold")
        t.append(f"  {c.kind:<11}", style="dim")
        if c.action != Action.REVOKE:
            key = {
                KeyDisposition.NEW: f"new {c.key_type} key",
                KeyDisposition.KEEP: "same key",
                KeyDisposition.EXTERNAL: f"{c.key_type} key from its CSR",
            }[c.key]
            until = f", until {c.not_after[:10]}" if c.not_after else ""
            t.append(f"  ({key}{until}, issuer {c.issuer or 'self'})", style="dim")
        else:
            t.append(f"  (serial {c.serial})", style="dim")
        lines.append(t)
        for r in c.reasons:
            lines.append(Text(f"      · {_p(r.message)}", style="dim" if r.code == ReasonCode.NEW else ""))
        if c.name in radius:
            below = radius[c.name]
            lines.append(
                Text(f"      blast radius: {len(below)} certificate(s) below must be reissued: {', '.join(below)}", style="magenta")
            )
    for label, what, pubs in (
        (PublicationKind.RESPONDER, "delegated OCSP responder certificate", plan.responders),
        (PublicationKind.CRL, "re-sign CRL", plan.crls),
    ):
        for pub in pubs:
            t = Text("  ✎ ", style="blue")
            t.append(f"{label:<8} ", style="bold blue")
            t.append(f"{pub.name:<{width}}", style="bold")
            t.append(f"  {what}: " + "; ".join(_p(r.message) for r in pub.reasons), style="dim")
            lines.append(t)
    if plan.ocsp:
        by_reason: dict[str, int] = {}
        for pub in plan.ocsp:
            for r in pub.reasons:
                by_reason[r.code] = by_reason.get(r.code, 0) + 1
        names = sorted({p.name for p in plan.ocsp})
        t = Text("  ✎ ", style="blue")
        t.append(f"{'ocsp':<8} ", style="bold blue")
        t.append(f"{len(plan.ocsp)} response(s)", style="bold")
        t.append("  (" + ", ".join(f"{n} {code}" for code, n in sorted(by_reason.items())) + ")", style="dim")
        if len(names) <= 12:
            t.append(": " + ", ".join(names), style="dim")
        lines.append(t)
    off = ocsp_off_summary(plan)
    if off:
        retired = [p.name for p in plan.ocsp_off if p.kind == PublicationKind.RESPONDER]
        t = Text("  ✎ ", style="blue")
        t.append(f"{'ocsp':<8} ", style="bold blue")
        t.append(off, style="bold")
        t.append(
            "  (publish.ocsp is false"
            + (f"; the responders of {', '.join(retired)}: certificate and key removed" if retired else "")
            + ")",
            style="dim",
        )
        lines.append(t)
    for item in plan.cleanup[:CLEANUP_SHOWN]:
        t = Text("  ✎ ", style="blue")
        t.append(f"{'cleanup':<8} ", style="bold blue")
        t.append(cleanup_line(item, _p), style="bold")
        t.append("  (" + "; ".join(_p(r.message) for r in item.reasons) + ")", style="dim")
        lines.append(t)
    if len(plan.cleanup) > CLEANUP_SHOWN:
        lines.append(Text(f"  ✎ cleanup  … and {len(plan.cleanup) - CLEANUP_SHOWN} more file(s)", style="blue"))
    for c in plan.changes:
        for r in c.revokes:
            if r["name"] != c.name or c.action != Action.REVOKE:
                lines.append(Text(f"  - revokes {r['name']} serial {r['serial']} ({_p(r['reason'])})", style="red"))
    for change in plan.settings_changes:
        lines.append(Text(f"  ⚙ setting: {_p(change)}", style="bold"))
    for master, names in plan.new_recipients.items():
        lines.append(
            Text(
                f"  🔑 new recipient {_p(master.removeprefix('age:'))}: can decrypt {len(names)} key(s): {', '.join(names[:20])}{' …' if len(names) > 20 else ''}",
                style="bold magenta",
            )
        )
    for digest, names in keys_by_rule(plan):
        lines.append(Text(f"  🔑 {len(names)} new key(s) encrypted for: {_p(rule_summary(plan.rules[digest]))}", style="cyan"))
    for r in plan.reencrypt:
        t = Text("  🔑 ", style="magenta")
        t.append("re-encrypt ", style="bold magenta")
        t.append(_p(r.path), style="bold")
        t.append(f"  ({_p(reencrypt_delta(r))}; fresh data key)", style="")
        lines.append(t)
    for master, names in plan.exposed.items():
        lines.append(
            Text(
                f"  ! {_p(master)} is removed, but could decrypt {len(names)} key(s) still in git history: {', '.join(names[:20])}"
                f"{' …' if len(names) > 20 else ''}. Rekey them (bump `rekey`) to revoke its access.",
                style="bold yellow",
            )
        )
    for w in plan.warnings:
        lines.append(Text(f"  ! {_p(w)}", style="yellow"))
    if plan.chain_updates:
        lines.append(
            Text(f"  chain files rewritten (new intermediate, certificate unchanged): {', '.join(plan.chain_updates)}", style="dim")
        )
    if plan.pending_journal:
        lines.append(Text(f"  the interrupted apply's {plan.pending_journal} step(s) are finished first", style="yellow"))
    n = plan.counts()
    summary = Text("\nPlan: ", style="bold")
    summary.append(f"{n[Action.ISSUE]} to issue, {n[Action.REISSUE]} to reissue, {n[Action.RENEW]} to renew, {n[Action.REVOKE]} to revoke")
    if plan.moves:
        summary.append(f", {len(plan.moves)} to move")
    if plan.reencrypt:
        summary.append(f", {len(plan.reencrypt)} key file(s) to re-encrypt")
    if plan.settings_changes:
        summary.append(f", {len(plan.settings_changes)} setting(s) to record")
    pubs = publications_summary(plan)
    if pubs:
        summary.append("; to sign: " + ", ".join(pubs))
    if plan.ocsp_off:
        summary.append("; " + ocsp_off_summary(plan))
    if plan.cleanup:
        summary.append("; " + cleanup_summary(plan))
    summary.append(".")
    lines.append(summary)
    return Group(*lines)


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


def rule_summary(rule: dict) -> str:
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


def reencrypt_delta(r) -> str:
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


def status_rows(state: State, now: datetime) -> list[dict]:
    rows = []
    for name in sorted(state.certificates):
        rec = state.certificates[name][0]
        not_after = parse_ts(rec["not_after"])
        days = (not_after - now).total_seconds() / 86400
        status = rec["status"]
        if status == "active" and days <= 0:
            status = "expired"
        rows.append(
            {
                "name": name,
                "kind": rec["kind"],
                "issuer": rec.get("issuer") or "(self)",
                "serial": rec["serial"],
                "not_before": rec["not_before"],
                "not_after": rec["not_after"],
                "days_left": int(days // 1) if days > 0 else 0,
                "status": status,
                "subject": rec["subject"],
            }
        )
    return rows


def status_plain(rows: list[dict]) -> str:
    """The inventory as aligned plain text: for large PKIs, where a rich table of
    thousands of rows would take seconds to lay out."""
    cols = ("name", "kind", "issuer", "serial", "not_after", "days_left", "status")
    head = ("name", "kind", "issuer", "serial", "not after", "days left", "status")
    cells = [[_p(str(r[c])[:16] if c == "serial" else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def status_table(rows: list[dict]) -> Table:
    table = Table(title="pkic status", title_justify="left", header_style="bold")
    for col in ("name", "kind", "issuer", "serial", "not after", "days left", "status"):
        table.add_column(col, justify="right" if col == "days left" else "left")
    for r in rows:
        days = r["days_left"]
        colour = "green" if days > 30 else "yellow" if days > 7 else "red"
        if r["status"] != "active":
            colour = "dim" if r["status"] in ("revoked", "superseded") else "red"
        table.add_row(
            *_cells(r["name"], r["kind"], r["issuer"], r["serial"][:16] + ("…" if len(r["serial"]) > 16 else ""), r["not_after"]),
            Text(str(days), style=colour),
            Text(_p(r["status"]), style=colour),
        )
    return table


def crl_rows(state: State, now: datetime) -> list[dict[str, Any]]:
    """Every authority's last CRL: its number, next update and whether it is fresh, due
    for re-signing (past the refresh point it recorded) or expired (every client rejects
    everything)."""
    rows = []
    for name in sorted(state.crls):
        info = state.crls[name]
        left = (parse_ts(info["next_update"]) - now).total_seconds()
        status: str = crl_status(info, now)
        if state.signer_record(name) is None:
            status = "withdrawn"  # the authority left: its CRL left out/ with it
        elif crl_retired(state, name, now):
            status = "final"  # a revoked authority, everything it signed expired: not re-signed any more
        rows.append(
            {
                "authority": name,
                "number": info["number"],
                "this_update": info["this_update"],
                "next_update": info["next_update"],
                "hours_left": max(0, int(left // 3600)),
                "revoked": len(info.get("serials", [])),
                "status": status,
            }
        )
    return rows


def crl_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="CRLs", title_justify="left", header_style="bold")
    for col in ("authority", "number", "revoked", "next update", "left", "status"):
        table.add_column(col, justify="right" if col in ("number", "revoked", "left") else "left")
    for r in rows:
        colour = {"fresh": "green", "due": "yellow", "expired": "bold red", "withdrawn": "dim", "final": "dim"}[r["status"]]
        left = f"{r['hours_left'] // 24}d {r['hours_left'] % 24}h"
        status = r["status"] if r["status"] != "expired" else "EXPIRED: clients reject everything"
        table.add_row(*_cells(r["authority"], r["number"], r["revoked"], r["next_update"], left), Text(_p(status), style=colour))
    return table


def _cells(*values) -> list[Text]:
    """Table cells as rich Text: a plain string cell would be parsed as console markup
    (a CRL number ``[link=...]x[/link]`` in the state would print as a link)."""
    return [Text(_p(str(v))) for v in values]


def plan_markdown(
    plan: Plan, spec: EffectiveSpec | None, review: ReviewContext | None = None, tail: str = "", max_chars: int | None = None
) -> str:
    """The plan as a pull request comment: what is issued and why, what each certificate
    will contain and who can decrypt its key, re-encryptions, what a removed recipient
    keeps, the policies' and .sops.yaml's diffs, and the changed paths pkic does not plan
    ("review as code"). The first line is a marker a CI job uses to find its comment.

    With ``max_chars`` (GitHub's comment limit is 65,536) the long lists are cut, with
    their counts, and the comment points to the full plan in the job summary; the digest
    at the end always covers the full plan."""
    n = plan.counts()
    icon = {Action.ISSUE: "🟢", Action.REISSUE: "🟡", Action.RENEW: "🔵", Action.REVOKE: "🔴"}
    head = ["<!-- pkic-plan -->"]
    sections: list[tuple[list[str], list[str], list[str]]] = []  # (lines before, rows that may be cut, lines after)
    if plan.empty:
        head += [
            "### pkic plan: no changes",
            "",
            "The certificates match `pki.yaml`, none is due for renewal, CRLs and OCSP responses are fresh.",
        ]
    else:
        title = f"{n[Action.ISSUE]} to issue, {n[Action.REISSUE]} to reissue, {n[Action.RENEW]} to renew, {n[Action.REVOKE]} to revoke"
        if plan.moves:
            title += f", {len(plan.moves)} to move"
        if plan.reencrypt:
            title += f", {len(plan.reencrypt)} key file(s) to re-encrypt"
        head += [f"### pkic plan: {title}", ""]
        if not plan.needs_review:
            head += ["Time-driven only (renewals of unchanged content, CRL and OCSP re-signing): nothing here needs review.", ""]
    urgent = []
    for master, names in plan.new_recipients.items():  # never cut: who can newly decrypt
        urgent.append(
            f"- 🔑 **new recipient {_code(master.removeprefix('age:'))}** can decrypt {len(names)} key(s): "
            + ", ".join(_code(x) for x in names[:30])
            + (f" … and {len(names) - 30} more" if len(names) > 30 else "")
        )
    for change in plan.settings_changes:
        urgent.append(f"- ⚙️ setting: {_md(change)}")
    for master, names in plan.exposed.items():
        urgent.append(
            f"- ⚠️ **{_code(master)} is removed, but could decrypt {len(names)} key(s) still in git history**: "
            + ", ".join(_code(x) for x in names[:30])
            + (" …" if len(names) > 30 else "")
            + ". Rekey them (bump `rekey`) to end that access."
        )
    if review and review.get("outside"):
        from compiler.gitops import is_risky

        risky = [p for p in review["outside"] if is_risky(p)]
        rest = review["outside"][len(risky) :]  # review_context lists the risky ones first
        shown = risky + rest[:40]  # workflows and the like always named, never cut
        urgent.append(
            f"- 🧾 **not planned: review as code** ({len(review['outside'])} path(s) pkic does not plan; a workflow change runs with the CA identity after merge): "
            + ", ".join(_code(p) for p in shown)
            + (f" … and {len(rest) - 40} more" if len(rest) > 40 else "")
        )
    if urgent:
        head += urgent + [""]
    if plan.changes or plan.moves:
        rows = [f"| ➡️ | {_code(new)} | | move | same | renamed from {_code(old)}: nothing revoked or reissued |" for old, new in plan.moves]
        for c in plan.changes:
            key = {
                KeyDisposition.NEW: f"new {c.key_type}",
                KeyDisposition.KEEP: "same",
                KeyDisposition.EXTERNAL: f"{c.key_type} (CSR)",
                None: "",
            }[c.key]
            why = "<br>".join(_md(r.message) for r in c.reasons)
            for r in c.revokes:
                if r["name"] != c.name or c.action != Action.REVOKE:
                    why += f"<br>revokes {_code(r['name'])} ({_md(r['reason'])})"
            rows.append(f"| {icon[c.action]} | {_code(c.name)} | {_md(c.kind)} | **{c.action}** | {_md(key)} | {why} |")
        sections.append((["| | certificate | kind | action | key | why |", "|---|---|---|---|---|---|"], rows, [""]))
        content = [_content_row(c, plan) for c in plan.changes if c.action != Action.REVOKE and c.new_spec is not None]
        if content:
            sections.append(
                (
                    [
                        "#### What each certificate will contain",
                        "",
                        "| certificate | subject | names | profile | key | lifetime | issuer | who can decrypt its key |",
                        "|---|---|---|---|---|---|---|---|",
                    ],
                    content,
                    [""],
                )
            )
    if plan.responder_keys:
        head += [
            f"- 🔑 new OCSP responder key of {_code(a)} encrypted for: {_md(rule_summary(plan.rules[d]))}" for a, d in plan.responder_keys
        ] + [""]
    if plan.reencrypt:
        rows = [f"| {_code(r.path)} | {_md(reencrypt_delta(r))} |" for r in plan.reencrypt]
        sections.append(
            (
                [
                    "#### Key files to re-encrypt (fresh data key, for the new rule's master keys only)",
                    "",
                    "| key file | change |",
                    "|---|---|",
                ],
                rows,
                [""],
            )
        )
    if review and review.get("sops_rules_diff"):
        sections.append(
            (
                ["#### `.sops.yaml`: the rules as data (comments and layout don't count)", "", "```diff"],
                [_fence(x) for x in review["sops_rules_diff"].splitlines()],
                ["```", ""],
            )
        )
    for path, diff in sorted((review or {}).get("policy_diffs", {}).items()):
        sections.append(([f"#### Policy {_code(path)}", "", "```diff"], [_fence(x) for x in diff.splitlines()], ["```", ""]))
    details = []
    pubs = publications_summary(plan, names=True)
    if pubs:
        sections.append((["To sign: " + _md(", ".join(pubs)) + ".", ""], [], []))
    if plan.ocsp_off:
        retired = [p.name for p in plan.ocsp_off if p.kind == PublicationKind.RESPONDER]
        sections.append(
            (
                [
                    _md(ocsp_off_summary(plan))
                    + " (`publish.ocsp` is false"
                    + (": " + ", ".join(_code(a) for a in retired) + " retired" if retired else "")
                    + ").",
                    "",
                ],
                [],
                [],
            )
        )
    if plan.cleanup:
        sections.append(([f"To clean up (nothing signed): {len(plan.cleanup)} file(s), {cleanup_counts(plan)}.", ""], [], []))
    radius = blast_radius(plan, spec) if spec else {}
    for name, below in sorted(radius.items()):
        details.append(
            f"- **blast radius** of {_code(name)}: {len(below)} certificate(s) below are reissued: " + ", ".join(_code(b) for b in below)
        )
    if plan.chain_updates:
        details.append(
            "- chain files rewritten (new intermediate, certificate unchanged): " + ", ".join(_code(b) for b in plan.chain_updates)
        )
    details += [f"- ⚠️ {_md(w)}" for w in plan.warnings] + [f"- {_md(note)}" for note in plan.notices]
    details += [f"- CRL {_code(pub.name)}: " + "; ".join(_md(r.message) for r in pub.reasons) for pub in plan.crls]
    details += [f"- cleanup: {cleanup_line(c, _code)}: " + "; ".join(_md(r.message) for r in c.reasons) for c in plan.cleanup]
    if details:
        sections.append((["<details><summary>Details</summary>", ""], details, ["", "</details>", ""]))
    foot = [f"<sub>{_code('Pki-Plan: ' + plan.reviewed_digest)} · state serial {_md(plan.state_serial)}</sub>"]

    def build(limit: int | None) -> str:
        lines = list(head)
        for before, rows, after in sections:
            shown = rows if limit is None else rows[:limit]
            lines += before + shown
            if len(shown) < len(rows):
                lines.append(
                    f"| … {len(rows) - len(shown)} more: the full plan is in the job summary of the plan run |"
                    if rows[0].startswith("|")
                    else f"… {len(rows) - len(shown)} more lines: the full plan is in the job summary of the plan run"
                )
            lines += after
        return "\n".join(lines + foot) + "\n" + tail

    text = build(None)
    if max_chars is None or len(text) <= max_chars:
        return text
    lo, hi = 0, max(len(r) for _, r, _ in sections) if sections else 0
    while lo < hi:  # the most rows per section that fit
        mid = (lo + hi + 1) // 2
        if len(build(mid)) <= max_chars:
            lo = mid
        else:
            hi = mid - 1
    text = build(lo)
    return (
        text
        if len(text) <= max_chars
        else text[: max_chars - 200] + "\n\n… cut: the full plan is in the job summary of the plan run\n" + "\n".join(foot) + "\n"
    )


def _content_row(c, plan: Plan) -> str:
    sp = c.new_spec or {}
    subject = ", ".join(f"{k}={v}" for k, v in sp.get("subject", []))
    names = [f"{k}:{v}" for k in ("dns", "ip", "uri", "email") for v in sp.get(k, [])]
    shown = "<br>".join(_md(x) for x in names[:20]) + (f"<br>… {len(names) - 20} more" if len(names) > 20 else "")
    if sp.get("kind") == "authority":
        profile = f"CA, path length {sp.get('path_length') if sp.get('path_length') is not None else 'unlimited'}"
        nc = sp.get("name_constraints")
        if nc:
            profile += "<br>constraints: " + _md("; ".join(f"{k} {', '.join(v)}" for k, v in sorted(nc.items())))
    else:
        profile = str(sp.get("profile") or "")
    key = {"new": f"new {c.key_type}", "keep": f"same {c.key_type}", "external": f"{c.key_type} from its CSR"}.get(c.key or "", "")
    issuer = _code(c.issuer) + (" (new key)" if c.issuer_key == "new" else "") if c.issuer else "self-signed"
    who = _md(rule_summary(c.recipients)) if c.recipients is not None else ("the host (CSR)" if c.key == "external" else "unchanged")
    if c.time_driven:
        who += " (unchanged)"
    return (
        f"| {_code(c.name)} | {_md(subject)} | {shown} | {_md(profile)} | {_md(key)} | {_md(sp.get('lifetime', ''))} | {issuer} | {who} |"
    )


def _fence(line: str) -> str:
    return line.replace("```", "`​``")


# Markdown (GitHub's): HTML is escaped as entities (no tag, comment or </details> of the
# value's own); a backtick as an entity (it would open a code span); the characters of
# inline markup and tables with a backslash (a link, emphasis, a cell split by "|"; the
# backslash too, so that a value's own backslash cannot unescape the pipe after it).
# '@' as an entity: a value cannot @mention (notify) people from the bot's comment
_MD = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "&#96;", "@": "&#64;"} | {c: "\\" + c for c in "\\|[]*_~"})


def _md(text: object) -> str:
    """Text from the PR author (names, SANs, subjects, paths, messages, state values) in
    a markdown table or list: shown as the text it is, on one line (control characters
    as their escapes, ``\\n``), with no HTML and no markup that could hide or forge lines."""
    return _p(str(text)).translate(_MD)


def _code(text: object) -> str:
    """A value as code: a code span when it cannot break out of one (nor carry HTML a
    reader could mistake for the comment's own), else <code> around the escaped text."""
    text = str(text)
    if text and text.isprintable() and text.strip() == text and not any(c in text for c in "`<>&\\"):
        return "`" + text.replace("|", "\\|") + "`"
    return f"<code>{_md(text)}</code>"


def seal_markdown(report, findings: list) -> str:
    """The seal's verdict for a pull request comment: nothing when all is well (sealed),
    a warning block naming every problem otherwise."""

    def esc(text: str) -> str:
        return _md(text)

    if report.mode == "unsealed":
        return "\n⚠️ **unsealed**: this repository has no `out.seal`; nothing proves who wrote `out/`.\n"
    sops = ""
    if report.sops_change is not None:
        sops = (
            "\n### ⚠️ `.sops.yaml` changed\n\nIts creation rules differ from the sealed ones. Every key written from now on "
            f"(new certificates, renewals, rekeys) is encrypted under:\n\n{_code(report.sops_change)}\n"
        )
    problems = list(report.problems) + list(findings)
    if not problems:
        if report.seal is not None:  # which key vouched for out/, and why that key: the reviewer can check it
            return (
                f"\n<sub>Seal: `out/` is the sealed output (seal serial {report.seal.serial}), checked against the seal key "
                f"{_code(report.public_key or '')} from {esc(report.key_source)}.</sub>\n"
            ) + sops
        return sops
    lines = [
        "",
        "### 🚨 out/ is not the sealed output",
        "",
        "This change edits what only `pkic apply` writes. Apply will refuse it; review it as an attack on the PKI.",
        "",
    ]
    lines += [f"- {_code(d.file)}: {esc(d.message)}" for d in problems[:50]]
    if len(problems) > 50:
        lines.append(f"- … and {len(problems) - 50} more")
    return "\n".join(lines) + "\n" + sops
