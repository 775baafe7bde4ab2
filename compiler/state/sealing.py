"""Apply's side of the seal: write the next seal over ``out/`` as the apply left it, and
finish (and seal) an apply that was killed mid-way."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compiler import layout
from compiler.layout import OUT_DIR, SEAL_PATH, STATE_PATH
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state.invariants import Invariants
from compiler.state.ops import BeginOp
from compiler.state.outtree import Listing, listing_from_json, save_listing, scan_out, tree_id, update_listing
from compiler.state.records import State
from compiler.state.seal import Seal, parse_seal, render_seal, rotation_bytes, sops_rules_digest
from compiler.state.sealcheck import Report
from compiler.state.sealkey import public_text


def write_seal(
    repo: Path,
    key: Ed25519PrivateKey,
    report: Report,
    listing: Listing,
    *,
    lineage: str | None,
    state_serial: int,
    at: str,
    endorse_with: Ed25519PrivateKey | None = None,
) -> Seal:
    """Seal ``listing`` (out/ as it now is) as the next seal after ``report``'s. A
    rotation is endorsed by the previous seal key (``endorse_with``) where it is at hand."""
    algo = report.git.object_format
    body: dict[str, Any] = {
        "lineage": lineage,
        "serial": report.next_serial,
        "prev": report.prev_for_next,
        "out_tree": tree_id(listing, algo),
        "object_format": algo,
        "state_serial": state_serial,
        "sops_rules": sops_rules_digest(repo),
        "sealed_at": at,
    }
    if endorse_with is not None:
        new_public = public_text(key.public_key())
        body["rotation"] = {
            "from": public_text(endorse_with.public_key()),
            "signature": base64.b64encode(endorse_with.sign(rotation_bytes(new_public, body["prev"]))).decode(),
        }
    raw = render_seal(key, body)
    layout.write_atomic(repo, SEAL_PATH, raw)
    save_listing(repo, body["out_tree"], listing, algo)  # (for recovery, until git has the tree)
    return parse_seal(raw)


@dataclass
class Sealing:
    """An apply's hold on the seal: the key, what :func:`examine` found, and the
    invariants of the state it started from."""

    key: Ed25519PrivateKey
    report: Report
    invariants: Invariants | None = None

    @property
    def algo(self) -> str:
        return self.report.git.object_format

    def listing(self, repo: Path) -> Listing:
        if self.report.listing is None:
            self.report.listing = scan_out(repo, self.algo)
        return self.report.listing

    def seal_now(self, repo: Path, touched: set[str], state: State, at: str, known: dict[str, str] | None = None) -> Seal:
        """Seal out/ after an apply that wrote, removed or renamed ``touched``."""
        listing = update_listing(repo, self.listing(repo), touched, self.algo, known)
        return self._write(repo, listing, state, at)

    def _write(self, repo: Path, listing: Listing, state: State, at: str) -> Seal:
        new = write_seal(repo, self.key, self.report, listing, lineage=state.lineage, state_serial=state.serial, at=at)
        self.report.seal, self.report.listing, self.report.recovering = new, listing, False
        return new

    def check_recovery(self, repo: Path, begin: BeginOp, touched: set[str]) -> None:
        """Before a killed apply's journal is replayed: out/ may differ from the seal only
        in files that apply was writing (``touched``) and its staging files."""
        if not self.report.recovering:
            return
        seal = self.report.seal
        was: Listing | None = None
        if begin.seal == (seal.digest if seal else None) and begin.sealed:
            if begin.listing is not None:
                was = listing_from_json(begin.listing)
            elif seal is not None and begin.tree == seal.out_tree:
                was = self.report.sealed_files(repo, begin.tree)
        if was is None:
            raise fail(
                OUT_DIR,
                "is not what the seal covers, and the interrupted apply's journal does not say why",
                "restore out/ from git (`git checkout -- out/ out.seal`), remove .pkic/journal.jsonl, and apply again",
            )
        now = self.report.listing or {}

        def staging(p: str) -> bool:
            base = p.rpartition("/")[2]
            return base.startswith(".") and ".tmp-" in base

        strange = sorted(p for p in set(was) | set(now) if was.get(p) != now.get(p) and p not in touched and not staging(p))
        if strange:
            raise PkicError(
                [
                    Diagnostic(
                        p,
                        None,
                        None,
                        "",
                        "changed since the interrupted apply began, and not by it: not what the seal covers",
                        "restore it from git (`git checkout -- out/`); then apply again",
                    )
                    for p in strange[:20]
                ]
            )

    def recover(self, repo: Path, before: Invariants, state: State, at: str) -> None:
        """After a killed apply's journal was replayed (check_recovery passed): seal it."""
        listing = scan_out(repo, self.algo)
        if self.report.seal is not None and tree_id(listing, self.algo) == self.report.seal.out_tree:
            self.report.listing = listing  # killed after its seal was written: nothing to seal
            return
        broken = before.broken_by(Invariants.of(state), growth=False)
        if broken:
            raise fail(STATE_PATH, "refusing to seal a state that " + "; ".join(broken), "this is a bug in pkic: report it")
        self._write(repo, listing, state, at)
