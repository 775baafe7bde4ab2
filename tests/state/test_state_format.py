"""The state's format version: a state written by the previous release is read (and
migrated, when a migration is due) by this one, and a state written by a newer pkic is
refused, cleanly, before anything is touched.

The previous release's repository is a committed fixture (tests/fixtures/state-v1,
described in its README): made by pkic at commit fa15597 from the init example.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import NOW, snapshot

from compiler.model.errors import PkicError
from compiler.state import STATE_VERSION, GitView, Report, parse_key, parse_seal, scan_out, upgrade, write_seal

FIXTURE = Path(__file__).parent.parent / "fixtures" / "state-v1"


def clean_failure(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{text}"
    assert "Traceback" not in text and "pkic crashed" not in text, text
    return text


def git(pkic, repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=pkic.env).stdout


@pytest.fixture
def old_repo(tmp_path: Path, pkic) -> Path:
    """The previous release's repository, committed, with its age identity and seal key
    where this pkic's tests keep them."""
    repo = tmp_path / "pki"
    shutil.copytree(FIXTURE / "repo", repo)
    for src, dest in (("age-keys.txt", "age/keys.txt"), ("seal-key.txt", "seal/pkic-seal.key")):
        (pkic.home / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURE / "home" / src, pkic.home / dest)
        (pkic.home / dest).chmod(0o600)
    git(pkic, repo, "init", "-q")
    git(pkic, repo, "add", "-A")
    git(pkic, repo, "commit", "-q", "-m", "the previous release's apply")
    return repo


def test_the_fixture_is_a_version_1_state():
    body = json.loads((FIXTURE / "repo" / "out" / "state.json").read_text())
    assert body["format"] == "pkic-state" and body["version"] == 1


def test_a_state_of_the_previous_release_plans_verifies_and_applies(pkic, old_repo):
    before = (old_repo / "out" / "state.json").read_bytes()
    plan = pkic.ok("plan", "--now", NOW, cwd=old_repo)
    assert "No changes" in plan.stdout, plan.stdout
    pkic.ok("verify", "--now", NOW, cwd=old_repo)
    pkic.ok("verify", "--seal", "--now", NOW, cwd=old_repo)
    assert (old_repo / "out" / "state.json").read_bytes() == before  # reading migrates in memory only

    spec = (old_repo / "pki.yaml").read_text()
    spec += "  db:\n    issuer: services-ca\n    profile: client\n    subject: {CN: db}\n"
    (old_repo / "pki.yaml").write_text(spec)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=old_repo)

    old, new = json.loads(before), json.loads((old_repo / "out" / "state.json").read_text())
    assert new["format"] == "pkic-state" and new["version"] == STATE_VERSION and new["lineage"] == old["lineage"]
    assert new["serial"] == old["serial"] + 1 and list(new["certificates"]["db"][0]["spec"]["subject"][-1]) == ["CN", "db"]
    for name, recs in old["certificates"].items():  # what the previous release issued is kept as it was
        assert new["certificates"][name] == recs
    pkic.ok("verify", "--now", NOW, cwd=old_repo)
    assert "No changes" in pkic.ok("plan", "--now", NOW, cwd=old_repo).stdout


def _as_newer_pkic(pkic, repo: Path) -> None:
    """out/state.json as a newer pkic would leave it: a version this one does not know,
    sealed with the seal key and committed, so that only the version is in the way."""
    path = repo / "out" / "state.json"
    body = json.loads(path.read_text())
    body["version"] = STATE_VERSION + 1
    path.write_text(json.dumps(body, indent=1) + "\n")
    key = parse_key((pkic.home / "seal" / "pkic-seal.key").read_text(), "seal key")
    view = GitView.of(repo)
    head = parse_seal(git(pkic, repo, "show", "HEAD:out.seal").encode())
    write_seal(
        repo,
        key,
        Report(git=view, seal=head, head_seal=head),
        scan_out(repo, view.object_format),
        lineage=body["lineage"],
        state_serial=body["serial"] + 1,
        at=NOW,
    )
    git(pkic, repo, "add", "-A")
    git(pkic, repo, "commit", "-q", "-m", "a newer pkic's apply")


