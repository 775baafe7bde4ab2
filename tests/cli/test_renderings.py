"""The renderings of compiler/cli on their own, from hand-made plans and rows: the plain
inventory, the plan as text and as a pull-request comment (the commands' end-to-end
output is in test_lifecycle.py, test_ci.py and test_cleanup_planned.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from helpers import cleanup_only_plans
from rich.console import Console

from compiler.cli.markdown import plan_markdown
from compiler.cli.render import plan_text, status_plain
from compiler.plan import Plan

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def row(name: str, days: int, status: str = "active") -> dict[str, object]:
    return {"name": name, "kind": "leaf", "issuer": "issuing", "serial": "0123456789abcdef0123", "not_after": "2027-01-01T00:00:00Z",
            "days_left": days, "status": status}


def test_status_plain_is_aligned_cut_and_printable() -> None:
    text = status_plain([row("web", 35), row("a-much-longer-name", 5, "revoked"), row("bad\x1b[31mname", 1)])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "kind", "issuer", "serial", "not", "after", "days", "left", "status"]
    # one column start per header, the same on every line
    starts = [lines[0].index(h) for h in ("kind", "issuer", "serial", "not after", "days left", "status")]
    for line in lines[1:]:
        assert [line[s - 2 : s] for s in starts] == ["  "] * len(starts), line
    assert "0123456789abcdef " in lines[1] and "0123456789abcdef0" not in text  # serials cut to 16
    assert "\x1b" not in text  # a terminal escape from the state is shown, not obeyed
    assert text.endswith("\n") and not any(line.endswith(" ") for line in lines)


def test_status_plain_with_no_certificates_is_the_header() -> None:
    assert status_plain([]) == "name  kind  issuer  serial  not after  days left  status\n"


_plans = cleanup_only_plans


def _text(plan: Plan) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(plan_text(plan, None))
    return console.export_text()


def test_plan_text_says_no_changes_only_when_there_are_none() -> None:
    empty, plan = _plans()
    assert "No changes." in _text(empty)
    text = _text(plan)
    assert "No changes." not in text
    assert "remove out/ocsp/old.der" in text


def test_plan_markdown_starts_with_its_marker_and_ends_with_the_digest() -> None:
    empty, plan = _plans()
    md = plan_markdown(empty, None)
    assert md.startswith("<!-- pkic-plan -->\n### pkic plan: no changes\n")
    assert f"Pki-Plan: {empty.reviewed_digest}" in md
    md = plan_markdown(plan, None)
    assert md.startswith("<!-- pkic-plan -->\n")
    assert "no changes" not in md.splitlines()[1]
    assert "out/ocsp/old.der" in md and f"Pki-Plan: {plan.reviewed_digest}" in md
    assert plan_markdown(plan, None) == md  # stable
