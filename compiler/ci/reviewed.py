"""The reviewed digest of a merge: from the plan comment to the trusted run and its artifact."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from compiler.ci.api import (
    ARTIFACT,
    BOT,
    COMMENT_LIMIT,
    HEX64,
    MAX_MEMBER,
    MAX_ZIP,
    PER_PAGE,
    PROVENANCE,
    RUN_MARKER,
    TRUSTED_EVENTS,
    TRUSTED_WORKFLOW,
    GitHub,
    _repo_path,
    check_repo,
    check_sha,
    refuse,
    same_repo,
)
from compiler.ci.pulls import PullRequest, _ours, check_comments
from compiler.model.bounded import json_depth_ok

# --------------------------------------------------------------------------- the reviewed digest


@dataclass
class Reviewed:
    digest: str | None  # None: no pull request was merged as this commit (no reviewed plan)
    notes: list[str] = field(default_factory=list)


def same_workflow(path: Any, repo: str, workflow: str, default_branch: str) -> bool:
    """A run's ``path`` is the workflow file (``.github/workflows/x.yml``); GitHub's API
    description also shows ``owner/repo/.github/workflows/x.yml@ref``: both name the file
    and, in the long form, the default branch."""
    if not isinstance(path, str):
        return False
    if path == workflow:
        return True
    prefix = f"{repo}/{workflow}@"
    return path.lower().startswith(prefix.lower()) and path[len(prefix) :] in (default_branch, f"refs/heads/{default_branch}")


def merged_pr(gh: GitHub, repo: str, sha: str, default_branch: str) -> PullRequest | None:
    """The pull request merged into the default branch as commit ``sha`` (merge, squash or
    rebase), or None when the commit is not a pull request's merge."""
    pulls = [PullRequest.of(p) for p in gh.pages(f"{_repo_path(repo)}/commits/{sha}/pulls")]
    merged = [p for p in pulls if p.merged and p.merge_commit_sha == sha and p.base_ref == default_branch and same_repo(p.base_repo, repo)]
    if len(merged) > 1:
        raise refuse(f"{len(merged)} pull requests claim {sha[:12]} as their merge ({', '.join(f'#{p.number}' for p in merged)})")
    return merged[0] if merged else None


def plan_run_id(gh: GitHub, repo: str, pr: int, bot: str = BOT) -> int:
    """The run id named by pkic's plan comment on ``pr`` (a comment by the bot user only)."""
    ids = set()
    for c in gh.pages(f"{_repo_path(repo)}/issues/{int(pr)}/comments"):
        if _ours(c, bot):
            m = RUN_MARKER.match(c["body"])
            if m:
                ids.add(int(m.group(1)))
    if not ids:
        raise refuse(
            f"pull request #{pr} has no plan comment by {bot} naming a trusted plan run: there is no reviewed plan",
            "the trusted plan workflow did not run or did not finish for it; push to the pull request again, or apply with the manual override",
        )
    if len(ids) > 1:
        raise refuse(
            f"pull request #{pr} has several plan comments by {bot} naming different runs ({', '.join(map(str, sorted(ids)))})",
            "only one is pkic's: delete the others (pkic updates a single comment)",
        )
    return ids.pop()


def check_run(gh: GitHub, repo: str, run_id: int, workflow: str, default_branch: str) -> dict[str, Any]:
    run = gh.get(f"{_repo_path(repo)}/actions/runs/{int(run_id)}")
    if not isinstance(run, dict):
        raise refuse(f"run {run_id}: the API's answer is not a run")
    problems = []
    if not same_repo((run.get("repository") or {}).get("full_name"), repo):
        problems.append(f"it belongs to {(run.get('repository') or {}).get('full_name')!r}, not {repo}")
    if not same_workflow(run.get("path"), repo, workflow, default_branch):
        problems.append(f"its workflow is {run.get('path')!r}, not the trusted {workflow}")
    if run.get("event") not in TRUSTED_EVENTS:
        problems.append(
            f"it was triggered by {run.get('event')!r}, not {' or '.join(TRUSTED_EVENTS)} (a pull request's own run is never trusted)"
        )
    if run.get("head_branch") != default_branch:
        problems.append(f"it ran on {run.get('head_branch')!r}, not the default branch {default_branch!r}")
    if run.get("status") != "completed" or run.get("conclusion") != "success":
        problems.append(f"it has not concluded successfully (status {run.get('status')!r}, conclusion {run.get('conclusion')!r})")
    if problems:
        raise refuse(
            f"run {run_id} is not a successful run of the default branch's trusted plan workflow: " + "; ".join(problems),
            "apply trusts only the plan computed by the workflow on the default branch",
        )
    return run


