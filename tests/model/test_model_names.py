"""compiler/model/names.py: the quick answer for plain host names gives what parsing the
text as an address gives (a DNS name that an address parser reads as one is refused)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.model import names

_parses_as_address = names.parses_as_address  # the parsers alone, without the quick answer


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789abcdefgwxyzABFGX.-:[]% \t\n", max_size=24))
def test_quick_answer_agrees_with_the_parsers(text: str) -> None:
    assert names._looks_like_ip(text) == _parses_as_address(text)


@pytest.mark.parametrize(
    "text", ["10.1", "0x7f.1", "017.0.0.1", "2130706433", "[::1]", "fe80::1%eth0", "0xA.0.0.1", "1.2.3.4 junk", "0x7f"]
)
def test_address_forms_are_still_seen(text: str) -> None:
    assert names._looks_like_ip(text) == _parses_as_address(text)
    with pytest.raises(ValueError):
        names.dns_name(text)


@pytest.mark.parametrize("text", ["web.example", "host-1.internal", "g", "a-b", "x.y", "dead.beef", "cafe"])
def test_plain_host_names_pass(text: str) -> None:
    assert not names._looks_like_ip(text)
    assert names.dns_name(text) == text
