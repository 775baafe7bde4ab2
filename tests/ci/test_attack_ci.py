"""Red-team attacks on the trusted plan / trusted apply boundary (issue 11, parts 4 and 5).

Each test asserts the *secure* behaviour; a failing test is a finding. They reuse the fake
GitHub API (tests/fakegithub.py) and the helpers of tests/ci/test_ci.py / test_workflows.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fakegithub import TOKEN, FakeGitHub, sha
from test_ci import DIGEST, HEAD, MERGE, RUN, ci, digest_of, parse_kv, provenance
from test_workflows import load, step

from compiler import ci as ci_mod


@pytest.fixture
def gh():
    with FakeGitHub() as fake:
        yield fake


def _is_refused(p: subprocess.CompletedProcess) -> bool:
    return p.returncode != 0 and DIGEST not in p.stdout


# --------------------------------------------------------------------------- 1. the comment is not bound to the trusted plan


REAL_PLAN = ("<!-- pkic-plan -->\n### pkic plan: 1 to issue\n\n| name | action | recipients |\n| --- | --- | --- |\n"
             "| `evil` | issue | **new recipient** `age1mallory...` |\n\n`Pki-Plan: " + DIGEST + "`\n")
FAKE_PLAN = "### pkic plan: nothing to do\n\nNo spec-driven change.\n"


def _trusted_run_with_plan(gh: FakeGitHub) -> None:
    gh.pull(7, HEAD, merged_as=MERGE)
    gh.run(RUN)
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance()), "plan.md": REAL_PLAN, "plan-errors.txt": ""})


def test_a_bot_comment_edited_to_show_another_plan_is_not_applied(gh, pkic):
    """A same-repository author pushes a branch (not part of the PR, so no reviewer sees
    it) whose `push` workflow asks `pull-requests: write`: its GITHUB_TOKEN comments and
    edits comments as github-actions[bot]. It PATCHes the trusted plan comment, keeping
    the marker (the genuine run id) and replacing the plan with a benign one. The
    reviewer sees "nothing to do"; apply takes the genuine run's digest and signs `evil`
    with its new recipient. What the reviewer saw must be the trusted plan: the comment
    that names the run must show that run's plan (the artifact holds plan.md)."""
    _trusted_run_with_plan(gh)
    genuine = ci_mod.comment_body(REAL_PLAN, RUN, f"https://github.example/acme/pki/actions/runs/{RUN}", HEAD)
    c = gh.comment(7, genuine)
    # the edit, by the same bot login
    c["body"] = f"<!-- pkic-plan run-id={RUN} -->\n" + FAKE_PLAN
    c["updated_at"] = "2026-11-28T09:59:00Z"
    p = digest_of(pkic, gh)
    assert _is_refused(p), ("apply got the digest of a plan the reviewer never saw", p.stdout, p.stderr)


def test_a_second_bot_comment_naming_the_same_run_with_a_benign_plan_is_not_applied(gh, pkic):
    """The same, without touching the genuine comment: a second bot comment naming the
    same run id passes `plan_run_id` (the ids are a set), and sits beside (or, after the
    genuine one is deleted, instead of) the trusted plan."""
    _trusted_run_with_plan(gh)
    gh.comment(7, f"<!-- pkic-plan run-id={RUN} -->\n" + FAKE_PLAN)  # posted by the branch workflow's token
    p = digest_of(pkic, gh)
    assert _is_refused(p), ("apply got the digest of a plan the reviewer never saw", p.stdout, p.stderr)


# --------------------------------------------------------------------------- 2. the plan was computed against another base


