"""No secret: which seal key plan and verify check against, and what a reviewer should
know when ``out/`` is not the sealed one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compiler import layout
from compiler.layout import SEAL_PATH, STATE_PATH
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state.gitview import GitView, run_git
from compiler.state.seal import MAX_SEAL, parsed_seals
from compiler.state.sealcheck import REVERT_HINT, Report
from compiler.state.store import MAX_STATE


def _follow(versions: list[tuple[str, bytes | None]], current: str | None) -> tuple[str | None, str | None]:
    """Walk ``versions`` (parents first): the first self-signed seal anchors the key
    (when ``current`` is None), and a key change is followed only when the previous key
    endorsed it. Returns (key, the commit of the last rotation followed)."""
    rotated = None
    for commit, s in parsed_seals(versions):
        if not s.self_signed():
            continue
        if current is None:
            current = s.public_key
        elif s.public_key != current and s.endorsed_by(current):
            current, rotated = s.public_key, commit
    return current, rotated


def recorded_public_key(repo: Path, base: str | None = None) -> tuple[str | None, str]:
    """The public key plan and verify check against, and where it came from. No secret
    is used. The key is taken from a line of history that a pull request cannot write:
    the first seal along the first parents of ``base`` (a pull request's target branch,
    which the shipped plan workflow passes), or of HEAD without it (trust on first use:
    a fast-forward of crafted commits can change HEAD's line, which is why pull request
    checks pass --base), followed along that line through rotations that the previous
    key endorsed; then through endorsed rotations in the pull request's own commits. A
    seal found at the merge base is never trusted for what it names: the merge base can
    be any commit of the target branch's history, an attacker's intermediate commit
    from an earlier, net-harmless pull request included."""
    git = GitView.of(repo)
    usable = git.head is not None and not git.shallow
    current: str | None = None
    source = "the first seal along HEAD's first parents"
    if base is not None:
        tip = run_git(repo, "rev-parse", "--verify", "-q", f"{base}^{{commit}}")
        if tip.returncode != 0:
            raise fail(
                "--base",
                f"{base[:80]!r} is not a commit here",
                "pass the pull request's target branch, e.g. --base origin/main (with fetch-depth: 0)",
            )
        base_tip = tip.stdout.decode().strip()
        if usable:
            current, rotated = _follow(git.history(repo, first_parent=True, tip=base_tip), None)
            source = f"{base}'s history" + (f" (rotated at {rotated[:12]})" if rotated else "")
            if current is not None:
                current, rotated = _follow(git.history(repo, first_parent=True, since=base_tip), current)
                if rotated:
                    source += f", then a rotation endorsed by it ({rotated[:12]})"
        return current, source
    if usable:
        current, rotated = _follow(git.history(repo, first_parent=True), None)
        if rotated:
            source += f" (rotated at {rotated[:12]})"
    disk = layout.read_file(repo, SEAL_PATH, MAX_SEAL + 1)
    if disk is not None:  # a rotation made here and not yet committed; or no history at all
        current, rotated = _follow([("out.seal", disk)], current)
        if current is not None and not usable:
            source = "out.seal itself (no sealed commit yet)"
    if current is None:
        return None, "nowhere"
    return current, source


def sealed_findings(repo: Path, report: Report) -> list[Diagnostic]:
    """What a reviewer should know when out/ is not the sealed one, from the newest good
    seal's state (git's objects): a trust bundle that is not the sealed roots, and
    certificates that were revoked and no longer are."""
    good = report.newest_valid
    if good is None or not report.problems:
        return []
    raw = report.git.blob(repo, f"{good.out_tree}:state.json") if report.git.head else None
    if raw is None:
        return []
    try:
        now_raw = layout.read_file(repo, STATE_PATH, max_size=MAX_STATE) or b"{}"
        if not (json_depth_ok(raw) and json_depth_ok(now_raw)):
            return []
        sealed = json.loads(raw)
        current = json.loads(now_raw)
    except (ValueError, RecursionError, PkicError):
        return []
    out: list[Diagnostic] = []

    def records(body: dict[str, Any]) -> dict[object, dict[str, Any]]:
        return {
            r.get("serial"): r
            for recs in (body.get("certificates") or {}).values()
            if isinstance(recs, list)
            for r in recs
            if isinstance(r, dict)
        }

    was, now = records(sealed), records(current if isinstance(current, dict) else {})
    for serial, r in sorted(was.items(), key=lambda kv: str(kv[0])):
        if r.get("status") == "revoked" and (now.get(serial) or {}).get("status") != "revoked":
            out.append(
                Diagnostic(
                    STATE_PATH,
                    None,
                    None,
                    "",
                    f"{r.get('name')} serial {serial} was revoked in the sealed state and is not any more",
                    REVERT_HINT,
                )
            )
    roots = {
        r.get("sha256") for r in was.values() if r.get("status") == "active" and r.get("kind") == "authority" and r.get("issuer") is None
    }
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        data = layout.read_file(repo, "out/trust/bundle.pem") or b""
        have = {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(data)} if data.strip() else set()
    except (ValueError, PkicError):
        have = None
    if have is not None and have != roots:
        extra, missing = len(have - roots), len(roots - have)
        out.append(
            Diagnostic(
                "out/trust/bundle.pem",
                None,
                None,
                "",
                f"is not the sealed roots: {extra} certificate(s) added, {missing} missing",
                REVERT_HINT,
            )
        )
    return out
