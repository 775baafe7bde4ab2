"""`pkic ci`: the provenance of the reviewed plan, against a fake GitHub API.

The real CLI talks over real HTTP to tests/fakegithub.py on 127.0.0.1 (no mocking of
urllib). Each attack on the trusted plan is set up as the API would show it, and must be
refused with one clear message, no traceback, and never the token in the output:

* the good path: merged pull request → bot comment → trusted run → its artifact;
* a forged artifact (the pull request's own ``pull_request`` run, another path, another
  branch, a failed run), a record of another pull request or of an earlier head (pushed
  after the plan), a missing plan (no comment, no run, no artifact, no provenance);
* a marker comment by anyone but the bot is ignored;
* find-pr: a same-repository pull request from ``workflow_run.pull_requests``, a fork's
  (empty ``pull_requests``) by head SHA and head repository, two matches refused;
* a push that is no pull request's merge: ``none``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest
from fakegithub import BOT, TOKEN, TRUSTED, FakeGitHub, sha, user, zip_of

DIGEST = "d" * 64
HEAD = sha("head-7")
MERGE = sha("merge-7")
RUN = 501


@pytest.fixture
def gh():
    with FakeGitHub() as fake:
        yield fake


def provenance(**over) -> dict:
    rec = {"format": 1, "repository": "acme/pki", "pr": 7, "head_sha": HEAD, "head_repo": "acme/pki", "base_ref": "main",
           "reviewed_digest": DIGEST, "needs_review": True}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


PLAN_MD = "<!-- pkic-plan -->\n### pkic plan: 1 to issue\n\n`Pki-Plan: " + "e" * 64 + "`\n"


def genuine_comment(run: int = RUN, head: str | None = None) -> str:
    """The comment the trusted run posts: its plan.md (PLAN_MD), naming the run."""
    from compiler.ci import comment_body

    return comment_body(PLAN_MD, run, f"https://github.example/acme/pki/actions/runs/{run}", head or HEAD)


def merged(gh: FakeGitHub, run: int = RUN, **run_fields) -> None:
    """Pull request #7, head HEAD, merged as MERGE, planned by the trusted run ``run``."""
    gh.pull(7, HEAD, merged_as=MERGE)
    gh.comment(7, genuine_comment(run))
    gh.run(run, **run_fields)


def ci(pkic, gh: FakeGitHub, *args: str, cwd=None) -> subprocess.CompletedProcess:
    p = pkic("ci", *args, cwd=cwd, env=gh.env())
    assert TOKEN not in p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    return p


def digest_of(pkic, gh, sha_: str = MERGE) -> subprocess.CompletedProcess:
    return ci(pkic, gh, "reviewed-digest", "--repo", "acme/pki", "--sha", sha_)


def refused(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == "", p.stdout  # nothing that apply could take for a digest
    assert p.stderr.startswith("error: pkic ci: ") or p.stderr.startswith("error: "), p.stderr
    for needle in needles:
        assert needle in p.stderr, (needle, p.stderr)


# --------------------------------------------------------------------------- reviewed-digest


def test_good_path_prints_the_artifacts_digest_and_the_token_goes_only_to_the_api(gh, pkic):
    merged(gh)
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance()), "plan.md": PLAN_MD})
    p = digest_of(pkic, gh)
    assert p.returncode == 0, p.stderr
    assert p.stdout == DIGEST + "\n"
    assert "pull request #7" in p.stderr and f"run {RUN}" in p.stderr and TRUSTED in p.stderr
    # the comment's own `Pki-Plan:` line (e…) is never the source
    assert "e" * 64 not in p.stdout
    # the token went to every API call, and not along the redirect to blob storage
    api = gh.api_requests()
    assert api and all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h in api)
    blobs = [h for _, path, h in gh.log if path.startswith("/blob/")]
    assert len(blobs) == 1 and "Authorization" not in blobs[0]