def read_provenance(gh: GitHub, repo: str, run_id: int) -> dict[str, Any]:
    """provenance.json from the run's ``pkic-trusted-plan`` artifact, read with caps."""
    base = _repo_path(repo)
    listing = gh.get(f"{base}/actions/runs/{int(run_id)}/artifacts", name=ARTIFACT, per_page=PER_PAGE)
    artifacts = [a for a in (listing or {}).get("artifacts", []) if isinstance(a, dict) and a.get("name") == ARTIFACT]
    if len(artifacts) != 1:
        raise refuse(
            f"run {run_id} has {len(artifacts)} artifacts named {ARTIFACT}; exactly one must",
            "re-run the trusted plan by pushing to the pull request",
        )
    art = artifacts[0]
    if art.get("expired"):
        raise refuse(
            f"run {run_id}: the {ARTIFACT} artifact has expired",
            "push to the pull request again for a fresh plan, or apply with the manual override",
        )
    if (art.get("workflow_run") or {}).get("id") not in (None, run_id):
        raise refuse(f"the {ARTIFACT} artifact listed for run {run_id} belongs to run {art['workflow_run'].get('id')}")
    if not isinstance(art.get("id"), int):
        raise refuse(f"run {run_id}: the {ARTIFACT} artifact has no id")
    size = art.get("size_in_bytes")
    if isinstance(size, int) and size > MAX_ZIP:
        raise refuse(f"run {run_id}: the {ARTIFACT} artifact is {size} bytes, over the {MAX_ZIP}-byte limit")
    raw = gh.request("GET", f"{base}/actions/artifacts/{art['id']}/zip", limit=MAX_ZIP, accept="application/vnd.github+json")
    digest = art.get("digest")
    if isinstance(digest, str) and digest.startswith("sha256:") and digest != "sha256:" + hashlib.sha256(raw).hexdigest():
        raise refuse(f"run {run_id}: the downloaded {ARTIFACT} archive does not match the artifact's digest")
    return _provenance_from_zip(raw, run_id)


def _provenance_from_zip(raw: bytes, run_id: int) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            files: dict[str, bytes] = {}
            for name in ("plan.md", "plan-errors.txt"):  # what the comment must show
                found = [i for i in archive.infolist() if i.filename == name]
                if len(found) == 1 and found[0].file_size <= COMMENT_LIMIT * 4:
                    with archive.open(found[0]) as member:
                        files[name] = member.read(COMMENT_LIMIT * 4 + 1)
            infos = [i for i in archive.infolist() if i.filename == PROVENANCE]
            if len(infos) != 1:
                raise refuse(f"run {run_id}: the {ARTIFACT} artifact has no single {PROVENANCE}: the trusted plan did not succeed")
            if infos[0].file_size > MAX_MEMBER:
                raise refuse(f"run {run_id}: {PROVENANCE} is over the {MAX_MEMBER}-byte limit")
            with archive.open(infos[0]) as member:
                data = member.read(MAX_MEMBER + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError):
        raise refuse(f"run {run_id}: the {ARTIFACT} artifact is not a readable zip archive") from None
    if len(data) > MAX_MEMBER:
        raise refuse(f"run {run_id}: {PROVENANCE} is over the {MAX_MEMBER}-byte limit")
    try:
        if not json_depth_ok(data):
            raise ValueError("nested too deeply")
        record = json.loads(data)
    except (ValueError, RecursionError):
        raise refuse(f"run {run_id}: {PROVENANCE} is not JSON") from None
    if not isinstance(record, dict) or record.get("format") != 1:
        raise refuse(f"run {run_id}: {PROVENANCE} is not a format-1 pkic provenance record")
    record["_files"] = files
    return record


