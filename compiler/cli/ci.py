"""`pkic ci …`: the GitHub side of the trusted plan and the apply (see compiler/ci.py).

Results go to stdout (a digest, ``key=value`` lines for ``$GITHUB_OUTPUT``, JSON); what
was checked goes to stderr for the job log. Errors are PkicErrors: one message, exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from compiler import ci
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import fail, printable

ci_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="GitHub provenance for CI: find a run's pull request, post the plan comment, prove the reviewed plan of a merge.",
)

REPO_HELP = "the repository, OWNER/NAME (default: $GITHUB_REPOSITORY)"
MAX_INPUT = 16 << 20


def _note(text: str) -> None:
    sys.stderr.write(printable(text) + "\n")  # one line: what the API says never writes a line (a workflow command) of its own
    sys.stderr.flush()


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _read(path: Path, what: str, limit: int = MAX_INPUT) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise fail(str(path), f"cannot read the {what}: {exc.strerror}") from None
    if len(raw) > limit:
        raise fail(str(path), f"the {what} is over {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(str(path), f"the {what} is not UTF-8 text") from None


def _json(path: Path, what: str) -> Any:
    try:
        text = _read(path, what)
        if not json_depth_ok(text.encode("utf-8")):
            raise ValueError("too deep")
        return json.loads(text)
    except (ValueError, RecursionError):
        raise fail(str(path), f"the {what} is not JSON") from None


@ci_app.command("find-pr")
def find_pr(
    repo: str = typer.Option(..., "--repo", envvar="GITHUB_REPOSITORY", help=REPO_HELP),
    event: Path | None = typer.Option(None, "--event", help="the workflow_run event file ($GITHUB_EVENT_PATH)"),
    head_sha: str | None = typer.Option(None, "--head-sha", help="without --event: the head commit of the pull request"),
    head_repo: str | None = typer.Option(
        None, "--head-repo", help="without --event: the repository the head comes from (a fork's OWNER/NAME)"
    ),
) -> None:
    """Print the one open pull request a workflow_run is about (pr, head_sha, head_repo, base_ref, base_sha as key=value lines)."""
    ci.check_repo(repo)
    gh = ci.GitHub.from_env()
    if event is not None:
        if head_sha or head_repo:
            raise ci.refuse("give --event, or --head-sha with --head-repo, not both")
        pr = ci.pr_of_workflow_run(gh, repo, _json(event, "event file"))
    elif head_sha and head_repo:
        pr = ci.find_pr(gh, repo, head_sha, head_repo)
    else:
        raise ci.refuse("say which run: --event $GITHUB_EVENT_PATH, or --head-sha with --head-repo")
    _note(f"pull request #{pr.number}: head {pr.head_sha} from {pr.head_repo}, into {pr.base_ref}")
    _emit(f"pr={pr.number}\nhead_sha={pr.head_sha}\nhead_repo={pr.head_repo}\nbase_ref={pr.base_ref}\nbase_sha={pr.base_sha}")


@ci_app.command("record")
def record(
    repo: str = typer.Option(..., "--repo", envvar="GITHUB_REPOSITORY", help=REPO_HELP),
    pr: int = typer.Option(..., "--pr", help="the pull request planned"),
    head_sha: str = typer.Option(..., "--head-sha", help="the head commit planned"),
    head_repo: str = typer.Option(..., "--head-repo", help="the repository that head comes from"),
    plan: Path = typer.Option(..., "--plan", help="the output of `pkic plan --json`"),
    base_ref: str = typer.Option(..., "--base-ref", help="the branch the plan was made against (apply requires the default branch)"),
) -> None:
    """Print the provenance record the trusted plan uploads (provenance.json)."""
    body = ci.record(repo, pr, head_sha, head_repo, _json(plan, "plan"), base_ref)
    _emit(json.dumps(body, indent=1, sort_keys=True))


@ci_app.command("comment")
def comment(
    repo: str = typer.Option(..., "--repo", envvar="GITHUB_REPOSITORY", help=REPO_HELP),
    pr: int = typer.Option(..., "--pr", help="the pull request to comment on"),
    run_id: int = typer.Option(..., "--run-id", help="the trusted plan run ($GITHUB_RUN_ID): the comment names it"),
    body: Path = typer.Option(..., "--body", help="the markdown plan (`pkic plan --format markdown --max-chars 60000`)"),
    head_sha: str | None = typer.Option(None, "--head-sha", help="the head planned: post nothing if the pull request moved on"),
    errors: Path | None = typer.Option(None, "--errors", help="the plan's error output, shown when it failed"),
    bot: str = typer.Option(ci.BOT, "--bot", help="the login the token comments as"),
) -> None:
    """Post the plan comment on a pull request, or update pkic's own one (by the bot, marked with the run id)."""
    ci.check_repo(repo)
    if head_sha is not None:
        ci.check_sha(head_sha, "--head-sha")
    gh = ci.GitHub.from_env()
    server = (os.environ.get("GITHUB_SERVER_URL") or ci.DEFAULT_SERVER).rstrip("/")
    text = ci.comment_body(
        _read(body, "plan"),
        run_id,
        f"{server}/{repo}/actions/runs/{run_id}",
        head_sha or "?",
        _read(errors, "error output") if errors is not None else "",
    )
    posted = ci.post_comment(gh, repo, pr, text, head_sha, bot)
    if posted.action == "skipped":
        _note(f"Not posted: {posted.reason}.")
    else:
        _note(f"{posted.action.capitalize()} the plan comment {posted.comment_id} on pull request #{pr} (run {run_id}).")


@ci_app.command("override")
def override(
    repo: str = typer.Option(..., "--repo", envvar="GITHUB_REPOSITORY", help=REPO_HELP),
    actor: str = typer.Option(..., "--actor", envvar="GITHUB_ACTOR", help="who asks for the override ($GITHUB_ACTOR)"),
    digest: str = typer.Option(..., "--digest", help="the Pki-Plan digest to apply"),
) -> None:
    """Print DIGEST if ACTOR is an admin of the repository (checked through the API): the logged manual override."""
    _emit(ci.override(ci.GitHub.from_env(), repo, actor, digest))


@ci_app.command("reviewed-digest")
def reviewed_digest(
    repo: str = typer.Option(..., "--repo", envvar="GITHUB_REPOSITORY", help=REPO_HELP),
    sha: str = typer.Option(..., "--sha", help="the commit pushed to the default branch ($GITHUB_SHA)"),
    workflow: str = typer.Option(ci.TRUSTED_WORKFLOW, "--workflow", help="the trusted plan workflow's file"),
    bot: str = typer.Option(ci.BOT, "--bot", help="the login the trusted plan comments as"),
) -> None:
    """Print the reviewed digest of the pull request merged as SHA, proven through the API; `none` when no pull request was merged as SHA."""
    ci.check_repo(repo)
    ci.check_sha(sha)
    result = ci.reviewed_digest(ci.GitHub.from_env(), repo, sha, workflow, bot)
    for note in result.notes:
        _note(note)
    _emit(result.digest or "none")
