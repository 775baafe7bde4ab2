"""GitHub provenance: which reviewed plan a merge carries, proven through the API.

The plan reviewers see is computed by the *trusted plan* workflow, defined on the
default branch and triggered by ``workflow_run`` after a pull request's own ``pki plan``
run. Its artifact (``pkic-trusted-plan``) records the pull request's number, head SHA
and head repository beside the plan's reviewed digest, and its comment on the pull
request names the run (``<!-- pkic-plan run-id=123 -->``). After the merge,
:func:`reviewed_digest` follows that comment to the run, checks through the API that the
run is the default branch's trusted plan workflow and concluded successfully, and reads
the digest from the run's own artifact, which must name the merged pull request and its
final head. Comment text is never the source of the digest; anything missing or
different is refused.

Only the standard library (urllib, json, zipfile). Responses, artifact archives and
their members are read with size caps; the token is sent only to the API host (never
along a redirect) and never appears in an error. Nothing here prints: the CLI does.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from typing import Any

from compiler import __version__
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import Diagnostic, PkicError

API_VERSION = "2022-11-28"
DEFAULT_API = "https://api.github.com"
DEFAULT_SERVER = "https://github.com"
BOT = "github-actions[bot]"  # the login GITHUB_TOKEN comments as
MARKER = "<!-- pkic-plan"
TRUSTED_WORKFLOW = ".github/workflows/plan-trusted.yml"
# workflow_run always runs the default branch's definition of the workflow: a run with
# this event, on this path, on the default branch, is the reviewed code's run
TRUSTED_EVENTS = ("workflow_run",)
ARTIFACT = "pkic-trusted-plan"
PROVENANCE = "provenance.json"
COMMENT_LIMIT = 65_536  # GitHub's limit on a comment body, in characters

MAX_JSON = 8 << 20  # one API response
MAX_ZIP = 4 << 20  # the artifact archive
MAX_MEMBER = 64 << 10  # provenance.json inside it
MAX_PAGES = 10  # of 100 items: comments on a pull request, open pull requests of a head
PER_PAGE = 100
TIMEOUT = 30

HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
# what makes GitHub start no workflow run for a pushed commit (its message holds one)
SKIP_DIRECTIVE = re.compile(r"\[(?:skip ci|ci skip|no ci|skip actions|actions skip)\]|skip-checks\s*:\s*true", re.IGNORECASE)
RUN_MARKER = re.compile(r"<!-- pkic-plan run-id=([0-9]{1,20}) -->")


def refuse(message: str, hint: str | None = None) -> PkicError:
    return PkicError([Diagnostic("pkic ci", None, None, "", message, hint)])


def check_repo(value: str, what: str = "--repo") -> str:
    if not isinstance(value, str) or not REPO.fullmatch(value) or value.split("/")[1] in (".", ".."):
        raise refuse(f"{what} {value!r} is not a repository", "write it as OWNER/NAME, e.g. example-org/pki")
    return value


def check_sha(value: str, what: str = "--sha") -> str:
    if not isinstance(value, str) or not HEX40.fullmatch(value):
        raise refuse(f"{what} {value!r} is not a commit SHA", "give the full 40-hex SHA")
    return value


def same_repo(a: str | None, b: str | None) -> bool:
    """GitHub's owner and repository names are case-insensitive."""
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


# --------------------------------------------------------------------------- the API


class GitHub:
    """A small, bounded REST client. The token goes in an *unredirected* header: a
    redirect (an artifact download lands on blob storage) never carries it."""

    def __init__(self, api_url: str, token: str, timeout: float = TIMEOUT):
        parts = urllib.parse.urlsplit(api_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise refuse(f"GITHUB_API_URL {api_url!r} is not an http(s) URL", f"leave it unset for {DEFAULT_API}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise refuse(
                f"GITHUB_API_URL {api_url!r} is plain http to another host: the token would travel in clear",
                "use https (plain http is accepted only on the loopback interface, for tests)",
            )
        if not token:
            raise refuse("no GitHub token: set[Any] GITHUB_TOKEN (or GH_TOKEN)", "in a workflow: env: GITHUB_TOKEN: ${{ github.token }}")
        self.base = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls) -> GitHub:
        token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or ""
        return cls(os.environ.get("GITHUB_API_URL") or DEFAULT_API, token)

    def __repr__(self) -> str:  # never the token
        return f"GitHub({self.base!r})"

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        limit: int = MAX_JSON,
        accept: str = "application/vnd.github+json",
    ) -> bytes:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", accept)
        req.add_header("X-GitHub-Api-Version", API_VERSION)
        req.add_header("User-Agent", f"pkic/{__version__}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_unredirected_header("Authorization", f"Bearer {self._token}")
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > limit:
                    raise refuse(f"{what}: the response is {int(length)} bytes, over the {limit}-byte limit")
                raw = resp.read(limit + 1)
                if length is not None and length.isdigit() and len(raw) < int(length):
                    raise refuse(f"{what}: the response was cut short ({len(raw)} of {int(length)} bytes)", "try again")
        except urllib.error.HTTPError as exc:
            raise refuse(f"{what}: HTTP {exc.code} {exc.reason}{_github_message(exc)}", _status_hint(exc.code)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise refuse(f"{what}: cannot reach {self.base} ({reason})", "check GITHUB_API_URL and the network") from None
        if len(raw) > limit:
            raise refuse(f"{what}: the response is over the {limit}-byte limit")
        return bytes(raw)

    def json(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        raw = self.request(method, path, params, body)
        try:
            return json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            raise refuse(f"{method} {path}: the response is not JSON") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.json("GET", path, params or None)

    def pages(self, path: str, key: str | None = None, **params: Any) -> list[Any]:
        """Every item of a paginated list, at most MAX_PAGES pages of PER_PAGE. Page
        URLs are built here, never taken from a response's Link header."""
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            body = self.get(path, **params, per_page=PER_PAGE, page=page)
            chunk = body.get(key) if key and isinstance(body, dict) else body
            if not isinstance(chunk, list):
                raise refuse(f"GET {path}: expected a list, got {type(chunk).__name__}")
            items.extend(chunk)
            if len(chunk) < PER_PAGE:
                return items
        raise refuse(f"GET {path}: more than {MAX_PAGES * PER_PAGE} items", "pkic reads at most this many; clean up the list")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _github_message(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(exc.read(4096)).get("message")
    except (ValueError, OSError, AttributeError, RecursionError):  # any body at all: the status says enough
        return ""
    return f" ({message[:200]})" if isinstance(message, str) and message else ""


def _status_hint(code: int) -> str | None:
    return {
        401: "the token is missing, expired or wrong (GITHUB_TOKEN / GH_TOKEN)",
        403: "the token lacks a permission this needs (contents, pull-requests, actions: read; pull-requests: write to comment), or a rate limit was hit",
        404: "no such object, or the token cannot see it: check the repository, number and the job's permissions",
    }.get(code)


def _repo_path(repo: str) -> str:
    owner, name = check_repo(repo).split("/")
    return f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"


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
