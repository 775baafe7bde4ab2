"""Identity strings from pki.yaml, normalised in one place.

* DNS names are IDNA 2008 encoded (``bücher.example`` -> ``xn--bcher-kva.example``),
  lower-cased, without a trailing dot; a single leading ``*.`` label makes a wildcard.
* IP addresses (v4 or v6) are written in their canonical compressed form;
  ``ip_network`` values (name constraints) are CIDR networks with no host bits.
* URIs need a scheme and, for hierarchical schemes, a host; they must be ASCII.
* Email addresses are ``local@domain`` with an ASCII local part; the domain is IDNA encoded.

Every function raises ``ValueError`` with a message fit for the user.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

from compiler.model.bounded import quote

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_ASCII_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z")
# a plain host name with a character no number form of inet_aton can hold (g-z but x,
# or '-'): the common case, answered without trying to parse an address
_NOT_AN_ADDRESS = re.compile(r"[a-z0-9.-]*[g-wyz-][a-z0-9.-]*")
# a last label that URL parsers (WHATWG) read as a number, making the host an IPv4 address
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")
_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+\Z")


def _looks_like_ip(text: str) -> bool:
    """An IPv4 address in any form inet_aton takes (``10.1``, ``0x7f.1``, ``017.0.0.1``,
    ``2130706433``) or an IPv6 literal (bracketed or not). A plain host name is answered
    without the parsers (the tests hold the answer equal to theirs)."""
    if _NOT_AN_ADDRESS.fullmatch(text):  # fullmatch: '$' would also match before a final newline
        return False
    return parses_as_address(text)


def parses_as_address(text: str) -> bool:
    """Whether an address parser reads ``text`` as an address (inet_aton's IPv4 forms, or
    ipaddress's IPv4 and IPv6, brackets stripped)."""
    import socket

    try:
        socket.inet_aton(text)
        return True
    except OSError:
        pass
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


# RFC 1035 2.3.4: at most 255 octets on the wire, which is 253 characters written out
MAX_DNS_NAME_CHARS = 253


def _idna(value: str, text: str) -> str:
    """``text`` (``value`` stripped) IDNA 2008 encoded and lower-cased."""
    lowered = text.lower()
    if _ASCII_HOST.match(lowered) and "xn--" not in lowered:
        return lowered  # plain LDH names: IDNA would change nothing but the case
    try:
        encoded = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{quote(value)} is not a valid DNS name ({exc})") from None
    return encoded.lower()


def _check_ldh(value: str, labels: list[str]) -> None:
    if any(not _LABEL.match(label) for label in labels):
        raise ValueError(f"{quote(value)} is not a valid DNS name (letters, digits and '-' per label)")


def _check_length(value: str, result: str) -> str:
    if len(result) > MAX_DNS_NAME_CHARS:
        raise ValueError(f"{quote(value)} is longer than {MAX_DNS_NAME_CHARS} characters")
    return result


def dns_name(value: str, *, allow_wildcard: bool = True) -> str:
    """A host name for a SAN or name constraint: an IP address in any spelling, or a name
    ending in an all-digit label, is refused (clients would read it as an address)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{quote(value)} is not a DNS name")
    text = value.strip().rstrip(".")
    wildcard = False
    if text.startswith("*."):
        if not allow_wildcard:
            raise ValueError(f"{quote(value)} is a wildcard, which is not allowed here")
        wildcard, text = True, text[2:]
    if "*" in text:
        raise ValueError(f"{quote(value)} is not a DNS name: '*' may only be the whole leftmost label")
    if not wildcard and _looks_like_ip(text):
        raise ValueError(f"{quote(value)} is an IP address, not a DNS name: put it under ip: (clients match it against IP SANs only)")
    encoded = _idna(value, text)
    # again after IDNA: UTS 46 maps fullwidth digits, ideographic full stops and soft
    # hyphens, so `127。0。0。0x1` is written out as `127.0.0.0x1`, an address
    if not wildcard and encoded != text and _looks_like_ip(encoded):
        raise ValueError(f"{quote(value)} is written out as {quote(encoded)}, an IP address: put it under ip:")
    labels = encoded.split(".")
    if labels[-1].isdigit():
        raise ValueError(f"{quote(value)} ends in an all-digit label, which resolvers read as an IPv4 address: put an address under ip:")
    if _HEX_NUMBER.fullmatch(labels[-1]):
        raise ValueError(
            f"{quote(value)} ends in a hexadecimal number (0x...), which URL parsers read as an IPv4 address: put an address under ip:"
        )
    _check_ldh(value, labels)
    if wildcard and len(labels) < 2:
        raise ValueError(f"{quote(value)} is a wildcard over a top-level domain")
    return _check_length(value, ("*." if wildcard else "") + encoded)


def dns_label(value: str) -> str:
    """One label of a DNS name pattern (policies check ``*.svc.example.com`` label by
    label), IDNA encoded and lower-cased. Unlike a whole name it may be all digits or
    look like an address (``10`` in ``10.svc.example.com``): only a whole name is read
    as one."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{quote(value)} is not a DNS name")
    text = value.strip().rstrip(".")
    if text.startswith("*."):
        raise ValueError(f"{quote(value)} is a wildcard, which is not allowed here")
    if "*" in text:
        raise ValueError(f"{quote(value)} is not a DNS name: '*' may only be the whole leftmost label")
    encoded = _idna(value, text)
    _check_ldh(value, encoded.split("."))
    return _check_length(value, encoded)


def dns_domain(value: str) -> str:
    """A DNS subtree for name constraints: a domain (``example.com``) or ``.example.com``."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.startswith("."):
        return "." + dns_name(text[1:], allow_wildcard=False)
    return dns_name(text, allow_wildcard=False)


def ip_address(value: str) -> str:
    try:
        ip = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValueError(f"{quote(value)} is not an IP address (IPv4 like 10.0.0.5 or IPv6 like fd00::5)") from None
    if getattr(ip, "scope_id", None):
        raise ValueError(f"{quote(value)} has an IPv6 zone id (%...), which a certificate cannot hold")
    return ip.compressed


def ip_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"{quote(value)} is not a CIDR network like 10.0.0.0/8 ({exc})") from None


def uri(value: str) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{quote(value)} is not a URI (ASCII, no spaces; percent-encode the rest)")
    parts = urlsplit(value)
    if not parts.scheme or not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*\Z", parts.scheme):
        raise ValueError(f"{quote(value)} is not an absolute URI (it needs a scheme, like spiffe:// or https://)")
    if value[len(parts.scheme) + 1 :].startswith("//") and not parts.hostname:
        raise ValueError(f"{quote(value)} has no host")
    try:
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{quote(value)} has an invalid port") from None
    return value


def uri_host(value: str) -> str:
    """A URI name-constraint subtree: a host (``example.com``) or domain (``.example.com``)."""
    return dns_domain(value)


def email(value: str) -> str:
    if not isinstance(value, str) or value.count("@") != 1:
        raise ValueError(f"{quote(value)} is not an email address (local@domain)")
    local, domain = value.strip().split("@")
    if not local or not _LOCAL.match(local):
        raise ValueError(f"{quote(value)} has a local part that is not plain ASCII")
    return f"{local}@{dns_name(domain, allow_wildcard=False)}"


def email_domain(value: str) -> str:
    """An email name-constraint: a mailbox, a host (``example.com``) or a domain (``.example.com``)."""
    if isinstance(value, str) and "@" in value:
        return email(value)
    return dns_domain(value)
