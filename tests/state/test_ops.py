"""The journal's steps as classes (compiler/state/ops.py), checked against real journals.

Five applies of the init example (a cold start; a new recipient in .sops.yaml; a move and
a revocation; a declared key compromise; publish.ocsp turned off) are run through the
real CLI with every journal they discard kept, so every kind of step is here as pkic
writes it. Each step must give back its line exactly (``to_json(from_json(d)) == d``),
fold into the state, write its files and name its trailer as the dict-reading code
before the classes did (kept below as the reference: ``_old_fold``, ``_old_files``).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
from conftest import NOW, make_pkic
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from compiler import layout
from compiler.model.errors import PkicError
from compiler.model.stamp import Stamp
from compiler.state import CrlOp, IssuedOp, State, load_state, parse_op
from compiler.state.ops import KINDS
from compiler.state.records import as_json, cert_record, crl_info, ocsp_info

KEEP = '''\
import os, sys
from compiler.state import journal
_discard = journal.Journal.discard
def _keep(self):
    self._fh.flush()
    with open(os.environ["KEEP_JOURNAL"], "ab") as out:
        out.write(self.path.read_bytes())
    _discard(self)
journal.Journal.discard = _keep
from compiler.cli import main
sys.exit(main())
'''


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def applies(tmp_path_factory) -> list[tuple[str, list[str], str]]:
    """Per apply: the state before it, its journal's lines, the state it wrote."""
    base = tmp_path_factory.mktemp("ops")
    pkic = make_pkic(base)
    pkic.ok("init", str(base / "pki"))
    repo = base / "pki"
    (base / "keep.py").write_text(KEEP)
    recipient = pyrage.x25519.Identity.generate().to_public()
    edits = [
        lambda: None,
        lambda: _edit(repo / ".sops.yaml", "    age: ", f"    age: {recipient},"),
        lambda: (
            _edit(repo / "pki.yaml", "  web:\n", "  website:\n"),
            _edit(repo / "pki.yaml", "    uri: [spiffe://example.com/payments]\n", "    uri: [spiffe://example.com/payments]\n    revoke: key_compromise\n"),
            (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + "moved:\n  - {from: web, to: website}\n"),
        ),
        lambda: _edit(repo / "pki.yaml", "    renew_before: 30d\n", "    renew_before: 30d\n    key_compromised: 2026-11-28\n"),
        lambda: _edit(repo / "pki.yaml", "version: 1\n", "version: 1\npublish: {ocsp: false}\n"),
    ]
    days = [27, 27, 28, 29, 30]  # the compromise is declared for the 28th
    out = []
    for i, edit in enumerate(edits):
        edit()
        before = (repo / "out" / "state.json").read_text() if (repo / "out" / "state.json").exists() else ""
        kept = base / f"journal-{i}.jsonl"
        proc = subprocess.run([sys.executable, str(base / "keep.py"), "apply", "--yes", "--now", f"2026-11-{days[i]}T12:00:00Z"],
                              cwd=repo, env={**pkic.env, "KEEP_JOURNAL": str(kept)}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out.append((before, kept.read_text().splitlines(), (repo / "out" / "state.json").read_text()))
    return out


def _state(text: str, tmp: Path) -> State:
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    if text:
        (tmp / "out" / "state.json").write_text(text)
    return load_state(tmp)


def _lines(applies) -> list[str]:
    return [line for _, lines, _ in applies for line in lines]


@pytest.mark.slow
def test_the_journals_hold_every_kind_of_step(applies):
    assert {json.loads(line)["op"] for line in _lines(applies)} == set(KINDS)


def test_every_step_gives_back_its_line(applies):
    for line in _lines(applies):
        d = json.loads(line)
        op = parse_op(d)
        assert type(op).kind == d["op"]
        assert op.to_json() == d, d["op"]
        assert json.dumps(op.to_json(), sort_keys=True, separators=(",", ":")) == line  # the journal's bytes


def test_the_steps_of_the_journal_recorded_before_the_classes_give_back_their_lines():
    """The golden journal (tests/project/test_golden_redesign.py), written by the dict-building code."""
    text = (Path(__file__).parent.parent / "golden" / "redesign" / "expected" / "a2" / "journal.jsonl").read_text()
    decoder, at, kinds = json.JSONDecoder(), 0, set()
    while text[at:].strip():
        d, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        at = end
        assert parse_op(d).to_json() == d
        kinds.add(d["op"])
    assert kinds == {"begin", "moved", "issued", "revoked"}


def test_folding_a_journal_gives_the_state_its_apply_wrote_as_the_old_fold_did(applies, tmp_path):
    for i, (before, lines, after) in enumerate(applies):
        new, old = _state(before, tmp_path / f"new{i}"), _state(before, tmp_path / f"old{i}")
        for line in lines:
            parse_op(json.loads(line)).fold(new)
            _old_fold(old, json.loads(line))
            assert new.to_json() == old.to_json(), line[:80]
        assert new.to_json() == after
        for line in lines:  # folding twice changes nothing
            parse_op(json.loads(line)).fold(new)
        assert new.to_json() == after


class Recorder:
    """A FileSink that writes nothing: the calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def write(self, rel: str, data: bytes) -> None:
        self.calls.append(("write", rel, data.decode("latin-1")))

    def rename(self, old: str, new: str) -> None:
        self.calls.append(("rename", old, new))

    def remove(self, rel: str) -> bool:
        self.calls.append(("remove", rel))
        return True


def test_each_step_writes_its_files_as_the_old_replay_did(applies):
    for line in _lines(applies):
        new, old = Recorder(), Recorder()
        parse_op(json.loads(line)).files(new)
        _old_files(old, json.loads(line))
        assert new.calls == old.calls, line[:80]


def test_each_step_names_its_trailer_as_before(applies):
    named = 0
    for line in _lines(applies):
        d = json.loads(line)
        trailer = parse_op(d).trailer()
        if d["op"] == "issued":
            rec = d["record"]
            verb = {"issue": "Issued", "reissue": "Reissued", "renew": "Renewed"}.get(rec.get("action"), "Issued")
            assert trailer == f"Pki-{verb}: {d['name']} {rec['serial']} {rec['sha256'][:16]}"
        elif d["op"] == "revoked":
            assert trailer == f"Pki-Revoked: {d['name']} {d['serial']} {d['reason']}"
        elif d["op"] == "moved":
            assert trailer == f"Pki-Moved: {d['from']} -> {d['to']}"
        else:
            assert trailer is None
            continue
        named += 1
    assert named == 8


def test_a_step_of_another_kind_or_missing_what_it_folds_is_refused_and_a_file_only_key_may_be_absent(applies):
    with pytest.raises(PkicError, match=r"step 3 is not one this pkic knows \(op 'attested'\)"):
        parse_op({"op": "attested", "name": "web", "at": NOW}, 3)
    with pytest.raises(PkicError, match=r"step 2 \(revoked\) has no 'serial'"):
        parse_op({"op": "revoked", "name": "web", "reason": "superseded", "at": NOW}, 2)
    # plan and status fold a journal without replaying it: a CRL step without its DER folds
    crl = json.loads(next(line for line in _lines(applies) if '"op":"crl"' in line))
    del crl["der"]
    op = parse_op(crl)
    assert isinstance(op, CrlOp) and op.to_json() == crl
    state = State()
    op.fold(state)
    assert as_json(state.crls[crl["authority"]]) == crl["info"]  # its times as stamps in memory
    with pytest.raises(PkicError, match="a crl step has no 'der'"):
        op.files(Recorder())
    issued = parse_op({"op": "issued", "name": "web", "record": {"serial": "01"}, "at": NOW})
    assert isinstance(issued, IssuedOp) and issued.to_json() == {"op": "issued", "name": "web", "record": {"serial": "01"}, "key_doc": None, "at": NOW}


# --------------------------------------------------------------------------- the code before the classes


def _old_fold(self: State, op: dict) -> None:
    """State.apply_op as it was (its records' and times' text parsed into stamps, as the
    state's methods now take them: compiler/model/stamp.py)."""
    kind = op["op"]
    at = Stamp.parse(op["at"])
    if op.get("rules"):
        for d, rule in op["rules"].items():
            self.rules.setdefault(d, rule)
    if kind == "settings":
        self.settings = op["settings"]
    elif kind == "reencrypted":
        self.record_reencrypted(op["name"], op.get("authority"), op["rule"], op["public_key_sha256"], op.get("key_file_sha256"))
    if kind == "issued":
        self.record_issued(op["name"], cert_record(op["record"]), at)
    elif kind == "revoked":
        invalidity = Stamp.parse(op["invalidity"]) if op.get("invalidity") else None
        self.record_revoked(op["name"], op["serial"], op["reason"], Stamp.parse(op.get("revoked_at") or op["at"]), invalidity,
                            bool(op.get("keeps_signing")))
    elif kind == "crl":
        self.record_crl(op["authority"], crl_info(op["info"]))
    elif kind == "ocsp":
        self.record_ocsp(op["name"], op["serial"], ocsp_info(op["info"]))
    elif kind == "responder":
        self.record_responder(op["authority"], cert_record(op["record"]), at)
    elif kind == "responder_retired":
        self.record_responder_retired(op["authority"], at)
    elif kind == "compromised":
        self.record_compromised(op["entry"])
    elif kind == "moved":
        self.record_moved(op["from"], op["to"])
    elif kind == "begin":
        if self.lineage is None:
            self.lineage = op["lineage"]
    elif kind == "commit":
        self.serial = max(self.serial, op["serial"])


def _old_files(writer: Recorder, op: dict) -> None:
    """apply.replay.replay as it was."""
    kind = op["op"]
    if kind == "issued":
        if op.get("remove_key"):
            writer.remove(layout.key_path(op["name"]))
        writer.write(layout.cert_path(op["name"]), op["cert_pem"].encode())
        if op.get("cert_der"):
            writer.write(layout.der_path(op["name"]), base64.b64decode(op["cert_der"]))
        if op.get("key_doc"):
            writer.write(layout.key_path(op["name"]), op["key_doc"].encode())
    elif kind == "revoked":
        if op.get("remove_files"):
            for rel in (layout.cert_path(op["name"]), layout.chain_path(op["name"]), layout.der_path(op["name"]), layout.key_path(op["name"])):
                writer.remove(rel)
    elif kind == "moved":
        for fn in (layout.cert_path, layout.chain_path, layout.der_path, layout.key_path, layout.crl_path,
                   lambda n: layout.crl_path(n, pem=True), layout.responder_cert_path, layout.responder_key_path):
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
        der = base64.b64decode(op["der"])
        writer.write(layout.crl_path(op["authority"]), der)
        writer.write(layout.crl_path(op["authority"], pem=True), x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM))
    elif kind == "ocsp":
        if op.get("moved_from"):
            writer.rename(op["moved_from"], op["info"]["file"])
        if op.get("der"):
            writer.write(op["info"]["file"], base64.b64decode(op["der"]))
        if op.get("removed"):
            writer.remove(op["removed"])
