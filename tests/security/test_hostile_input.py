"""Issue 12: hostile input. Every file pkic reads can come from a pull request, and `pkic
plan` runs on every pull request: an alias bomb, a deep nesting, a huge number, a long
or control-character value, a planted symlink must each be one ordinary error (file and
line, exit 1, no traceback, no core file), in bounded time and memory, with nothing in
out/ changed and no key decrypted first.

Time and memory are measured for the child process itself (a small wrapper reports its
peak RSS); the bounds are generous for a loaded 2-core machine and far below what the
attacks cost before (a minute and 2-4 GB for a 7-level bomb; a segfault for a deep file).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NOW, unsealed
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.model.bounded import json_depth_ok

# runs argv, then reports the child's peak RSS (KiB) as the last line of stderr
WRAP = ("import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:])\n"
        "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n")
MAX_SECONDS = 20  # the wall clock on a loaded CI machine; the work itself is milliseconds
MAX_RSS_KIB = 400 * 1024


def measured(pkic, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float, int]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", WRAP, sys.executable, "-m", "compiler.cli", *args], cwd=cwd, env=pkic.env,
                          capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("maxrss "), proc.stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, proc.stderr.rsplit("maxrss", 1)[0]), took, int(last.split()[1])


def assert_refused(proc, took: float, rss: int, *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "crashed" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert took < MAX_SECONDS, took
    assert rss < MAX_RSS_KIB, f"peak RSS {rss} KiB"


def bomb(levels: int = 9, width: int = 10, indent: str = "  ") -> str:
    """The 'billion laughs': each anchor is ``width`` aliases of the one before."""
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{indent}{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{indent}{name}: &{name} [{', '.join(['*' + prev] * width)}]")
    return "\n".join(lines) + "\n"


def deep(levels: int = 100_000) -> str:
    return "[" * levels + "]" * levels


def snapshot(repo: Path) -> dict[str, bytes]:
    out = repo / "out"
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} if out.is_dir() else {}


def no_core(*dirs: Path) -> None:
    for d in dirs:
        assert not [p for p in d.iterdir() if p.name.startswith("core")], list(d.iterdir())


# --------------------------------------------------------------------------- pki.yaml, policies, .sops.yaml

POLICY = "allowed_dns: [example.com, .example.com]\n"


def plant(repo: Path, where: str, attack: str) -> None:
    """Put ``attack`` ('bomb' or 'deep') into one input file of ``repo``."""
    if where == "pki.yaml":
        spec = (repo / "pki.yaml").read_text()
        (repo / "pki.yaml").write_text(("x-extra:\n" + bomb() + spec) if attack == "bomb" else ("x-extra: " + deep() + "\n" + spec))
    elif where == "policy":
        spec = (repo / "pki.yaml").read_text()
        assert "  services-ca:\n" in spec
        (repo / "pki.yaml").write_text(spec.replace("  services-ca:\n", "  services-ca:\n    policy: web\n", 1))
        (repo / "policies" / "web.yaml").write_text(POLICY + (("x-extra:\n" + bomb()) if attack == "bomb" else ("x-extra: " + deep() + "\n")))
    else:
        rules = (repo / ".sops.yaml").read_text()
        (repo / ".sops.yaml").write_text(rules + (("x-extra:\n" + bomb()) if attack == "bomb" else ("x-extra: " + deep() + "\n")))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["pki.yaml", "policy", ".sops.yaml"])
@pytest.mark.parametrize("attack", ["bomb", "deep"])
def test_alias_bombs_and_deep_nesting_are_refused_by_validate_and_plan(pkic, repo, where, attack):
    plant(repo, where, attack)
    shown = {"pki.yaml": "pki.yaml:", "policy": "policies/web.yaml:", ".sops.yaml": ".sops.yaml:"}[where]
    why = "aliases expand this document" if attack == "bomb" else "nested more than 64 levels deep"
    for command in ("validate", "plan"):
        proc, took, rss = measured(pkic, command, "--now", NOW, cwd=repo) if command == "plan" else measured(pkic, command, cwd=repo)
        assert_refused(proc, took, rss, shown, why)
        if attack == "bomb":  # located: the alias that multiplies the most
            assert any(line.startswith(f"error: {shown}") and line.split(":")[2].strip().isdigit() for line in proc.stderr.splitlines()), proc.stderr
    no_core(repo, repo.parent)


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["bomb", "deep", "broken"])
def test_a_hostile_sops_yaml_stops_apply_before_any_key_is_decrypted(pkic, applied, attack):
    """The identity is taken away: had apply decrypted a key first (to finish a journal,
    to sign), it would fail on that instead; it fails on .sops.yaml, with its line."""
    spec = (applied / "pki.yaml").read_text()
    (applied / "pki.yaml").write_text(spec + "  api:\n    issuer: services-ca\n    dns: [api.example.com]\n")  # work that needs the CA key
    if attack == "broken":
        (applied / ".sops.yaml").write_text((applied / ".sops.yaml").read_text() + "  - path_regex: [\n")
    else:
        plant(applied, ".sops.yaml", attack)
    before = snapshot(applied)
    identity = Path(pkic.env["SOPS_AGE_KEY_FILE"])
    identity.rename(identity.with_suffix(".away"))
    proc, took, rss = measured(pkic, "apply", "--yes", "--now", NOW, cwd=applied)
    assert_refused(proc, took, rss, "error: .sops.yaml:")
    assert "identity" not in proc.stderr.lower() and "decrypt" not in proc.stderr.lower(), proc.stderr
    assert snapshot(applied) == before
    no_core(applied, applied.parent)


def test_a_legitimate_sops_yaml_with_anchors_still_works(pkic, repo):
    """Anchors stay allowed: real .sops.yaml files name a recipient once and alias it."""
    rules = (repo / ".sops.yaml").read_text()
    recipient = next(line.split("age:", 1)[1].strip() for line in rules.splitlines() if "age:" in line)
    (repo / ".sops.yaml").write_text(
        f"keys:\n  - &ops {recipient}\n"
        "creation_rules:\n"
        "  - path_regex: ^out/keys/.*\\.sops\\.yaml$\n"
        "    encrypted_regex: ^private_key$\n"
        "    age: *ops\n"
    )
    pkic.ok("validate", cwd=repo)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    from helpers import decrypt_key

    assert b"PRIVATE KEY" in decrypt_key(repo, "web", pkic.env)  # the real sops reads what was written


def test_a_spec_with_anchors_below_the_limit_is_read(pkic, repo):
    """A spec may use anchors and merge keys for shared values; only a blow-up is refused."""
    spec = (repo / "pki.yaml").read_text()
    assert "  web:\n" in spec
    spec = spec.replace(
        "certificates:\n", "certificates:\n  api:\n    issuer: services-ca\n    dns: &names [a.example.com, b.example.com]\n"
        "  api2:\n    issuer: services-ca\n    dns: *names\n", 1)
    (repo / "pki.yaml").write_text(spec)
    plan = pkic.ok("plan", "--now", NOW, cwd=repo).stdout
    assert "api2" in plan


@pytest.mark.slow
def test_a_catastrophic_path_regex_cannot_stall_plan(pkic, repo):
    """A path_regex that backtracks exponentially in Python's engine, and a 60-letter
    name for it to chew on, in the same pull request: RE2 (Go's regexp syntax, what sops
    uses) matches in linear time; the rule simply does not apply."""
    name = "a" * 60
    rules = (repo / ".sops.yaml").read_text()
    assert "creation_rules:\n" in rules
    (repo / ".sops.yaml").write_text(rules.replace("creation_rules:\n", "creation_rules:\n  - path_regex: ^out/keys/(a|aa)+$x\n    age: age1nobody\n", 1))
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.rstrip("\n") + f"\n  {name}:\n    issuer: services-ca\n    dns: [a.example.com]\n")
    proc, took, rss = measured(pkic, "plan", "--now", NOW, cwd=repo)
    assert proc.returncode == 0 and name in proc.stdout and "encrypted for: age1nobody" not in proc.stdout, proc.stderr
    assert took < MAX_SECONDS and rss < MAX_RSS_KIB


# --------------------------------------------------------------------------- numbers and durations


def add_api(repo: Path, fields: str) -> None:
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.rstrip("\n") + "\n  api:\n    issuer: services-ca\n    dns: [api.example.com]\n" + fields)


@pytest.mark.slow
@pytest.mark.parametrize("field, value, fragments", [
    ("lifetime", "99999999999d", ["certificates.api.lifetime", "longer than any X.509 date"]),
    ("lifetime", "9" * 5000 + "d", ["certificates.api.lifetime", "is not a duration"]),
    ("lifetime", "P99999999999999999999Y", ["certificates.api.lifetime", "longer than any X.509 date"]),
    ("rekey", "9" * 5000, ["a number of 5000 characters"]),
    ("rekey", "1" + "0" * 40, ["certificates.api.rekey", "less than or equal to"]),
])
def test_huge_numbers_are_errors_with_a_line(pkic, repo, field, value, fragments):
    add_api(repo, f"    {field}: {value}\n")
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, took, rss = measured(pkic, *command, cwd=repo)
        assert_refused(proc, took, rss, *fragments)
        first = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
        assert first.startswith("error: pki.yaml:") and first.split(":")[2].strip().isdigit(), first
        assert len(first) < 300, first  # the value is quoted short


@pytest.mark.slow
def test_a_lifetime_past_the_year_9999_is_an_error_on_its_line(pkic, repo):
    """2,930,000 days is a duration (it fits in 8,000 years) but not from 2026: its end is
    not an X.509 date. An error on that field, not an OverflowError later."""
    spec = (repo / "pki.yaml").read_text()
    assert "    lifetime: 10y\n" in spec
    (repo / "pki.yaml").write_text(spec.replace("    lifetime: 10y\n", "    lifetime: 2930000d\n", 1))
    proc, took, rss = measured(pkic, "plan", "--now", NOW, cwd=repo)
    assert_refused(proc, took, rss, "authorities.root-ca.lifetime", "past the last date X.509 can express")
    line = next(x for x in proc.stderr.splitlines() if "root-ca.lifetime" in x)
    assert line.startswith("error: pki.yaml:") and line.split(":")[2].strip().isdigit(), line
    proc, took, rss = measured(pkic, "apply", "--yes", "--now", NOW, cwd=repo)
    assert_refused(proc, took, rss, "authorities.root-ca.lifetime")
    assert not (repo / "out").exists()


# --------------------------------------------------------------------------- values in messages


def test_a_long_or_control_character_value_is_quoted_short_and_escaped(pkic, repo):
    long_value = "x" * 20_000
    add_api(repo, f'    profile: "{long_value}\\e[31m"\n    lifetime: "90x{long_value}\\u0007"\n')
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr, "a terminal escape reached the terminal"
    assert len(proc.stderr) < 2000, len(proc.stderr)
    assert "certificates.api.profile" in proc.stderr and "certificates.api.lifetime" in proc.stderr


# --------------------------------------------------------------------------- the state, the journal, saved plans


@pytest.mark.slow
@pytest.mark.parametrize("where", ["top", "record"])
def test_a_deep_state_is_refused(pkic, applied, where):
    state_path = applied / "out" / "state.json"
    body = json.loads(state_path.read_text())
    nest = json.loads("[" * 70 + "]" * 70)  # deeper than 64: not something pkic wrote
    if where == "top":
        body["x"] = nest
    else:
        rec = body["certificates"]["web"][0]
        rec["spec"]["x"] = nest
    state_path.write_text(json.dumps(body))
    before = snapshot(applied)
    for command in (("plan", "--now", NOW), ("status",), ("apply", "--yes", "--now", NOW)):
        proc, took, rss = measured(pkic, *command, cwd=applied)  # sealed: the seal refuses it first
        assert_refused(proc, took, rss, "out/state.json")
    pkic.env.update(unsealed(applied))  # unsealed (a local experiment): the state's own check
    for command in (("plan", "--now", NOW), ("status",), ("apply", "--yes", "--now", NOW)):
        proc, took, rss = measured(pkic, *command, cwd=applied)
        assert_refused(proc, took, rss, "out/state.json", "nested more than 64 levels deep")
    assert snapshot(applied) == before


@pytest.mark.slow
def test_a_very_deep_state_or_journal_or_saved_plan_is_an_error_not_a_crash(pkic, applied, tmp_path):
    state_path = applied / "out" / "state.json"
    good = state_path.read_bytes()
    state_path.write_text(deep(200_000))
    proc, took, rss = measured(pkic, "plan", "--now", NOW, cwd=applied)
    assert_refused(proc, took, rss, "out/state.json")
    state_path.write_bytes(good)
    journal = applied / ".pkic" / "journal.jsonl"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps({"op": "begin", "x": json.loads("[" * 80 + "]" * 80)}) + "\n")
    proc, took, rss = measured(pkic, "plan", "--now", NOW, cwd=applied)
    assert_refused(proc, took, rss, ".pkic/journal.jsonl", "nested more than 64")
    journal.unlink()
    saved = tmp_path / "deep.plan.json"
    saved.write_text('{"format_version": 1, "digest": "x", "x": ' + deep(100_000) + "}")
    proc, took, rss = measured(pkic, "apply", "--yes", "--now", NOW, str(saved), cwd=applied)
    assert_refused(proc, took, rss, "not a saved plan")


@pytest.mark.slow
def test_a_huge_csr_is_refused_by_size(pkic, repo):
    (repo / "csrs").mkdir()
    (repo / "csrs" / "web.csr.pem").write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * (11 << 20) + b"\n-----END CERTIFICATE REQUEST-----\n")
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.replace("  web:\n", "  web:\n    csr: csrs/web.csr.pem\n", 1))
    proc, took, rss = measured(pkic, "plan", "--now", NOW, cwd=repo)
    assert_refused(proc, took, rss, "csrs/web.csr.pem", "larger than pkic reads")


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.recursive(st.one_of(st.integers(), st.text(alphabet='[]{}"\\ab', max_size=6)),
                    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=3)),
                    max_leaves=30))
def test_the_json_depth_check_agrees_with_the_decoded_depth(value):
    def depth(v) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    data = json.dumps(value).encode()
    d = depth(value)
    assert json_depth_ok(data, d) and (d == 0 or not json_depth_ok(data, d - 1))


# --------------------------------------------------------------------------- files


def test_pkic_csr_refuses_a_planted_symlink_and_writes_no_key(pkic, repo, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (repo / "csrs").mkdir()
    (repo / "csrs" / "web.csr.pem").symlink_to(victim)
    key = tmp_path / "host" / "web.key"
    proc = pkic("csr", "web", "--key-out", str(key), cwd=repo)
    assert proc.returncode == 1 and "csrs/web.csr.pem" in proc.stderr and "symlink" in proc.stderr and "Traceback" not in proc.stderr
    assert victim.read_text() == "precious\n" and not key.exists()
    # a symlinked directory on the way: refused too
    (repo / "csrs" / "web.csr.pem").unlink()
    (repo / "csrs").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (repo / "csrs").symlink_to(tmp_path / "elsewhere")
    proc = pkic("csr", "web", "--key-out", str(key), cwd=repo)
    assert proc.returncode == 1 and "symlink" in proc.stderr and not key.exists() and not list((tmp_path / "elsewhere").iterdir())
    # outside the repo, --csr-out through a symlink: refused before the key is made
    (repo / "csrs").unlink()
    link = tmp_path / "out.csr"
    link.symlink_to(victim)
    proc = pkic("csr", "web", "--key-out", str(key), "--csr-out", str(link), cwd=repo)
    assert proc.returncode == 1 and "symlink" in proc.stderr and victim.read_text() == "precious\n" and not key.exists()
    # an absolute --csr-out that reaches into the repo through a symlinked directory
    # elsewhere (csrs/ inside is itself a symlink): refused, not written past the checks
    (tmp_path / "elsewhere2").mkdir()
    (repo / "csrs").symlink_to(tmp_path / "elsewhere2")
    (tmp_path / "door").symlink_to(repo)
    proc = pkic("csr", "web", "--key-out", str(key), "--csr-out", str(tmp_path / "door" / "csrs" / "web.csr.pem"), cwd=repo)
    assert proc.returncode == 1 and "symlink" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not key.exists() and not list((tmp_path / "elsewhere2").iterdir())
    # the same repo named through the door as -C: an absolute path through it is inside
    proc = pkic("-C", str(tmp_path / "door"), "csr", "web", "--key-out", str(key), "--csr-out", str(tmp_path / "door" / "csrs" / "web.csr.pem"))
    assert proc.returncode == 1 and "symlink" in proc.stderr and not key.exists() and not list((tmp_path / "elsewhere2").iterdir())
    (repo / "csrs").unlink()
    # and a key path that is a (dangling) symlink is never followed
    key.parent.mkdir()
    key.symlink_to(tmp_path / "stolen.key")
    proc = pkic("csr", "web", "--key-out", str(key), cwd=repo)
    assert proc.returncode == 1 and not (tmp_path / "stolen.key").exists()
    key.unlink()
    pkic.ok("csr", "web", "--key-out", str(key), cwd=repo)  # and the honest run works
    assert (repo / "csrs" / "web.csr.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_out_files_are_never_written_through_a_planted_symlink(pkic, applied, tmp_path):
    """`plan --out plan.json` and `report --out report.html` in a checkout of a pull
    request: a symlink planted there (at $GITHUB_ENV, say) is refused, not written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (applied / "plan.json").symlink_to(victim)
    (applied / "reports").symlink_to(tmp_path)
    for args in (("plan", "--now", NOW, "--out", "plan.json"), ("report", "--now", NOW, "--out", "reports/victim.txt"),
                 ("plan", "--now", NOW, "--out", str(applied / "plan.json"))):
        proc = pkic(*args, cwd=applied)
        assert proc.returncode == 1 and "symlink" in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert victim.read_text() == "precious\n"
    (applied / "plan.json").unlink()
    pkic.ok("plan", "--now", NOW, "--out", "plan.json", cwd=applied)
    assert json.loads((applied / "plan.json").read_text())["format_version"] == 1


