"""The `_NOT_AN_ADDRESS` fast path of `_looks_like_ip` answers False only where
inet_aton and ipaddress would too: every string of up to 5 characters over the
characters that matter (digits, the hex letters, x, letters beyond f, '-', '.') gets the
same answer with and without it; and the refusals of address-like names hold."""

from __future__ import annotations

import itertools

import pytest

from compiler.model import names

_slow_looks_like_ip = names.parses_as_address  # the parsers alone, without the fast path


def test_the_fast_path_never_hides_an_address():
    for n in range(1, 6):
        for chars in itertools.product("017xafgz-.", repeat=n):
            text = "".join(chars)
            if names._NOT_AN_ADDRESS.match(text):
                assert not _slow_looks_like_ip(text), text


@pytest.mark.parametrize("value", [
    "127.0.0.1", "127.1", "0x7f.1", "0X7F.1", "0x7f000001", "017700000001", "2130706433", "127.0.0.1.",
    "127.0.0.0x1", "0x7f.0x0.0x0.0x1", "0177.0.0.01", "::1", "[::1]", "::ffff:127.0.0.1", "fe80::1",
    "foo.123", "a-b.1", "web.example.123.", "\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11",
    "127.0.0.1\u00ad", "0x7f\u3002\uff11", "ＷＥＢ.123",
])
def test_address_like_names_are_refused(value):
    with pytest.raises(ValueError):
        names.dns_name(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("web.example.com", "web.example.com"), ("WEB.Example.COM.", "web.example.com"), ("a-b.example", "a-b.example"),
    ("*.svc.internal", "*.svc.internal"), ("bücher.example", "xn--bcher-kva.example"), ("10.svc.example.com", "10.svc.example.com"),
])
def test_plain_names_pass(value, expected):
    assert names.dns_name(value) == expected
