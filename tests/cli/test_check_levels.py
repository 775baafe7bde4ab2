"""compiler/check.py on its own: the expiry levels, the one-line summary and the
Prometheus text, from hand-made times and items (the end-to-end `pkic check` runs are in
test_gitops.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compiler import check
from compiler.check import CRITICAL, OK, WARNING, Item

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def level(now_days: float, *, life_days: int = 90, renew_days: float = 30, warn_days: float | None = 14, crit_days: float = 7) -> int:
    end = START + life_days * DAY
    return check._level(
        START + now_days * DAY, START, end, end - renew_days * DAY, None if warn_days is None else warn_days * DAY, crit_days * DAY
    )[0]


@pytest.mark.parametrize(
    ("now_days", "expected"),
    [
        (-0.01, CRITICAL),  # not valid yet
        (0, OK),
        (59.9, OK),  # before the renewal point (day 60)
        (60, WARNING),  # at the renewal point, nothing done
        (82.9, WARNING),
        (83, CRITICAL),  # within --critical (7 days) of the end
        (89.99, CRITICAL),
        (90, CRITICAL),  # expired
        (400, CRITICAL),
    ],
)
def test_a_certificate_moves_from_ok_to_warning_to_critical(now_days: float, expected: int) -> None:
    assert level(now_days) == expected


def test_warn_is_capped_at_a_third_of_the_lifetime() -> None:
    """--warn 30d on a 30-day certificate would warn from its first day: it is capped at
    a third of the lifetime (10 days), so a certificate not yet due is never an alarm."""
    assert level(15, life_days=30, renew_days=5, warn_days=30, crit_days=1) == OK
    assert level(20, life_days=30, renew_days=5, warn_days=30, crit_days=1) == WARNING
    # without --warn (CRLs, responses) only the refresh point warns
    assert level(20, life_days=30, renew_days=5, warn_days=None, crit_days=1) == OK


def test_critical_is_capped_at_a_quarter_of_the_lifetime() -> None:
    """A freshly signed 7-day CRL with --critical 7d is not critical: a quarter of its
    lifetime (42 hours) is."""
    assert level(0, life_days=7, renew_days=3.5, warn_days=None, crit_days=7) == OK
    assert level(5.2, life_days=7, renew_days=3.5, warn_days=None, crit_days=7) == WARNING
    assert level(5.3, life_days=7, renew_days=3.5, warn_days=None, crit_days=7) == CRITICAL


def test_messages_say_why() -> None:
    end = START + 90 * DAY
    _, msg = check._level(START + 85 * DAY, START, end, end - 30 * DAY, 14 * DAY, 7 * DAY)
    assert msg == "expires 2026-04-01T00:00:00Z (5d 0h left)"
    _, msg = check._level(START + 89.5 * DAY, START, end, end - 30 * DAY, 14 * DAY, 7 * DAY)
    assert msg.endswith("(12h left)")
    _, msg = check._level(START - DAY, START, end, end - 30 * DAY, 14 * DAY, 7 * DAY)
    assert msg.startswith("not valid yet: starts 2026-01-01T00:00:00Z")


def items() -> list[Item]:
    return [
        Item("certificate", "web", "issuing", "2026-04-01T00:00:00Z", OK, "fine"),
        Item("certificate", 'odd"name', "issuing", "2026-03-01T00:00:00Z", WARNING, "past its renewal point"),
        Item("crl", "issuing", "issuing", "2026-01-08T00:00:00Z", CRITICAL, "expired at 2026-01-08T00:00:00Z"),
    ]


def test_overall_is_the_worst_level_and_ok_when_empty() -> None:
    assert check.overall([]) == OK
    assert check.overall(items()) == CRITICAL
    assert check.overall(items()[:2]) == WARNING


def test_summary_names_the_worst_first() -> None:
    assert check.summary_line([]) == "PKIC OK - nothing issued checked"
    assert check.summary_line(items()[:1]) == "PKIC OK - 1 certificate(s) checked"
    line = check.summary_line(items())
    assert line == (
        "PKIC CRITICAL - 2 problem(s): crl issuing: expired at 2026-01-08T00:00:00Z; "
        'certificate odd"name: past its renewal point'
    )
    many = [Item("certificate", f"c{i}", None, f"2026-02-0{i}T00:00:00Z", WARNING, "w") for i in range(1, 6)]
    assert check.summary_line(many).endswith("(+2 more)")


def test_prometheus_text_is_escaped_and_stable() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    text = check.prometheus(items(), now)
    assert text == check.prometheus(items(), now)
    assert 'pkic_certificate_expiry_timestamp_seconds{name="odd\\"name",issuer="issuing"} 1772323200\n' in text
    assert 'pkic_crl_next_update_timestamp_seconds{name="issuing",issuer="issuing"} 1767830400\n' in text
    assert 'pkic_check_level{kind="crl",name="issuing"} 2\n' in text
    assert text.endswith(f"pkic_check_timestamp_seconds {int(now.timestamp())}\n")
    # every metric has its HELP and TYPE, even with no item of its kind
    assert "# TYPE pkic_ocsp_next_update_timestamp_seconds gauge\n" in text
