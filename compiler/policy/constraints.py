"""RFC 5280 §4.2.1.10 name constraints, checked at plan time (before any client would).

For every certificate, each name of a type that an ancestor constrains must fall inside
one of that ancestor's permitted subtrees (when it has any of that type) and inside none
of its excluded subtrees. Subtree semantics follow RFC 5280 and OpenSSL:

* DNS ``example.com`` covers ``example.com`` and every name below it; ``.example.com``
  covers only names below it.
* IP: the address lies in the network.
* Email ``ops@example.com`` is one mailbox; ``example.com`` every mailbox at that host;
  ``.example.com`` every mailbox at hosts below it.
* URI: the host of the URI, with the DNS rules of the email host form; a URI without a
  host fails any URI constraint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from compiler.model.bounded import Locator, quote
from compiler.model.errors import Diagnostic

if TYPE_CHECKING:  # spec calls check_name_constraints: at run time, no import back
    from compiler.spec.effective import Entry


def dns_within(name: str, subtree: str) -> bool:
    name = name.lower()
    if name.startswith("*."):
        name = name[2:]
        # a wildcard stands for names *below* name: inside subtree when name itself is
        if subtree.startswith("."):
            return name == subtree[1:] or name.endswith(subtree)
    if subtree.startswith("."):
        return name.endswith(subtree)
    return name == subtree or name.endswith("." + subtree)


def host_within(host: str, subtree: str) -> bool:
    host = host.lower()
    if subtree.startswith("."):
        return host.endswith(subtree)
    return host == subtree


def ip_within(address: str, network: str) -> bool:
    ip = ipaddress.ip_address(address)
    net = ipaddress.ip_network(network)
    return ip.version == net.version and ip in net


def email_within(address: str, subtree: str) -> bool:
    if "@" in subtree:
        return address.lower() == subtree.lower()
    return host_within(address.rsplit("@", 1)[1], subtree)


def uri_within(value: str, subtree: str) -> bool:
    host = urlsplit(value).hostname
    return host_within(host, subtree) if host else False


MATCHERS: dict[str, tuple[str, str, Callable[[str, str], bool]]] = {
    "dns": ("permitted_dns", "excluded_dns", dns_within),
    "ip": ("permitted_ip", "excluded_ip", ip_within),
    "email": ("permitted_email", "excluded_email", email_within),
    "uri": ("permitted_uri", "excluded_uri", uri_within),
}


def violations(names: Mapping[str, Any], constraints: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(san type, name, why) for each name outside the constraints."""
    out = []
    for kind, (permitted_key, excluded_key, within) in MATCHERS.items():
        permitted = constraints.get(permitted_key) or []
        excluded = constraints.get(excluded_key) or []
        for value in names.get(kind) or []:
            if permitted and not any(within(value, s) for s in permitted):
                out.append((kind, value, f"not within {permitted_key}: {', '.join(permitted)}"))
            for s in excluded:
                if within(value, s):
                    out.append((kind, value, f"within {excluded_key}: {s}"))
                    break
    return out


def openssl_hostlike(cn: str) -> bool:
    """Whether OpenSSL reads a subject CN as a host name (v3_ncons.c cn2dnsid): letters,
    digits, '_', '-' and '.', with '-' and '.' neither first nor last, no '.' beside a '.'
    or a '-', and at least one '.'. Such a CN is checked against DNS name constraints
    when the certificate has no DNS SAN, whatever its extended key usage."""
    dotted = False
    for i, c in enumerate(cn):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        if 0 < i < len(cn) - 1:
            if c == "-":
                continue
            if c == "." and cn[i + 1] != "." and cn[i - 1] != "-" and cn[i + 1] != "-":
                dotted = True
                continue
        return False
    return dotted


def cn_violations(entry: Entry, nc: dict[str, Any]) -> list[tuple[str, str]]:
    """(CN, why) for each subject CN of a leaf that a verifier would check against the DNS
    name constraints ``nc`` and refuse. Only when the leaf has no DNS SAN (with one,
    neither OpenSSL nor GnuTLS looks at the CN):

    * server and peer (serverAuth): GnuTLS checks every CN as a DNS name;
    * any profile: OpenSSL (so nginx, HAProxy, curl, Node, Python) checks a CN that
      looks like a host name (:func:`openssl_hostlike`)."""
    permitted, excluded = nc.get("permitted_dns") or [], nc.get("excluded_dns") or []
    if entry.spec.get("dns") or not (permitted or excluded):
        return []
    from compiler.model.names import dns_name

    out = []
    server = entry.spec.get("profile") in ("server", "peer")
    for key, cn in entry.spec.get("subject", []):
        if key != "CN":
            continue
        if server:
            who = "GnuTLS checks the CN of a server certificate"
            try:
                name = dns_name(cn)
            except ValueError:
                if permitted:
                    out.append(
                        (cn, f"{who} as a DNS name when there is no dns SAN, and it is not one (permitted_dns: {', '.join(permitted)})")
                    )
                continue
        elif openssl_hostlike(cn):
            who, name = "OpenSSL checks a CN that looks like a host name", cn.lower()
        else:
            continue
        if permitted and not any(dns_within(name, s) for s in permitted):
            out.append(
                (cn, f"{who} against the DNS name constraints when there is no dns SAN: not within permitted_dns: {', '.join(permitted)}")
            )
            continue
        hit = next((s for s in excluded if dns_within(name, s)), None)
        if hit:
            out.append((cn, f"{who} against the DNS name constraints when there is no dns SAN: within excluded_dns: {hit}"))
    return out


def check_name_constraints(entries: dict[str, Entry], loc: Locator) -> list[Diagnostic]:
    diags = []
    for name, entry in entries.items():
        if entry.kind != "certificate":
            continue
        anc = entry.issuer
        while anc is not None:
            nc = entries[anc].spec.get("name_constraints")
            if nc:
                for cn, why in cn_violations(entry, nc):
                    own = ((loc.doc or {}).get("certificates") or {}).get(name) or {}
                    path = (
                        ("certificates", name, "subject", "CN")
                        if isinstance(own, dict) and isinstance(own.get("subject"), dict) and "CN" in own["subject"]
                        else ("defaults", "subject", "CN")
                    )
                    diags.append(
                        loc.diag(
                            path,
                            f"CN {quote(cn)} would be refused under '{anc}': {why}",
                            "drop the CN, add a dns: name (verifiers then check the SAN only), or use a CN inside the constraints",
                        )
                    )
                for kind, value, why in violations(entry.spec, nc):
                    from compiler.spec.diagnostics import raw_index

                    i = raw_index(loc, "certificates", name, kind, value)
                    diags.append(
                        loc.diag(
                            ("certificates", name, kind) if i is None else ("certificates", name, kind, i),
                            f"{quote(value)} is outside the name constraints of '{anc}' ({why})",
                            f"clients would reject it; change the name or {anc}'s name_constraints",
                        )
                    )
            anc = entries[anc].issuer
    return diags
