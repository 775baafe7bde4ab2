"""The keys an apply decrypts, and what each must match, settled before anything is signed.

Every existing key a plan signs with is decrypted up front (a missing identity fails
before anything is written), checked against the public key and the SOPS rule the
(sealed) state records for its file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compiler import layout
from compiler.apply.bundle import Certs
from compiler.keys.keystore import KeyHandle, Keystore
from compiler.model.errors import fail
from compiler.plan import Action, KeyDisposition, Plan
from compiler.spec import EffectiveSpec
from compiler.spec.sops_rules import SopsRule
from compiler.state import Record, State
from compiler.x509.csr import CsrError, load_csr


def signers_needed(plan: Plan, spec: EffectiveSpec) -> list[tuple[str, str]]:
    """Existing keys this plan signs with, as (name, key file): decrypted up front, so a
    missing identity fails before anything is written."""
    changes = {c.name: c for c in plan.changes if c.action != Action.REVOKE}
    new_keys = {n for n, c in changes.items() if c.key == KeyDisposition.NEW}
    needed: list[tuple[str, str]] = []

    def need(name: str, rel: str) -> None:
        if (name, rel) not in needed:
            needed.append((name, rel))

    for c in changes.values():
        entry = spec.entries[c.name]
        signer = c.name if entry.issuer is None else entry.issuer
        if signer not in new_keys:
            need(signer, layout.key_path(signer))
    for pub in plan.crls + plan.responders:
        if pub.name not in new_keys:
            need(pub.name, layout.key_path(pub.name))
    new_responders = {p.name for p in plan.responders}
    for pub in plan.ocsp:
        assert pub.issuer is not None  # an OCSP publication names its issuer
        ca = spec.entries[pub.issuer].ca
        assert ca is not None  # an issuer is an authority
        if ca.ocsp_signer == "self" or pub.signer == "self":
            if pub.issuer not in new_keys:
                need(pub.issuer, layout.key_path(pub.issuer))
        elif pub.issuer not in new_responders:
            need(pub.issuer, layout.responder_key_path(pub.issuer))
    return needed


def recorded_key_files(state: State, moves: Sequence[tuple[str, str]] = ()) -> dict[str, Record]:
    """Key file -> the (sealed) state's record of the key in it: every active certificate
    and delegated responder. A name being moved has its record under the old name, its
    file at either."""
    out = {layout.key_path(n): r for n in state.active_names() if (r := state.active(n)) is not None}
    for n in state.revoked_signers():  # revoked authorities keep their key: they sign their CRL and OCSP on
        out[layout.key_path(n)] = state.certificates[n][0]
    for a in state.responders:
        resp = state.responder(a)
        if resp is not None:
            out[layout.responder_key_path(a)] = resp
    for old, new in moves:
        for path in (layout.key_path, layout.responder_key_path):
            if path(old) in out:
                out[path(new)] = out[path(old)]
    return out


def recorded_rules(
    state: State, moves: Sequence[tuple[str, str]] = (), files: dict[str, Record] | None = None
) -> dict[str, SopsRule | None]:
    """Key file -> the SOPS rule the state records it was encrypted under (None: not
    recorded by an older pkic). A key file whose own metadata names any other master
    key is refused before sops is started: it would contact that backend with CI's
    credentials."""

    def rule(rec: Record) -> SopsRule | None:
        kr = rec.get("key_rules")
        return state.rules.get(kr[-1]) if isinstance(kr, list) and kr else None

    return {rel: rule(r) for rel, r in (recorded_key_files(state, moves) if files is None else files).items()}


def recorded_keys(state: State, moves: Sequence[tuple[str, str]] = (), files: dict[str, Record] | None = None) -> dict[str, str]:
    """Key file -> the public key the state records for it: a decrypted key must match.
    ``files``: recorded_key_files of the same state and moves, made once for both."""
    return {rel: r["public_key_sha256"] for rel, r in (recorded_key_files(state, moves) if files is None else files).items()}


def authority_signer(name: str, store: Keystore, handles: dict[str, KeyHandle]) -> KeyHandle:
    """An authority's key: made in this apply (``handles``), or decrypted (once) by the store."""
    return handles.get(name) or store.load(name)


def unlock(repo: Path, plan: Plan, spec: EffectiveSpec, state: State, store: Keystore, sealed: bool, certs: Certs) -> None:
    """Every check that needs a key or an input file, before the first signature: the
    store told what each key file must hold and may be encrypted under, every existing
    signing key decrypted, every CSR and kept certificate read."""
    store.check_config()
    files = recorded_key_files(state, plan.moves)  # (once for both: 100,000 records)
    store.expected = recorded_keys(state, plan.moves, files)
    store.allowed = recorded_rules(state, plan.moves, files)
    store.trust_recorded = sealed
    store.planned = {rel: plan.rules[d] for rel, d in plan.rule_of.items()}
    if spec.publish.ocsp:
        layout.check_dir(repo, spec.publish.ocsp_dir)
    store.check_encrypts(
        [layout.key_path(c.name) for c in plan.changes if c.action != Action.REVOKE and c.key == KeyDisposition.NEW]
        + [layout.responder_key_path(p.name) for p in plan.responders]
        + [r.path for r in plan.reencrypt]
    )
    renamed = {new: old for old, new in plan.moves}  # decrypted before the move step renames the files
    for name, rel in signers_needed(plan, spec) + [(r.name, r.path) for r in plan.reencrypt]:
        if name in renamed and rel == layout.key_path(name):
            store.remember(rel, store.load(name, layout.key_path(renamed[name])))
        elif name in renamed and rel == layout.responder_key_path(name):
            store.remember(rel, store.load(name, layout.responder_key_path(renamed[name])))
        else:
            store.load(name, rel)
    for c in plan.changes:  # CSRs and certificates whose key is kept must be readable now
        if c.key == "external":
            entry = spec.entries[c.name]  # (a revocation may be of a name no longer in the spec)
            assert entry.csr_path is not None  # an external key comes from a CSR
            try:
                load_csr(repo / entry.csr_path, repo)
            except CsrError as exc:
                raise fail(entry.csr_path, str(exc)) from None
        if c.action != Action.REVOKE and c.key == KeyDisposition.KEEP:
            certs.get(c.name)
