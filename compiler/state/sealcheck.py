"""The check: is ``out/`` exactly what this PKI's apply identity last wrote?

Anyone who can open a pull request can write any file in ``out/``; CI holds the
identity that decrypts the CA keys. So apply acts on ``out/`` only after proving, from
a signature a pull request cannot make, that ``out/`` is the newest output the apply
identity wrote.

**Freshness**: among the versions of ``out.seal`` in all of HEAD's history (not only
first parents: a crafted merge can put newer seals behind its second parent), the valid
one with the highest serial must be HEAD's, and the ``prev`` links of the valid versions
must form one chain. A restored older ``out/`` or a seal replayed from another branch is
refused, naming the newer commit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler import layout
from compiler.layout import OUT_DIR, SEAL_PATH, STATE_PATH
from compiler.model.errors import Diagnostic, PkicError
from compiler.state.gitview import GitView
from compiler.state.outtree import BlobMemo, Listing, local_listing, scan_out, tree_id
from compiler.state.seal import MAX_SEAL, Seal, parse_seal, parsed_seals, sops_rule_summary, sops_rules_digest

REVERT_HINT = "revert the merge that changed out/ or out.seal (`git revert -m 1 <merge>`), so the newest sealed out/ is back; then apply"


@dataclass
class Report:
    """What the seal says of out/. ``problems`` empty: out/ is the newest sealed output."""

    mode: str = "unsealed"  # unsealed | new | sealed
    public_key: str | None = None
    seal: Seal | None = None
    head_seal: Seal | None = None
    git: GitView = field(default_factory=GitView)
    listing: Listing | None = None  # out/ on disk, when scanned
    recovering: bool = False  # out/ differs, but only by an interrupted apply of ours
    problems: list[Diagnostic] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (path, added|changed|removed) vs the sealed tree
    newest_valid: Seal | None = None  # the newest seal known good: on disk, or in history
    key_source: str = "the seal key"  # where public_key came from
    sops_change: str | None = None  # .sops.yaml's creation rules differ from the sealed ones: the rule now

    def summary(self) -> str:
        if self.mode == "unsealed":
            return "unsealed: no out.seal and no seal key; nothing proves who wrote out/"
        if self.mode == "new":
            return "sealed from the next apply on (no seal yet)"
        if self.problems:
            return f"NOT the sealed out/: {len(self.problems)} problem(s)"
        s = self.seal
        extra = " (finishing an interrupted apply)" if self.recovering else ""
        return f"sealed: seal serial {s.serial}, state serial {s.state_serial}, key {s.public_key[:20]}…{extra}" if s else "sealed"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ok": not self.problems,
            "summary": self.summary(),
            "public_key": self.public_key,
            "sops_rules": {"file": ".sops.yaml", "changed": self.sops_change is not None, "now": self.sops_change},
            "serial": self.seal.serial if self.seal else None,
            "digest": self.seal.digest if self.seal else None,
            "problems": [{"path": d.path or d.file, "message": d.message} for d in self.problems],
        }

    def problem(self, where: str, message: str, hint: str = REVERT_HINT) -> None:
        self.problems.append(Diagnostic(where, None, None, "", message, hint))  # render_seal() escapes odd names

    def sealed_files(self, repo: Path, tree: str) -> Listing | None:
        """The files of the sealed tree ``tree``: git's, or where git has not the tree
        (nothing committed), this machine's copy of the listing, taken only if it hashes
        to ``tree``; None if neither has them."""
        files = self.git.listing(repo, tree)
        return files if files is not None else local_listing(repo, tree, self.git.object_format)

    @property
    def prev_for_next(self) -> str | None:
        """What the next seal's ``prev`` is: HEAD's seal where there is one (a run of
        local, uncommitted applies all point at the last committed seal), else ours."""
        if self.head_seal is not None:
            return self.head_seal.digest
        return self.seal.digest if self.seal else None

    @property
    def next_serial(self) -> int:
        return max([s.serial for s in (self.seal, self.head_seal) if s is not None], default=0) + 1


def examine(
    repo: Path, public_key: str | None, *, journal_seal: str | None = None, scan: bool = True, memo: BlobMemo | None = None
) -> Report:
    """Check out/ and out.seal against ``public_key`` (apply: derived from the secret;
    plan and verify: the recorded one). Collects every problem; raises only for files
    it refuses to read (symlinks). ``memo``: the record of blob ids the scan of out/
    may take (see scan_out: plan's, or apply's authenticated one)."""
    r = Report(public_key=public_key, git=GitView.of(repo))
    disk_raw = layout.read_file(repo, SEAL_PATH, MAX_SEAL + 1)
    if r.git.error is not None:
        if public_key is None and disk_raw is None:
            return r  # unsealed, and git has nothing to say about it
        r.mode = "sealed"
        r.problem(
            "git",
            f"cannot check the seal against git's history: {r.git.error}",
            "fix what git says (e.g. `git config --global --add safe.directory DIR` for a repository owned by another user)",
        )
        return r
    if r.git.shallow and (public_key is not None or disk_raw is not None):
        r.mode = "sealed"
        r.problem(
            "git",
            "this is a shallow clone: the seal's history (is out.seal the newest?) cannot be checked",
            "fetch the whole history (`git fetch --unshallow`; actions/checkout: fetch-depth: 0)",
        )
        return r
    history = r.git.history(repo)
    sealed_before = [(c, raw) for c, raw in history if raw is not None]
    if public_key is None:
        if disk_raw is None and not sealed_before:
            return r
        r.mode = "sealed"
        r.problem(
            SEAL_PATH,
            "this repository is sealed, and no seal key is set",
            "apply needs the seal key: set PKIC_SEAL_KEY (CI) or PKIC_SEAL_KEY_FILE (see docs/security.md)",
        )
        return r
    head_raw = r.git.blob(repo, f"HEAD:{SEAL_PATH}")
    if disk_raw is None:
        _check_history(r, public_key, history, head_raw)
        if sealed_before:
            r.mode = "sealed"
            r.problem(SEAL_PATH, f"is missing, but commit {sealed_before[-1][0][:12]} has one: out/ was replaced or its seal removed")
        elif layout.exists(repo, STATE_PATH) or layout.exists(repo, "out/keys"):
            r.problem(
                OUT_DIR,
                "is not sealed: nothing proves that the apply identity wrote it",
                "adopt it once: `pkic verify --keys`, then `pkic seal init` (see docs/security.md)",
            )
        else:
            r.mode = "new"
        return r
    r.mode = "sealed"
    seal = parse_seal(disk_raw)
    if not seal.valid_under(public_key):
        _check_history(r, public_key, history, head_raw)
        why = "signed by another key" if seal.public_key != public_key else "its signature is not valid"
        r.problem(
            SEAL_PATH,
            f"is not sealed by the seal key {public_key[:24]}…: {why} (it names {seal.public_key[:24]}…)",
            "a seal is made only by pkic apply with the seal key; " + REVERT_HINT,
        )
        return r
    r.seal = r.newest_valid = seal
    if seal.object_format != r.git.object_format:
        r.problem(SEAL_PATH, f"was made for {seal.object_format} object ids; this repository uses {r.git.object_format}")
        return r
    _check_history(r, public_key, history, head_raw)
    try:
        head = parse_seal(head_raw, f"HEAD:{SEAL_PATH}") if head_raw is not None else None
    except PkicError:
        head = None
    if head is not None and head.valid_under(public_key):
        r.head_seal = head
        if disk_raw == head_raw:
            committed = r.git.out_tree(repo)
            if committed != seal.out_tree:
                r.problem("HEAD:out", "the committed out/ is not the sealed tree (checked against git's objects)")
                _name_changes(r, repo, r.git.listing(repo, committed), seal.out_tree)
        elif seal.prev != head.digest or seal.serial <= head.serial or seal.lineage != head.lineage:
            r.problem(
                SEAL_PATH,
                f"is neither HEAD's seal (serial {head.serial}) nor a later apply of it (serial {seal.serial})",
                "restore it and out/ from git (`git checkout -- out.seal out/`)",
            )
    if seal.sops_rules != sops_rules_digest(repo):
        r.sops_change = sops_rule_summary(repo)
    if not scan:
        return r
    r.listing = scan_out(repo, r.git.object_format, memo=memo)
    if tree_id(r.listing, r.git.object_format) != seal.out_tree:
        if journal_seal is not None and journal_seal == seal.digest:
            r.recovering = True
        else:
            _name_changes(r, repo, r.listing, seal.out_tree)
            if not r.changed:
                r.problem(OUT_DIR, "is not what the seal covers", "restore it from git (`git checkout -- out/`); change pki.yaml instead")
    return r


def _check_history(r: Report, public_key: str, history: list[tuple[str, bytes | None]], head_raw: bytes | None) -> None:
    """Freshness: every seal made with the key that HEAD can reach, however it got into
    history. HEAD's seal must be the newest of them, and they must form one chain."""
    valid = [(commit, s) for commit, s in parsed_seals(history) if s.valid_under(public_key)]
    if not valid:
        return
    top_commit, top = max(valid, key=lambda cs: cs[1].serial)  # max() keeps the first (oldest) of equals
    if r.newest_valid is None or top.serial > r.newest_valid.serial:
        r.newest_valid = top
    head = None
    if head_raw is not None:
        try:
            head = parse_seal(head_raw, f"HEAD:{SEAL_PATH}")
        except PkicError:
            head = None
    if head_raw is None:
        r.problem(
            SEAL_PATH,
            f"is not in HEAD, but commit {top_commit[:12]} has a seal (serial {top.serial}): out/ was replaced or its seal removed",
        )
    elif head is None or not head.valid_under(public_key):
        r.problem(SEAL_PATH, f"HEAD's seal is not made with the seal key; commit {top_commit[:12]} has seal serial {top.serial}")
    elif head.serial < top.serial:
        r.problem(
            SEAL_PATH,
            f"restores an older out/: its seal has serial {head.serial}, but commit {top_commit[:12]} already has serial {top.serial}",
        )
    elif head.serial == top.serial and head.raw != top.raw:
        r.problem(SEAL_PATH, f"two different seals have serial {top.serial} (HEAD's and commit {top_commit[:12]}'s): out/ was forked")
    chain: dict[str, tuple[str, Seal]] = {}
    for commit, s in valid:
        chain.setdefault(s.digest, (commit, s))
    ordered = sorted(chain.values(), key=lambda cs: cs[1].serial)
    for (ca, a), (cb, b) in itertools.pairwise(ordered):
        if b.prev != a.digest or b.lineage != a.lineage and a.lineage is not None:
            r.problem(
                SEAL_PATH,
                f"the seal of commit {cb[:12]} (serial {b.serial}) does not follow the one of commit {ca[:12]} (serial {a.serial}): replayed from another branch or PKI?",
            )
            break


def _name_changes(r: Report, repo: Path, have: Listing | None, sealed_tree: str) -> None:
    """Name each file of ``have`` that is not what the seal covers (once, however often asked)."""
    sealed = r.sealed_files(repo, sealed_tree)
    if have is None or sealed is None:
        return
    known = {p for p, _ in r.changed}
    fresh = []
    for path in sorted(set(have) | set(sealed)):
        a, b = sealed.get(path), have.get(path)
        if a != b and path not in known:
            fresh.append((path, "added" if a is None else "removed" if b is None else "changed"))
    shown = len(r.changed)
    r.changed += fresh
    for path, what in fresh[: max(0, 20 - shown)]:
        r.problem(
            path,
            f"edited by hand ({what}): not what the seal covers",
            "restore it from git (`git checkout -- out/`); change pki.yaml instead",
        )
    if len(r.changed) > 20 and shown <= 20:
        r.problem(OUT_DIR, "more files are not what the seal covers", "restore out/ from git (`git checkout -- out/`)")
