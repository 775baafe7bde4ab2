"""Git as the audit log: guard rails before an apply, one commit after it, and history.

Every commit pkic makes carries machine-readable trailers::

    Pki-Issued: web 3f1c...a1           (name, certificate SHA-256, first 16 hex)
    Pki-Reissued: / Pki-Renewed:        (the same)
    Pki-Revoked: legacy 77c0... cessation_of_operation
    Pki-Moved: web -> website
    Pki-CRL: services-ca 7              (authority, CRL number)
    Pki-Plan: <digest of the spec-driven plan>
    Pki-State: <lineage> <serial>
    Pki-Seal: <seal serial> <SHA-256 of out.seal>
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from compiler.model.errors import fail, printable
from compiler.plan import Action, Plan
from compiler.state import JournalOp, Seal, State
from compiler.state.ops import ACTION_OF_TRAILER, issued_trailer, moved_trailer, revoked_trailer

if TYPE_CHECKING:  # the apply package is imported only where an apply runs
    from compiler.apply import ApplyResult

TRAILER = re.compile(r"^Pki-(Issued|Reissued|Renewed|Revoked|Moved|CRL|Plan|State|Seal): (.*)$")


def git(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise fail("git", "git is not installed", "install git") from None
    except OSError as exc:  # E2BIG: an argument list too long
        raise fail("git", f"cannot run git {' '.join(args[:2])}: {exc.strerror}", "report this as a bug in pkic") from None
    if check and proc.returncode != 0:
        raise fail("git", f"git {' '.join(args[:2])} failed: {proc.stderr.strip()[:400]}")
    return proc


def is_repo(repo: Path) -> bool:
    proc = git(repo, "rev-parse", "--is-inside-work-tree", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def dirty_inputs(repo: Path, csr_paths: list[str]) -> list[str]:
    """Uncommitted changes (or untracked files) in pki.yaml, policies/ and the CSRs."""
    paths = ["pki.yaml", "policies", *csr_paths]
    proc = git(repo, "--no-optional-locks", "status", "--porcelain=v1", "--untracked-files=all", "--", *paths)
    return sorted(line[3:] for line in proc.stdout.splitlines() if line.strip())


# attributes that make git commit (or check out) other bytes than the ones on disk
CONTENT_ATTRIBUTES = ("text", "eol", "crlf", "filter", "ident", "working-tree-encoding")
SAMPLE_OUT_PATHS = (
    "out.seal",
    "out/state.json",
    "out/certs/x.pem",
    "out/certs/x.chain.pem",
    "out/certs/x.der",
    "out/keys/x.sops.yaml",
    "out/keys/ocsp-responders/x.sops.yaml",
    "out/crl/x.crl",
    "out/crl/x.crl.pem",
    "out/trust/bundle.pem",
    "out/trust/crls.pem",
    "out/ocsp/x.der",
)


def preflight_commit(repo: Path, csr_paths: list[str], author: str | None) -> None:
    """Everything `apply --commit` needs from git, checked before anything is signed:
    a failure after signing would leave certificates signed and recorded nowhere."""
    require_clean_inputs(repo, csr_paths)
    who = ["GIT_COMMITTER_IDENT"] + ([] if author else ["GIT_AUTHOR_IDENT"])
    for var in who:
        if git(repo, "var", var, check=False).returncode != 0:
            raise fail(
                "git",
                "git does not know who commits (user.name and user.email are not set)",
                "set them (`git config user.name ...`, `git config user.email ...`), or pass --author 'Name <email>' with a committer set",
            )
    if author is not None and not re.fullmatch(r"[^<>\n]+ <[^<>\s]+>", author):
        raise fail("--author", f"{author[:80]!r} is not 'Name <email>'", "pass --author 'Name <email>'")
    check_attributes(repo, list(SAMPLE_OUT_PATHS))


def check_attributes(repo: Path, paths: list[str]) -> None:
    """No git attribute may rewrite pkic's files on checkout (eol, filter, encoding...):
    the next apply would find out/ other than sealed, and refuse every run after. Checked
    for every path the apply may write and every file out/ holds, before signing."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "check-attr", "--stdin", *CONTENT_ATTRIBUTES],
        input="".join(p + "\n" for p in sorted(set(paths))),
        capture_output=True,
        text=True,
    )
    changing = sorted({line for line in proc.stdout.splitlines() if not line.endswith(": unspecified") and not line.endswith(": unset")})
    if changing:
        raise fail(
            ".gitattributes",
            f"changes how git checks out pkic's output ({changing[0]}): the next apply would find out/ other than sealed",
            "remove the attributes that apply to out/ and out.seal (text, eol, filter, ident, working-tree-encoding)",
        )