def test_a_push_that_is_no_pull_requests_merge_has_no_reviewed_plan(gh, pkic):
    gh.pull(7, HEAD, merged_as=MERGE)
    p = digest_of(pkic, gh, sha("direct-push"))
    assert p.returncode == 0 and p.stdout == "none\n", p.stderr
    assert "only time-driven work" in p.stderr
    # listed for the commit, but merged as another commit, or into another branch: none either
    gh.pull(8, sha("head-8"), merged_as=sha("merge-8"), base_ref="release")
    gh.commit_pulls[sha("merge-8")] = [8]
    assert digest_of(pkic, gh, sha("merge-8")).stdout == "none\n"
    # a commit inside a merged pull request (a rebase merge lists it too): not its merge
    gh.commit_pulls[sha("commit-inside-7")] = [7]
    assert digest_of(pkic, gh, sha("commit-inside-7")).stdout == "none\n"
    gh.pull(9, sha("head-9"), state="open")
    gh.commit_pulls[sha("head-9")] = [9]  # a commit of an open pull request
    assert digest_of(pkic, gh, sha("head-9")).stdout == "none\n"


@pytest.mark.parametrize(("fields", "needle"), [
    # the pull request's own run (its copy of the workflow, whatever it is named), even
    # from a fork branch called main
    ({"event": "pull_request", "path": ".github/workflows/plan.yml"}, "triggered by 'pull_request'"),
    ({"event": "pull_request"}, "triggered by 'pull_request'"),
    ({"path": ".github/workflows/plan.yml"}, "not the trusted .github/workflows/plan-trusted.yml"),
    ({"path": "evil/fork/.github/workflows/plan-trusted.yml@main"}, "not the trusted"),
    ({"event": "push"}, "triggered by 'push'"),
    ({"event": "workflow_dispatch", "head_branch": "attack"}, "ran on 'attack'"),
    ({"head_branch": "feature"}, "ran on 'feature', not the default branch 'main'"),
    ({"conclusion": "failure"}, "conclusion 'failure'"),
    ({"status": "in_progress", "conclusion": None}, "has not concluded successfully"),
    ({"repository": {"full_name": "evil/pki"}}, "belongs to 'evil/pki'"),
])
def test_a_run_that_is_not_the_trusted_plan_is_refused(gh, pkic, fields, needle):
    merged(gh, **fields)
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance())})
    refused(digest_of(pkic, gh), f"run {RUN} is not a successful run of the default branch's trusted plan workflow", needle)


def test_the_long_form_of_a_runs_path_on_the_default_branch_is_accepted(gh, pkic):
    merged(gh, path=f"acme/pki/{TRUSTED}@refs/heads/main")
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance())})
    assert digest_of(pkic, gh).stdout == DIGEST + "\n"


@pytest.mark.parametrize(("record", "needle"), [
    (provenance(head_sha=sha("head-7-before-the-last-push")), "merged at head " + HEAD[:12] + " (pushed after the plan?)"),
    (provenance(pr=8), "a plan of pull request #8, not #7"),
    (provenance(repository="evil/pki"), "a plan of 'evil/pki'"),
    (provenance(head_repo="evil/pki"), "a head from 'evil/pki'"),
    (provenance(reviewed_digest=None), "no reviewed digest"),
    (provenance(reviewed_digest="D" * 64), "no reviewed digest"),
])
def test_an_artifact_that_records_something_else_is_refused(gh, pkic, record, needle):
    merged(gh)
    gh.artifact(RUN, {"provenance.json": json.dumps(record)})
    refused(digest_of(pkic, gh), f"the trusted plan of run {RUN} is not the plan of what was merged", needle)


def test_a_fork_whose_repository_is_gone_is_checked_by_number_and_head(gh, pkic):
    gh.pull(7, HEAD, merged_as=MERGE, head_repo="-")
    gh.comment(7, genuine_comment())
    gh.run(RUN)
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance(head_repo="mallory/pki"))})
    assert digest_of(pkic, gh).stdout == DIGEST + "\n"


