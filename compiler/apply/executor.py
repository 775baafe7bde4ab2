"""Apply: carry out a plan, parents first, and nothing more.

Each certificate is signed in memory; its step (record, certificate, sealed key) is
appended to the journal *before* any file is written, then the files are written
atomically. A killed apply therefore leaves either a complete journal line (the next
apply rewrites its files from it) or nothing at all for that step.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from compiler import layout
from compiler.apply import bundle
from compiler.keys import keystore
from compiler.keys.keystore import KeyHandle, Keystore
from compiler.keys.sops import rule_digest
from compiler.model.errors import PkicError, fail
from compiler.plan import Action, KeyDisposition, Plan, PublicationKind
from compiler.spec.spec import EffectiveSpec
from compiler.state.seal import Invariants, Seal, Sealing
from compiler.state.store import JOURNAL_PATH, Journal, State, load_state, load_with_journal, new_lineage, parse_ts, ts
from compiler.x509.build import BACKDATE, IssuerRef, Revoked, build, ocsp_response, responder_certificate
from compiler.x509.build import crl as build_crl
from compiler.x509.csr import CsrError, load_csr


@dataclass
class ApplyResult:
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    crls: list[str] = field(default_factory=list)
    responders: list[str] = field(default_factory=list)
    ocsp: int = 0
    ocsp_removed: int = 0  # published responses removed: publish.ocsp is false
    responders_retired: list[str] = field(default_factory=list)
    reencrypted: list[str] = field(default_factory=list)  # key files re-encrypted under a new rule
    touched: set = field(default_factory=set)  # paths written, removed or renamed
    files_written: int = 0
    state_serial: int = 0
    workers: int = 0  # worker processes that signed (0: all in the main process)
    signed_in_workers: int = 0
    seal: Seal | None = None  # the seal written by this apply


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
        self._pems: dict[str, str] = {}

    def get(self, name: str) -> x509.Certificate:
        if name not in self._certs:
            pem = bundle.read_text(self.repo, bundle.cert_path(name))
            if pem is None:
                raise fail(
                    bundle.cert_path(name),
                    f"the certificate of '{name}' is missing",
                    f"restore it from git (`git checkout -- {bundle.cert_path(name)}`)",
                )
            try:
                self._certs[name] = x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise fail(
                    bundle.cert_path(name),
                    f"the certificate of '{name}' is not a PEM certificate",
                    f"restore it from git (`git checkout -- {bundle.cert_path(name)}`)",
                ) from None
        return self._certs[name]

    def put(self, name: str, cert: x509.Certificate) -> None:
        self._certs[name] = cert
        self._pems.pop(name, None)

    def pem(self, name: str) -> str:
        """The PEM text, encoded once per certificate (chains ask for issuers often)."""
        if name not in self._pems:
            self._pems[name] = _pem(self.get(name))
        return self._pems[name]


_subjects: dict = {}


def _subject_string(cert: x509.Certificate, spec_subject: list) -> str:
    """RFC 4514 form of the subject, once per distinct subject (many leaves share one)."""
    key = tuple(tuple(a) for a in spec_subject)
    if key not in _subjects:
        _subjects[key] = cert.subject.rfc4514_string()
    return _subjects[key]


def make_record(
    name: str,
    entry,
    cert: x509.Certificate,
    issuer_rec: dict | None,
    action: str,
    reasons: list[str],
    key_source: str,
    now: datetime,
    public_sha256: str | None = None,
    key_id: bytes | None = None,
    issuer_key_id: bytes | None = None,
) -> dict:
    ski = key_id or cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    aki = issuer_key_id or cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return {
        "name": name,
        "kind": entry.kind,
        "status": "active",
        "serial": _hex(cert.serial_number),
        "subject": _subject_string(cert, entry.spec["subject"]),
        "issuer": entry.issuer,
        "issuer_serial": issuer_rec["serial"] if issuer_rec else None,
        "issuer_key_id": _hex(aki),
        "key_id": _hex(ski),
        "key_type": entry.key_type,
        "key_source": key_source,
        "public_key_sha256": public_sha256 or keystore.public_key_sha256(cert.public_key()),
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


def write_crl_bundle(repo: Path, state: State, writer) -> None:
    """out/trust/crls.pem from the CRLs in out/crl/ (removed when there is none)."""
    data = bundle.crl_bundle(repo, state)
    if data:
        writer.write(bundle.CRL_BUNDLE, data)
    elif layout.exists(repo, bundle.CRL_BUNDLE):
        writer.remove(bundle.CRL_BUNDLE)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class _Direct:
    """The Writer interface, synchronously (recovery)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.touched: set[str] = set()

    # every path of a replayed step counts as touched, even when the killed apply had
    # already written it: it changed in this apply, and belongs in its commit
    def write(self, rel: str, data: bytes) -> None:
        bundle.write_atomic(self.repo, rel, data)
        self.touched.add(rel)

    def rename(self, old: str, new: str) -> None:
        self.touched.update((old, new))
        bundle.rename(self.repo, old, new)

    def remove(self, rel: str) -> bool:
        self.touched.add(rel)
        return bundle.remove(self.repo, rel)


