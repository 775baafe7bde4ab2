"""Apply: carry out a plan, parents first, and nothing more.

Each certificate is signed in memory; its step (record, certificate, sealed key) is
appended to the journal *before* any file is written, then the files are written
atomically. A killed apply therefore leaves either a complete journal line (the next
apply rewrites its files from it) or nothing at all for that step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from . import bundle, keystore
from .errors import fail
from .keystore import Keystore, KeyHandle
from .planner import REVOKE, Plan
from .spec import EffectiveSpec
from .state import Journal, State, load_with_journal, new_lineage, ts
from .x509build import IssuerRef, build


@dataclass
class ApplyResult:
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    files_written: int = 0
    recovered: int = 0
    state_serial: int = 0


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _hex(value: bytes | int) -> str:
    if isinstance(value, int):
        h = format(value, "x")
        return h if len(h) % 2 == 0 else "0" + h
    return value.hex()


class _Certs:
    """Certificates by name: issued in this run, or read once from out/certs."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._certs: dict[str, x509.Certificate] = {}

    def get(self, name: str) -> x509.Certificate:
        if name not in self._certs:
            pem = bundle.read_text(self.repo, bundle.cert_path(name))
            if pem is None:
                raise fail(bundle.cert_path(name), f"the certificate of '{name}' is missing", f"restore it from git (`git checkout -- {bundle.cert_path(name)}`)")
            try:
                self._certs[name] = x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise fail(bundle.cert_path(name), f"the certificate of '{name}' is not a PEM certificate", f"restore it from git (`git checkout -- {bundle.cert_path(name)}`)") from None
        return self._certs[name]

    def put(self, name: str, cert: x509.Certificate) -> None:
        self._certs[name] = cert

    def pem(self, name: str) -> str:
        return _pem(self.get(name))


def make_record(name: str, entry, cert: x509.Certificate, issuer_rec: dict | None, action: str, reasons: list[str], key_source: str, now: datetime) -> dict:
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return {
        "name": name,
        "kind": entry.kind,
        "status": "active",
        "serial": _hex(cert.serial_number),
        "subject": cert.subject.rfc4514_string(),
        "issuer": entry.issuer,
        "issuer_serial": issuer_rec["serial"] if issuer_rec else None,
        "issuer_key_id": _hex(aki),
        "key_id": _hex(ski),
        "key_type": entry.key_type,
        "key_source": key_source,
        "public_key_sha256": keystore.public_key_sha256(cert.public_key()),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "not_before": ts(cert.not_valid_before_utc),
        "not_after": ts(cert.not_valid_after_utc),
        "issued_at": ts(now),
        "action": action,
        "reasons": reasons,
        "spec": entry.spec,
        "spec_digest": entry.digest,
    }


def chain_pem(state: State, certs: _Certs, name: str) -> str:
    parts = [certs.pem(name)]
    rec = state.active(name)
    issuer = rec["issuer"] if rec else None
    while issuer is not None:
        irec = state.active(issuer)
        if irec is None or irec["issuer"] is None:  # stop before the root
            break
        parts.append(certs.pem(issuer))
        issuer = irec["issuer"]
    return "".join(parts)


def trust_bundle(state: State, certs: _Certs) -> str:
    roots = [n for n in sorted(state.active_names()) if state.active(n)["kind"] == "authority" and state.active(n)["issuer"] is None]
    return "".join(certs.pem(n) for n in roots)


def finish_interrupted(repo: Path) -> int:
    """Complete an apply that was killed: rewrite its files from the journal, fold it."""
    state, ops = load_with_journal(repo)
    if not ops:
        return 0
    if not any(op["op"] in ("issued", "revoked", "moved") for op in ops):
        Journal(repo).discard()  # killed before its first step: nothing to finish
        return 0
    bundle.clean_staging(repo)
    certs = _Certs(repo)
    touched: set[str] = set()
    for op in ops:
        if op["op"] == "issued":
            bundle.write_atomic(repo, bundle.cert_path(op["name"]), op["cert_pem"].encode())
            if op.get("key_doc"):
                bundle.write_atomic(repo, keystore.key_path(op["name"]), op["key_doc"].encode())
            touched.add(op["name"])
        elif op["op"] == "revoked":
            for rel in (bundle.cert_path(op["name"]), bundle.chain_path(op["name"]), keystore.key_path(op["name"])):
                bundle.remove(repo, rel)
        elif op["op"] == "moved":
            _move_files(repo, op["from"], op["to"])
    for name in state.active_names():  # intermediates may have changed under anyone
        bundle.write_atomic(repo, bundle.chain_path(name), chain_pem(state, certs, name).encode())
    bundle.write_atomic(repo, bundle.TRUST_BUNDLE, trust_bundle(state, certs).encode())
    state.serial = max(state.serial, ops[0]["base_serial"] + 1)
    bundle.write_atomic(repo, "out/state.json", state.to_json().encode())
    Journal(repo).discard()
    return len(touched)


_fault_counts: dict[str, int] = {}


def _fault(point: str) -> None:
    """Fault injection for the crash-safety tests: PKIC_FAULT=journal:2 kills the
    process (as SIGKILL would: no cleanup) right after the 2nd journal record,
    before that certificate's files are written; files:N after its files."""
    spec = os.environ.get("PKIC_FAULT")
    if not spec:
        return
    where, _, n = spec.partition(":")
    if where != point:
        return
    _fault_counts[point] = _fault_counts.get(point, 0) + 1
    if _fault_counts[point] == int(n or 1):
        os._exit(137)