@pytest.mark.parametrize(("setup", "needle"), [
    ("no-comment", "has no plan comment by github-actions[bot] naming a trusted plan run"),
    ("comment-by-a-user", "has no plan comment by github-actions[bot]"),
    ("comment-by-a-user-named-like-the-bot", "has no plan comment by github-actions[bot]"),
    ("bot-comment-without-run-id", "has no plan comment by github-actions[bot]"),
    ("no-run", "HTTP 404"),
    ("no-artifact", "has 0 artifacts named pkic-trusted-plan"),
    ("two-artifacts", "has 2 artifacts named pkic-trusted-plan"),
    ("expired", "has expired"),
    ("no-provenance", "no single provenance.json: the trusted plan did not succeed"),
    ("not-a-zip", "not a readable zip archive"),
    ("not-json", "provenance.json is not JSON"),
    ("wrong-format", "not a format-1 pkic provenance record"),
    ("huge-member", "over the 65536-byte limit"),
    ("tampered-archive", "does not match the artifact's digest"),
    ("two-bot-comments", "several plan comments by github-actions[bot] naming different runs (501, 502)"),
])
def test_a_missing_or_broken_plan_is_refused(gh, pkic, setup, needle):
    gh.pull(7, HEAD, merged_as=MERGE)
    marker = f"<!-- pkic-plan run-id={RUN} -->\nplan"
    good = {"provenance.json": json.dumps(provenance())}
    if setup == "comment-by-a-user":
        gh.comment(7, marker, by=user("mallory"))
    elif setup == "comment-by-a-user-named-like-the-bot":
        gh.comment(7, marker, by={**BOT, "type": "User"})
    elif setup == "bot-comment-without-run-id":
        gh.comment(7, "<!-- pkic-plan -->\nan old comment")
    elif setup != "no-comment":
        gh.comment(7, marker)
    gh.run(RUN)
    if setup == "no-run":
        del gh.runs[RUN]
    elif setup == "two-artifacts":
        gh.artifact(RUN, good)
        gh.artifact(RUN, good)
    elif setup == "expired":
        gh.artifact(RUN, good, expired=True)
    elif setup == "no-provenance":
        gh.artifact(RUN, {"plan.md": "<!-- pkic-plan -->\n", "plan-errors.txt": "error"})
    elif setup == "not-a-zip":
        gh.artifact(RUN, raw=b"PK\x03\x04 not really")
    elif setup == "not-json":
        gh.artifact(RUN, {"provenance.json": "{"})
    elif setup == "wrong-format":
        gh.artifact(RUN, {"provenance.json": json.dumps({**provenance(), "format": 2})})
    elif setup == "huge-member":
        gh.artifact(RUN, {"provenance.json": json.dumps({**provenance(), "pad": "x" * 70_000})})
    elif setup == "tampered-archive":
        art = gh.artifact(RUN, good)
        gh.blobs[art["id"]] = zip_of({"provenance.json": json.dumps(provenance(reviewed_digest="a" * 64))})
    elif setup == "two-bot-comments":
        gh.artifact(RUN, good)
        gh.comment(7, "<!-- pkic-plan run-id=502 -->\nanother")
    elif setup != "no-artifact":
        gh.artifact(RUN, good)
    refused(digest_of(pkic, gh), needle)


