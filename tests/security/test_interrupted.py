"""Attack: ride on the recovery of a killed apply.

A killed apply leaves out/ half-written and a journal (.pkic/journal.jsonl) that the
next apply replays, then seals. That is the one moment out/ may differ from the seal,
so it must differ only in what the killed apply wrote:

* killed (PKIC_FAULT=journal:1 or files:1, exit 137) during a web-only change, the next apply
  finishes and seals, and --commit leaves a clean tree;
* a file the killed apply did not write, changed between the kill and the rerun
  (out/certs/payments.pem appended to, a file added), is refused by name;
* a journal that comes from git (a pull request force-adds .pkic/journal.jsonl, or
  makes .pkic a symlink) is refused: replaying it would write its contents into out/
  and seal them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, assert_refused, edit_spec, read_state, serials  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

WEB_APP = ("dns: [web.example.com, www.example.com]", "dns: [web.example.com, www.example.com, app.example.com]")


def _killed(forge, fault: str = "files:1") -> dict:
    """A reviewed web-only change is merged; the apply on the maintainer's machine is
    killed at ``fault`` (journal:1: right after web's step is journaled, before its
    files; files:1: after its files). Returns what was there before."""
    forge.pull_request(
        "web-app",
        lambda a: (a / "pki.yaml").write_text(edit_spec((a / "pki.yaml").read_text(), replace=(WEB_APP,))),
        "pki: web serves app too",
    )
    forge.sync()
    repo = forge.main
    before = {"head": forge.head(), "seal": (repo / "out.seal").read_bytes(), "serials": serials(repo)}
    p = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo, env={"PKIC_FAULT": fault})
    assert p.returncode == 137, p.stdout + p.stderr
    assert (repo / ".pkic" / "journal.jsonl").exists() and forge.head() == before["head"]
    return before


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["journal:1", "files:1"])
def test_a_killed_apply_is_finished_and_sealed(forge, fault):
    before = _killed(forge, fault)
    repo = forge.main
    p = forge.pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert "Finished an interrupted apply" in p.stderr and "Committed" in p.stdout, p.stdout + p.stderr
    assert forge.porcelain(repo) == "" and not (repo / ".pkic" / "journal.jsonl").exists()
    assert forge.git(repo, "rev-list", "--count", f"{before['head']}..HEAD").stdout.strip() == "1"
    seal = json.loads((repo / "out.seal").read_text())
    assert (
        seal["prev"] == hashlib.sha256(before["seal"]).hexdigest()
        and seal["out_tree"] == forge.git(repo, "rev-parse", "HEAD:out").stdout.strip()
    )
    web = read_state(repo)["certificates"]["web"]
    assert web[0]["serial"] not in before["serials"] and "app.example.com" in json.dumps(web[0]["spec"])
    forge.pkic.ok("verify", "--seal", "--now", T1, cwd=repo)
    assert forge.pkic("plan", "--detailed-exitcode", "--now", T1, cwd=repo).returncode == 0


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


TAMPER = {
    "appended": ("out/certs/payments.pem", lambda out: _append(out / "certs" / "payments.pem", "# not pkic's\n")),
    "added": ("out/certs/extra.pem", lambda out: (out / "certs" / "extra.pem").write_text((out / "certs" / "root-ca.pem").read_text())),
    "removed": ("out/crl/root-ca.crl.pem", lambda out: (out / "crl" / "root-ca.crl.pem").unlink()),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(TAMPER), ids=list(TAMPER))
def test_a_file_changed_after_the_kill_is_refused(forge, how):
    before = _killed(forge)
    repo = forge.main
    rel, tamper = TAMPER[how]
    tamper(repo / "out")
    journal = (repo / ".pkic" / "journal.jsonl").read_text()
    journaled = {json.loads(line).get("record", {}).get("serial") for line in journal.splitlines() if line.strip()}
    out_before = {p: p.read_bytes() for p in sorted((repo / "out").rglob("*")) if p.is_file()}
    p = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{rel}: changed since the interrupted apply began, and not by it: not what the seal covers" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "Committed" not in p.stdout
    assert forge.head() == before["head"] and (repo / "out.seal").read_bytes() == before["seal"]  # nothing sealed or committed
    assert serials(repo) <= before["serials"] | journaled  # nothing signed beyond what the killed apply journaled
    # refused before the journal was replayed: out/ is exactly as the tampering left it
    assert {p: p.read_bytes() for p in sorted((repo / "out").rglob("*")) if p.is_file()} == out_before
    # it stays refused until out/ is restored from git
    again = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert again.returncode == 1 and rel in again.stderr, again.stdout + again.stderr
    forge.git(repo, "checkout", "--", "out", "out.seal")
    forge.git(repo, "clean", "-fdq", "out")
    (repo / ".pkic" / "journal.jsonl").unlink()
    forge.pkic.ok("apply", "--yes", "--commit", "--now", T1, cwd=repo)
    assert forge.porcelain(repo) == ""


def _forged_journal(repo: Path) -> str:
    """What the attacker commits: a journal that starts from the genuine seal and
    renames web to www (a replay would move web's files and seal the result)."""
    raw = (repo / "out.seal").read_bytes()
    state = read_state(repo)
    begin = {
        "op": "begin",
        "lineage": state["lineage"],
        "base_serial": state["serial"],
        "plan": "0" * 64,
        "at": T1,
        "seal": hashlib.sha256(raw).hexdigest(),
        "listing": {},
    }
    return json.dumps(begin) + "\n" + json.dumps({"op": "moved", "from": "web", "to": "www", "at": T1}) + "\n"


def test_a_journal_committed_in_a_pull_request_is_refused(forge):
    def change(a: Path) -> None:
        (a / ".pkic").mkdir(exist_ok=True)
        (a / ".pkic" / "journal.jsonl").write_text(_forged_journal(a))
        forge.git(a, "add", "-f", ".pkic/journal.jsonl")

    forge.pull_request("journal", change, "chore: recovery notes")
    run = forge.ci(T1)
    assert_refused(run, ".pkic/journal.jsonl: is committed to git")
    assert "www" not in read_state(run.repo)["certificates"] and not (run.repo / "out" / "certs" / "www.pem").exists()


def test_a_pkic_symlink_committed_in_a_pull_request_is_refused(forge):
    elsewhere = forge.root / "runner" / "journal-dir"
    elsewhere.mkdir(parents=True)

    def change(a: Path) -> None:
        (elsewhere / "journal.jsonl").write_text(_forged_journal(a))
        (a / ".pkic").symlink_to(elsewhere)
        forge.git(a, "add", "-f", ".pkic")

    forge.pull_request("journal-link", change, "chore: share the work dir")
    run = forge.ci(T1)
    assert_refused(run, ".pkic: is not a plain directory (a symlink?)")
    assert not (run.repo / "out" / "certs" / "www.pem").exists()
    assert os.listdir(elsewhere) == ["journal.jsonl"]  # no lock, no journal written through the link


# --------------------------------------------------------------------------- nothing committed
# The journal's first step names the sealed tree (not its 300,000 files): recovery takes
# the tree's files from git, or where nothing was committed, from this machine's copy of
# the listing it sealed (.pkic/sealed-listing), which is read only if it hashes to that
# tree. A pull request can commit .pkic/ files (CI's checkout then has them): a planted
# listing that claims the tree and lists other files is not taken.


def _killed_uncommitted(tmp_path: Path, fault: str = "journal:1"):
    from conftest import NOW, make_pkic

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)  # sealed, never committed: git has no tree
    spec = repo / "pki.yaml"
    text = spec.read_text()
    assert WEB_APP[0] in text
    spec.write_text(text.replace(*WEB_APP))
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo, env={"PKIC_FAULT": fault})
    assert p.returncode == 137, p.stdout + p.stderr
    begin = json.loads((repo / ".pkic" / "journal.jsonl").read_text().splitlines()[0])
    assert "listing" not in begin and begin["tree"] == json.loads((repo / "out.seal").read_text())["out_tree"]
    return pkic, repo, NOW


