"""Red-team review of the issue-14 reorganisation (journal steps as classes, the state's
format version and migration walk, settings, the CLI split, repo_relative, the spec
cache, apply as a sequence of checks): attacks that got through, each a test that
fails until pkic handles it.

The PKI is `pkic init`'s example: root-ca > services-ca > web, payments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import NOW

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, assert_refused, no_crash, read_state, tree_snapshot, write_state  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


# --------------------------------------------------------------------------- the journal


def test_a_committed_journal_whose_op_is_not_a_string_is_refused_not_a_crash(forge):
    """Attack: a pull request force-adds `.pkic/journal.jsonl` whose first line is
    `{"op": [], ...}` (any JSON list or object as the op).

    What happens: `read_journal` (state/journal.py) now checks each line's kind with
    `op.get("op") not in KINDS`, a dict lookup: an unhashable op raises TypeError before
    `load_with_journal` gets to `_check_not_committed`. `pkic plan` on the pull request,
    CI's `pkic apply` after the merge and `pkic status` all end in "pkic crashed:
    TypeError" (exit 3) instead of naming the committed journal. (The previous release
    read the line as data and refused the committed journal with one clear error.)

    Expected: one clear error, exit 1, naming `.pkic/journal.jsonl` as committed to git
    (or as not a journal pkic wrote), no traceback; nothing written."""

    def change(a: Path) -> None:
        (a / ".pkic").mkdir(exist_ok=True)
        raw = (a / "out.seal").read_bytes()
        state = read_state(a)
        begin = {"op": [], "lineage": state["lineage"], "base_serial": state["serial"], "at": T1,
                 "seal": hashlib.sha256(raw).hexdigest(), "listing": {}}
        (a / ".pkic" / "journal.jsonl").write_text(json.dumps(begin) + "\n")
        forge.git(a, "add", "-f", ".pkic/journal.jsonl")

    forge.pull_request("journal-op", change, "chore: recovery notes")
    run = forge.ci(T1)
    status = forge.pkic("status", cwd=run.repo)
    no_crash(status)
    assert status.returncode == 1 and ".pkic/journal.jsonl" in status.stderr, status.stdout + status.stderr
    assert_refused(run, ".pkic/journal.jsonl")


# --------------------------------------------------------------------------- the state


def test_moved_from_in_the_state_does_not_let_a_record_claim_another_names_ocsp_file(local):
    """Attack (a forged out/state.json, as test_state_paths' "other-name" case): web's
    record says its OCSP response is `out/ocsp/services-ca.der` and adds
    `"moved_from": ["services-ca"]` to the record.

    What happens: state/store.py now accepts an OCSP file under any name listed in the
    record's `moved_from` (added for a killed apply with a move), so the "recorded OCSP
    files exactly where pkic puts that name's response" check is bypassed with one extra
    field. A reviewed, ordinary reissue of web ("dns: -www.example.com", plan: reissue
    web, 1 OCSP response) then renames services-ca's live OCSP response to
    `out/ocsp/web.<old serial>.der` (_ocsp_layout takes `info.file` as moved_from):
    services-ca.der is gone although the state still points at it, web's old serial is
    answered with services-ca's response, and `verify` and `check` say all is well.
    Nothing of this was in the plan. The previous release refused the state ("records
    an OCSP response at 'out/ocsp/services-ca.der', which is not where pkic puts it").

    Expected: plan and apply refuse the state (exit 1, no traceback), or at least apply
    never moves, overwrites or removes another name's OCSP response."""
    pk, repo = local
    body = read_state(repo)
    rec = body["certificates"]["web"][0]
    rec["ocsp"]["file"] = "out/ocsp/services-ca.der"
    rec["moved_from"] = ["services-ca"]
    write_state(repo, body)
    victim = (repo / "out" / "ocsp" / "services-ca.der").read_bytes()
    spec = (repo / "pki.yaml").read_text()
    assert "dns: [web.example.com, www.example.com]" in spec
    (repo / "pki.yaml").write_text(spec.replace("dns: [web.example.com, www.example.com]", "dns: [web.example.com]", 1))
    plan = pk("plan", "--now", T1, cwd=repo)
    no_crash(plan)
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)
    assert (repo / "out" / "ocsp" / "services-ca.der").is_file(), (
        "services-ca's OCSP response was moved away by web's reissue:\n" + applied.stdout + applied.stderr)
    assert (repo / "out" / "ocsp" / "services-ca.der").read_bytes() == victim
    assert plan.returncode == 1 and ("which is not where pkic puts it" in plan.stderr or "records too" in plan.stderr), plan.stdout + plan.stderr


STATE_DAMAGE = {
    # the state's own validator crashes: `r["status"] not in frozenset` with an unhashable value
    "status-list": lambda b: b["certificates"]["web"][0].__setitem__("status", []),
    "responder-status-dict": lambda b: b["responders"]["services-ca"][0].__setitem__("status", {}),
    # a required field present but null passes the check, then is parsed as a time
    "not_after-null": lambda b: b["certificates"]["web"][0].__setitem__("not_after", None),
    # a CRL's refresh point is never checked, then parsed as a time by status
    "crl-refresh_at": lambda b: b["crls"]["services-ca"].__setitem__("refresh_at", "soon"),
    # a sops rule's groups must be a list, but its members are never checked
    "sops-rule-group": lambda b: next(iter(b["sops_rules"].values())).__setitem__("groups", [1]),
    # recorded lifecycle settings are only checked to be a dict
    "settings-authority": lambda b: b["settings"]["authorities"].__setitem__("services-ca", "x"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(STATE_DAMAGE.values()), ids=list(STATE_DAMAGE))
def test_a_damaged_state_is_one_clear_error_not_a_crash(local, damage):
    """Attack: an out/state.json edited by hand (a pull request on an unsealed repository,
    or any repository's `pkic status` after such a merge): one field of the wrong type.

    What happens: `load_state` (state/store.py) checks names, serials and some types, but
    crashes itself on an unhashable `status`, and lets through a null `not_after`, a CRL
    `refresh_at` that is not a time, a sops rule group that is not a mapping, a recorded
    authority setting that is not a mapping. `pkic status` or `pkic plan` then end in
    "pkic crashed: TypeError/ValueError/AttributeError" (exit 3).

    Expected: "the state is damaged" naming out/state.json and the field, exit 1, no
    traceback, for every command; out/ untouched."""
    pk, repo = local
    body = read_state(repo)
    damage(body)
    write_state(repo, body)
    before = tree_snapshot(repo)
    for cmd in (("status",), ("plan", "--now", T1), ("apply", "--yes", "--now", T1)):
        p = pk(*cmd, cwd=repo)
        no_crash(p)
    assert tree_snapshot(repo) == before


# --------------------------------------------------------------------------- --out


def test_check_out_never_writes_through_a_symlinked_directory_in_the_repo(applied, pkic, tmp_path):
    """Attack: a pull request commits `metrics -> /var/lib/node_exporter` (or any
    directory of the runner or the maintainer's machine) in the repository; a monitoring
    job runs `pkic -C repo check --format prometheus --out metrics/pkic.prom`.

    What happens: `check --out` does not go through `write_out_file` / `repo_relative`
    like plan and report: it joins the path to the repository and calls
    `layout.write_atomic(target.parent, target.name, ...)`, which opens `target.parent`
    following symlinks. The file is written outside the repository, through the planted
    link (`pkic report --out metrics/r.html` on the same repo is refused: "is a symlink
    or not a directory").

    Expected: refused like report's --out (no component of an in-repo path may be a
    symlink); nothing written outside the repository."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (applied / "metrics").symlink_to(outside)
    p = pkic("check", "--now", T1, "--format", "prometheus", "--out", "metrics/pkic.prom", cwd=applied)
    assert "Traceback" not in p.stderr and "pkic crashed" not in p.stderr, p.stderr
    assert list(outside.iterdir()) == [], f"check --out wrote through the symlink: {list(outside.iterdir())}\n{p.stdout}{p.stderr}"
    assert "symlink" in p.stderr, p.stdout + p.stderr
    # the twin that is already refused
    r = pkic("report", "--now", NOW, "--out", "metrics/r.html", cwd=applied)
    assert r.returncode == 1 and not (outside / "r.html").exists(), r.stdout + r.stderr