def test_a_users_comment_pointing_at_a_good_run_is_ignored_beside_the_bots(gh, pkic):
    """Mallory points her own marker comment at a genuine trusted run of another pull
    request: ignored; the bot's comment decides, and the artifact must match anyway."""
    merged(gh)
    gh.artifact(RUN, {"provenance.json": json.dumps(provenance())})
    gh.run(600)
    gh.artifact(600, {"provenance.json": json.dumps(provenance(pr=9, reviewed_digest="f" * 64))})
    gh.comment(7, "<!-- pkic-plan run-id=600 -->\nlooks legit", by=user("mallory"))
    assert digest_of(pkic, gh).stdout == DIGEST + "\n"
    # and if the bot's own comment is made to point there (a token that can write
    # comments), the artifact names another pull request: refused
    gh.comments[7][0]["body"] = "<!-- pkic-plan run-id=600 -->\nplan"
    refused(digest_of(pkic, gh), "a plan of pull request #9, not #7")


def test_api_errors_are_one_message_without_the_token(gh, pkic):
    p = ci(pkic, gh, "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE)
    assert p.returncode == 0 and p.stdout == "none\n"
    bad = pkic("ci", "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE, env={**gh.env(), "GITHUB_TOKEN": "wrong-token-value"})
    refused(bad, "HTTP 401", "(Bad credentials)", "hint: the token is missing")
    assert "wrong-token-value" not in bad.stderr
    refused(pkic("ci", "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE, env={**gh.env(), "GITHUB_TOKEN": "", "GH_TOKEN": ""}), "no GitHub token")
    remote_http = {**gh.env(), "GITHUB_API_URL": "http://api.github.example"}
    refused(pkic("ci", "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE, env=remote_http), "plain http to another host")
    refused(ci(pkic, gh, "reviewed-digest", "--repo", "acme/pki", "--sha", "HEAD"), "is not a commit SHA")
    refused(ci(pkic, gh, "reviewed-digest", "--repo", "acme/../pki", "--sha", MERGE), "is not a repository")
    gh.override["/repos/acme/pki"] = (200, b"[" * 100_000)
    refused(ci(pkic, gh, "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE), "the response is not JSON")
    gh.override["/repos/acme/pki"] = (200, b" " * (9 << 20))
    refused(ci(pkic, gh, "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE), "over the 8388608-byte limit")
    closed = subprocess.run([sys.executable, "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"],
                            capture_output=True, text=True).stdout.strip()
    refused(pkic("ci", "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE, env={**gh.env(), "GITHUB_API_URL": f"http://127.0.0.1:{closed}"}),
            "cannot reach")


# --------------------------------------------------------------------------- find-pr


def event_file(tmp_path, *, pull_requests: list, head_sha: str, head_repo: str, event: str = "pull_request", head_branch: str = "feature"):
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"action": "completed", "workflow_run": {
        "id": 42, "name": "pki plan", "event": event, "head_sha": head_sha, "head_branch": head_branch,
        "head_repository": {"full_name": head_repo}, "repository": {"full_name": "acme/pki"}, "pull_requests": pull_requests}}))
    return path


def parse_kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_find_pr_of_a_same_repository_pull_request(gh, pkic, tmp_path):
    pr = gh.pull(7, HEAD)
    listed = [{"number": 7, "head": {"sha": HEAD, "ref": "feature", "repo": {"id": 1, "name": "pki"}}, "base": {"ref": "main"}}]
    p = ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event_file(tmp_path, pull_requests=listed, head_sha=HEAD, head_repo="acme/pki")))
    assert p.returncode == 0, p.stderr
    assert parse_kv(p.stdout) == {"pr": "7", "head_sha": HEAD, "head_repo": "acme/pki", "base_ref": "main", "base_sha": pr["base"]["sha"]}
    # the same with explicit flags
    p = ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--head-sha", HEAD, "--head-repo", "acme/pki")
    assert parse_kv(p.stdout)["pr"] == "7"
    # the pull request moved on since the run: refused (its newer run plans it)
    gh.pulls[7]["head"]["sha"] = sha("newer")
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event_file(tmp_path, pull_requests=listed, head_sha=HEAD, head_repo="acme/pki"))),
            "no open pull request into acme/pki has head")


def test_find_pr_of_a_fork_searches_open_pull_requests_by_head_sha_and_repository(gh, pkic, tmp_path):
    gh.pull(3, sha("other"), head_repo="mallory/pki", head_ref="feature")
    gh.pull(5, HEAD, head_repo="acme/pki", head_ref="feature")  # the same sha in the base repo: not this fork's
    gh.pull(7, HEAD, head_repo="mallory/pki", head_ref="feature")
    event = event_file(tmp_path, pull_requests=[], head_sha=HEAD, head_repo="mallory/pki")
    p = ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event))
    assert p.returncode == 0, p.stderr
    assert parse_kv(p.stdout)["pr"] == "7" and parse_kv(p.stdout)["head_repo"] == "mallory/pki"
    assert any("head=mallory%3Afeature" in path for _, path, _ in gh.log)
    # a second open pull request from the same fork head: refused
    gh.pull(8, HEAD, head_repo="mallory/pki", head_ref="feature")
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event)), "2 (#8, #7) open pull request", "exactly one must")
    # closed or merged: nothing to plan
    gh.pulls[7]["state"] = gh.pulls[8]["state"] = "closed"
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event)), "no open pull request")