@pytest.mark.slow  # (whole applies: over 0.8 s)
@pytest.mark.parametrize("case", ["as it was", "a file changed after the kill", "a planted listing"])
def test_a_killed_apply_with_nothing_committed(tmp_path: Path, case: str) -> None:
    pkic, repo, now = _killed_uncommitted(tmp_path)
    if case == "a file changed after the kill":
        _append(repo / "out" / "certs" / "payments.pem", "# not pkic's\n")
    elif case == "a planted listing":
        listing = repo / ".pkic" / "sealed-listing"
        lines = listing.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.endswith(" out/certs/payments.pem\n"))
        _append(repo / "out" / "certs" / "payments.pem", "# not pkic's\n")
        mode, _, path = lines[at].rstrip("\n").split(" ", 2)
        blob = forge_blob((repo / "out" / "certs" / "payments.pem").read_bytes())
        lines[at] = f"{mode} {blob} {path}\n"  # the tampered file, as if sealed
        listing.write_text("".join(lines))
    p = pkic("apply", "--yes", "--now", now, cwd=repo)
    if case == "as it was":
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Finished an interrupted apply" in p.stderr, p.stderr
        assert "app.example.com" in json.dumps(read_state(repo)["certificates"]["web"][0]["spec"])
        pkic.ok("verify", "--seal", "--now", now, cwd=repo)
    elif case == "a file changed after the kill":
        assert p.returncode == 1, p.stdout + p.stderr
        assert "out/certs/payments.pem: changed since the interrupted apply began, and not by it" in p.stderr, p.stderr
    else:
        assert p.returncode == 1, p.stdout + p.stderr
        assert "the interrupted apply's journal does not say why" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def forge_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _kill_a_web_change(pkic, repo: Path, now: str) -> None:
    spec = repo / "pki.yaml"
    spec.write_text(spec.read_text().replace(*WEB_APP))
    p = pkic("apply", "--yes", "--now", now, cwd=repo, env={"PKIC_FAULT": "files:1"})
    assert p.returncode == 137, p.stdout + p.stderr