def require_clean_inputs(repo: Path, csr_paths: list[str]) -> None:
    if not is_repo(repo):
        raise fail(str(repo), "not a git repository: --commit needs one", "run git init, or apply without --commit")
    dirty = dirty_inputs(repo, csr_paths)
    if dirty:
        raise fail(
            dirty[0],
            f"uncommitted changes in the spec: {', '.join(dirty)}",
            "commit pki.yaml, policies/ and CSRs first: out/ is only ever committed from a spec that is in history",
        )
    staged = git(repo, "--no-optional-locks", "diff", "--cached", "--name-only").stdout.split()
    if staged:
        raise fail(
            staged[0],
            f"staged changes in the index: {', '.join(staged[:5])}",
            "commit or unstage them first: pkic's commit holds only what the apply wrote",
        )


@dataclass
class CommitResult:
    sha: str | None
    files: int


def commit_message(
    plan: Plan, state: State, result: ApplyResult, reviewed: str, recovered: list[JournalOp] | None = None, seal: Seal | None = None
) -> str:
    n = plan.counts()
    parts = [f"{n[a]} {a}" for a in Action if n[a]]
    if plan.moves:
        parts.append(f"{len(plan.moves)} move")
    if result.crls:
        parts.append(f"{len(result.crls)} CRL")
    if result.ocsp:
        parts.append(f"{result.ocsp} OCSP")
    if result.ocsp_removed or result.responders_retired:
        parts.append("OCSP off")
    subject = "pkic apply: " + (", ".join(parts) or "refresh")
    body = []
    for c in plan.changes:  # one line each: a subject in pki.yaml never writes a line (a Pki-* trailer) of its own
        if c.action == Action.REVOKE:
            body.append(f"- revoke {c.name}: " + "; ".join(printable(r.message) for r in c.reasons))
        else:
            body.append(f"- {c.action} {c.name}: " + "; ".join(printable(r.message) for r in c.reasons))
    if plan.crls:
        body.append("- re-sign CRLs: " + ", ".join(p.name for p in plan.crls))
    if plan.ocsp:
        body.append(f"- sign {len(plan.ocsp)} OCSP response(s)")
    if plan.ocsp_off:
        from compiler.plan.summary import ocsp_off_summary

        body.append(f"- {ocsp_off_summary(plan)}" + (f" ({', '.join(result.responders_retired)})" if result.responders_retired else ""))
    trailers = []
    for c in plan.changes:
        rec = state.active(c.name) if c.action != Action.REVOKE else None
        if rec is not None:
            trailers.append(issued_trailer(c.name, rec, c.action))
        for r in c.revokes:
            trailers.append(revoked_trailer(r["name"], r["serial"], r["reason"]))
    for old, new in plan.moves:
        trailers.append(moved_trailer(old, new))
    for op in recovered or []:  # the steps of an interrupted apply, finished now
        if (trailer := op.trailer()) is not None:
            trailers.append(trailer)
    if recovered:
        body.append(f"- finished an interrupted apply ({len(recovered)} step(s))")
    for a in result.crls:
        trailers.append(f"Pki-CRL: {a} {state.crls[a]['number']}")
    trailers.append(f"Pki-Plan: {reviewed}")
    trailers.append(f"Pki-State: {state.lineage} {state.serial}")
    if seal is not None:
        trailers.append(f"Pki-Seal: {seal.serial} {seal.digest}")
    return subject + "\n\n" + "\n".join(body) + "\n\n" + "\n".join(trailers) + "\n"


def stage_exact(repo: Path, paths: list[str]) -> None:
    """Stage exactly the bytes on disk at ``paths`` (a removed one as removed): blobs made
    with `git hash-object --no-filters`, entries set with `git update-index`. Unlike `git
    add`, no .gitattributes (eol, filter, working-tree-encoding, LFS) and no ignore rule
    can change or refuse what is committed: git stores what apply sealed."""
    present = [p for p in paths if os.path.lexists(os.path.join(repo, p))]
    here = set(present)
    gone = [p for p in paths if p not in here]
    if present:
        proc = subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-w", "--no-filters", "--stdin-paths"],
            input="".join(p + "\n" for p in present),
            capture_output=True,
            text=True,
        )
        shas = proc.stdout.split()
        if proc.returncode != 0 or len(shas) != len(present):
            raise fail("git", f"git hash-object failed: {proc.stderr.strip()[:400]}", "out/ is written and sealed: commit it yourself")
        info = "".join(
            f"{'100755' if os.stat(os.path.join(repo, p)).st_mode & 0o100 else '100644'} {sha}\t{p}\n"
            for p, sha in zip(present, shas, strict=True)
        )
        proc = subprocess.run(["git", "-C", str(repo), "update-index", "--add", "--index-info"], input=info, capture_output=True, text=True)
        if proc.returncode != 0:
            raise fail("git", f"git update-index failed: {proc.stderr.strip()[:400]}", "out/ is written and sealed: commit it yourself")
    for i in range(0, len(gone), 500):
        git(repo, "update-index", "--force-remove", "--", *gone[i : i + 500])


