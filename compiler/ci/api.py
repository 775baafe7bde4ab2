"""The GitHub REST API, read with the standard library and with caps: the client, the
checks on repository names and SHAs, and the constants of the trusted-plan protocol
(see compiler/ci/__init__.py)."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from compiler import __version__
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
