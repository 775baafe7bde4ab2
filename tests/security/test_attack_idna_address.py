"""Attack: a dNSName SAN that every resolver and URL parser reads as an IPv4 address,
signed because dns_name asks `_looks_like_ip` about the name as written, *before* IDNA
(UTS 46) mapping, and afterwards only refuses an all-digit last label.

``127。0。0。0x1`` (U+3002 ideographic full stops), ``１２７.0.0.0x1`` (fullwidth digits)
or ``127.0.0.0x1\\u00ad`` (a soft hyphen, which UTS 46 drops) are not ASCII, so
inet_aton and ipaddress refuse them; UTS 46 then maps them to ``127.0.0.0x1``, whose
last label is not all digits. The certificate carries ``DNS:127.0.0.0x1``; glibc's
getaddrinfo and curl connect to 127.0.0.1 for it, WHATWG URL parsing (Node, browsers)
makes it the IP 127.0.0.1, and OpenSSL's X509_check_host (Python's ssl, s_client)
matches it as a host name: an address certified as a DNS name, past every ip rule
(allowed_ip, permitted/excluded IP name constraints). The same name written in ASCII is
refused, so the refusal depends only on the spelling.

Pre-existing (06c911d has it too): the new `_NOT_AN_ADDRESS` fast path is not the cause.
"""

from __future__ import annotations

import socket

import pytest

from compiler.model.names import dns_name, email

SPELLINGS = [
    "127\u30020\u30020\u30020x1",  # ideographic full stops
    "\uff11\uff12\uff17.0.0.0x1",  # fullwidth digits
    "127.0.0.0x1\u00ad",  # a soft hyphen, mapped to nothing
    "1\uff0e0x2",  # fullwidth full stop: 1.0.0.2
    "0x7F000001\u00ad",  # one hex number: 127.0.0.1
    "\uff10x7f000001",  # fullwidth zero
]


@pytest.mark.parametrize("value", SPELLINGS)
def test_a_name_that_idna_maps_to_an_address_is_refused(value):
    try:
        got = dns_name(value)
    except ValueError:
        return
    socket.inet_aton(got)  # what getaddrinfo does with it: an address
    pytest.fail(f"{value!r} accepted as the dNSName {got!r}, which inet_aton reads as an IPv4 address")


def test_an_email_domain_that_idna_maps_to_an_address_is_refused():
    with pytest.raises(ValueError):
        email("root@127\u30020\u30020\u30020x1")


def test_validate_refuses_the_address_in_pki_yaml(pkic, repo):
    # root-ca has no name constraints in the init example: only dns_name stands between
    # this name and a signature
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text(encoding="utf-8")
                                   + '  loop:\n    issuer: root-ca\n    dns: ["127\u30020\u30020\u30020x1"]\n', encoding="utf-8")
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1 and "certificates.loop.dns" in proc.stderr and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