def commit_out(repo: Path, paths: list[str], message: str, author: str | None, seal: Seal | None = None) -> CommitResult:
    """Commit exactly ``paths``: the files this apply wrote, removed or renamed (never a
    stray file that happens to sit in out/). A path may be gone (an OCSP response
    renamed and then removed as expired in the same apply): its removal is staged."""
    existing = sorted(set(paths))
    if not existing:
        return CommitResult(None, 0)
    stage_exact(repo, existing)
    staged = git(repo, "diff", "--cached", "--name-only").stdout.split()  # the index was clean: only what we staged
    if not staged:
        return CommitResult(None, 0)
    # the message on stdin: with one trailer per certificate, a cold apply of 10,000
    # leaves writes ~700 KB, more than one command-line argument may hold (E2BIG)
    args = ["git", "-C", str(repo), "commit", "-q", "--no-verify", "-F", "-"]
    if author:
        args += ["--author", author]
    try:
        proc = subprocess.run(args, input=message, capture_output=True, text=True)
    except OSError as exc:
        raise fail(
            "git",
            f"cannot run git commit: {exc.strerror}",
            "out/ is written and sealed: commit it yourself (`git add -A out out.seal && git commit`)",
        ) from None
    if proc.returncode != 0:
        raise fail(
            "git",
            f"git commit failed: {proc.stderr.strip()[:400]}",
            "out/ is written and sealed: commit it yourself (`git add -A out out.seal && git commit`)",
        )
    sha = git(repo, "rev-parse", "HEAD").stdout.strip()
    if seal is not None:
        committed = git(repo, "rev-parse", "--verify", "-q", "HEAD:out", check=False).stdout.strip()
        if committed and committed != seal.out_tree:
            raise fail(
                "HEAD:out",
                f"commit {sha[:12]} holds another out/ than the one sealed (a stray file in out/, or git attributes?)",
                "make HEAD:out the sealed tree (`git add -A out && git commit --amend`), then `pkic verify --seal`",
            )
    return CommitResult(sha, len(staged))


class Event(TypedDict):
    """One version of a certificate in pkic's commit trailers."""

    commit: str
    date: str
    author: str
    action: str  # issue | reissue | renew | revoke | move
    serial: str | None
    sha256: str | None
    reason: str | None


def history(repo: Path, name: str) -> list[Event]:
    """Every version of a certificate, newest first, from pkic's commit trailers."""
    if not is_repo(repo):
        raise fail(str(repo), "not a git repository", "history reads the git log of out/")
    proc = git(repo, "log", "--format=%H%x1f%aI%x1f%an <%ae>%x1f%B%x1e", "--", "out/state.json", check=False)
    if proc.returncode != 0:
        return []
    events: list[Event] = []
    for chunk in proc.stdout.split("\x1e"):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, when, author, body = chunk.split("\x1f", 3)
        for line in body.splitlines():
            m = TRAILER.match(line.strip())
            if not m:
                continue
            kind, value = m.groups()
            fields = value.split()
            if kind in ("Issued", "Reissued", "Renewed") and fields and fields[0] == name:
                events.append(
                    {
                        "commit": sha,
                        "date": when,
                        "author": author,
                        "action": Action(ACTION_OF_TRAILER[kind]),
                        "serial": fields[1] if len(fields) > 1 else None,
                        "sha256": fields[2] if len(fields) > 2 else None,
                        "reason": None,
                    }
                )
            elif kind == "Revoked" and fields and fields[0] == name:
                events.append(
                    {
                        "commit": sha,
                        "date": when,
                        "author": author,
                        "action": Action.REVOKE,
                        "serial": fields[1] if len(fields) > 1 else None,
                        "sha256": None,
                        "reason": fields[2] if len(fields) > 2 else None,
                    }
                )
            elif kind == "Moved" and name in (fields[0], fields[-1]):
                events.append(
                    {"commit": sha, "date": when, "author": author, "action": "move", "serial": None, "sha256": None, "reason": value}
                )
    return events