def test_pkic_init_refuses_planted_symlinks_and_an_identity_inside_the_repo(pkic, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "pre"
    target.mkdir()
    (target / ".sops.yaml").symlink_to(victim)
    proc = pkic("init", str(target))
    assert proc.returncode == 1 and ".sops.yaml" in proc.stderr and "symlink" in proc.stderr
    assert victim.read_text() == "precious\n"
    assert not Path(pkic.env["SOPS_AGE_KEY_FILE"]).exists(), "no identity is made for a refused init"
    # XDG_CONFIG_HOME inside the new repository (SOPS_AGE_KEY_FILE unset): refused, nothing written
    new = tmp_path / "new"
    proc = pkic("init", str(new), env={"SOPS_AGE_KEY_FILE": "", "XDG_CONFIG_HOME": str(new / ".config")})
    assert proc.returncode == 1 and "inside the new repository" in proc.stderr and "XDG_CONFIG_HOME" in proc.stderr
    assert not new.exists()


# The crash log (O_EXCL, 0600, an unpredictable name): tests/spec/test_errors.py::test_a_crash_log_is_private_and_never_written_through_a_symlink


@pytest.mark.parametrize("field, value", [
    ("subject", '{O: "Example\\nPki-Plan: forged"}'),
    ("subject", '{CN: "web\\e[8m"}'),
    ("subject", '{OU: "abc\\u202Edef"}'),  # a bidi override: shows text reversed
    ("uri", '["spiffe://example.com/a\\eb"]'),
])
def test_control_characters_never_go_into_a_certificate(pkic, repo, field, value):
    """Escaping on output is not enough: a subject value or a URI is written into the
    certificate itself, where every TLS stack and log shows it raw. Refused at validate."""
    add_api(repo, f"    {field}: {value}\n")
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1 and f"certificates.api.{field}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr


def test_a_value_in_the_markdown_plan_cannot_mention_people():
    from compiler.cli.markdown import _md

    assert "@" not in _md("ping @org/security-team")
