"""`pkic report`: one self-contained HTML page for auditors (no network, no scripts).

Every value from the state or git (names, serials, dates, CRL numbers, reasons, commit
authors and subjects) is HTML-escaped where it is written, whatever the state's own
checks already refused: a hand-written state must not put markup into the page.

Sections: the hierarchy as a tree, a validity timeline (inline SVG: when each
certificate starts, renews and expires, with today marked), revocations with reasons,
CRLs, and the last changes with their commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

from compiler.model.durations import default_renew_before
from compiler.plan.limits import LAST_X509_TIME
from compiler.spec import EffectiveSpec
from compiler.state import Record, State, ts

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:2rem 0 .6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.meta{color:#59636e}table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;font-size:13px}
th{background:#f6f8fa}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
ul.tree,ul.tree ul{list-style:none;padding-left:1.4rem;margin:0}ul.tree{padding-left:0}
ul.tree li{margin:.25rem 0}ul.tree li::before{content:"└ ";color:#8c959f}
.kind{font-size:11px;padding:1px 6px;border-radius:8px;background:#ddf4ff;color:#0969da;margin-left:.3rem}
.kind.certificate{background:#dafbe1;color:#1a7f37}.status-revoked{color:#cf222e}.status-expired{color:#cf222e}
.legend span{display:inline-block;margin-right:1rem}.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
"""


def _h(value: object) -> str:
    """Any value as HTML text or a quoted attribute value."""
    return escape(str(value))


def render_report(state: State, spec: EffectiveSpec | None, commits: list[dict[str, str]], now: datetime) -> str:
    active = {n: r for n in state.active_names() if (r := state.active(n)) is not None}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>PKI report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>PKI report</h1>",
        f"<p class=meta>Lineage <code>{_h(state.lineage or 'none')}</code> · state serial {_h(state.serial)} · "
        f'generated for <time id=now datetime="{ts(now)}">{ts(now)}</time> · {len(active)} active certificate(s)</p>',
    ]
    parts.append(_tree(active))
    parts.append(_timeline(active, spec, now))
    parts.append(_revocations(state))
    parts.append(_crls(state, now))
    parts.append(_changes(commits))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _tree(active: dict[str, Record]) -> str:
    children: dict[str | None, list[str]] = {}
    for name, rec in active.items():
        parent = rec.get("issuer") if rec.get("issuer") in active else None
        children.setdefault(parent, []).append(name)

    def node(name: str) -> str:
        rec = active[name]
        kids = sorted(children.get(name, []), key=lambda n: (active[n]["kind"] != "authority", n))
        inner = "".join(node(k) for k in kids)
        return (
            f'<li data-name="{_h(name)}"><strong>{_h(name)}</strong>'
            f'<span class="kind {_h(rec["kind"])}">{_h(rec["kind"])}</span> '
            f"<code>{_h(rec.get('key_type', ''))}</code> · until {_h(str(rec['not_after'])[:10])} · serial <code>{_h(rec['serial'][:16])}</code>"
            + (f"<ul>{inner}</ul>" if inner else "")
            + "</li>"
        )

    roots = sorted(children.get(None, []))
    body = "".join(node(r) for r in roots) or "<li>nothing issued yet</li>"
    return f"<h2>Hierarchy</h2><ul class=tree id=hierarchy>{body}</ul>"