@pytest.mark.slow
def test_a_plan_made_against_another_base_is_not_the_plan_of_the_merge(gh, pkic, tmp_path):
    """A same-repository author opens the pull request into a branch of theirs
    (`evil-base`, which already holds their change to .github/workflows/apply.yml and
    .github/pkic-requirements.txt), so the trusted plan runs `pkic -C pr plan --base
    origin/evil-base`: the comment lists no `.github/` path as "not planned: review as
    code", and no policy or .sops.yaml diff. Then they retarget it to the default
    branch (an `edited` event: plan.yml's `pull_request` default types do not include
    it, so no new plan runs). The record holds no base, so apply accepts the plan of
    the old base. Either the trusted plan refuses a pull request that is not into the
    default branch, or the record binds the base and apply refuses."""
    gh.pull(7, HEAD, base_ref="evil-base")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "completed", "workflow_run": {
        "id": 42, "name": "pki plan", "event": "pull_request", "head_sha": HEAD, "head_branch": "feature",
        "head_repository": {"full_name": "acme/pki"}, "repository": {"full_name": "acme/pki"},
        "pull_requests": [{"number": 7, "head": {"sha": HEAD}, "base": {"ref": "evil-base"}}]}}))
    found = ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event))
    if found.returncode != 0:
        return  # refused a pull request into another branch than the default one: secure
    out = parse_kv(found.stdout)
    assert out["base_ref"] == "evil-base"
    # the Plan step's own `pkic ci record` line, with the step's variables
    plan_step = step(load("plan-trusted.yml"), "plan", "Plan")["run"]
    line = next(ln.strip() for ln in plan_step.replace("\\\n", " ").splitlines() if ln.strip().startswith("pkic ci record"))
    plan_json = tmp_path / "plan.json"
    plan_json.write_text(json.dumps({"reviewed_digest": DIGEST, "needs_review": True}))
    env = {"PR": out["pr"], "HEAD_SHA": out["head_sha"], "HEAD_REPO": out["head_repo"], "BASE_REF": out["base_ref"],
           "BASE_SHA": out["base_sha"], "GITHUB_REPOSITORY": "acme/pki", "PATH": f"{tmp_path}/bin:/usr/bin:/bin"}
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "pkic"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m compiler.cli \"$@\"\n")
    shim.chmod(0o755)
    (tmp_path / "pkic-trusted-plan").mkdir()
    rec = subprocess.run(["bash", "-eo", "pipefail", "-c", line.split(">")[0]], cwd=tmp_path, capture_output=True, text=True, check=False,
                         env={**pkic.env, **env})
    assert rec.returncode == 0, rec.stderr
    record = json.loads(rec.stdout)
    # retargeted to the default branch, reviewed (with that comment), merged
    gh.pulls[7]["base"]["ref"] = "main"
    gh.pulls[7].update(state="closed", merged_at="2026-11-28T10:00:00Z", merge_commit_sha=MERGE)
    gh.commit_pulls[MERGE] = [7]
    gh.comment(7, f"<!-- pkic-plan run-id={RUN} -->\nplan against evil-base")
    gh.run(RUN)
    gh.artifact(RUN, {"provenance.json": json.dumps(record)})
    p = digest_of(pkic, gh)
    assert _is_refused(p), ("apply accepted a plan computed against the base 'evil-base', not the default branch", p.stdout, p.stderr)


# --------------------------------------------------------------------------- 3. the manual override is open to every writer


def test_the_manual_override_is_not_open_to_every_writer(gh, pkic, tmp_path):
    """`workflow_dispatch` needs only write access, which every same-repository pull
    request author has (they push their branch). apply.yml's override takes any digest
    from any such actor, with a warning: e.g. after two pull requests merged back to
    back, the combined plan (which no reviewer saw) is refused by the normal proof, and
    the author of the second one dispatches the override with the combined digest.
    The override must be limited to the people who may bypass review (an admin check
    through the API, or a job in an environment with required reviewers)."""
    doc = load("apply.yml")
    job = doc["jobs"]["reviewed"]
    s = step(doc, "reviewed", "Find the reviewed plan")
    if job.get("environment") not in (None, "pki-apply"):
        return  # gated by an environment of its own (required reviewers): secure
    gh.override["/repos/acme/pki/collaborators/mallory/permission"] = (
        200, json.dumps({"permission": "write", "role_name": "write", "user": {"login": "mallory"}}).encode())
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "pkic"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m compiler.cli \"$@\"\n")
    shim.chmod(0o755)
    out, summary = tmp_path / "out", tmp_path / "summary"
    out.write_text("")
    summary.write_text("")
    combined = "c" * 64
    env = {**pkic.env, **gh.env(), "PATH": f"{tmp_path}/bin:/usr/bin:/bin", "GITHUB_EVENT_NAME": "workflow_dispatch",
           "GITHUB_ACTOR": "mallory", "GITHUB_SHA": sha("main-tip"), "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_TOKEN": TOKEN, "OVERRIDE": combined}
    p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=False)
    assert f"digest={combined}" not in out.read_text(), ("a writer's override digest reaches the apply job", p.stdout, p.stderr)


# --------------------------------------------------------------------------- 4. a merge that starts no apply


@pytest.mark.parametrize("title", ["Add api certificate [skip ci]", "[ci skip] add api", "add api [no ci]", "add api [skip actions]",
                                   "add api [actions skip]"])
def test_a_pull_request_whose_merge_would_start_no_apply_is_not_planned(gh, pkic, tmp_path, title):
    """GitHub starts no `push` workflow for a commit whose message holds `[skip ci]`,
    `[ci skip]`, `[no ci]`, `[skip actions]` or `[actions skip]`, and the merge commit's
    message carries the pull request's title (squash: title and commits). The author
    titles the pull request so; its head commit is clean, so plan.yml and the trusted
    plan run and the plan is posted; after review and merge apply.yml never runs: the
    reviewed change is silently not applied. Worse, every daily renew then meets
    unapplied spec-driven work and refuses (`--reviewed none`), CRL and OCSP re-signing
    included, until someone uses the override. The trusted plan must refuse (or at
    least fail the plan of) such a pull request."""
    pr = gh.pull(7, HEAD)
    pr["title"] = title
    pr["body"] = "skip-checks: true"
    p = ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--head-sha", HEAD, "--head-repo", "acme/pki")
    assert p.returncode != 0 and "skip" in p.stderr.lower(), ("a pull request whose merge starts no apply is planned as usual", p.stdout, p.stderr)
