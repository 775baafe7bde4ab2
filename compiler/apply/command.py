"""`pkic apply`, from the inputs to the commit: the order of its checks is the point.

Every check that can fail runs before the first signature (a failure after it would
leave certificates signed and recorded nowhere; in CI, every day): the spec,
.sops.yaml and every validity before any key is decrypted; under the repo lock, the
seal, an interrupted apply finished, the policies, the saved or reviewed plan, and
(``--commit``) git's view of every path. The command line only parses options, asks
for confirmation and prints: it is :class:`Console`; git and the audit of an unsealed
out/ are :class:`Commit` (compiler.gitops and compiler.verify are commands above apply).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from compiler.apply.context import ApplyResult
from compiler.apply.paths import planned_paths
from compiler.apply.replay import Recovery, finish_interrupted
from compiler.apply.run import execute
from compiler.layout import SEAL_PATH, STATE_PATH
from compiler.model.bounded import MAX_BYTES, json_depth_ok
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.plan import Plan
from compiler.spec import EffectiveSpec
from compiler.state import BlobMemo, Invariants, Report, Seal, Sealing, State, cache_key, examine, load_key, public_text

SavedPlan = dict[str, Any]  # a plan saved by `pkic plan --out` (JSON)


class Console(Protocol):
    """What the user sees of an apply, and their say in it (the command line)."""

    def recovered(self) -> None:
        """An interrupted apply was finished from its journal."""

    def plan(self, plan: Plan, spec: EffectiveSpec) -> None:
        """The plan about to be applied (or refused)."""

    def sealing(self, report: Report | None) -> None:
        """The seal's news for the reviewer (None: the repo is used without a seal)."""

    def confirm(self) -> None:
        """Ask before applying; raise to cancel."""


class Commit(Protocol):
    """``--commit``: git, and the audit of out/ when there is no seal to prove it."""

    def preflight(self, csr_paths: list[str]) -> None:
        """Refuse before anything is signed if the commit could not be made."""

    def hand_edits(self, state: State) -> list[str]:
        """Files in out/ whose content is not what the state records."""

    def check_attributes(self, paths: list[str]) -> None:
        """Refuse paths git would change on checkout (filters, line endings)."""

    def commit(
        self, plan: Plan, state: State, result: ApplyResult, recovered: Recovery | None, seal: Seal | None, paths: list[str]
    ) -> None:
        """Commit ``paths`` with the plan's trailers."""


@dataclass(frozen=True)
class ApplyOptions:
    when: datetime  # the time certificates and CRLs are signed at
    plan_file: Path | None = None  # a saved plan: applied only if still current
    yes: bool = False  # no confirmation
    reviewed: str | None = None  # the reviewed plan's digest; "none": time-driven work only
    commit: Commit | None = None  # --commit


@dataclass(frozen=True)
class Applied:
    result: ApplyResult
    sealed: bool  # False: the repo is used without a seal


def run_apply(repo: Path, options: ApplyOptions, console: Console) -> Applied | None:
    """The apply command. None: the plan was empty (nothing signed, nothing to report)."""
    from compiler import spec as spec_mod
    from compiler.keys.keystore import Keystore
    from compiler.plan import check_horizon, make_plan
    from compiler.policy import rules as policy
    from compiler.spec.cache import Verdicts
    from compiler.spec.sops_config import creation_rules
    from compiler.state import RepoLock, load_state, read_journal
    from compiler.state.store import WRITTEN

    when, git = options.when, options.commit
    saved = read_saved_plan(repo, options.plan_file) if options.plan_file else None
    # spec errors before anything else; never a cache a plan kept (only entries this
    # apply identity authenticated, with a key derived from the seal key)
    mac_key = cache_key()
    effective = spec_mod.load(repo, caches=mac_key)
    # .sops.yaml and every validity checked before any key is decrypted (even to finish
    # an interrupted apply): a broken input is an error, never a crash holding a CA key
    creation_rules(repo)
    check_horizon(effective, when)
    store = Keystore(repo)
    with RepoLock(repo):
        if git is not None:
            git.preflight(sorted({e.csr_path for e in effective.entries.values() if e.csr_path}))
        sealing = _seal_gate(repo, read_journal(repo), mac_key)
        recovered = finish_interrupted(repo, sealing, when)
        if recovered:
            console.recovered()
        verdicts = Verdicts(repo, mac_key) if mac_key is not None else None
        state = load_state(repo, keep_text=True, verdicts=verdicts, blob=_sealed_state_blob(sealing))
        if sealing is not None:
            sealing.invariants = Invariants.of(state)
        elif git is not None:
            _refuse_hand_edits(git.hand_edits(state))  # reads every file: without a seal, the audit path only
        policy.check_all(effective, repo, state)
        reviewed_inputs(repo, effective)
        the_plan = make_plan(effective, state, when)
        if saved is not None:
            check_saved(saved, the_plan)
        _check_reviewed(options.reviewed, the_plan, effective, console)
        console.plan(the_plan, effective)
        console.sealing(sealing.report if sealing is not None else None)
        if the_plan.empty:
            if git is not None and recovered:
                _commit(git, the_plan, state, None, recovered, sealing)
            return None
        store.check_config()
        if git is not None:
            existing = list(sealing.listing(repo)) if sealing is not None else []
            git.check_attributes(planned_paths(the_plan, effective) + existing)
        if not options.yes and saved is None:
            console.confirm()
        result = execute(repo, the_plan, effective, state, store, when, sealing)
        if verdicts is not None and result.state_sha256 is not None:  # our own output, laid out by this code
            verdicts.note(WRITTEN, result.state_sha256)
        if git is not None:
            _commit(git, the_plan, state, result, recovered, sealing)
    return Applied(result, sealing is not None)


