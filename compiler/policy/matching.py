"""How a policy's patterns match a certificate's names and subject (the rules are
described in ``policy.rules``): DNS patterns where ``*`` is one whole label, URI
patterns with an exact scheme, host and port, subject patterns where ``*`` is any run of
characters. An IP range is ``constraints.ip_within``, shared with name constraints.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit


def dns_matches(name: str, pattern: str) -> bool:
    a, b = name.lower().split("."), pattern.lower().split(".")
    if len(a) != len(b):
        return False
    for x, p in zip(a, b, strict=True):
        if p == "*":
            continue  # one whole label (a literal '*' in a wildcard name included)
        if x != p:
            return False
    return True


def dns_overlaps(name: str, pattern: str) -> bool:
    """Whether a certificate name could stand for a name the pattern covers: a wildcard
    name (``*.example.com``) overlaps ``admin.example.com`` (for forbidden rules)."""
    a, b = name.lower().split("."), pattern.lower().split(".")
    return len(a) == len(b) and all(x == p or p == "*" or x == "*" for x, p in zip(a, b, strict=True))


def uri_matches(value: str, pattern: str) -> bool:
    """Exact scheme, host and port; then the rest (path, query, fragment) against the
    pattern, where only ``*`` is special (any run of characters)."""
    try:
        v, p = urlsplit(value), urlsplit(pattern)
        if v.scheme.lower() != p.scheme.lower() or (v.hostname or "") != (p.hostname or "") or v.port != p.port:
            return False
    except ValueError:
        return False
    if v.username or v.password:
        return False

    def rest(u: SplitResult) -> str:
        return u.path + (f"?{u.query}" if u.query else "") + (f"#{u.fragment}" if u.fragment else "")

    regex = ".*".join(re.escape(part) for part in rest(p).split("*"))
    return re.fullmatch(regex, rest(v), flags=re.DOTALL) is not None


def subject_matches(value: str, pattern: str) -> bool:
    """A subject value against a policy pattern: '*' is any run of characters, the rest
    literal; compared case-insensitively (``System:Masters`` is ``system:masters``)."""
    regex = ".*".join(re.escape(part) for part in pattern.casefold().split("*"))
    return re.fullmatch(regex, value.casefold(), flags=re.DOTALL) is not None