def _replay(writer, op: dict) -> None:
    """Write the files of one journaled step (idempotent)."""
    kind = op["op"]
    if kind == "issued":
        if op.get("remove_key"):
            writer.remove(keystore.key_path(op["name"]))
        writer.write(bundle.cert_path(op["name"]), op["cert_pem"].encode())
        if op.get("cert_der"):
            writer.write(bundle.der_path(op["name"]), _unb64(op["cert_der"]))
        if op.get("key_doc"):
            writer.write(keystore.key_path(op["name"]), op["key_doc"].encode())
    elif kind == "revoked":
        if op.get("remove_files"):
            for rel in (
                bundle.cert_path(op["name"]),
                bundle.chain_path(op["name"]),
                bundle.der_path(op["name"]),
                keystore.key_path(op["name"]),
            ):
                writer.remove(rel)
    elif kind == "moved":
        for fn in (
            bundle.cert_path,
            bundle.chain_path,
            bundle.der_path,
            keystore.key_path,
            bundle.crl_path,
            lambda n: bundle.crl_path(n, pem=True),
            bundle.responder_cert_path,
            keystore.responder_key_path,
        ):
            writer.rename(fn(op["from"]), fn(op["to"]))
    elif kind == "responder":
        writer.write(bundle.responder_cert_path(op["authority"]), op["cert_pem"].encode())
        writer.write(keystore.responder_key_path(op["authority"]), op["key_doc"].encode())
    elif kind == "responder_retired":
        writer.remove(bundle.responder_cert_path(op["authority"]))
        writer.remove(keystore.responder_key_path(op["authority"]))
    elif kind == "reencrypted":
        rel = keystore.responder_key_path(op["authority"]) if op.get("authority") else keystore.key_path(op["name"])
        writer.write(rel, op["key_doc"].encode())
    elif kind == "crl":
        der = _unb64(op["der"])
        writer.write(bundle.crl_path(op["authority"]), der)
        crl_obj = x509.load_der_x509_crl(der)
        writer.write(bundle.crl_path(op["authority"], pem=True), crl_obj.public_bytes(serialization.Encoding.PEM))
    elif kind == "ocsp":
        if op.get("moved_from"):
            writer.rename(op["moved_from"], op["info"]["file"])
        if op.get("der"):
            writer.write(op["info"]["file"], _unb64(op["der"]))
        if op.get("removed"):
            writer.remove(op["removed"])


class _Paths:
    """The Writer interface, recording paths only: what replaying a journal would touch."""

    def __init__(self) -> None:
        self.touched: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        self.touched.add(rel)

    def rename(self, old: str, new: str) -> None:
        self.touched.update((old, new))

    def remove(self, rel: str) -> bool:
        self.touched.add(rel)
        return True


@dataclass
class Recovery:
    """What finishing an interrupted apply did: its steps and the paths it touched."""

    ops: list = field(default_factory=list)
    touched: set = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ops)


def finish_interrupted(repo: Path, sealing: Sealing | None = None, now: datetime | None = None) -> Recovery:
    """Complete an apply that was killed: rewrite its files from the journal, fold it,
    and (sealed repos) seal the result, once it is proven that out/ differs from the
    last seal only where the journal says this machine was writing."""
    if not (repo / JOURNAL_PATH).exists():
        return Recovery()
    sealed_state = load_state(repo) if sealing is not None else None
    state, ops = load_with_journal(repo)
    if not ops:
        return Recovery()
    if not any(op["op"] not in ("begin", "commit") for op in ops):
        Journal(repo).discard()  # killed before its first step: nothing to finish
        return Recovery()
    if sealing is not None:  # before writing anything: out/ differs from the seal only where we were writing
        planned = _Paths()
        for op in ops:
            _replay(planned, op)
        planned.touched.update(bundle.chain_path(n) for n in state.active_names())
        planned.touched.update((bundle.TRUST_BUNDLE, bundle.CRL_BUNDLE, "out/state.json"))
        sealing.check_recovery(ops[0], planned.touched)
    bundle.clean_staging(repo)
    certs = _Certs(repo)
    direct = _Direct(repo)
    for op in ops:
        _replay(direct, op)
    for name in state.active_names():  # intermediates may have changed under anyone
        direct.write(bundle.chain_path(name), chain_pem(state, certs, name).encode())
    direct.write(bundle.TRUST_BUNDLE, trust_bundle(state, certs).encode())
    write_crl_bundle(repo, state, direct)
    state.serial = max(state.serial, ops[0]["base_serial"] + 1)
    direct.write("out/state.json", state.to_json().encode())
    if sealing is not None:
        assert sealed_state is not None
        sealing.recover(repo, Invariants.of(sealed_state), state, ts(now) if now else ops[-1].get("at", ""))
    Journal(repo).discard()
    return Recovery([op for op in ops if op["op"] not in ("begin", "commit")], direct.touched)


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
        if point == "interrupt":  # Ctrl-C, as a terminal sends it: to the whole process group
            import signal

            os.killpg(0, signal.SIGINT)
            return
        os._exit(137)