def test_a_state_of_a_newer_pkic_is_refused(pkic, old_repo):
    _as_newer_pkic(pkic, old_repo)
    proc = pkic("verify", "--seal", cwd=old_repo)  # the seal holds: the version is all that is in the way
    assert "out/ is sealed" in proc.stdout and "upgrade pkic" in clean_failure(proc), proc.stdout + proc.stderr
    before = snapshot(old_repo / "out")
    seal = (old_repo / "out.seal").read_bytes()
    for command in (("plan", "--now", NOW), ("apply", "--yes", "--now", NOW), ("status",), ("verify", "--now", NOW)):
        text = clean_failure(pkic(*command, cwd=old_repo))
        assert "out/state.json" in text and f"state version {STATE_VERSION + 1} is not supported" in text, text
        assert '"version"' in text and "upgrade pkic" in text, text
    assert snapshot(old_repo / "out") == before and (old_repo / "out.seal").read_bytes() == seal
    assert not (old_repo / ".pkic" / "journal.jsonl").exists()


def test_a_journal_step_of_a_newer_pkic_is_refused(pkic, old_repo):
    """An interrupted apply of a newer pkic: its steps are not dropped as unknown."""
    lineage = json.loads((old_repo / "out" / "state.json").read_text())["lineage"]
    (old_repo / ".pkic").mkdir()
    steps = [{"op": "begin", "lineage": lineage, "base_serial": 1, "at": NOW}, {"op": "attested", "name": "web", "at": NOW}]
    (old_repo / ".pkic" / "journal.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    before = snapshot(old_repo / "out")
    for command in (("plan", "--now", NOW), ("apply", "--yes", "--now", NOW)):
        text = clean_failure(pkic(*command, cwd=old_repo))
        assert ".pkic/journal.jsonl" in text and "step 2 is not one this pkic knows (op 'attested')" in text, text
    assert snapshot(old_repo / "out") == before


# --------------------------------------------------------------------------- the walk through the steps


def _add(field: str):
    def step(body: dict) -> dict:
        return {**body, field: True}

    return step


def test_upgrade_runs_every_step_from_the_files_version():
    steps = {1: _add("one_to_two"), 2: _add("two_to_three")}
    assert upgrade({"version": 1}, current=3, steps=steps) == {"version": 3, "one_to_two": True, "two_to_three": True}
    assert upgrade({"version": 2}, current=3, steps=steps) == {"version": 3, "two_to_three": True}
    assert upgrade({"version": 3}, current=3, steps=steps) == {"version": 3}


@pytest.mark.parametrize(
    "version, hint",
    [
        pytest.param(4, "upgrade pkic", id="newer"),
        pytest.param(0, "restore", id="older-than-any"),
        pytest.param("1", "restore", id="a-string"),
        pytest.param(True, "restore", id="a-bool"),
        pytest.param(None, "restore", id="missing"),
    ],
)
def test_upgrade_refuses_a_version_it_cannot_read(version, hint):
    with pytest.raises(PkicError) as info:
        upgrade({"version": version}, current=3, steps={1: _add("a"), 2: _add("b")})
    (d,) = info.value.diagnostics
    assert d.file == "out/state.json" and "is not supported by this pkic (it reads version 3)" in d.message
    assert hint in (d.hint or "")


def test_upgrade_refuses_a_gap_in_the_steps():
    with pytest.raises(PkicError):
        upgrade({"version": 1}, current=3, steps={2: _add("b")})


def test_todays_state_needs_no_step():
    body = {"format": "pkic-state", "version": STATE_VERSION, "serial": 0, "certificates": {}}
    assert upgrade(dict(body)) == body
