"""One command line: --version, -C before or after the command, --json on every command
that reports, --out for "write the output here" (a saved plan has --save), choices
shown and checked, conflicting output flags refused."""

from __future__ import annotations

import json

import pytest
from conftest import NOW

from compiler import __version__
from compiler.cli.main import directory_first


def test_version(pkic):
    assert pkic.ok("--version").stdout == f"pkic {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["plan", "-C", "x", "--json"], ["-C", "x", "plan", "--json"]),
        (["-C", "x", "plan"], ["-C", "x", "plan"]),
        (["plan", "-Cx"], ["-Cx", "plan"]),
        (["csr", "web", "--", "-C", "x"], ["csr", "web", "--", "-C", "x"]),  # after --: an argument
        (["plan", "-C"], ["plan", "-C"]),  # no directory: click says so
    ],
)
def test_directory_option_moves_to_the_front(argv, want):
    assert directory_first(argv) == want


def test_directory_before_or_after_the_command_is_the_same_run(pkic, applied, tmp_path):
    before = json.loads(pkic.ok("-C", str(applied), "plan", "--json", "--now", NOW, cwd=tmp_path).stdout)
    after = json.loads(pkic.ok("plan", "-C", str(applied), "--json", "--now", NOW, cwd=tmp_path).stdout)
    assert before == after and before["digest"]


def test_every_reporting_command_speaks_json(pkic, applied):
    def js(*args: str, code: int = 0) -> dict:
        proc = pkic(*args, cwd=applied)
        assert proc.returncode == code, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    assert js("validate", "--json") == {"ok": True, "entries": 4, "sops_rules": 1}
    assert js("plan", "--json", "--now", NOW)["changes"] == []
    assert {r["name"] for r in js("status", "--json", "--now", NOW)["certificates"]} == {"root-ca", "services-ca", "web", "payments"}
    verified = js("verify", "--json", "--now", NOW)
    assert verified["ok"] is True and verified["verified"] == 4 and verified["findings"] == []
    assert js("check", "--json", "--now", NOW)["status"] == "OK"
    assert js("history", "web", "--json")["name"] == "web"


def test_verify_json_reports_what_failed_with_exit_1(pkic, applied):
    (applied / "out" / "certs" / "web.pem").write_text((applied / "out" / "certs" / "payments.pem").read_text())
    proc = pkic("verify", "--json", "--now", NOW, cwd=applied)
    body = json.loads(proc.stdout)
    assert proc.returncode == 1 and body["ok"] is False and any(f["name"] == "web" for f in body["findings"]), proc.stdout


def test_validate_json_lists_each_error_with_its_place(pkic, repo):
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text().replace("lifetime: 90d", "lifetime: ninety days", 1))
    proc = pkic("validate", "--json", cwd=repo)
    body = json.loads(proc.stdout)
    assert proc.returncode == 1 and body["ok"] is False, proc.stdout + proc.stderr
    (error,) = body["errors"]
    assert error["file"] == "pki.yaml" and isinstance(error["line"], int) and error["field"].endswith(".lifetime")


def test_a_saved_plan_has_its_own_flag_and_the_old_one_still_works(pkic, repo):
    for flag, name in (("--save", "a.json"), ("--out", "b.json")):
        proc = pkic.ok("plan", flag, name, "--now", NOW, cwd=repo)
        assert "Saved the plan" in proc.stdout
    assert json.loads((repo / "a.json").read_text())["digest"] == json.loads((repo / "b.json").read_text())["digest"]


def test_graph_writes_where_out_says(pkic, repo):
    proc = pkic.ok("graph", "--format", "dot", "--out", "pki.dot", cwd=repo)
    assert "Wrote" in proc.stdout and (repo / "pki.dot").read_text().startswith("digraph")


@pytest.mark.parametrize(("args", "conflict"), [(("plan", "--json", "--format", "markdown"), "markdown"), (("check", "--json", "--format", "prometheus"), "prometheus")])
def test_conflicting_output_flags_are_refused(pkic, applied, args, conflict):
    proc = pkic(*args, "--now", NOW, cwd=applied)
    assert proc.returncode == 1 and f"--json: conflicts with --format {conflict}" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_formats_are_choices_shown_in_help_and_checked(pkic, repo):
    help_text = pkic.ok("plan", "--help").stdout
    assert "text|json|markdown" in help_text and "<bool>" not in help_text
    proc = pkic("plan", "--format", "xml", cwd=repo)
    assert proc.returncode == 1 and "'xml' is not one of 'text', 'json', 'markdown'" in proc.stderr, proc.stderr
    assert "mermaid|dot" in pkic.ok("graph", "--help").stdout


def test_now_takes_a_time_or_an_offset_from_the_clock():
    from datetime import UTC, datetime, timedelta

    from compiler.cli.app import parse_now
    from compiler.model.errors import PkicError

    assert parse_now("2027-01-01T00:00:00Z") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_now("2027-01-01T01:00:00+01:00") == datetime(2027, 1, 1, tzinfo=UTC)
    before = datetime.now(UTC).replace(microsecond=0)
    ahead, behind = parse_now("+66d"), parse_now("-12h")
    after = datetime.now(UTC).replace(microsecond=0)
    assert before + timedelta(days=66) <= ahead <= after + timedelta(days=66)
    assert before - timedelta(hours=12) <= behind <= after - timedelta(hours=12)
    assert parse_now("+1y2d") - parse_now("+2d") >= timedelta(days=365) - timedelta(seconds=2)
    for bad in ("+", "+x", "+0d", "-1q", "+99999y", "yesterday", "2027-13-01"):
        with pytest.raises(PkicError, match="--now"):
            parse_now(bad)