def _signers_needed(plan: Plan, spec: EffectiveSpec) -> list[tuple[str, str]]:
    """Existing keys this plan signs with, as (name, key file): decrypted up front, so a
    missing identity fails before anything is written."""
    changes = {c.name: c for c in plan.changes if c.action != Action.REVOKE}
    new_keys = {n for n, c in changes.items() if c.key == "new"}
    needed: list[tuple[str, str]] = []

    def need(name: str, rel: str) -> None:
        if (name, rel) not in needed:
            needed.append((name, rel))

    for c in changes.values():
        entry = spec.entries[c.name]
        signer = c.name if entry.issuer is None else entry.issuer
        if signer not in new_keys:
            need(signer, keystore.key_path(signer))
    for pub in plan.crls + plan.responders:
        if pub.name not in new_keys:
            need(pub.name, keystore.key_path(pub.name))
    new_responders = {p.name for p in plan.responders}
    for pub in plan.ocsp:
        ca = spec.entries[pub.issuer].ca
        if ca.ocsp_signer == "self" or pub.signer == "self":
            if pub.issuer not in new_keys:
                need(pub.issuer, keystore.key_path(pub.issuer))
        elif pub.issuer not in new_responders:
            need(pub.issuer, keystore.responder_key_path(pub.issuer))
    return needed


def execute(
    repo: Path, plan: Plan, spec: EffectiveSpec, state: State, store: Keystore, now: datetime, sealing: Sealing | None = None
) -> ApplyResult:
    result = ApplyResult()
    if plan.empty:
        result.state_serial = state.serial
        return result
    store.check_config()
    store.expected = recorded_keys(state, plan.moves)
    store.allowed = recorded_rules(state, plan.moves)
    store.trust_recorded = sealing is not None
    store.planned = {rel: plan.rules[d] for rel, d in plan.rule_of.items()}
    if spec.publish.ocsp:
        layout.check_dir(repo, spec.publish.ocsp_dir)
    store.check_encrypts(
        [keystore.key_path(c.name) for c in plan.changes if c.action != Action.REVOKE and c.key == KeyDisposition.NEW]
        + [keystore.responder_key_path(p.name) for p in plan.responders]
        + [r.path for r in plan.reencrypt]
    )
    renamed = {new: old for old, new in plan.moves}  # decrypted before the move step renames the files
    for name, rel in _signers_needed(plan, spec) + [(r.name, r.path) for r in plan.reencrypt]:
        if name in renamed and rel == keystore.key_path(name):
            store.remember(rel, store.load(name, keystore.key_path(renamed[name])))
        elif name in renamed and rel == keystore.responder_key_path(name):
            store.remember(rel, store.load(name, keystore.responder_key_path(renamed[name])))
        else:
            store.load(name, rel)
    certs = _Certs(repo)
    for c in plan.changes:  # CSRs and certificates whose key is kept must be readable now
        if c.key == "external":
            try:
                load_csr(repo / spec.entries[c.name].csr_path, repo)
            except CsrError as exc:
                raise fail(spec.entries[c.name].csr_path, str(exc)) from None
        if c.action != Action.REVOKE and c.key == KeyDisposition.KEEP:
            certs.get(c.name)
    lineage = state.lineage or new_lineage()
    journal = Journal(repo)
    begin = {"op": "begin", "lineage": lineage, "base_serial": state.serial, "plan": plan.digest, "at": ts(now)}
    if sealing is not None:
        # what recovery needs to tell our own unfinished writes from anyone else's
        begin["seal"] = sealing.report.seal.digest if sealing.report.seal else None
        begin["listing"] = {p: f"{m} {b}" for p, (m, b) in sealing.listing(repo).items()}
    journal.append(begin)
    state.lineage = lineage
    done = [False]
    # every file below is written after its journal step, or (chains, trust bundle)
    # rewritten by recovery from the state: new ones may be created in place
    writer = bundle.Writer(repo, int(os.environ.get("PKIC_WRITE_THREADS", "0")), new_in_place=True)
    writer.blob_algo = sealing.algo if sealing is not None else None
    try:
        _run(repo, plan, spec, state, store, now, journal, certs, result, done, writer)
    finally:
        # on success, and on a failure half-way (say, sops refusing one key): record
        # what was done, so out/ and the state agree and the next plan starts from it
        try:
            if done[0]:
                if len(done) > 1:  # interrupted (Ctrl-C) between journaling a step and folding it in
                    _replay(writer, done[1])
                    state.apply_op(done[1])
                    if done[1]["op"] == "issued" and done[1]["name"] not in result.issued:
                        result.issued.append(done[1]["name"])  # its chain file is written below
                    del done[1:]
                _finish(repo, plan, state, certs, journal, now, result, writer, sealing)
            else:
                journal.discard()
        finally:
            writer.close()
            result.files_written = writer.written
            result.touched = set(writer.touched)
    result.state_serial = state.serial
    return result


def _step(journal: Journal, writer, state: State, op: dict, done: list) -> None:
    """Journal a step, then write its files, then fold it into the state in memory."""
    journal.append(op)
    done[0] = True
    done[1:] = [op]  # journaled, not yet folded into the state
    if op["op"] == "issued":
        _fault("journal")
        _fault("interrupt")
    _replay(writer, op)
    if op["op"] == "issued" and os.environ.get("PKIC_FAULT", "").startswith("files"):
        writer.flush()
        _fault("files")
    state.apply_op(op)
    del done[1:]


