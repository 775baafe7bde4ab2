"""A fake GitHub REST API on 127.0.0.1, for `pkic ci`: a real HTTP server in a thread,
answering the endpoints pkic calls with JSON shaped like GitHub's (the fields pkic
reads, and a few it does not) from fixtures a test sets up and changes.

Like GitHub, it wants ``Authorization: Bearer <token>`` on every API path, pages lists
with ``per_page``/``page``, filters open pull requests by ``head=owner:branch``, and
answers an artifact download with a 302 to a blob URL (where no token may arrive). Every
request is logged with its headers, so a test can check where the token went.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from forkrun import FORK_SAFE

TOKEN = "ghs_FAKEtoken0123456789abcdefSECRET"
BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
TRUSTED = ".github/workflows/plan-trusted.yml"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer whose request threads carry forkrun's fork-safe name."""

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True, name=f"{FORK_SAFE}fake GitHub request"
        ).start()


def sha(n: int | str) -> str:
    """A recognisable 40-hex commit id."""
    return hashlib.sha1(str(n).encode()).hexdigest()


def user(login: str) -> dict:
    return {"login": login, "id": abs(hash(login)) % 10**8, "type": "User"}


def zip_of(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


class FakeGitHub:
    def __init__(self, repo: str = "acme/pki", default_branch: str = "main"):
        self.repo = repo
        self.default_branch = default_branch
        self.pulls: dict[int, dict] = {}
        self.commit_pulls: dict[str, list[int]] = {}
        self.comments: dict[int, list[dict]] = {}
        self.runs: dict[int, dict] = {}
        self.artifacts: dict[int, list[dict]] = {}
        self.blobs: dict[int, bytes] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.override: dict[str, tuple[int, bytes]] = {}  # path -> (status, raw body)
        self._ids = 9000
        self._server = _Server(("127.0.0.1", 0), self._handler())
        # named so that tests/forkrun.py may fork pkic beside it (it holds no lock the
        # child needs; the child only talks to it over the socket)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name=f"{FORK_SAFE}fake GitHub"
        )

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        return {"GITHUB_API_URL": self.url, "GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": self.repo,
                "GITHUB_SERVER_URL": "https://github.example", "NO_PROXY": "*", "no_proxy": "*"}

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    # ------------------------------------------------------------------ fixtures
    def pull(self, number: int, head_sha: str, *, head_repo: str | None = None, head_ref: str = "feature", state: str = "open",
             merged_as: str | None = None, base_ref: str | None = None, base_repo: str | None = None) -> dict:
        head_repo = head_repo or self.repo
        pr = {
            "url": f"{self.url}/repos/{self.repo}/pulls/{number}", "id": 100000 + number, "number": number,
            "state": "closed" if merged_as else state, "title": f"pull request {number}", "user": user("alice"),
            "merged_at": "2026-11-28T10:00:00Z" if merged_as else None, "merge_commit_sha": merged_as or sha(f"test-merge-{number}"),
            "head": {"label": f"{head_repo.split('/')[0]}:{head_ref}", "ref": head_ref, "sha": head_sha,
                     "repo": {"full_name": head_repo, "fork": head_repo != self.repo} if head_repo != "-" else None},
            "base": {"label": f"acme:{base_ref or self.default_branch}", "ref": base_ref or self.default_branch, "sha": sha(f"base-{number}"),
                     "repo": {"full_name": base_repo or self.repo, "fork": False}},
        }
        self.pulls[number] = pr
        if merged_as:
            self.commit_pulls.setdefault(merged_as, []).append(number)
        return pr

    def comment(self, pr: int, body: str, by: dict = BOT) -> dict:
        c = {"id": self.next_id(), "user": dict(by), "body": body, "created_at": "2026-11-27T12:00:00Z", "updated_at": "2026-11-27T12:00:00Z"}
        self.comments.setdefault(pr, []).append(c)
        return c

    def run(self, run_id: int, **fields) -> dict:
        """A workflow run: by default a successful run of the default branch's trusted plan."""
        run = {"id": run_id, "name": "pki trusted plan", "path": TRUSTED, "event": "workflow_run", "head_branch": self.default_branch,
               "head_sha": sha(f"main-{run_id}"), "status": "completed", "conclusion": "success", "run_attempt": 1,
               "workflow_id": 77, "repository": {"full_name": self.repo}, "head_repository": {"full_name": self.repo}}
        run.update(fields)
        self.runs[run_id] = run
        return run

    def artifact(self, run_id: int, files: dict[str, bytes | str] | None = None, *, name: str = "pkic-trusted-plan",
                 raw: bytes | None = None, **fields) -> dict:
        files = dict(files or {})
        if "provenance.json" in files and "plan.md" not in files:  # the trusted plan uploads both
            files["plan.md"] = "<!-- pkic-plan -->\n### pkic plan: 1 to issue\n\n`Pki-Plan: " + "e" * 64 + "`\n"
        data = raw if raw is not None else zip_of(files)
        aid = self.next_id()
        art = {"id": aid, "name": name, "size_in_bytes": len(data), "expired": False, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
               "archive_download_url": f"{self.url}/repos/{self.repo}/actions/artifacts/{aid}/zip",
               "workflow_run": {"id": run_id, "head_branch": self.default_branch}}
        art.update(fields)
        self.artifacts.setdefault(run_id, []).append(art)
        self.blobs[aid] = data
        return art

    def api_requests(self) -> list[tuple[str, str, dict]]:
        return [r for r in self.log if r[1].startswith("/repos")]

    # ------------------------------------------------------------------ the server
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj) -> None:
                self._send(status, json.dumps(obj).encode())

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
                fake.log.append((method, self.path, {k: v for k, v in self.headers.items()}))
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length)) if length else None
                if path in fake.override:
                    status, raw = fake.override[path]
                    return self._send(status, raw)
                if path.startswith("/blob/"):
                    if self.headers.get("Authorization"):
                        return self._json(400, {"message": "a token was sent to blob storage"})
                    blob = fake.blobs.get(int(path.rsplit("/", 1)[1]))
                    return self._send(200, blob, "application/zip") if blob is not None else self._json(404, {"message": "Not Found"})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._json(401, {"message": "Bad credentials"})
                prefix = f"/repos/{fake.repo}"
                if not path.startswith(prefix):
                    return self._json(404, {"message": "Not Found"})
                rest = path[len(prefix):]
                status, body = route(method, rest, query, payload)
                if status == 302:
                    return self._send(302, b"", headers={"Location": body})
                return self._json(status, body)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

        def page(items: list, query: dict) -> list:
            per, n = int(query.get("per_page", 30)), int(query.get("page", 1))
            return items[(n - 1) * per: n * per]

        def route(method: str, rest: str, query: dict, payload):
            if method == "GET" and rest == "":
                return 200, {"full_name": fake.repo, "default_branch": fake.default_branch, "private": True}
            if m := re.fullmatch(r"/pulls/(\d+)", rest):
                pr = fake.pulls.get(int(m.group(1)))
                return (200, pr) if pr else (404, {"message": "Not Found"})
            if method == "GET" and rest == "/pulls":
                items = [p for p in fake.pulls.values() if query.get("state", "open") in ("all", p["state"])]
                if "head" in query:
                    items = [p for p in items if p["head"]["label"] == query["head"]]
                return 200, page(sorted(items, key=lambda p: -p["number"]), query)
            if m := re.fullmatch(r"/commits/([0-9a-f]{40})/pulls", rest):
                return 200, page([fake.pulls[n] for n in fake.commit_pulls.get(m.group(1), [])], query)
            if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
                number = int(m.group(1))
                if method == "POST":
                    return 201, fake.comment(number, payload["body"])
                return 200, page(fake.comments.get(number, []), query)
            if (m := re.fullmatch(r"/issues/comments/(\d+)", rest)) and method == "PATCH":
                for cs in fake.comments.values():
                    for c in cs:
                        if c["id"] == int(m.group(1)):
                            c["body"] = payload["body"]
                            return 200, c
                return 404, {"message": "Not Found"}
            if m := re.fullmatch(r"/actions/runs/(\d+)", rest):
                run = fake.runs.get(int(m.group(1)))
                return (200, run) if run else (404, {"message": "Not Found"})
            if m := re.fullmatch(r"/actions/runs/(\d+)/artifacts", rest):
                arts = [a for a in fake.artifacts.get(int(m.group(1)), []) if "name" not in query or a["name"] == query["name"]]
                return 200, {"total_count": len(arts), "artifacts": page(arts, query)}
            if m := re.fullmatch(r"/actions/artifacts/(\d+)/zip", rest):
                aid = int(m.group(1))
                return (302, f"{fake.url}/blob/{aid}") if aid in fake.blobs else (404, {"message": "Not Found"})
            return 404, {"message": "Not Found"}

        return Handler
