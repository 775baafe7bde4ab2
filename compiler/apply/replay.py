"""Finishing an apply that was killed.

Every step of an apply is journaled before its files are written, and each step can
write (again) its own files (:meth:`~compiler.state.JournalOp.files`), so a journal left
by a killed apply is finished by the next one, byte for byte what the killed one would
have written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from compiler import layout
from compiler.apply import bundle
from compiler.apply.writer import DirectWriter, PathRecorder
from compiler.state import BeginOp, Invariants, Journal, JournalOp, Sealing, load_state, load_with_journal, ts


@dataclass
class Recovery:
    """What finishing an interrupted apply did: its steps and the paths it touched."""

    ops: list[JournalOp] = field(default_factory=list)  # begin and commit left out
    touched: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ops)


def finish_interrupted(repo: Path, sealing: Sealing | None = None, now: datetime | None = None) -> Recovery:
    """Complete an apply that was killed: rewrite its files from the journal, fold it,
    and (sealed repos) seal the result, once it is proven that out/ differs from the
    last seal only where the journal says this machine was writing."""
    if not (repo / layout.JOURNAL_PATH).exists():
        return Recovery()
    sealed_state = load_state(repo) if sealing is not None else None
    state, ops = load_with_journal(repo)
    if not ops:
        return Recovery()
    begin = ops[0]
    assert isinstance(begin, BeginOp)  # load_with_journal: a journal starts with its begin
    if not any(op.changes for op in ops):
        Journal(repo).discard()  # killed before its first step: nothing to finish
        return Recovery()
    if sealing is not None:  # before writing anything: out/ differs from the seal only where we were writing
        planned = PathRecorder()
        for op in ops:
            op.files(planned)
        planned.touched.update(layout.chain_path(n) for n in state.active_names())
        planned.touched.update((layout.TRUST_BUNDLE, layout.CRL_BUNDLE, "out/state.json"))
        sealing.check_recovery(repo, begin, planned.touched)
    bundle.clean_staging(repo)
    certs = bundle.Certs(repo)
    direct = DirectWriter(repo)
    for op in ops:
        op.files(direct)
    for name in state.active_names():  # intermediates may have changed under anyone
        direct.write(layout.chain_path(name), bundle.chain_pem(state, certs, name).encode())
    direct.write(layout.TRUST_BUNDLE, bundle.trust_bundle(state, certs).encode())
    bundle.write_crl_bundle(repo, state, direct)
    state.serial = max(state.serial, begin.base_serial + 1)
    direct.write("out/state.json", state.to_json().encode())
    if sealing is not None:
        assert sealed_state is not None
        sealing.recover(repo, Invariants.of(sealed_state), state, ts(now) if now else ops[-1].at)
    Journal(repo).discard()
    return Recovery([op for op in ops if op.changes], direct.touched)