def _run(repo, plan, spec, state, store, now, journal, certs, result, done, writer) -> None:
    at = ts(now)
    for old, new in plan.moves:
        _step(journal, writer, state, {"op": "moved", "from": old, "to": new, "at": at}, done)
        result.moved.append((old, new))
    for comp in plan.compromises:
        _step(journal, writer, state, {"op": "compromised", "entry": {**comp, "applied_at": at}, "at": at}, done)
    if plan.settings != state.settings:  # new authorities and moves too: every entry's settings stay recorded
        _step(journal, writer, state, {"op": "settings", "settings": plan.settings, "at": at}, done)
    for r in plan.reencrypt:  # under a fresh data key, for the rule's master keys only
        handle = store.load(r.name, r.path)
        authority = r.name[: -len(" OCSP responder")] if r.path.startswith(keystore.KEYS_DIR + "/ocsp-responders/") else None
        doc = store.seal(r.name, handle, r.path)
        digest = plan.rule_of[r.path]
        _step(
            journal,
            writer,
            state,
            {
                "op": "reencrypted",
                "name": r.name if authority is None else authority,
                "authority": authority,
                "key_doc": doc,
                "rule": digest,
                "rules": {digest: plan.rules[digest]},
                "public_key_sha256": keystore.public_key_sha256(handle.public_key()),
                "key_file_sha256": hashlib.sha256(doc.encode()).hexdigest(),
                "at": at,
            },
            done,
        )
        result.reencrypted.append(r.path)

    handles: dict[str, KeyHandle] = {}
    changes = plan.changes
    jobs = _jobs()
    i = 0
    while i < len(changes):
        run = _parallel_run(changes, i, spec) if jobs > 0 else 0
        if run >= _parallel_min():
            batch = changes[i : i + run]
            refs = _issuer_refs(batch, spec, store, certs, handles)
            result.workers = max(result.workers, jobs)
            for change, (der, key_doc) in zip(batch, _sign_in_workers(batch, spec, store, refs, now, jobs), strict=True):
                cert = x509.load_der_x509_certificate(der)
                entry = spec.entries[change.name]
                _issued(
                    change,
                    entry,
                    cert,
                    cert.public_key(),
                    refs[entry.issuer][1],
                    key_doc,
                    "generated",
                    state,
                    journal,
                    writer,
                    certs,
                    result,
                    done,
                    now,
                    store.planned,
                )
                result.signed_in_workers += 1
            i += run
            continue
        change = changes[i]
        i += 1
        name = change.name
        if change.action == Action.REVOKE:
            _revoke_steps(change, journal, writer, state, done, at, remove_own_files=True)
            result.revoked.append(name)
            continue
        entry = spec.entries[name]
        if change.key == "new":
            handle = keystore.generate(entry.key_type)
            public = handle.public_key()
        elif change.key == "external":
            handle = None
            try:
                public = load_csr(repo / entry.csr_path, repo).public_key
            except CsrError as exc:
                raise fail(entry.csr_path, str(exc)) from None
        else:
            handle = None
            public = certs.get(name).public_key()
            if keystore.public_key_sha256(public) != state.active(name)["public_key_sha256"]:
                raise fail(bundle.cert_path(name), f"the certificate of '{name}' does not match the state", "restore out/ from git")
        if entry.issuer is None:
            signer = handle if handle is not None else store.load(name)
            issuer_ref = None
        else:
            signer = _authority_signer(entry.issuer, store, handles)
            issuer_ref = IssuerRef.from_certificate(certs.get(entry.issuer), spec.entries[entry.issuer].key_type)
        cert = keystore.sign(build(entry, public, issuer_ref, x509.random_serial_number(), now), signer)
        key_doc = store.seal(name, handle) if handle is not None else None
        if handle is not None and entry.kind == "authority":
            handles[name] = handle
        source = "generated" if handle else ("csr" if change.key == "external" else "kept")
        _issued(change, entry, cert, public, issuer_ref, key_doc, source, state, journal, writer, certs, result, done, now, store.planned)

    _publish(repo, plan, spec, state, store, now, journal, certs, result, done, handles, writer)


def _issued(
    change, entry, cert, public, issuer_ref, key_doc, source, state, journal, writer, certs, result, done, now, store_rules=None
) -> None:
    """Record a signed certificate: its state record and journal step, then its files."""
    name = change.name
    at = ts(now)
    issuer_rec = state.active(entry.issuer) if entry.issuer else None
    key_id = x509.SubjectKeyIdentifier.from_public_key(public).digest
    issuer_key_id = issuer_ref.key_id if issuer_ref else key_id
    record = make_record(
        name,
        entry,
        cert,
        issuer_rec,
        change.action,
        [r.code for r in change.reasons],
        source,
        now,
        keystore.public_key_sha256(public),
        key_id,
        issuer_key_id,
    )
    rules = None
    if key_doc is not None:
        record["key_file_sha256"] = hashlib.sha256(key_doc.encode()).hexdigest()
        rule = store_rules[keystore.key_path(name)]
        digest = rule_digest(rule)
        record["key_rules"] = [digest]
        rules = {digest: rule}
    elif change.key == "keep" and state.active(name):
        prev = state.active(name)
        if prev.get("key_file_sha256"):
            record["key_file_sha256"] = prev["key_file_sha256"]
        if prev.get("key_rules"):
            record["key_rules"] = list(prev["key_rules"])
    op = {"op": "issued", "name": name, "record": record, "cert_pem": _pem(cert), "key_doc": key_doc, "at": at}
    if rules:
        op["rules"] = rules
    if change.key == "external":
        op["remove_key"] = True  # the key lives on its host; an old generated one goes
    if entry.kind == "authority":
        op["cert_der"] = _b64(cert.public_bytes(serialization.Encoding.DER))
    certs.put(name, cert)
    _step(journal, writer, state, op, done)
    result.issued.append(name)
    _revoke_steps(change, journal, writer, state, done, at, remove_own_files=False)


