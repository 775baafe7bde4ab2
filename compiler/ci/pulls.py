"""Pull requests, the trusted record of a plan, and the plan comment on a pull request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compiler.ci.api import (
    BOT,
    COMMENT_LIMIT,
    HEX64,
    MARKER,
    SKIP_DIRECTIVE,
    GitHub,
    _repo_path,
    check_repo,
    check_sha,
    refuse,
    same_repo,
)

# --------------------------------------------------------------------------- pull requests


@dataclass(frozen=True)
class PullRequest:
    number: int
    state: str
    head_sha: str
    head_repo: str | None  # None when the fork was deleted
    head_ref: str
    base_repo: str
    base_ref: str
    base_sha: str
    merged: bool
    merge_commit_sha: str | None
    title: str = ""
    body: str = ""

    @classmethod
    def of(cls, raw: Any) -> PullRequest:
        try:
            head, base = raw["head"], raw["base"]
            number = raw["number"]
            if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
                raise TypeError
            return cls(
                number=number,
                state=str(raw.get("state")),
                head_sha=str(head["sha"]),
                head_repo=(head.get("repo") or {}).get("full_name"),
                head_ref=str(head.get("ref")),
                base_repo=str((base.get("repo") or {}).get("full_name")),
                base_ref=str(base["ref"]),
                base_sha=str(base.get("sha")),
                merged=bool(raw.get("merged_at")),
                merge_commit_sha=raw.get("merge_commit_sha"),
                title=str(raw.get("title") or ""),
                body=str(raw.get("body") or ""),
            )
        except (KeyError, TypeError, AttributeError):
            raise refuse("a pull request in the API's answer lacks number, head or base") from None


def get_pull(gh: GitHub, repo: str, number: int) -> PullRequest:
    return PullRequest.of(gh.get(f"{_repo_path(repo)}/pulls/{int(number)}"))


def find_pr(
    gh: GitHub, repo: str, head_sha: str, head_repo: str, listed: list[Any] | None = None, head_ref: str | None = None
) -> PullRequest:
    """The one open pull request into ``repo`` whose head is ``head_sha`` from ``head_repo``.

    ``listed`` is ``workflow_run.pull_requests``: GitHub fills it for pull requests from
    the repository itself and leaves it empty for forks; then the open pull requests
    are searched (by head owner and branch when known). Each candidate is read again
    through the API; anything but exactly one match is refused."""
    check_repo(repo)
    check_sha(head_sha, "head SHA")
    check_repo(head_repo, "head repository")
    if listed:
        numbers = sorted(
            {
                p["number"]
                for p in listed
                if isinstance(p, dict) and isinstance(p.get("number"), int) and (p.get("head") or {}).get("sha") == head_sha
            }
        )
        if not numbers:
            raise refuse(
                f"none of the run's pull requests ({_numbers(listed)}) has head {head_sha[:12]}",
                "the pull request moved on since this run: the run of its newer head plans it",
            )
        candidates = [get_pull(gh, repo, n) for n in numbers if isinstance(n, int)]
    else:
        params: dict[str, Any] = {"state": "open"}
        if head_ref:
            params["head"] = f"{head_repo.split('/')[0]}:{head_ref}"
        candidates = [PullRequest.of(p) for p in gh.pages(f"{_repo_path(repo)}/pulls", **params)]
    matches = [
        p
        for p in candidates
        if p.state == "open" and p.head_sha == head_sha and same_repo(p.head_repo, head_repo) and same_repo(p.base_repo, repo)
    ]
    for p in matches:
        skip = SKIP_DIRECTIVE.search(p.title + "\n" + p.body)
        if skip:
            raise refuse(
                f"pull request #{p.number} says {skip.group(0)!r} in its title or description: GitHub would skip every workflow, apply included, for its merge "
                "(the merge commit's message carries them), and the reviewed change would silently never be applied",
                "remove it from the title and the description; the plan runs again on the next push",
            )
    if len(matches) != 1:
        found = "no" if not matches else f"{len(matches)} ({', '.join(f'#{p.number}' for p in matches)})"
        raise refuse(
            f"{found} open pull request into {repo} has head {head_sha[:12]} from {head_repo}; exactly one must",
            "the pull request was closed or pushed since this run (its newer run plans it), or several pull requests share this head: plan them one at a time",
        )
    return matches[0]


def _numbers(listed: list[Any]) -> str:
    return ", ".join(f"#{p.get('number')}" for p in listed if isinstance(p, dict)) or "none"


def pr_of_workflow_run(gh: GitHub, repo: str, event: Any) -> PullRequest:
    """The pull request a ``workflow_run`` event is about (the event file GitHub wrote)."""
    run = event.get("workflow_run") if isinstance(event, dict) else None
    if not isinstance(run, dict):
        raise refuse("the event is not a workflow_run event", "run this in the trusted plan workflow (on: workflow_run)")
    if run.get("event") != "pull_request":
        raise refuse(
            f"the run that finished was triggered by {run.get('event')!r}, not by a pull request", "only pull request runs are planned"
        )
    head_repo = (run.get("head_repository") or {}).get("full_name")
    return find_pr(gh, repo, str(run.get("head_sha") or ""), str(head_repo or ""), run.get("pull_requests") or [], run.get("head_branch"))


# --------------------------------------------------------------------------- the trusted record


def record(repo: str, pr: int, head_sha: str, head_repo: str, plan: Any, base_ref: str = "") -> dict[str, Any]:
    """The provenance record the trusted plan job uploads: which pull request and head it
    planned, and the plan's reviewed digest."""
    check_repo(repo)
    check_sha(head_sha, "--head-sha")
    check_repo(head_repo, "--head-repo")
    if not isinstance(plan, dict) or not isinstance(plan.get("reviewed_digest"), str) or not HEX64.fullmatch(plan["reviewed_digest"]):
        raise refuse("the plan has no reviewed_digest (64 hex)", "give the output of `pkic plan --json` that succeeded")
    if pr <= 0:
        raise refuse(f"--pr {pr} is not a pull request number")
    if not base_ref or "\n" in base_ref:
        raise refuse("--base-ref: the branch the plan was made against is required")
    return {
        "format": 1,
        "repository": repo,
        "pr": pr,
        "head_sha": head_sha,
        "head_repo": head_repo,
        "base_ref": base_ref,
        "reviewed_digest": plan["reviewed_digest"],
        "needs_review": plan.get("needs_review"),
    }


