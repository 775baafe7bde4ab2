"""Human-readable renderings (rich renderables and text); the CLI prints them.

Every string that comes from pki.yaml, a CSR, .sops.yaml, out/state.json or git is
escaped here, for the output it goes to: for the terminal and logs (rich ``Text``, never
markup) by ``_p`` (control characters shown as ``\\n``, ``\\x1b``); for markdown by
``_md`` and ``_code``. Stored data is never changed."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from compiler.model.errors import printable as _p
from compiler.plan import Action, KeyDisposition, Plan, PublicationKind, ReasonCode, blast_radius
from compiler.spec import EffectiveSpec
from compiler.state import State, ts
from compiler.state.revocation import crl_retired, crl_status

if TYPE_CHECKING:
    pass


from compiler.plan.summary import (
    CLEANUP_SHOWN,
    cleanup_line,
    cleanup_summary,
    keys_by_rule,
    ocsp_off_summary,
    publications_summary,
    reencrypt_delta,
    rule_summary,
)

STYLE = {Action.ISSUE: ("+", "green"), Action.REISSUE: ("~", "yellow"), Action.RENEW: ("↻", "cyan"), Action.REVOKE: ("-", "red")}


def plan_text(plan: Plan, spec: EffectiveSpec | None) -> Group:
    lines: list[Text] = []
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
            key = (
                {
                    KeyDisposition.NEW: f"new {c.key_type} key",
                    KeyDisposition.KEEP: "same key",
                    KeyDisposition.EXTERNAL: f"{c.key_type} key from its CSR",
                }.get(c.key, "")
                if c.key is not None
                else ""
            )
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
            for pr in pub.reasons:
                by_reason[pr.code] = by_reason.get(pr.code, 0) + 1
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
        for rv in c.revokes:
            if rv["name"] != c.name or c.action != Action.REVOKE:
                lines.append(Text(f"  - revokes {rv['name']} serial {rv['serial']} ({_p(rv['reason'])})", style="red"))
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
    for re_ in plan.reencrypt:
        t = Text("  🔑 ", style="magenta")
        t.append("re-encrypt ", style="bold magenta")
        t.append(_p(re_.path), style="bold")
        t.append(f"  ({_p(reencrypt_delta(re_))}; fresh data key)", style="")
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
    signed = publications_summary(plan)
    if signed:
        summary.append("; to sign: " + ", ".join(signed))
    if plan.ocsp_off:
        summary.append("; " + ocsp_off_summary(plan))
    if plan.cleanup:
        summary.append("; " + cleanup_summary(plan))
    summary.append(".")
    lines.append(summary)
    return Group(*lines)


def status_rows(state: State, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(state.certificates):
        rec = state.certificates[name][0]
        not_after = rec["not_after"]
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
                "not_before": str(rec["not_before"]),
                "not_after": str(rec["not_after"]),
                "days_left": int(days // 1) if days > 0 else 0,
                "status": status,
                "subject": rec["subject"],
            }
        )
    return rows


def status_plain(rows: list[dict[str, Any]]) -> str:
    """The inventory as aligned plain text: for large PKIs, where a rich table of
    thousands of rows would take seconds to lay out."""
    cols = ("name", "kind", "issuer", "serial", "not_after", "days_left", "status")
    head = ("name", "kind", "issuer", "serial", "not after", "days left", "status")
    cells = [[_p(str(r[c])[:16] if c == "serial" else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def status_table(rows: list[dict[str, Any]]) -> Table:
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
        left = (info["next_update"] - now).total_seconds()
        status: str = crl_status(info, now)
        if state.signer_record(name) is None:
            status = "withdrawn"  # the authority left: its CRL left out/ with it
        elif crl_retired(state, name, now):
            status = "final"  # a revoked authority, everything it signed expired: not re-signed any more
        rows.append(
            {
                "authority": name,
                "number": info["number"],
                "this_update": str(info["this_update"]),
                "next_update": str(info["next_update"]),
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


def _cells(*values: object) -> list[Text]:
    """Table cells as rich Text: a plain string cell would be parsed as console markup
    (a CRL number ``[link=...]x[/link]`` in the state would print as a link)."""
    return [Text(_p(str(v))) for v in values]