def _revoke_steps(change, journal, writer, state, done, at: str, remove_own_files: bool) -> None:
    """Journal and carry out the revocations a change brings (its own files go only
    when the change is the revocation of the entry itself)."""
    # a revocation takes effect a minute before the apply, like thisUpdate: the CRL and
    # OCSP responses signed now list it at a date no later than their own thisUpdate,
    # and every later one at the same date
    revoked_at = ts(parse_ts(at) - BACKDATE)
    for r in change.revokes:
        op = {
            "op": "revoked",
            "name": r["name"],
            "serial": r["serial"],
            "reason": r["reason"],
            "invalidity": r.get("invalidity"),
            # the files are the latest record's: an earlier certificate revoked with it takes none along
            "remove_files": (
                remove_own_files
                and r["name"] == change.name
                and not r.get("keeps_signing")
                and bool(state.certificates.get(r["name"]))
                and state.certificates[r["name"]][0]["serial"] == r["serial"]
            ),
            "revoked_at": revoked_at,
            "at": at,
        }
        if r.get("keeps_signing"):  # an authority: its certificate and key stay, to sign its CRL and OCSP on
            op["keeps_signing"] = True
        _step(journal, writer, state, op, done)


# --------------------------------------------------------------------------- parallel signing
#
# A cold apply spends most of its time per leaf on key generation, signing and sealing
# the key (SOPS). Long runs of new-key leaves are handed to forked worker processes:
# each worker inherits the issuers' signing handles (in memory, never through a pipe
# or a file), generates the leaf key, signs, seals it, and sends back only the public
# certificate and the encrypted key document. The parent journals and writes them in
# plan order, exactly as the serial path does. Key generation, serial numbers and the
# SOPS data keys come from the OS's random source (OpenSSL reseeds after a fork; age
# and os.urandom read the OS), so forked workers never share randomness; a test checks.

_WORK: dict = {}  # what a forked worker inherits; set in the parent just before the fork


def _jobs() -> int:
    """Worker processes for signing: PKIC_JOBS, or one fewer than the available cores
    (the main process is busy too: it journals and writes every file). 0: none."""
    value = os.environ.get("PKIC_JOBS")
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            raise fail(
                "PKIC_JOBS",
                f"'{value}' is not a number",
                "set PKIC_JOBS to a whole number of worker processes (0: sign in the main process)",
            ) from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores - 1 if _can_fork() else 0


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _parallel_min() -> int:
    """The shortest run of leaves worth a pool (starting workers costs ~20 ms)."""
    value = os.environ.get("PKIC_PARALLEL_MIN", "64")
    try:
        return max(1, int(value))
    except ValueError:
        raise fail(
            "PKIC_PARALLEL_MIN", f"'{value}' is not a number", "set it to a whole number of leaves (it is a testing knob; unset is 64)"
        ) from None


def _parallel_run(changes: list, i: int, spec: EffectiveSpec) -> int:
    """How many changes from ``i`` on are leaves with a new key (signed by an issuer
    that no change inside the run touches: only leaves are in it)."""
    n = 0
    for c in changes[i:]:
        if c.action == Action.REVOKE or c.key != KeyDisposition.NEW or c.kind == "authority" or spec.entries[c.name].issuer is None:
            break
        n += 1
    return n


def _issuer_refs(batch: list, spec: EffectiveSpec, store: Keystore, certs: _Certs, handles: dict) -> dict:
    """Signing handle and issuer reference of every issuer in ``batch``, loaded once in
    the parent (so each key is decrypted once, not once per worker)."""
    refs = {}
    for c in batch:
        issuer = spec.entries[c.name].issuer
        if issuer not in refs:
            signer = _authority_signer(issuer, store, handles)
            refs[issuer] = (signer, IssuerRef.from_certificate(certs.get(issuer), spec.entries[issuer].key_type))
    return refs


def _leaf_work(name: str) -> tuple:
    """In a worker: generate, sign, seal one leaf. Returns public and encrypted bytes only."""
    spec, store, refs, now = _WORK["spec"], _WORK["store"], _WORK["refs"], _WORK["now"]
    entry = spec.entries[name]
    _fault("worker")  # tests: PKIC_FAULT=worker:N kills a worker at its Nth leaf
    try:
        handle = keystore.generate(entry.key_type)
        signer, issuer_ref = refs[entry.issuer]
        cert = keystore.sign(build(entry, handle.public_key(), issuer_ref, x509.random_serial_number(), now), signer)
        return cert.public_bytes(serialization.Encoding.DER), store.seal(name, handle), None
    except PkicError as exc:  # e.g. sops refusing the key: reported by the parent, in order
        return None, None, exc.diagnostics


