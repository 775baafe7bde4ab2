"""The files of a journaled step, and finishing an apply that was killed.

Every step of an apply is journaled before its files are written; :func:`replay`
writes (again) the files of one step, so a journal left by a killed apply can be
finished by the next one, byte for byte what the killed one would have written.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from compiler import layout
from compiler.apply import bundle
from compiler.apply.writer import DirectWriter, PathRecorder, Writer
from compiler.state import Invariants, Journal, Sealing, load_state, load_with_journal, ts

Op = dict[str, Any]  # one journal line (JSON)


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def replay(writer: Writer, op: Op) -> None:
    """Write the files of one journaled step (idempotent)."""
    kind = op["op"]
    if kind == "issued":
        if op.get("remove_key"):
            writer.remove(layout.key_path(op["name"]))
        writer.write(layout.cert_path(op["name"]), op["cert_pem"].encode())
        if op.get("cert_der"):
            writer.write(layout.der_path(op["name"]), _unb64(op["cert_der"]))
        if op.get("key_doc"):
            writer.write(layout.key_path(op["name"]), op["key_doc"].encode())
    elif kind == "revoked":
        if op.get("remove_files"):
            for rel in (
                layout.cert_path(op["name"]),
                layout.chain_path(op["name"]),
                layout.der_path(op["name"]),
                layout.key_path(op["name"]),
            ):
                writer.remove(rel)
    elif kind == "moved":
        for fn in (
            layout.cert_path,
            layout.chain_path,
            layout.der_path,
            layout.key_path,
            layout.crl_path,
            lambda n: layout.crl_path(n, pem=True),
            layout.responder_cert_path,
            layout.responder_key_path,
        ):
            writer.rename(fn(op["from"]), fn(op["to"]))
    elif kind == "responder":
        writer.write(layout.responder_cert_path(op["authority"]), op["cert_pem"].encode())
        writer.write(layout.responder_key_path(op["authority"]), op["key_doc"].encode())
    elif kind == "responder_retired":
        writer.remove(layout.responder_cert_path(op["authority"]))
        writer.remove(layout.responder_key_path(op["authority"]))
    elif kind == "reencrypted":
        rel = layout.responder_key_path(op["authority"]) if op.get("authority") else layout.key_path(op["name"])
        writer.write(rel, op["key_doc"].encode())
    elif kind == "crl":
        if op.get("der"):
            der = _unb64(op["der"])
            writer.write(layout.crl_path(op["authority"]), der)
            crl_obj = x509.load_der_x509_crl(der)
            writer.write(layout.crl_path(op["authority"], pem=True), crl_obj.public_bytes(serialization.Encoding.PEM))
        for rel in op.get("removed", []):  # an authority that signs no more (planned cleanup)
            writer.remove(rel)
    elif kind == "ocsp":
        if op.get("moved_from"):
            writer.rename(op["moved_from"], op["info"]["file"])
        if op.get("der"):
            writer.write(op["info"]["file"], _unb64(op["der"]))
        if op.get("removed"):
            writer.remove(op["removed"])


@dataclass
class Recovery:
    """What finishing an interrupted apply did: its steps and the paths it touched."""

    ops: list[Op] = field(default_factory=list)
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
    if not any(op["op"] not in ("begin", "commit") for op in ops):
        Journal(repo).discard()  # killed before its first step: nothing to finish
        return Recovery()
    if sealing is not None:  # before writing anything: out/ differs from the seal only where we were writing
        planned = PathRecorder()
        for op in ops:
            replay(planned, op)
        planned.touched.update(layout.chain_path(n) for n in state.active_names())
        planned.touched.update((layout.TRUST_BUNDLE, layout.CRL_BUNDLE, "out/state.json"))
        sealing.check_recovery(ops[0], planned.touched)
    bundle.clean_staging(repo)
    certs = bundle.Certs(repo)
    direct = DirectWriter(repo)
    for op in ops:
        replay(direct, op)
    for name in state.active_names():  # intermediates may have changed under anyone
        direct.write(layout.chain_path(name), bundle.chain_pem(state, certs, name).encode())
    direct.write(layout.TRUST_BUNDLE, bundle.trust_bundle(state, certs).encode())
    bundle.write_crl_bundle(repo, state, direct)
    state.serial = max(state.serial, ops[0]["base_serial"] + 1)
    direct.write("out/state.json", state.to_json().encode())
    if sealing is not None:
        assert sealed_state is not None
        sealing.recover(repo, Invariants.of(sealed_state), state, ts(now) if now else ops[-1].get("at", ""))
    Journal(repo).discard()
    return Recovery([op for op in ops if op["op"] not in ("begin", "commit")], direct.touched)