def _timeline(active: dict[str, Record], spec: EffectiveSpec | None, now: datetime) -> str:
    # 90 days back, a year ahead; near the last date X.509 (and, a second later, datetime)
    # can carry, the same width ending there
    end = now + min(timedelta(days=365), LAST_X509_TIME - now)
    start = end - timedelta(days=90 + 365)
    width, label_w, row_h = 1000, 180, 22
    names = sorted(active, key=lambda n: (active[n]["kind"] != "authority", n))
    height = 40 + row_h * max(1, len(names))

    def x(t: datetime) -> float:
        t = min(max(t, start), end)
        return label_w + (width - label_w) * (t - start) / (end - start)

    svg = [
        f'<svg id=timeline xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="validity timeline">'
    ]
    for month in range(0, 13, 3):
        t = start + timedelta(days=30 * month)
        svg.append(f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{height}" stroke="#eaeef2"/>')
        svg.append(f'<text x="{x(t):.1f}" y="14" font-size="11" fill="#59636e" text-anchor="middle">{t:%Y-%m}</text>')
    for i, name in enumerate(names):
        rec = active[name]
        y = 28 + i * row_h
        nb, na = rec["not_before"], rec["not_after"]
        entry = spec.entries.get(name) if spec is not None else None
        renew = na - (entry.renew_before if entry is not None else default_renew_before(na - nb))
        colour = "#0969da" if rec["kind"] == "authority" else "#1a7f37"
        svg.append(f'<text x="4" y="{y + 12}" font-size="12">{_h(name)}</text>')
        svg.append(
            f'<rect data-name="{_h(name)}" x="{x(nb):.1f}" y="{y}" width="{max(1.0, x(na) - x(nb)):.1f}" height="14" rx="3" fill="{colour}" opacity="0.75">'
            f"<title>{_h(name)}: {_h(rec['not_before'])} to {_h(rec['not_after'])}, renews {ts(renew)}</title></rect>"
        )
        if start <= renew <= end:
            svg.append(f'<line x1="{x(renew):.1f}" y1="{y - 2}" x2="{x(renew):.1f}" y2="{y + 16}" stroke="#bf8700" stroke-width="2"/>')
        if na > end:
            svg.append(f'<text x="{width - 4}" y="{y + 12}" font-size="11" text-anchor="end" fill="#fff">→ {na:%Y-%m-%d}</text>')
    svg.append(f'<line id=today x1="{x(now):.1f}" y1="18" x2="{x(now):.1f}" y2="{height}" stroke="#cf222e" stroke-width="2"/>')
    svg.append(f'<text x="{x(now) + 4:.1f}" y="{height - 4}" font-size="11" fill="#cf222e">today</text>')
    svg.append("</svg>")
    legend = (
        '<p class=legend><span><i class=sw style="background:#0969da"></i>authority</span>'
        '<span><i class=sw style="background:#1a7f37"></i>certificate</span>'
        '<span><i class=sw style="background:#bf8700"></i>renewal point</span>'
        '<span><i class=sw style="background:#cf222e"></i>today</span> '
        f"<span class=meta>window {start:%Y-%m-%d} to {end:%Y-%m-%d}</span></p>"
    )
    return "<h2>Validity timeline</h2>" + legend + "".join(svg)


def _revocations(state: State) -> str:
    rows = []
    for name in sorted(state.certificates):
        for r in state.certificates[name]:
            if r["status"] == "revoked":
                rows.append(
                    f'<tr data-name="{_h(name)}"><td>{_h(name)}</td><td><code>{_h(r["serial"])}</code></td>'
                    f"<td>{_h(r.get('revocation_reason', ''))}</td><td>{_h(r.get('revoked_at', ''))}</td>"
                    f"<td>{_h(r.get('invalidity_date', '') or '')}</td></tr>"
                )
    body = "".join(rows) or "<tr><td colspan=5>no revocations</td></tr>"
    return (
        "<h2>Revocations</h2><table id=revocations><thead><tr><th>name</th><th>serial</th><th>reason</th>"
        f"<th>revoked at</th><th>invalidity date</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _crls(state: State, now: datetime) -> str:
    rows = []
    for a in sorted(state.crls):
        info = state.crls[a]
        fresh = info["next_update"] > now
        rows.append(
            f'<tr data-name="{_h(a)}"><td>{_h(a)}</td><td>{_h(info["number"])}</td><td>{len(info.get("serials", []))}</td>'
            f'<td>{_h(info["this_update"])}</td><td class="{"" if fresh else "status-expired"}">{_h(info["next_update"])}</td></tr>'
        )
    body = "".join(rows) or "<tr><td colspan=5>no CRLs</td></tr>"
    return (
        "<h2>CRLs</h2><table id=crls><thead><tr><th>authority</th><th>number</th><th>revoked</th><th>this update</th>"
        f"<th>next update</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _changes(commits: list[dict[str, str]]) -> str:
    rows = (
        "".join(
            f"<tr><td>{_h(c['date'])}</td><td><code>{_h(c['commit'][:12])}</code></td><td>{_h(c['author'])}</td><td>{_h(c['subject'])}</td></tr>"
            for c in commits
        )
        or "<tr><td colspan=4>no commits yet (pkic apply --commit records them)</td></tr>"
    )
    return (
        "<h2>Last changes</h2><table id=changes><thead><tr><th>date</th><th>commit</th><th>author</th><th>change</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