def test_find_pr_refuses_what_is_not_a_pull_request_run(gh, pkic, tmp_path):
    gh.pull(7, HEAD)
    push = event_file(tmp_path, pull_requests=[], head_sha=HEAD, head_repo="acme/pki", event="push")
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(push)), "triggered by 'push', not by a pull request")
    (tmp_path / "other.json").write_text(json.dumps({"pull_request": {"number": 7}}))
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(tmp_path / "other.json")), "not a workflow_run event")
    (tmp_path / "bad.json").write_text("{")
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(tmp_path / "bad.json")), "not JSON")
    # a pull request of another repository listed for the run (GitHub lists those too)
    gh.pull(9, HEAD, base_repo="upstream/pki")
    listed = [{"number": 9, "head": {"sha": HEAD}}]
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki", "--event", str(event_file(tmp_path, pull_requests=listed, head_sha=HEAD, head_repo="acme/pki"))),
            "no open pull request into acme/pki")
    refused(ci(pkic, gh, "find-pr", "--repo", "acme/pki"), "say which run")


# --------------------------------------------------------------------------- comment and record


def test_comment_posts_then_updates_only_the_bots_own_comment(gh, pkic, tmp_path):
    gh.pull(7, HEAD)
    mallory = gh.comment(7, "<!-- pkic-plan run-id=1 -->\nfake plan", by=user("mallory"))
    plan = tmp_path / "plan.md"
    plan.write_text("<!-- pkic-plan -->\n### pkic plan: 1 to issue\n")
    p = ci(pkic, gh, "comment", "--repo", "acme/pki", "--pr", "7", "--run-id", "501", "--head-sha", HEAD, "--body", str(plan))
    assert p.returncode == 0, p.stderr
    assert "Created the plan comment" in p.stderr
    ours = [c for c in gh.comments[7] if c["user"]["type"] == "Bot"]
    assert len(ours) == 1
    body = ours[0]["body"]
    assert body.startswith("<!-- pkic-plan run-id=501 -->\n### pkic plan: 1 to issue\n")
    assert "https://github.example/acme/pki/actions/runs/501" in body and HEAD in body
    # the next run updates it; Mallory's comment is left alone
    errors = tmp_path / "errors.txt"
    errors.write_text("error: pki.yaml:3: ```nope```\n")
    p = ci(pkic, gh, "comment", "--repo", "acme/pki", "--pr", "7", "--run-id", "502", "--head-sha", HEAD, "--body", str(plan), "--errors", str(errors))
    assert "Updated the plan comment" in p.stderr
    assert [c["id"] for c in gh.comments[7]] == [mallory["id"], ours[0]["id"]]
    assert mallory["body"] == "<!-- pkic-plan run-id=1 -->\nfake plan"
    body = gh.comments[7][1]["body"]
    assert body.startswith("<!-- pkic-plan run-id=502 -->") and "**pkic plan failed**" in body
    assert "````text\nerror: pki.yaml:3: ```nope```\n````" in body  # a fence longer than any in the errors
    # and reviewed-digest reads the new run id from it
    gh.pulls[7].update(state="closed", merged_at="2026-11-28T10:00:00Z", merge_commit_sha=MERGE)
    gh.commit_pulls[MERGE] = [7]
    gh.run(502)
    gh.artifact(502, {"provenance.json": json.dumps(provenance()), "plan.md": plan.read_text(), "plan-errors.txt": errors.read_text()})
    assert digest_of(pkic, gh).stdout == DIGEST + "\n"
    # the comment shows the run's plan (plan.md, errors) and nothing else: an edit is refused
    gh.comments[7][1]["body"] = gh.comments[7][1]["body"].replace("1 to issue", "nothing to do")
    refused(digest_of(pkic, gh), "does not show that run's plan")


