"""Durations as written in pki.yaml: ``90d``, ``12h``, ``3y``, ``1y6w`` or ISO 8601 ``P90D``.

Units: ``y`` = 365 days, ``w`` = 7 days, ``d``, ``h``, ``m`` (minutes), ``s``.
ISO 8601: ``PnYnMnWnDTnHnMnS`` with Y = 365 days and M = 30 days.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from compiler.model.bounded import quote

_SHORT = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_ISO = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?\Z")
DURATION_PATTERN = r"^(\d+[ywdhms])+$|^P(\d+[YMWD])*(T(\d+[HMS])+)?$"
DURATION_HINT = "use 90d, 12h, 3y or P90D"
# No X.509 date is later than 9999-12-31T23:59:59Z (GeneralizedTime): a longer duration
# can never be a validity, whatever the clock says
MAX_DURATION = datetime(9999, 12, 31, 23, 59, 59) - datetime(1970, 1, 1)


def parse_duration(text: str) -> timedelta:
    """Parse a duration, raising ValueError on anything else (including zero)."""
    if not isinstance(text, str):
        raise ValueError(f"{quote(text)} is not a duration ({DURATION_HINT})")
    s = text.strip()
    if len(s) > 64:
        raise ValueError(f"{quote(s)} is not a duration ({DURATION_HINT})")
    try:
        delta = _parse(s)
    except OverflowError:
        delta = MAX_DURATION + timedelta(days=1)
    if delta > MAX_DURATION:
        raise ValueError(f"{quote(s)} is longer than any X.509 date can reach (they end in the year 9999)")
    return delta


def _parse(s: str) -> timedelta:
    m = _SHORT.match(s)
    if m and s:
        y, w, d, h, mi, sec = (int(g or 0) for g in m.groups())
        delta = timedelta(days=365 * y + 7 * w + d, hours=h, minutes=mi, seconds=sec)
    else:
        m = _ISO.match(s)
        if not m or s in ("P", "PT") or s.endswith("T"):
            raise ValueError(f"{quote(s)} is not a duration ({DURATION_HINT})")
        y, mo, w, d, h, mi, sec = (int(g or 0) for g in m.groups())
        delta = timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=sec)
    if delta <= timedelta(0):
        raise ValueError(f"{quote(s)} is not a positive duration ({DURATION_HINT})")
    return delta


def format_duration(delta: timedelta) -> str:
    """Render a duration compactly (``90d``, ``10y``, ``36h``) for plans and state."""
    total = int(delta.total_seconds())
    parts = []
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            n, total = divmod(total, size)
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def default_renew_before(lifetime: timedelta) -> timedelta:
    """When a certificate is renewed unless pki.yaml says otherwise: with a third of its
    lifetime left, time enough to notice and mend a failed renewal before it expires."""
    return lifetime / 3


def default_refresh_before(lifetime: timedelta) -> timedelta:
    """When a CRL or OCSP response is re-signed unless pki.yaml says otherwise: at half
    its lifetime, so relying parties never hold one about to expire."""
    return lifetime / 2


def responder_renew_before(lifetime: timedelta, ocsp_lifetime: timedelta) -> timedelta:
    """When a delegated OCSP responder certificate is renewed: with a third of its
    lifetime left, as a certificate, but never later than an OCSP lifetime before it
    expires, so no response it signs outlives it."""
    return max(default_renew_before(lifetime), ocsp_lifetime)