def _sealed_state_blob(sealing: Sealing | None) -> tuple[str, str] | None:
    """(object format, blob id) of out/state.json as the seal gate's scan found it: the
    state apply loads must be that file (the scan may take a blob id from its record, by
    the file's times, which a write through a shared memory map can leave unchanged)."""
    listing = sealing.report.listing if sealing is not None else None
    if sealing is None or listing is None or STATE_PATH not in listing:
        return None
    return sealing.algo, listing[STATE_PATH][1]


def reviewed_inputs(repo: Path, effective: EffectiveSpec) -> None:
    """The inputs besides pki.yaml that a plan binds: .sops.yaml's rules and the policies."""
    from compiler.policy import rules as policy
    from compiler.spec.sops_config import creation_rules

    effective.sops_rules = creation_rules(repo)
    effective.policy_data = policy.snapshot(effective, repo)


def _seal_gate(repo: Path, journal: list[dict[str, Any]], mac_key: bytes | None) -> Sealing | None:
    """Before apply reads anything in out/ or starts sops: prove that out/ is the newest
    output the seal key sealed (see seal.py). Returns the apply's hold on the seal, or
    None for a repository used without one (local experiments). ``mac_key``: the scan of
    out/ takes the blob ids this apply identity recorded, and only those (see scan_out)."""
    key = load_key()
    public = public_text(key.public_key()) if key is not None else None
    journal_seal = journal[0].get("seal") if journal and isinstance(journal[0], dict) else None
    report = examine(repo, public, journal_seal=journal_seal, memo=BlobMemo(repo, mac_key) if mac_key is not None else None)
    if report.problems:
        raise PkicError(report.problems)
    if key is None:
        return None  # said with the plan: "seal: unsealed"
    return Sealing(key, report)


def _refuse_hand_edits(edited: list[str]) -> None:
    if edited:
        raise PkicError(
            [
                Diagnostic(
                    rel,
                    None,
                    None,
                    "",
                    "edited by hand: its content is not what the state records",
                    "restore it from git (`git checkout -- out/`); change pki.yaml instead",
                )
                for rel in edited[:20]
            ]
        )


def _check_reviewed(reviewed: str | None, the_plan: Plan, effective: EffectiveSpec, console: Console) -> None:
    """``--reviewed``: the spec-driven part of the plan must be the one reviewed on the
    pull request ('none': there was no review, so only time-driven work may be done)."""
    if reviewed == "none" and the_plan.needs_review:
        console.plan(the_plan, effective)
        raise fail(
            "plan",
            "this plan has spec-driven work (issue, reissue, revoke, move, re-encrypt, or a renewal whose content or "
            "recipients changed), and there is no reviewed plan for it",
            "open a pull request: its reviewed plan's digest lets apply do it",
        )
    if reviewed not in (None, "none") and reviewed != the_plan.reviewed_digest:
        console.plan(the_plan, effective)
        raise fail(
            "plan",
            f"the spec-driven part of the plan is not the reviewed one: reviewed {reviewed[:16]}…, now {the_plan.reviewed_digest[:16]}…",
            "pki.yaml, a policy, .sops.yaml or the state changed after review: re-run the plan on the pull request and review it again",
        )


def _commit(git: Commit, the_plan: Plan, state: State, result: ApplyResult | None, recovered: Recovery, sealing: Sealing | None) -> None:
    """Everything this apply (and the interrupted one it finished) changed, in one commit."""
    result = result or ApplyResult()
    paths = set(result.touched) | (set(recovered.touched) if recovered else set())
    the_seal = sealing.report.seal if sealing is not None else None
    if the_seal is not None:
        paths.add(SEAL_PATH)
    git.commit(the_plan, state, result, recovered if recovered else None, the_seal, sorted(paths))


# --------------------------------------------------------------------------- saved plans


def read_saved_plan(repo: Path, path: Path) -> SavedPlan:
    """A plan saved by `pkic plan --out` (``path`` relative to the repo)."""
    target = path if path.is_absolute() else repo / path
    try:
        raw = target.read_bytes()
        if len(raw) > MAX_BYTES or not json_depth_ok(raw):
            raise ValueError("too large or nested too deeply")
        data = json.loads(raw)
    except FileNotFoundError:
        raise fail(str(path), "no such plan file", "save one with `pkic plan --out FILE`") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise fail(str(path), f"not a saved plan: {type(exc).__name__}", "save one with `pkic plan --out FILE`") from None
    if not isinstance(data, dict) or data.get("format_version") != 1 or "digest" not in data:
        raise fail(str(path), "not a saved pkic plan", "save one with `pkic plan --out FILE`")
    return data


def check_saved(saved: SavedPlan, current: Plan) -> None:
    """The stale-plan rule: a saved plan is applied only against the state it was made
    from, and only if it is still exactly what would be done now."""
    if saved.get("lineage") != current.lineage or saved.get("state_serial") != current.state_serial:
        raise PkicError(
            [
                Diagnostic(
                    "plan",
                    None,
                    None,
                    "",
                    f"stale plan: it was made against state serial {saved.get('state_serial')}, but the state is now at serial {current.state_serial}",
                    "run `pkic plan --out FILE` again and review the new plan",
                )
            ]
        )
    if saved.get("digest") != current.digest:
        raise PkicError(
            [
                Diagnostic(
                    "plan",
                    None,
                    None,
                    "",
                    "stale plan: pki.yaml or the clock changed what would be done since the plan was saved",
                    "run `pkic plan --out FILE` again and review the new plan",
                )
            ]
        )
