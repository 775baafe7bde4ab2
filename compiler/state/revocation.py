"""What the records say about publishing revocation, for every layer that asks: which
revoked certificates an authority's CRL lists, when a CRL or an OCSP response is due
for re-signing, and when a revoked authority's CRL is final.

The planner decides with these, apply writes with them, and ``check``, ``status`` and
``verify`` report with them, so that none of them can disagree about a CRL.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from datetime import datetime, timedelta
from typing import Literal

from compiler.model.durations import default_refresh_before
from compiler.state.records import ACTIVE, REVOKED, Published, Record, State

CrlStatus = Literal["fresh", "due", "expired"]


def revoked_by_issuer(state: State, also: Set[tuple[str, str]] = frozenset()) -> dict[str, list[Record]]:
    """Every revoked certificate (and those ``also`` names by (name, serial): revoked by
    the plan being made) by the authority that issued it, in the state's order. One pass
    over every record: a planner with thousands of leaves asks for all authorities at once."""
    by_issuer: dict[str, list[Record]] = {}
    for recs in state.certificates.values():
        for r in recs:
            issuer = r.get("issuer")
            if issuer is not None and (r["status"] == REVOKED or (also and (r["name"], r["serial"]) in also)):
                by_issuer.setdefault(issuer, []).append(r)
    return by_issuer


def crl_entries(revoked: Iterable[Record], key_id: str | None) -> list[Record]:
    """Which of an authority's revoked certificates (``revoked_by_issuer``) its CRL lists:
    those signed with ``key_id``, the key the CRL is signed with (a certificate signed by
    an earlier key is on that key's last CRL), except those already kept on a CRL past
    their expiry and then dropped (``crl_listed_after_expiry``)."""
    return [r for r in revoked if r.get("issuer_key_id") == key_id and not r.get("crl_listed_after_expiry")]


def refresh_point(published: Published, renew_before: timedelta | None = None) -> datetime:
    """When a CRL or OCSP response (its record: ``this_update``, ``next_update``) is
    re-signed: ``renew_before`` before its next update (pki.yaml's ``crl_renew_before`` or
    ``ocsp_renew_before``, when at hand); else at the refresh point recorded when it was
    signed; else half-way through its validity (the default refresh window)."""
    next_update = published["next_update"]
    if renew_before is not None:
        return next_update - renew_before
    refresh_at = published.get("refresh_at")
    if refresh_at:
        return refresh_at
    return next_update - default_refresh_before(next_update - published["this_update"])


def crl_status(crl: Published, now: datetime, renew_before: timedelta | None = None) -> CrlStatus:
    """``expired`` past its next update (every client then rejects what it covers),
    ``due`` past its refresh point (:func:`refresh_point`), else ``fresh``."""
    if now >= crl["next_update"]:
        return "expired"
    return "due" if now >= refresh_point(crl, renew_before) else "fresh"


def crl_retired(state: State, authority: str, now: datetime) -> bool:
    """A revoked authority's CRL once everything it signed has expired: no longer
    re-signed (its last one stays in out/), and no longer due."""
    rec = state.signer_record(authority)
    if rec is None or rec["status"] == ACTIVE:
        return False
    last = state.last_issued(authority, rec["key_id"])
    return last is None or last <= now