@pytest.mark.slow  # (whole applies: over 0.8 s)
@pytest.mark.parametrize("how", ["seal init", "no local listing"])
def test_a_killed_apply_is_finished_where_no_listing_of_the_sealed_tree_was_kept(tmp_path: Path, how: str) -> None:
    """A seal made by `pkic seal init`, or a local listing gone (an older pkic kept it
    under another name), with nothing committed: the journal then holds the sealed
    files themselves (or the listing is made before the apply begins), and the killed
    apply is finished (found by a hostile review: it was refused, with no way out)."""
    from conftest import NOW, make_pkic

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    (repo / ".pkic" / "sealed-listing").unlink()
    if how == "seal init":
        (repo / "out.seal").unlink()
        pkic.ok("seal", "init", "--now", NOW, cwd=repo)  # adopted, not committed
    _kill_a_web_change(pkic, repo, NOW)
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Finished an interrupted apply" in p.stderr, p.stderr
    pkic.ok("verify", "--seal", "--now", NOW, cwd=repo)


@pytest.mark.slow  # (whole applies: over 0.8 s)
@pytest.mark.parametrize(
    "line",
    ["100644 {blob} out/certs", "100644 {blob} out/" + "d/" * 5000 + "x", "100644 {blob} XXX/certs/web.pem", "100644 {blob} out/../x"],
    ids=["a file above a directory", "5,000 levels deep", "outside out/", "dot-dot"],
)
def test_a_damaged_local_listing_is_refused_not_a_crash(tmp_path: Path, line: str) -> None:
    """A .pkic/sealed-listing with a line pkic never writes: recovery refuses to finish
    from it (one error, no traceback), and so does a plan asked to name changed files."""
    pkic, repo, now = _killed_uncommitted(tmp_path, "files:1")  # out/ differs from the seal: recovery checks it
    listing = repo / ".pkic" / "sealed-listing"
    lines = listing.read_text().splitlines(keepends=True)
    lines.insert(1, line.format(blob="0" * 40) + "\n")
    listing.write_text("".join(lines))
    p = pkic("apply", "--yes", "--now", now, cwd=repo)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "the interrupted apply's journal does not say why" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "crashed" not in p.stderr
    (repo / ".pkic" / "journal.jsonl").unlink()
    p = pkic("plan", "--now", now, cwd=repo)
    assert "Traceback" not in p.stderr and "crashed" not in p.stderr, p.stderr