def override(gh: GitHub, repo: str, actor: str, digest: str) -> str:
    """The manual override: only a repository admin (who may bypass review anyway) may
    name a digest to apply; a writer (every same-repository pull request author) may not."""
    check_repo(repo)
    if not HEX64.fullmatch(digest or ""):
        raise refuse("the override must be a Pki-Plan digest (64 lowercase hex)")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?", actor or ""):
        raise refuse(f"{actor[:40]!r} is not a GitHub login")
    answer = gh.get(f"{_repo_path(repo)}/collaborators/{actor}/permission")
    permission = answer.get("permission") if isinstance(answer, dict) else None
    if permission != "admin":
        raise refuse(
            f"{actor} may not override the review: their permission on {repo} is {permission!r}, not admin",
            "ask a repository admin to run the override, or get the change reviewed through a pull request",
        )
    return digest


def reviewed_digest(gh: GitHub, repo: str, sha: str, workflow: str = TRUSTED_WORKFLOW, bot: str = BOT) -> Reviewed:
    """The reviewed digest of the pull request merged as ``sha`` into the default branch.

    ``Reviewed(None)`` when no pull request was merged as ``sha`` (a direct push, an
    apply's own commit): there is no reviewed plan, and apply does only time-driven work.
    Every other gap (no trusted plan, another workflow, another head, a failed run) is
    refused."""
    check_repo(repo)
    check_sha(sha)
    meta = gh.get(_repo_path(repo))
    default_branch = meta.get("default_branch") if isinstance(meta, dict) else None
    if not isinstance(default_branch, str) or not default_branch:
        raise refuse(f"GET {_repo_path(repo)}: no default_branch in the answer")
    pr = merged_pr(gh, repo, sha, default_branch)
    if pr is None:
        return Reviewed(
            None,
            [
                f"{sha[:12]} is not the merge of a pull request into {default_branch}: no reviewed plan; only time-driven work may be applied"
            ],
        )
    notes = [f"{sha[:12]} merged pull request #{pr.number} (final head {pr.head_sha[:12]})"]
    run_id = plan_run_id(gh, repo, pr.number, bot)
    run = check_run(gh, repo, run_id, workflow, default_branch)
    notes.append(
        f"its plan comment names run {run_id}: {run.get('path')}, {run.get('event')}, on {default_branch}, {run.get('conclusion')}"
    )
    rec = read_provenance(gh, repo, run_id)
    problems = []
    if not same_repo(rec.get("repository"), repo):
        problems.append(f"it is a plan of {rec.get('repository')!r}, not {repo}")
    if rec.get("pr") != pr.number:
        problems.append(f"it is a plan of pull request #{rec.get('pr')}, not #{pr.number}")
    if rec.get("head_sha") != pr.head_sha:
        problems.append(
            f"it planned head {str(rec.get('head_sha'))[:12]}, but the pull request was merged at head {pr.head_sha[:12]} (pushed after the plan?)"
        )
    if pr.head_repo is not None and not same_repo(rec.get("head_repo"), pr.head_repo):
        problems.append(f"it planned a head from {rec.get('head_repo')!r}, not {pr.head_repo}")
    digest = rec.get("reviewed_digest")
    if not isinstance(digest, str) or not HEX64.fullmatch(digest):
        problems.append("it holds no reviewed digest (64 hex)")
    if problems:
        raise refuse(
            f"the trusted plan of run {run_id} is not the plan of what was merged: " + "; ".join(problems),
            "push to the pull request so the trusted plan runs on its final head, review, merge again; or apply with the manual override",
        )
    if rec.get("base_ref") != default_branch:
        raise refuse(
            f"the trusted plan of run {run_id} was made against {rec.get('base_ref')!r}, not the default branch {default_branch!r} "
            "(the pull request was retargeted after its plan?)",
            "push to the pull request so the trusted plan runs against the default branch",
        )
    comments = [c["body"] for c in gh.pages(f"{_repo_path(repo)}/issues/{int(pr.number)}/comments") if _ours(c, bot)]
    check_comments(comments, run_id, rec.get("_files") or {}, pr.head_sha)
    notes.append(f"its artifact records pull request #{pr.number} at head {pr.head_sha[:12]}: reviewed digest {digest}")
    return Reviewed(digest, notes)