def recent_commits(repo: Path, limit: int = 20) -> list[dict[str, str]]:
    """The last commits that changed the state: commit, date, author, subject."""
    if not is_repo(repo):
        return []
    proc = git(repo, "log", f"-{limit}", "--format=%H%x1f%aI%x1f%an%x1f%s%x1e", "--", "out/state.json", check=False)
    out = []
    for chunk in proc.stdout.split("\x1e"):
        chunk = chunk.strip("\n")
        if chunk:
            sha, when, author, subject = chunk.split("\x1f", 3)
            out.append({"commit": sha, "date": when, "author": author, "subject": subject})
    return out


# --------------------------------------------------------------------------- review context

PKI_INPUTS = ("pki.yaml", ".sops.yaml", "out.seal")


def is_risky(path: str) -> bool:
    """A path that runs with, or decides, what CI does with the CA identity."""
    return path.startswith((".github/", ".ci/")) or path.rpartition("/")[2] in (".gitattributes", ".gitmodules", "CODEOWNERS")


def is_pki_input(path: str) -> bool:
    """A path pkic plans: the spec, .sops.yaml, a policy, a CSR, its own output. Anything
    else (a .gitattributes anywhere, a README under policies/) is code to review."""
    base = path.rpartition("/")[2]
    if base.startswith(".git"):
        return False
    if path in PKI_INPUTS or path.startswith("out/"):
        return True
    if path.startswith("policies/"):
        return path.count("/") == 1 and path.endswith((".yaml", ".yml"))
    return path.startswith("csrs/") and path.endswith((".pem", ".csr"))


class ReviewContext(TypedDict):
    base: str  # the merge base
    changed: list[str]
    outside: list[str]  # not planned by pkic: review as code (the risky ones first)
    policy_diffs: dict[str, str]
    sops_rules_diff: str | None


def review_context(repo: Path, base: str) -> ReviewContext:
    """What a pull request changes besides what pkic plans, for its reviewer: paths
    outside the PKI inputs (a workflow runs with the CA identity after merge: "not
    planned: review as code"), and the diffs of the policies and of .sops.yaml's rules
    as data, against the merge base with ``base``."""
    import difflib
    import json

    from compiler.spec.sops_config import RuleError, checked_rules
    from compiler.spec.sops_rules import normalise

    mb = git(repo, "merge-base", base, "HEAD", check=False).stdout.strip()
    if not mb:
        raise fail(
            "--base", f"no merge base between {base[:80]} and HEAD", "fetch the full history of both (actions/checkout: fetch-depth: 0)"
        )
    out = git(repo, "diff", "--name-only", "-z", "--no-renames", mb, "--").stdout.split("\0")
    out += git(repo, "ls-files", "-z", "--others", "--exclude-standard").stdout.split("\0")
    changed = sorted({p for p in out if p})
    outside = [p for p in changed if not is_pki_input(p)]
    outside.sort(key=lambda p: not is_risky(p))  # workflows and the like first: a cut list never hides them
    policy_diffs: dict[str, str] = {}
    for p in changed:
        if p.startswith("policies/") and is_pki_input(p):
            # --text: a .gitattributes `-diff` must not turn a policy's diff into "Binary files differ"
            text = git(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--text", mb, "--", p, check=False).stdout
            lines = text.splitlines()
            lines = lines[next((i for i, ln in enumerate(lines) if ln.startswith("@@")), len(lines)) :]  # no header
            policy_diffs[p] = "\n".join(lines[:200]) + ("\n… (diff cut at 200 lines)" if len(lines) > 200 else "")

    def rules_at(data: bytes | None) -> list[str]:
        if data is None:
            return ["(no .sops.yaml)"]
        try:
            rules = checked_rules(data)
        except Exception as exc:  # PkicError: a broken file at the base
            return [f"(unreadable: {exc})"]
        shown = []
        for i, r in enumerate(rules):
            norm: Mapping[str, object]
            try:
                norm = normalise(r)
            except RuleError as exc:
                norm = {"error": str(exc)}
            shown.append(f"rule {i + 1}: path_regex {r.get('path_regex')!s}")
            shown += ["  " + ln for ln in json.dumps(norm, indent=1, sort_keys=True).splitlines()]
        return shown

    old = git(repo, "cat-file", "blob", f"{mb}:.sops.yaml", check=False)
    old_rules = rules_at(old.stdout.encode() if old.returncode == 0 else None)
    from compiler import layout

    try:
        now_data = layout.read_file(repo, ".sops.yaml", 1024 * 1024)
    except Exception:
        now_data = None
    new_rules = rules_at(now_data)
    sops_diff = None
    if old_rules != new_rules:
        sops_diff = "\n".join(difflib.unified_diff(old_rules, new_rules, "base", "this change", lineterm="", n=2))
    return {"base": mb, "changed": changed, "outside": outside, "policy_diffs": policy_diffs, "sops_rules_diff": sops_diff}