def test_comment_is_not_posted_for_a_head_the_pull_request_left(gh, pkic, tmp_path):
    gh.pull(7, sha("newer"))
    plan = tmp_path / "plan.md"
    plan.write_text("<!-- pkic-plan -->\nplan\n")
    p = ci(pkic, gh, "comment", "--repo", "acme/pki", "--pr", "7", "--run-id", "501", "--head-sha", HEAD, "--body", str(plan))
    assert p.returncode == 0 and "Not posted: pull request #7 moved on" in p.stderr
    assert gh.comments.get(7) is None


def test_comment_body_fits_githubs_limit(gh, pkic, tmp_path):
    gh.pull(7, HEAD)
    plan = tmp_path / "plan.md"
    plan.write_text("<!-- pkic-plan -->\n" + "| row |\n" * 20_000)
    ci(pkic, gh, "comment", "--repo", "acme/pki", "--pr", "7", "--run-id", "501", "--body", str(plan))
    body = gh.comments[7][0]["body"]
    assert len(body) <= 65_536 and "cut at GitHub's comment limit" in body and body.startswith("<!-- pkic-plan run-id=501 -->")


def test_record_writes_the_provenance_of_a_successful_plan(pkic, tmp_path, gh):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"reviewed_digest": DIGEST, "needs_review": False, "changes": []}))
    p = ci(pkic, gh, "record", "--repo", "acme/pki", "--pr", "7", "--head-sha", HEAD, "--head-repo", "mallory/pki", "--base-ref", "main", "--plan", str(plan))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"format": 1, "repository": "acme/pki", "pr": 7, "head_sha": HEAD, "head_repo": "mallory/pki",
                                    "base_ref": "main", "reviewed_digest": DIGEST, "needs_review": False}
    plan.write_text(json.dumps({"errors": ["seal"]}))
    refused(ci(pkic, gh, "record", "--repo", "acme/pki", "--pr", "7", "--head-sha", HEAD, "--head-repo", "mallory/pki", "--base-ref", "main", "--plan", str(plan)),
            "the plan has no reviewed_digest")
    refused(ci(pkic, gh, "record", "--repo", "acme/pki", "--pr", "7", "--head-sha", "main", "--head-repo", "mallory/pki", "--base-ref", "main", "--plan", str(plan)),
            "is not a commit SHA")


def test_a_response_cut_short_is_one_error(pkic, gh):
    """A server that promises 1000 bytes and closes after 10: an error, not a crash."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n{"default')
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    env = {**gh.env(), "GITHUB_API_URL": f"http://127.0.0.1:{server.getsockname()[1]}"}
    p = pkic("ci", "reviewed-digest", "--repo", "acme/pki", "--sha", MERGE, env=env)
    thread.join(5)
    server.close()
    refused(p, "GET /repos/acme/pki: the response was cut short (9 of 1000 bytes)")
