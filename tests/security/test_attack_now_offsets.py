"""`--now` takes an offset from the clock (`+66d`, `-12h`). Nothing a pull request writes
reaches `--now` (the shipped workflows never pass it, and no environment variable or file
feeds it), and apply's time-travel gate holds for offsets as for RFC 3339 times: an
offset more than 5 minutes from the clock signs nothing without `--time-travel`.

Every command that takes `--now` answers a bad one, offset or time, with a clean
`--now` error (exit 1; `check`: UNKNOWN, exit 3), never a crash: including times that
datetime arithmetic cannot carry (year 1, a zone offset past 9999-12-31) and times in
range that the report's timeline window would carry past the end of datetime.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_pkic, snapshot

WORKFLOWS = REPO_ROOT / "compiler" / "templates" / "workflows"


def _no_time_travel(pkic):
    pkic.env = {k: v for k, v in pkic.env.items() if k != "PKIC_TIME_TRAVEL"}
    return pkic


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A committed, sealed repo applied at the real clock (nothing is due now)."""
    base = tmp_path_factory.mktemp("now-offsets")
    pkic = _no_time_travel(make_pkic(base))
    repo = base / "pki"
    pkic.ok("init", str(repo))
    for args in (("add", "-A"), ("commit", "-q", "-m", "init")):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=pkic.env)
    pkic.ok("apply", "--yes", "--commit", cwd=repo)
    return pkic, repo


def _head(pkic, repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True, env=pkic.env).stdout


def _clean(proc) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "crashed" not in text, text


def _seconds_to(when: datetime) -> int:
    return int(abs((when - datetime.now(UTC)).total_seconds()))


# offsets from the clock to a fixed time, worked out when the test runs (a parameter's
# name must not change between collections)
NEAR_9999 = "+(to 9999-12-01)"
NEAR_YEAR_1 = "-(to 0001-01-01, 100 s short)"


def _resolve(value: str) -> str:
    if value == NEAR_9999:
        return f"+{_seconds_to(datetime(9999, 12, 1, tzinfo=UTC))}s"
    if value == NEAR_YEAR_1:
        return f"-{_seconds_to(datetime(1, 1, 1, tzinfo=UTC)) - 100}s"
    return value


def test_shipped_workflows_never_pass_now_or_time_travel():
    for wf in sorted(WORKFLOWS.glob("*.yml")):
        text = wf.read_text(encoding="utf-8")
        for word in ("--now", "--time-travel", "PKIC_TIME_TRAVEL"):
            assert word not in text, f"{wf.name} mentions {word}"


@pytest.mark.slow
@pytest.mark.parametrize("offset", ["+66d", "-1d", "+P1Y", "-P1Y", "+6m", "+ 66d", "+\uff16\uff16d", NEAR_9999])
def test_apply_refuses_an_offset_without_time_travel(sealed, offset):
    pkic, repo = sealed
    offset = _resolve(offset)
    before, seal, head = snapshot(repo / "out"), (repo / "out.seal").read_bytes(), _head(pkic, repo)
    for extra in ((), ("--commit",)):
        proc = pkic("apply", "--yes", *extra, "--now", offset, cwd=repo)
        _clean(proc)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "error: --now" in proc.stderr and "--time-travel" in proc.stderr, proc.stderr
        # the setting the test suite uses is not something a pull request can set, but
        # an offset is refused with it unset whatever its sign
    assert snapshot(repo / "out") == before and (repo / "out.seal").read_bytes() == seal and _head(pkic, repo) == head


def test_apply_takes_an_offset_only_with_time_travel(tmp_path):
    """The positive control: the refusal above is the gate, not a parse error."""
    pkic = _no_time_travel(make_pkic(tmp_path))
    repo = tmp_path / "pki"
    pkic.ok("init", str(repo))
    refused = pkic("apply", "--yes", "--now", "+66d", cwd=repo)
    assert refused.returncode == 1 and "error: --now" in refused.stderr and not (repo / "out").exists(), refused.stderr
    done = pkic("apply", "--yes", "--now", "+66d", "--time-travel", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "! --time-travel: signing as of" in done.stderr and "ahead of this machine's clock" in done.stderr
    # within the slack, an offset is the clock
    assert pkic("apply", "--yes", "--now", "+4m", cwd=repo).returncode == 0


BAD_NOW = [
    "+",
    "-",
    "+0d",
    "-PT0S",
    "+x",
    "+66D",
    "++1d",
    "+1y-1d",
    "+99999y",
    "+" + "9" * 70,
    "-1",
    "\u22121d",
    # before any date X.509 (or cryptography) can carry, and past datetime's range
    "-2025y",
    NEAR_YEAR_1,
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
]

COMMANDS = [("plan",), ("status",), ("verify",), ("check",), ("report", "--out", "REPORT"), ("apply", "--yes"), ("apply", "--yes", "--time-travel")]


@pytest.mark.slow
@pytest.mark.parametrize("value", BAD_NOW)
def test_a_bad_now_is_a_clean_error_on_every_command(sealed, value, tmp_path):
    pkic, repo = sealed
    value = _resolve(value)
    before, seal = snapshot(repo / "out"), (repo / "out.seal").read_bytes()
    for cmd in COMMANDS:
        args = [str(tmp_path / "r.html") if a == "REPORT" else a for a in cmd]
        proc = pkic(args[0], f"--now={value}", *args[1:], cwd=repo)
        _clean(proc)
        if cmd == ("check",):
            assert proc.returncode == 3 and proc.stdout.startswith("PKIC UNKNOWN - --now:"), (cmd, proc.stdout, proc.stderr)
        else:
            assert proc.returncode == 1 and proc.stderr.startswith("error: --now:"), (cmd, proc.stdout, proc.stderr)
    assert not (tmp_path / "r.html").exists()
    assert snapshot(repo / "out") == before and (repo / "out.seal").read_bytes() == seal


@pytest.mark.slow
@pytest.mark.parametrize("value", [NEAR_9999, "9999-12-31T23:59:59Z", "1950-01-01T00:00:00Z"])
def test_the_edges_of_time_never_crash(sealed, value, tmp_path):
    """Times X.509 can carry, at its ends: plan and apply may refuse (a lifetime past
    9999), the read-only commands answer, the report draws its window inside datetime."""
    pkic, repo = sealed
    value = _resolve(value)
    for cmd in COMMANDS[:5]:
        args = [str(tmp_path / "r.html") if a == "REPORT" else a for a in cmd]
        proc = pkic(args[0], f"--now={value}", *args[1:], cwd=repo)
        _clean(proc)
        assert proc.returncode in (0, 1, 2), (cmd, proc.stdout, proc.stderr)
    assert (tmp_path / "r.html").is_file()