def _worker_init(parent: int) -> None:
    """In each worker: die with the parent, leave Ctrl-C to it, hold no lock."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles it, and stops us
    try:  # Linux: a SIGKILLed parent takes its workers along at once
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    from compiler.state.store import RepoLock

    for fd in RepoLock.held:  # a killed parent's lock must not outlive it in us
        try:
            os.close(fd)
        except OSError:
            pass


def _sign_in_workers(batch: list, spec: EffectiveSpec, store: Keystore, refs: dict, now: datetime, jobs: int):
    """Yield (certificate DER, sealed key document) for each change of ``batch``, in order."""
    import gc
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    _WORK.update(spec=spec, store=store, refs=refs, now=now)
    sys.stdout.flush()  # a forked child flushes its copy of unwritten output on exit
    sys.stderr.flush()
    gc.freeze()  # keep the collector in the workers off the parent's pages (copy-on-write)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init, initargs=(os.getpid(),))
    try:
        # a worker that dies (OOM killer, kill -9) breaks the pool: map raises, no hang
        for der, key_doc, diags in pool.map(_leaf_work, [c.name for c in batch], chunksize=16):
            if diags:
                raise PkicError(diags)
            yield der, key_doc
    except BrokenProcessPool:
        raise fail(
            "apply",
            "a signing worker process died (killed?); the certificates signed before it are recorded",
            "run `pkic apply` again; set PKIC_JOBS=0 to sign in the main process (e.g. when memory is short)",
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        gc.unfreeze()
        _WORK.clear()


def _authority_signer(name: str, store: Keystore, handles: dict) -> KeyHandle:
    return handles.get(name) or store.load(name)


def planned_paths(plan: Plan, spec: EffectiveSpec) -> list[str]:
    """Every path in out/ an apply of ``plan`` may write (for checks made before signing)."""
    paths = ["out.seal", "out/state.json", bundle.TRUST_BUNDLE, bundle.CRL_BUNDLE]
    names = [c.name for c in plan.changes] + list(plan.chain_updates) + [new for _, new in plan.moves]
    for n in names:
        paths += [
            bundle.cert_path(n),
            bundle.chain_path(n),
            bundle.der_path(n),
            keystore.key_path(n),
            bundle.ocsp_path(spec.publish.ocsp_dir, n),
        ]
    for c in plan.changes:  # the replaced certificate's response moves to its serial's name
        if c.serial:
            paths.append(bundle.ocsp_path(spec.publish.ocsp_dir, c.name, c.serial))
    for p in plan.crls:
        paths += [bundle.crl_path(p.name), bundle.crl_path(p.name, pem=True)]
    for p in plan.responders:
        paths += [bundle.responder_cert_path(p.name), keystore.responder_key_path(p.name)]
    for p in plan.ocsp:
        paths += [bundle.ocsp_path(spec.publish.ocsp_dir, p.name)] + (
            [bundle.ocsp_path(spec.publish.ocsp_dir, p.name, p.serial)] if p.serial else []
        )
    paths += [r.path for r in plan.reencrypt]
    return paths


def recorded_key_files(state: State, moves: list[tuple[str, str]] = ()) -> dict[str, dict]:  # type: ignore[assignment]
    """Key file -> the (sealed) state's record of the key in it: every active certificate
    and delegated responder. A name being moved has its record under the old name, its
    file at either."""
    out = {keystore.key_path(n): r for n in state.active_names() if (r := state.active(n)) is not None}
    for n in state.revoked_signers():  # revoked authorities keep their key: they sign their CRL and OCSP on
        out[keystore.key_path(n)] = state.certificates[n][0]
    for a in state.responders:
        resp = state.responder(a)
        if resp is not None:
            out[keystore.responder_key_path(a)] = resp
    for old, new in moves:
        for path in (keystore.key_path, keystore.responder_key_path):
            if path(old) in out:
                out[path(new)] = out[path(old)]
    return out


def recorded_rules(state: State, moves: list[tuple[str, str]] = ()) -> dict[str, dict | None]:  # type: ignore[assignment]
    """Key file -> the SOPS rule the state records it was encrypted under (None: not
    recorded by an older pkic). A key file whose own metadata names any other master
    key is refused before sops is started: it would contact that backend with CI's
    credentials."""

    def rule(rec: dict) -> dict | None:
        kr = rec.get("key_rules")
        return state.rules.get(kr[-1]) if isinstance(kr, list) and kr else None

    return {rel: rule(r) for rel, r in recorded_key_files(state, moves).items()}


def recorded_keys(state: State, moves: list[tuple[str, str]] = ()) -> dict[str, str]:  # type: ignore[assignment]
    """Key file -> the public key the state records for it: a decrypted key must match."""
    return {rel: r["public_key_sha256"] for rel, r in recorded_key_files(state, moves).items()}


def _publish(repo, plan, spec, state, store, now, journal, certs, result, done, handles, writer) -> None:
    """Delegated responders, then CRLs, then OCSP responses."""
    at = ts(now)
    responder_handles: dict[str, KeyHandle] = {}
    responder_certs: dict[str, x509.Certificate] = {}
    for pub in plan.responders:
        a = pub.name
        entry = spec.entries[a]
        handle = keystore.generate(entry.key_type)
        issuer_ref = IssuerRef.from_certificate(certs.get(a), entry.key_type)
        builder = responder_certificate(
            entry, entry.spec["subject"], handle.public_key(), issuer_ref, x509.random_serial_number(), now, entry.ca.responder_lifetime
        )
        cert = keystore.sign(builder, _authority_signer(a, store, handles))
        rel = keystore.responder_key_path(a)
        key_doc = store.seal(f"{a} OCSP responder", handle, rel)
        store.remember(rel, handle)
        responder_handles[a] = handle
        responder_certs[a] = cert
        record = {
            "serial": _hex(cert.serial_number),
            "status": "active",
            "subject": cert.subject.rfc4514_string(),
            "not_before": ts(cert.not_valid_before_utc),
            "not_after": ts(cert.not_valid_after_utc),
            "issuer_key_id": state.active(a)["key_id"],
            "public_key_sha256": keystore.public_key_sha256(cert.public_key()),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
            "issued_at": at,
            "key_file_sha256": hashlib.sha256(key_doc.encode()).hexdigest(),
            "key_rules": [plan.rule_of[rel]],
        }
        _step(
            journal,
            writer,
            state,
            {
                "op": "responder",
                "authority": a,
                "record": record,
                "cert_pem": _pem(cert),
                "key_doc": key_doc,
                "at": at,
                "rules": {plan.rule_of[rel]: plan.rules[plan.rule_of[rel]]},
            },
            done,
        )
        result.responders.append(a)

    for pub in plan.crls:
        a = pub.name
        entry = spec.entries[a]
        arec = state.signer_record(a)  # a revoked authority signs with its revoked record's key
        issuer_ref = IssuerRef.from_certificate(certs.get(a), entry.key_type)
        listed: list[tuple[str, dict]] = []
        for n, recs in state.certificates.items():
            for r in recs:
                if (
                    r["status"] == "revoked"
                    and r.get("issuer") == a
                    and r.get("issuer_key_id") == arec["key_id"]
                    and not r.get("crl_listed_after_expiry")
                ):
                    listed.append((n, r))
        revoked = [
            Revoked(
                int(r["serial"], 16),
                parse_ts(r["revoked_at"]),
                r["revocation_reason"],
                parse_ts(r["invalidity_date"]) if r.get("invalidity_date") else None,
            )
            for _, r in listed
        ]
        previous = state.crls.get(a)
        number = (previous["number"] + 1) if previous else 1
        # thisUpdate a minute back (a verifier a little behind must not find it "not yet
        # valid"); nextUpdate a full crl_lifetime from the signing (or a revoked authority's
        # final date), as the refresh expects
        this_update = now - BACKDATE
        next_update = parse_ts(pub.until) if pub.until else now + entry.ca.crl_lifetime
        crl_obj = keystore.sign(build_crl(issuer_ref, number, revoked, this_update, next_update), _authority_signer(a, store, handles))
        der = crl_obj.public_bytes(serialization.Encoding.DER)
        info = {
            "number": number,
            "this_update": ts(this_update),
            "next_update": ts(next_update),
            "key_id": arec["key_id"],
            "refresh_at": ts(next_update - entry.ca.crl_renew_before),
            "serials": sorted(r["serial"] for _, r in listed),
            "names": sorted({n for n, _ in listed}),
            "sha256": hashlib.sha256(der).hexdigest(),
            "bundled": True,  # out/trust/crls.pem holds it (written at the end of this apply)
        }
        _step(journal, writer, state, {"op": "crl", "authority": a, "info": info, "der": _b64(der), "at": at}, done)
        result.crls.append(a)

    if not spec.publish.ocsp:
        _ocsp_off(plan, state, journal, writer, done, at, result)
        return
    ocsp_dir = spec.publish.ocsp_dir
    # layout first: a name's latest response at <name>.der, older ones by serial, so a
    # new certificate's response never overwrites the previous one's (renamed ones too)
    for name in sorted(set(result.issued) | {new for _, new in result.moved}):
        for i, r in enumerate(state.certificates[name]):
            info = r.get("ocsp")
            if not info or not info.get("file"):
                continue
            want = bundle.ocsp_path(ocsp_dir, name, None if i == 0 else r["serial"])
            if info["file"] != want and info["file"].startswith(ocsp_dir + "/"):
                _step(
                    journal,
                    writer,
                    state,
                    {
                        "op": "ocsp",
                        "name": name,
                        "serial": r["serial"],
                        "info": {**info, "file": want},
                        "moved_from": info["file"],
                        "at": at,
                    },
                    done,
                )
    for pub in plan.ocsp:
        a = pub.issuer
        ca = spec.entries[a].ca
        recs = state.certificates[pub.name]
        rec = recs[0] if pub.serial is None else next(r for r in recs if r["serial"] == pub.serial)
        issuer_cert = certs.get(a)
        issuer_ref = IssuerRef(issuer_cert.subject, bytes.fromhex(rec["issuer_key_id"]), spec.entries[a].key_type)
        revoked = None
        if rec["status"] == "revoked":
            revoked = Revoked(int(rec["serial"], 16), parse_ts(rec["revoked_at"]), rec["revocation_reason"])
        if ca.ocsp_signer == "self" or pub.signer == "self":
            signer_cert, signer, delegated = issuer_cert, _authority_signer(a, store, handles), False
        else:
            signer_cert = responder_certs.get(a) or _responder_cert(repo, a)
            signer = responder_handles.get(a) or store.load(a, keystore.responder_key_path(a))
            delegated = True
        this_update = now - BACKDATE  # as for CRLs
        next_update = parse_ts(pub.until) if pub.until else now + ca.ocsp_lifetime
        response = keystore.sign(
            ocsp_response(issuer_ref, int(rec["serial"], 16), revoked, this_update, next_update, signer_cert, delegated), signer
        )
        der = response.public_bytes(serialization.Encoding.DER)
        latest = recs[0]["serial"] == rec["serial"]
        info = {
            "status": "revoked" if revoked else "good",
            "signer": pub.signer or ca.ocsp_signer,
            "this_update": ts(this_update),
            "next_update": ts(next_update),
            "file": bundle.ocsp_path(ocsp_dir, pub.name, None if latest else rec["serial"]),
            "sha256": hashlib.sha256(der).hexdigest(),
        }
        op = {"op": "ocsp", "name": pub.name, "serial": rec["serial"], "info": info, "der": _b64(der), "at": at}
        previous = (rec.get("ocsp") or {}).get("file")
        if previous and previous != info["file"] and not previous.startswith(ocsp_dir + "/"):
            op["removed"] = previous  # publish.ocsp_dir moved: the old file goes
        _step(journal, writer, state, op, done)
        result.ocsp += 1

    for name, recs in state.certificates.items():
        for r in recs:
            info = r.get("ocsp")
            if info and info.get("file") and parse_ts(r["not_after"]) <= now:
                _step(
                    journal,
                    writer,
                    state,
                    {"op": "ocsp", "name": name, "serial": r["serial"], "info": {**info, "file": None}, "removed": info["file"], "at": at},
                    done,
                )


def _ocsp_off(plan, state, journal, writer, done, at: str, result) -> None:
    """publish.ocsp is false: remove every published response (the state keeps its last
    record, with no file) and retire the delegated responders (certificate and key)."""
    for pub in plan.ocsp_off:
        if pub.kind == PublicationKind.RESPONDER:
            _step(journal, writer, state, {"op": "responder_retired", "authority": pub.name, "at": at}, done)
            result.responders_retired.append(pub.name)
            continue
        rec = next((r for r in state.certificates.get(pub.name, []) if r["serial"] == pub.serial), None)
        info = (rec or {}).get("ocsp") or {}
        if not info.get("file"):
            continue
        _step(
            journal,
            writer,
            state,
            {
                "op": "ocsp",
                "name": pub.name,
                "serial": pub.serial,
                "removed": info["file"],
                "at": at,
                "info": {**info, "file": None, "removed_at": at, "removed_because": "ocsp_off"},
            },
            done,
        )
        result.ocsp_removed += 1


def _responder_cert(repo: Path, authority: str) -> x509.Certificate:
    pem = bundle.read_text(repo, bundle.responder_cert_path(authority))
    if pem is None:
        raise fail(
            bundle.responder_cert_path(authority), f"the OCSP responder certificate of '{authority}' is missing", "restore it from git"
        )
    return x509.load_pem_x509_certificate(pem.encode())


def _finish(repo, plan, state, certs, journal, now, result, writer, sealing: Sealing | None = None) -> None:
    chain_names = set(result.issued) | set(plan.chain_updates) | {new for _, new in plan.moves}
    for name in sorted(chain_names):
        if state.active(name):
            writer.write(bundle.chain_path(name), chain_pem(state, certs, name).encode())
    writer.write(bundle.TRUST_BUNDLE, trust_bundle(state, certs).encode())
    # authorities that left the spec take their CRLs along (a revoked one keeps signing its own)
    left = False
    for name in list(state.crls):
        if state.signer_record(name) is None:
            left |= writer.remove(bundle.crl_path(name))
            left |= writer.remove(bundle.crl_path(name, pem=True))
    if result.crls or left or plan.moves or not layout.exists(repo, bundle.CRL_BUNDLE):
        writer.flush()  # the CRLs signed above are on disk: the bundle is made from them
        write_crl_bundle(repo, state, writer)
    writer.flush()  # every file in place before the state says so
    state.serial += 1
    if sealing is not None:
        broken = sealing.invariants.broken_by(Invariants.of(state))
        if broken:  # a bug guard: never seal a state that undoes what the last seal recorded
            raise fail(
                "out/state.json",
                "refusing to seal a state that " + "; ".join(broken),
                "this is a bug in pkic: report it; out/ is left unsealed",
            )
    journal.append({"op": "commit", "serial": state.serial, "at": ts(now)})
    writer.write("out/state.json", state.to_json().encode(), staged=True)  # recovery reads it: never half-written
    writer.flush()
    if sealing is not None:  # last: the seal covers every file above
        result.seal = sealing.seal_now(repo, writer.touched, state, ts(now), writer.blobs)
    journal.discard()