def _move_files(repo: Path, old: str, new: str) -> None:
    for fn in (bundle.cert_path, bundle.chain_path, keystore.key_path):
        bundle.rename(repo, fn(old), fn(new))


def _signers_needed(plan: Plan, spec: EffectiveSpec) -> list[str]:
    """Existing keys this plan signs with: decrypted up front, so a missing identity
    fails before anything is written."""
    changes = {c.name: c for c in plan.changes if c.action != REVOKE}
    needed = []
    for c in changes.values():
        entry = spec.entries[c.name]
        signer = c.name if entry.issuer is None else entry.issuer
        sc = changes.get(signer)
        if sc is not None and sc.key == "new":
            continue  # generated in this run
        if signer not in needed:
            needed.append(signer)
    return needed


def execute(repo: Path, plan: Plan, spec: EffectiveSpec, state: State, store: Keystore, now: datetime) -> ApplyResult:
    result = ApplyResult()
    if plan.empty:
        result.state_serial = state.serial
        return result
    store.check_config()
    for name in _signers_needed(plan, spec):
        store.load(name)
    certs = _Certs(repo)
    for c in plan.changes:  # certificates whose key is kept must be readable now
        if c.action != REVOKE and c.key == "keep":
            certs.get(c.name)
    lineage = state.lineage or new_lineage()
    journal = Journal(repo)
    journal.append({"op": "begin", "lineage": lineage, "base_serial": state.serial, "plan": plan.digest, "at": ts(now)})
    state.lineage = lineage
    try:
        _run(repo, plan, spec, state, store, now, journal, certs, result)
    finally:
        # on success, and on a failure half-way (say, sops refusing one key): record
        # what was done, so out/ and the state agree and the next plan starts from it
        if result.issued or result.revoked or result.moved or not plan.changes:
            result.files_written += _finish(repo, plan, state, certs, journal, now, result)
        else:
            journal.discard()
    result.state_serial = state.serial
    return result


def _run(repo, plan, spec, state, store, now, journal, certs, result) -> None:
    for old, new in plan.moves:
        journal.append({"op": "moved", "from": old, "to": new, "at": ts(now)})
        _move_files(repo, old, new)
        state.record_moved(old, new)
        result.moved.append((old, new))

    handles: dict[str, KeyHandle] = {}
    for change in plan.changes:
        name = change.name
        if change.action == REVOKE:
            continue
        entry = spec.entries[name]
        if change.key == "new":
            handle = keystore.generate(entry.key_type)
            public = handle.public_key()
        else:
            handle = None
            public = certs.get(name).public_key()
            if keystore.public_key_sha256(public) != state.active(name)["public_key_sha256"]:
                raise fail(bundle.cert_path(name), f"the certificate of '{name}' does not match the state", "restore out/ from git")
        if entry.issuer is None:
            signer = handle if handle is not None else store.load(name)
            issuer_ref, issuer_rec = None, None
        else:
            signer = handles.get(entry.issuer) or store.load(entry.issuer)
            issuer_ref = IssuerRef.from_certificate(certs.get(entry.issuer), spec.entries[entry.issuer].key_type)
            issuer_rec = state.active(entry.issuer)
        builder = build(entry, public, issuer_ref, x509.random_serial_number(), now)
        cert = keystore.sign(builder, signer)
        key_doc = store.seal(name, handle) if handle is not None else None
        if handle is not None and entry.kind == "authority":
            handles[name] = handle
        record = make_record(name, entry, cert, issuer_rec, change.action, [r.code for r in change.reasons], "generated" if handle else "kept", now)
        pem = _pem(cert)
        journal.append({"op": "issued", "name": name, "record": record, "cert_pem": pem, "key_doc": key_doc, "at": ts(now)})
        _fault("journal")
        if key_doc is not None:
            result.files_written += bundle.write_atomic(repo, keystore.key_path(name), key_doc.encode())
        result.files_written += bundle.write_atomic(repo, bundle.cert_path(name), pem.encode())
        _fault("files")
        certs.put(name, cert)
        state.record_issued(name, record, ts(now))
        result.issued.append(name)

    for change in plan.changes:
        if change.action != REVOKE:
            continue
        journal.append({"op": "revoked", "name": change.name, "serial": change.serial, "reason": "cessation_of_operation", "at": ts(now)})
        for rel in (bundle.cert_path(change.name), bundle.chain_path(change.name), keystore.key_path(change.name)):
            result.files_written += bundle.remove(repo, rel)
        state.record_revoked(change.name, change.serial, "cessation_of_operation", ts(now))
        result.revoked.append(change.name)


def _finish(repo, plan, state, certs, journal, now, result) -> int:
    written = 0
    chain_names = set(result.issued) | set(plan.chain_updates) | {new for _, new in plan.moves}
    for name in sorted(chain_names):
        if state.active(name):
            written += bundle.write_atomic(repo, bundle.chain_path(name), chain_pem(state, certs, name).encode())
    written += bundle.write_atomic(repo, bundle.TRUST_BUNDLE, trust_bundle(state, certs).encode())
    state.serial += 1
    journal.append({"op": "commit", "serial": state.serial, "at": ts(now)})
    written += bundle.write_atomic(repo, "out/state.json", state.to_json().encode())
    journal.discard()
    return written