# --------------------------------------------------------------------------- the comment


def comment_body(markdown: str, run_id: int, run_url: str, head_sha: str, errors: str = "") -> str:
    """The plan comment: the marker naming this run, the markdown plan, a note on where
    apply takes the digest from, and the plan's errors (if it failed)."""
    head, text, foot = _comment_parts(markdown, run_id, run_url, head_sha, errors)
    return head + text + foot


def _comment_parts(markdown: str, run_id: int, run_url: str, head_sha: str, errors: str = "") -> tuple[str, str, str]:
    first, _, rest = markdown.partition("\n")
    text = rest if first.startswith(MARKER) else markdown
    errors = errors.strip()
    if errors:
        errors = errors[:8000]
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", errors)), default=0))
        text = (
            text.rstrip("\n")
            + f"\n\n**pkic plan failed**: apply will refuse this head until a plan succeeds.\n\n{fence}text\n{errors}\n{fence}\n"
        )
    head = f"<!-- pkic-plan run-id={int(run_id)} -->\n"
    foot = (
        f"\n<sub>Planned by the trusted workflow on the default branch, [run {int(run_id)}]({run_url}), "
        f"at head `{head_sha}`. apply takes the reviewed digest from that run's artifact, never from this comment.</sub>\n"
    )
    room = COMMENT_LIMIT - len(head) - len(foot) - 200
    if len(text) > room:
        text = text[:room] + "\n\n… (cut at GitHub's comment limit: the full plan is in the run's job summary)\n"
    return head, text.rstrip("\n") + "\n", foot


def check_comments(comments: list[str], run_id: int, files: dict[str, bytes], head_sha: str) -> None:
    """Every plan comment of pkic's on the pull request shows exactly the trusted run's
    plan (plan.md and plan-errors.txt of its artifact): a comment edited, or a second
    one posted, by anything that can comment as the bot (another workflow's token) and
    naming the genuine run, cannot show the reviewer another plan than the one applied."""
    if "plan.md" not in files:
        raise refuse(f"run {run_id}: the artifact holds no plan.md: what the reviewer saw cannot be checked")
    try:
        markdown = files["plan.md"].decode("utf-8")
        errors = files.get("plan-errors.txt", b"").decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(f"run {run_id}: plan.md is not UTF-8") from None
    head, text, _ = _comment_parts(markdown, run_id, "", head_sha, errors)
    foot_start = f"\n<sub>Planned by the trusted workflow on the default branch, [run {int(run_id)}]("
    for body in comments:
        shown = body[len(head) :] if body.startswith(head) else None
        if (
            shown is None
            or not shown.startswith(text)
            or not shown[len(text) :].startswith(foot_start)
            or not shown.endswith(
                f"at head `{head_sha}`. apply takes the reviewed digest from that run's artifact, never from this comment.</sub>\n"
            )
            or "\n" in shown[len(text) + len(foot_start) : -1]
        ):
            raise refuse(
                f"a plan comment naming run {run_id} does not show that run's plan (edited, or posted by something else): "
                "the reviewer may have seen another plan than the one that would be applied",
                "delete the other comments, re-run the trusted plan (push to the pull request), review and merge again; or use the manual override",
            )


def _ours(comment: Any, bot: str) -> bool:
    """A comment of pkic's: made by the bot user and starting with the marker. Anyone
    else's comment is ignored, whatever it says."""
    if not isinstance(comment, dict):
        return False
    user = comment.get("user") or {}
    body = comment.get("body")
    return user.get("login") == bot and user.get("type") == "Bot" and isinstance(body, str) and body.startswith(MARKER)


@dataclass
class Posted:
    action: str  # "created" | "updated" | "skipped"
    comment_id: int | None = None
    reason: str = ""


def post_comment(gh: GitHub, repo: str, pr: int, body: str, head_sha: str | None = None, bot: str = BOT) -> Posted:
    """Create the plan comment, or update pkic's own one. With ``head_sha``, nothing is
    posted when the pull request has moved on (a newer run plans the newer head)."""
    base = _repo_path(repo)
    if head_sha is not None:
        current = get_pull(gh, repo, pr)
        if current.head_sha != head_sha:
            return Posted("skipped", reason=f"pull request #{pr} moved on to {current.head_sha[:12]}; this plan is of {head_sha[:12]}")
    existing = [c for c in gh.pages(f"{base}/issues/{int(pr)}/comments") if _ours(c, bot)]
    if existing:
        cid = existing[0].get("id")
        if not isinstance(cid, int):
            raise refuse("pkic's plan comment has no id in the API's answer")
        gh.json("PATCH", f"{base}/issues/comments/{cid}", body={"body": body})
        return Posted("updated", cid)
    made = gh.json("POST", f"{base}/issues/{int(pr)}/comments", body={"body": body})
    return Posted("created", made.get("id") if isinstance(made, dict) else None)
