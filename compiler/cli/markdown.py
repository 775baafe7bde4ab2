"""The plan as markdown, for the pull request comment: the summary, the changes with
their content, what a reviewer must look at, the seal. Every value from an input is
escaped for markdown (``_md``, ``_code``): a name cannot @mention anyone or break out
of a table or a code span."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compiler.model.errors import printable as _p
from compiler.plan import Action, KeyDisposition, Plan, PublicationKind, blast_radius
from compiler.spec import EffectiveSpec
from compiler.spec.effective import san_lists

if TYPE_CHECKING:
    from compiler.gitops import ReviewContext
    from compiler.model.errors import Diagnostic
    from compiler.plan import Change
    from compiler.state import Report


from compiler.plan.summary import cleanup_counts, cleanup_line, ocsp_off_summary, publications_summary, reencrypt_delta, rule_summary


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
    if review and (rules_diff := review.get("sops_rules_diff")):
        sections.append(
            (
                ["#### `.sops.yaml`: the rules as data (comments and layout don't count)", "", "```diff"],
                [_fence(x) for x in rules_diff.splitlines()],
                ["```", ""],
            )
        )
    for path, diff in sorted(review["policy_diffs"].items() if review else []):
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


def _content_row(c: Change, plan: Plan) -> str:
    sp = c.new_spec or {}
    subject = ", ".join(f"{k}={v}" for k, v in sp.get("subject", []))
    names = [f"{k}:{v}" for k, vals in san_lists(sp).items() for v in vals]
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


def seal_markdown(report: Report, findings: list[Diagnostic]) -> str:
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
