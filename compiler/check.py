"""`pkic check`: expiry monitoring for a scheduled CI job, Nagios or Prometheus.

Each certificate, CRL, OCSP response and delegated responder gets a level:

* warning: past its own renewal or refresh point with nothing done yet; certificates
  also when within ``--warn`` of expiry (never more than a third of their lifetime, so
  a certificate that is not yet due is never an alarm);
* critical: expires within ``--critical``, or within a quarter of its lifetime when
  that is shorter (a freshly signed 7-day CRL is never an alarm), or has expired.

Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from compiler.model.durations import default_renew_before, responder_renew_before
from compiler.plan import PublicationKind
from compiler.spec import CaSettings, EffectiveSpec, Entry
from compiler.state import State, parse_ts, ts
from compiler.state.revocation import crl_retired, refresh_point

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass
class Item:
    kind: str  # "certificate" or a PublicationKind
    name: str
    issuer: str | None
    expires: str
    level: int
    message: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = LEVEL_NAMES[self.level]
        return d


def _level(
    now: datetime, start: datetime, end: datetime, refresh_at: datetime, warn: timedelta | None, critical: timedelta
) -> tuple[int, str]:
    life = end - start
    if now < start:
        return CRITICAL, f"not valid yet: starts {ts(start)} (signed with a clock, or --now, ahead of this one)"
    if now >= end:
        return CRITICAL, f"expired at {ts(end)}"
    crit = min(critical, life / 4)
    if now >= end - crit:
        return CRITICAL, f"expires {ts(end)} ({_left(end - now)} left)"
    if now >= refresh_at:
        return WARNING, f"past its renewal point {ts(refresh_at)}, nothing done yet (expires {ts(end)})"
    if warn is not None and now >= end - min(warn, default_renew_before(life)):
        return WARNING, f"expires {ts(end)} ({_left(end - now)} left)"
    return OK, f"fine until {ts(refresh_at)}"


def _left(d: timedelta) -> str:
    hours = int(d.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h"


def _ca(entries: dict[str, Entry], name: str | None) -> CaSettings | None:
    """The publication settings of authority ``name`` in pki.yaml (None: not at hand)."""
    entry = entries.get(name) if name is not None else None
    return entry.ca if entry is not None else None


def run_check(state: State, spec: EffectiveSpec | None, now: datetime, warn: timedelta, critical: timedelta) -> list[Item]:
    """``spec`` (an EffectiveSpec or None) supplies renew_before and refresh settings."""
    entries = spec.entries if spec is not None else {}
    items: list[Item] = []
    for name in sorted(state.certificates):
        recs = state.certificates[name]
        rec = recs[0]
        if rec["status"] != "active":
            continue
        start, end = rec["not_before"], rec["not_after"]
        entry = entries.get(name)
        renew_before = entry.renew_before if entry is not None else default_renew_before(end - start)
        level, msg = _level(now, start, end, end - renew_before, warn, critical)
        items.append(Item("certificate", name, rec.get("issuer"), str(rec["not_after"]), level, msg))
        for r in recs:
            info = r.get("ocsp")
            if not info or not info.get("file") or r["not_after"] <= now:
                continue
            ca = _ca(entries, r.get("issuer"))
            s, e = info["this_update"], info["next_update"]
            level, msg = _level(now, s, e, refresh_point(info, ca.ocsp_renew_before if ca else None), None, critical)
            items.append(
                Item(
                    PublicationKind.OCSP,
                    name if r is rec else f"{name}@{r['serial'][:12]}",
                    r.get("issuer"),
                    str(info["next_update"]),
                    level,
                    msg,
                )
            )
    for authority in sorted(state.crls):
        if state.signer_record(authority) is None or crl_retired(state, authority, now):
            continue
        crl = state.crls[authority]
        ca = _ca(entries, authority)
        s, e = crl["this_update"], crl["next_update"]
        level, msg = _level(now, s, e, refresh_point(crl, ca.crl_renew_before if ca else None), None, critical)
        items.append(Item(PublicationKind.CRL, authority, authority, str(crl["next_update"]), level, msg))
    for authority in sorted(state.responders):
        resp = state.responder(authority)
        if resp is None or state.active(authority) is None:
            continue
        s, e = resp["not_before"], resp["not_after"]
        ca = _ca(entries, authority)
        window = responder_renew_before(e - s, ca.ocsp_lifetime if ca else timedelta(0))
        level, msg = _level(now, s, e, e - window, None, critical)
        items.append(Item(PublicationKind.RESPONDER, authority, authority, str(resp["not_after"]), level, msg))
    return items


def overall(items: list[Item]) -> int:
    return max((i.level for i in items), default=OK)


def summary_line(items: list[Item]) -> str:
    level = overall(items)
    counts: dict[str, int] = {}
    for i in items:
        counts[i.kind] = counts.get(i.kind, 0) + 1
    label = {"certificate": "certificate(s)", "crl": "CRL(s)", "ocsp": "OCSP response(s)", "responder": "OCSP responder(s)"}
    what = ", ".join(f"{counts[k]} {label[k]}" for k in label if k in counts) or "nothing issued"
    bad = [i for i in items if i.level >= WARNING]
    if not bad:
        return f"PKIC OK - {what} checked"
    worst = sorted(bad, key=lambda i: (-i.level, i.expires))[:3]
    detail = "; ".join(f"{i.kind} {i.name}: {i.message}" for i in worst)
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return f"PKIC {LEVEL_NAMES[level]} - {len(bad)} problem(s): {detail}{more}"


def prometheus(items: list[Item], now: datetime) -> str:
    """Textfile-collector format (node_exporter), stable order."""

    def esc(v: str | None) -> str:
        return (v or "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    metric = {
        "certificate": "pkic_certificate_expiry_timestamp_seconds",
        "crl": "pkic_crl_next_update_timestamp_seconds",
        "ocsp": "pkic_ocsp_next_update_timestamp_seconds",
        "responder": "pkic_ocsp_responder_expiry_timestamp_seconds",
    }
    lines = []
    for kind, name in metric.items():
        lines.append(f"# HELP {name} When the {kind} expires (Unix time).")
        lines.append(f"# TYPE {name} gauge")
        for i in items:
            if i.kind == kind:
                lines.append(f'{name}{{name="{esc(i.name)}",issuer="{esc(i.issuer)}"}} {int(parse_ts(i.expires).timestamp())}')
    lines.append("# HELP pkic_check_level 0 ok, 1 warning, 2 critical, per item.")
    lines.append("# TYPE pkic_check_level gauge")
    for i in items:
        lines.append(f'pkic_check_level{{kind="{i.kind}",name="{esc(i.name)}"}} {i.level}')
    lines.append("# HELP pkic_check_timestamp_seconds When the check ran (Unix time).")
    lines.append("# TYPE pkic_check_timestamp_seconds gauge")
    lines.append(f"pkic_check_timestamp_seconds {int(now.timestamp())}")
    return "\n".join(lines) + "\n"
