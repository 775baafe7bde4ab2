"""Apply: carry out a plan, parents first, and nothing more.

Each certificate is signed in memory; its step (record, certificate, sealed key) is
appended to the journal *before* any file is written, then the files are written
atomically. A killed apply therefore leaves either a complete journal line (the next
apply rewrites its files from it) or nothing at all for that step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from cryptography import x509

from compiler import layout, settings
from compiler.apply import faults, issue, workers
from compiler.apply.bundle import Certs, chain_pem, trust_bundle, write_crl_bundle
from compiler.apply.context import ApplyResult, Context, Steps
from compiler.apply.publish import publish
from compiler.apply.signers import unlock
from compiler.apply.writer import AtomicWriter
from compiler.keys.keystore import Keystore
from compiler.model.errors import fail
from compiler.model.keytype import public_key_sha256
from compiler.plan import Action, Plan, Reencrypt
from compiler.spec import EffectiveSpec
from compiler.state import (
    BeginOp,
    CommitOp,
    CompromisedOp,
    Invariants,
    IssuedOp,
    Journal,
    JournalOp,
    MovedOp,
    ReencryptedOp,
    Sealing,
    SettingsOp,
    State,
    listing_json,
    new_lineage,
    ts,
)
from compiler.state.outtree import has_local_listing, save_listing


def execute(
    repo: Path, plan: Plan, spec: EffectiveSpec, state: State, store: Keystore, now: datetime, sealing: Sealing | None = None
) -> ApplyResult:
    """Carry out ``plan``: every key checked and decrypted first, then each step journaled,
    written and folded into ``state``; the state written last (and sealed, with ``sealing``)."""
    if plan.empty:
        return ApplyResult(state_serial=state.serial)
    certs = Certs(repo)
    unlock(repo, plan, spec, state, store, sealing is not None, certs)
    ctx = Context(repo, plan, spec, state, store, now, certs)
    lineage = state.lineage or new_lineage()
    journal = Journal(repo)
    seal, listing, tree = None, None, None
    if sealing is not None:
        # what recovery needs to tell our own unfinished writes from anyone else's: the
        # sealed tree (its files are in git, or in this machine's copy of its listing),
        # or for a first seal the files themselves
        sealed = sealing.report.seal
        seal, tree = (sealed.digest, sealed.out_tree) if sealed else (None, None)
        if tree is not None and not (
            sealing.report.git.has_tree(repo, tree)
            or has_local_listing(repo, tree, sealing.algo)
            or save_listing(repo, tree, sealing.listing(repo), sealing.algo)
        ):
            tree = None  # (neither git nor this machine keeps its files: the journal does)
        listing = None if tree is not None else listing_json(sealing.listing(repo))
    journal.append(BeginOp(lineage=lineage, base_serial=state.serial, plan=plan.digest, seal=seal, listing=listing, tree=tree, at=ctx.at))
    state.lineage = lineage
    # every file below is written after its journal step, or (chains, trust bundle)
    # rewritten by recovery from the state: new ones may be created in place
    writer = AtomicWriter(repo, settings.write_threads(), new_in_place=True)
    writer.blob_algo = sealing.algo if sealing is not None else None
    apply = Apply(ctx, journal, writer)
    try:
        apply.run()
    finally:
        # on success, and on a failure half-way (say, sops refusing one key): record
        # what was done, so out/ and the state agree and the next plan starts from it
        try:
            if apply.started:
                apply.settle()
                apply.finish(sealing)
            else:
                journal.discard()
        finally:
            writer.close()
            ctx.result.files_written = writer.written
            ctx.result.touched = set(writer.touched)
    ctx.result.state_serial = state.serial
    return ctx.result


class Apply:
    """One apply under way: what it signs (``ctx``), its journal and its writer. Every
    step goes through :meth:`step`: journaled, its files written, folded into the state."""

    def __init__(self, ctx: Context, journal: Journal, writer: AtomicWriter):
        self.ctx = ctx
        self.journal = journal
        self.writer = writer
        self.started = False  # a step is in the journal: the apply must be finished, not discarded
        self.pending: JournalOp | None = None  # journaled, not yet folded into the state (Ctrl-C in between)

    def step(self, op: JournalOp) -> None:
        """Journal a step, then write its files, then fold it into the state in memory."""
        self.journal.append(op)
        self.started = True
        self.pending = op
        issued = isinstance(op, IssuedOp)
        if issued:
            faults.journaled()
        op.files(self.writer)
        if issued:
            faults.written(self.writer.flush)
        op.fold(self.ctx.state)
        self.pending = None

    def steps(self, ops: Steps) -> None:
        for op in ops:
            self.step(op)

    def run(self) -> None:
        """Moves, declared compromises, settings, re-encryptions; then the changes in plan
        order (long runs of new-key leaves in workers); then publications."""
        ctx = self.ctx
        plan, at, result = ctx.plan, ctx.at, ctx.result
        for old, new in plan.moves:
            self.step(MovedOp(old=old, new=new, at=at))
            result.moved.append((old, new))
        for comp in plan.compromises:
            self.step(CompromisedOp(entry={**comp, "applied_at": at}, at=at))
        if plan.settings != ctx.state.settings:  # new authorities and moves too: every entry's settings stay recorded
            self.step(SettingsOp(settings=plan.settings, at=at))
        for r in plan.reencrypt:  # under a fresh data key, for the rule's master keys only
            self.step(self._reencrypted(r))
            result.reencrypted.append(r.path)
        self._changes()
        self.steps(publish(ctx))

    def _reencrypted(self, r: Reencrypt) -> ReencryptedOp:
        ctx = self.ctx
        handle = ctx.store.load(r.name, r.path)
        authority = r.name[: -len(" OCSP responder")] if r.path.startswith(layout.KEYS_DIR + "/ocsp-responders/") else None
        doc = ctx.store.seal(r.name, handle, r.path)
        digest = ctx.plan.rule_of[r.path]
        return ReencryptedOp(
            name=r.name if authority is None else authority,
            authority=authority,
            key_doc=doc,
            rule=digest,
            rules={digest: ctx.plan.rules[digest]},
            public_key_sha256=public_key_sha256(handle.public_key()),
            key_file_sha256=hashlib.sha256(doc.encode()).hexdigest(),
            at=ctx.at,
        )

    def _changes(self) -> None:
        ctx = self.ctx
        changes, spec, result = ctx.plan.changes, ctx.spec, ctx.result
        jobs = workers.jobs()
        i = 0
        while i < len(changes):
            run = workers.parallel_run(changes, i, spec) if jobs > 0 else 0
            if run >= workers.parallel_min():
                batch = changes[i : i + run]
                refs = workers.issuer_refs(ctx, batch)
                result.workers = max(result.workers, jobs)
                for change, (der, key_doc) in zip(batch, workers.sign_in_workers(ctx, batch, refs, jobs), strict=True):
                    cert = x509.load_der_x509_certificate(der)
                    issuer = spec.entries[change.name].issuer
                    assert issuer is not None  # parallel_run: leaves only
                    self.steps(issue.issued(ctx, change, cert, cert.public_key(), refs[issuer][1], key_doc, "generated"))
                    result.signed_in_workers += 1
                i += run
                continue
            change = changes[i]
            i += 1
            if change.action == Action.REVOKE:
                self.steps(issue.revocations(ctx, change, remove_own_files=True))
                result.revoked.append(change.name)
                continue
            self.steps(issue.sign(ctx, change))

    def settle(self) -> None:
        """Interrupted (Ctrl-C) between journaling a step and folding it in: finish that step."""
        op = self.pending
        if op is None:
            return
        op.files(self.writer)
        op.fold(self.ctx.state)
        if isinstance(op, IssuedOp) and op.name not in self.ctx.result.issued:
            self.ctx.result.issued.append(op.name)  # its chain file is written below
        self.pending = None

    def finish(self, sealing: Sealing | None) -> None:
        """Chains, trust bundle, CRL bundle; then the state, the seal, and the journal gone."""
        ctx, writer = self.ctx, self.writer
        repo, plan, state, result = ctx.repo, ctx.plan, ctx.state, ctx.result
        chain_names = set(result.issued) | set(plan.chain_updates) | {new for _, new in plan.moves}
        for name in sorted(chain_names):
            if state.active(name):
                writer.write(layout.chain_path(name), chain_pem(state, ctx.certs, name).encode())
        writer.write(layout.TRUST_BUNDLE, trust_bundle(state, ctx.certs).encode())
        if result.crls or result.crls_removed or plan.moves or not layout.exists(repo, layout.CRL_BUNDLE):
            writer.flush()  # the CRLs signed above are on disk: the bundle is made from them
            write_crl_bundle(repo, state, writer)
        writer.flush()  # every file in place before the state says so
        state.serial += 1
        if sealing is not None:
            assert sealing.invariants is not None  # set by the apply command once the state is loaded
            broken = sealing.invariants.broken_by(Invariants.of(state))
            if broken:  # a bug guard: never seal a state that undoes what the last seal recorded
                raise fail(
                    "out/state.json",
                    "refusing to seal a state that " + "; ".join(broken),
                    "this is a bug in pkic: report it; out/ is left unsealed",
                )
        self.journal.append(CommitOp(serial=state.serial, at=ts(ctx.now)))
        # staged (recovery reads it: never half-written), in pieces (never held whole)
        digest = hashlib.sha256()

        def chunks() -> Iterator[bytes]:
            for chunk in state.json_chunks():
                data = chunk.encode()
                digest.update(data)
                yield data

        writer.write_chunks("out/state.json", chunks())
        result.state_sha256 = digest.digest()
        writer.flush()
        if sealing is not None:  # last: the seal covers every file above
            result.seal = sealing.seal_now(repo, writer.touched, state, ts(ctx.now), writer.blobs)
        self.journal.discard()
