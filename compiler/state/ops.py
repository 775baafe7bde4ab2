"""The steps of an apply, one class per kind: what the journal holds, line by line.

An apply journals each step before it writes the step's files (see journal.py). Three
things are done with a step, and its class does all three: :meth:`JournalOp.fold` it
into the state, write its files through a :class:`FileSink` (:meth:`JournalOp.files`,
again when a killed apply is finished), and name it in the commit's trailers
(:meth:`JournalOp.trailer`).

:func:`parse_op` reads a journal line into its class; :meth:`JournalOp.to_json` gives
back the same object, key for key, so the journal an apply writes is the one it always
wrote. A key that is only written for some steps (``rules``, ``remove_key``,
``keeps_signing``...) is absent when it has no value, as before; a file's content
(``cert_pem``, ``der``...) may be absent too: a journal folded without being replayed
(plan, status) never needed it, and replaying such a step is refused.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from functools import cache
from typing import Any, ClassVar, Protocol, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from compiler import layout
from compiler.layout import JOURNAL_PATH
from compiler.model.bounded import quote
from compiler.model.errors import PkicError, fail
from compiler.model.stamp import Stamp
from compiler.spec.sops_rules import SopsRule
from compiler.state.records import Compromised, CrlInfo, OcspInfo, Record, Settings, State, as_json, cert_record, crl_info, ocsp_info

Op = dict[str, Any]  # one journal line as JSON, before parse_op
Rules = dict[str, SopsRule]  # rule digest -> the normalised SOPS rule a key file was encrypted under

# the Pki-* trailer verb of the action a certificate record names (its "action")
ISSUE_TRAILERS = {"issue": "Issued", "reissue": "Reissued", "renew": "Renewed"}
ACTION_OF_TRAILER = {verb: action for action, verb in ISSUE_TRAILERS.items()}  # history reads them back


class FileSink(Protocol):
    """Where a step's files go: an apply's atomic writer, recovery's direct one, or a
    recorder of the paths a replay would touch."""

    def write(self, rel: str, data: bytes) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def remove(self, rel: str) -> object: ...


def issued_trailer(name: str, record: Record, action: str | None) -> str:
    return f"Pki-{ISSUE_TRAILERS.get(action or '', 'Issued')}: {name} {record['serial']} {record['sha256'][:16]}"


def revoked_trailer(name: str, serial: str, reason: str) -> str:
    return f"Pki-Revoked: {name} {serial} {reason}"


def moved_trailer(old: str, new: str) -> str:
    return f"Pki-Moved: {old} -> {new}"


@cache
def _keys(cls: type[JournalOp]) -> tuple[tuple[str, str, bool], ...]:
    """A step class's fields: name, key in the line, and whether the line must hold it."""
    return tuple((f.name, cls.renamed.get(f.name, f.name), f.default is MISSING) for f in fields(cls))


def _crl_pem_path(authority: str) -> str:
    return layout.crl_path(authority, pem=True)


# the paths of an entry's files: its certificate's own, and an authority's CRL and responder
_CERT_FILES = (layout.cert_path, layout.chain_path, layout.der_path, layout.key_path)
_AUTHORITY_FILES = (layout.crl_path, _crl_pem_path, layout.responder_cert_path, layout.responder_key_path)


def _fold_rules(state: State, rules: Rules | None) -> None:
    for digest, rule in (rules or {}).items():
        state.rules.setdefault(digest, rule)


@dataclass(frozen=True, kw_only=True)
class JournalOp(ABC):
    """One journaled step. ``at``: the apply's time, as every step records it."""

    kind: ClassVar[str]  # the line's "op"
    changes: ClassVar[bool] = True  # False for begin and commit, which frame an apply's steps
    # keys a line leaves out when they have no value (None, False); every other key is
    # always written, null included, as pkic always wrote them
    sparse: ClassVar[frozenset[str]] = frozenset()
    renamed: ClassVar[Mapping[str, str]] = {}  # field -> its key in the line, where they differ
    # fields holding a record as JSON, and the reader that parses its times (once: the
    # record is the state's from then on)
    records: ClassVar[Mapping[str, Callable[[dict[str, Any]], object]]] = {}
    times: ClassVar[frozenset[str]] = frozenset({"at"})  # fields holding a time (kept as text, checked)
    at: str

    @classmethod
    def from_json(cls, d: Op) -> Self:
        """The step of a journal line: a field with no default must be there (a KeyError
        otherwise, which :func:`parse_op` refuses); any other may be absent."""
        values: dict[str, Any] = {}
        for name, key, required in _keys(cls):
            if key in d:
                values[name] = d[key]
            elif required:
                raise KeyError(key)
        for name in cls.times:  # a time that is not one: ValueError, refused by parse_op
            if values.get(name) is not None:
                Stamp.parse(values[name])
        for name, read in cls.records.items():
            if name in values:  # (a copy: the line is left as read)
                if not isinstance(values[name], dict):
                    raise TypeError(f"{name} is not a record")
                values[name] = read(dict(values[name]))
        return cls(**values)

    def to_json(self) -> Op:
        """The journal line: key for key the one :meth:`from_json` read, or pkic writes."""
        d: Op = {"op": self.kind}
        for name, key, _ in _keys(type(self)):
            value = getattr(self, name)
            if name not in self.sparse or (value is not None and value is not False):
                d[key] = as_json(value) if name in self.records and isinstance(value, dict) else value
        return d

    @abstractmethod
    def fold(self, state: State) -> None:
        """Fold the step into ``state`` (idempotent: a journal may be folded twice)."""

    def files(self, sink: FileSink) -> None:
        """Write (again) the step's files (idempotent); most steps have none."""
        return None

    def trailer(self) -> str | None:
        """The commit trailer naming this step, if a commit names it."""
        return None

    def _need(self, value: str | None, key: str) -> str:
        if value is None:
            raise fail(JOURNAL_PATH, f"a {self.kind} step has no {key!r}: its files cannot be written", _HINT)
        return value


@dataclass(frozen=True, kw_only=True)
class BeginOp(JournalOp):
    """An apply begins: the state it starts from and, sealed, the seal and out/ it found."""

    kind = "begin"
    changes = False
    lineage: str
    base_serial: int
    plan: str | None = None  # the plan's digest (absent in a journal of an early pkic)
    # Sealed: the seal's digest, and out/ as found: the sealed tree's id where git or this
    # machine's copy of its listing has its files, else the listing. Unsealed: neither.
    seal: str | None = None
    listing: dict[str, str] | None = None  # path -> "mode blob" (outtree.listing_json)
    tree: str | None = None
    sparse = frozenset({"plan", "tree"})

    @classmethod
    def from_json(cls, d: Op) -> Self:
        begin = super().from_json(d)
        if not isinstance(begin.tree, str):
            begin = replace(begin, tree=None)
        return begin if isinstance(begin.listing, dict) else replace(begin, listing=None)  # refused by recovery

    @property
    def sealed(self) -> bool:
        return self.listing is not None or self.tree is not None

    def to_json(self) -> Op:
        d = super().to_json()
        if self.listing is None:  # unsealed: neither key; or sealed by its tree id
            del d["listing"]
            if self.tree is None:
                del d["seal"]
        return d

    def fold(self, state: State) -> None:
        if state.lineage is None:
            state.lineage = self.lineage


@dataclass(frozen=True, kw_only=True)
class CommitOp(JournalOp):
    """The apply's steps are all done: the state's new serial (written last)."""

    kind = "commit"
    changes = False
    serial: int

    def fold(self, state: State) -> None:
        state.serial = max(state.serial, self.serial)


@dataclass(frozen=True, kw_only=True)
class SettingsOp(JournalOp):
    """The lifecycle settings this apply acts under."""

    kind = "settings"
    settings: Settings | None

    def fold(self, state: State) -> None:
        state.settings = self.settings


@dataclass(frozen=True, kw_only=True)
class ReencryptedOp(JournalOp):
    """A key file sealed again under the SOPS rule ``rule`` (a certificate's key, or with
    ``authority`` its delegated OCSP responder's)."""

    kind = "reencrypted"
    name: str
    authority: str | None = None
    key_doc: str | None = None
    rule: str
    rules: Rules | None = None
    public_key_sha256: str
    key_file_sha256: str | None = None
    sparse = frozenset({"key_doc", "rules"})

    def fold(self, state: State) -> None:
        _fold_rules(state, self.rules)
        state.record_reencrypted(self.name, self.authority, self.rule, self.public_key_sha256, self.key_file_sha256)

    def files(self, sink: FileSink) -> None:
        rel = layout.responder_key_path(self.authority) if self.authority else layout.key_path(self.name)
        sink.write(rel, self._need(self.key_doc, "key_doc").encode())


@dataclass(frozen=True, kw_only=True)
class IssuedOp(JournalOp):
    """A certificate signed: its state record, its PEM (and DER for an authority), and
    its key file when the key is new (``remove_key``: the key is a CSR's now)."""

    kind = "issued"
    records = {"record": cert_record}
    name: str
    record: Record  # handed to the state as it is: the state's record from then on
    cert_pem: str | None = None
    key_doc: str | None = None
    rules: Rules | None = None
    remove_key: bool = False
    cert_der: str | None = None  # base64
    sparse = frozenset({"cert_pem", "rules", "remove_key", "cert_der"})

    def fold(self, state: State) -> None:
        _fold_rules(state, self.rules)
        state.record_issued(self.name, self.record, Stamp.parse(self.at))

    def files(self, sink: FileSink) -> None:
        if self.remove_key:
            sink.remove(layout.key_path(self.name))
        sink.write(layout.cert_path(self.name), self._need(self.cert_pem, "cert_pem").encode())
        if self.cert_der:
            sink.write(layout.der_path(self.name), base64.b64decode(self.cert_der))
        if self.key_doc:
            sink.write(layout.key_path(self.name), self.key_doc.encode())

    def trailer(self) -> str:
        return issued_trailer(self.name, self.record, self.record.get("action"))


@dataclass(frozen=True, kw_only=True)
class RevokedOp(JournalOp):
    """A certificate revoked. ``remove_files``: its files go (the entry left the spec);
    ``keeps_signing``: an authority revoked in place signs its CRL and OCSP on."""

    kind = "revoked"
    name: str
    serial: str
    reason: str
    invalidity: str | None = None
    remove_files: bool = False
    revoked_at: str | None = None  # absent in a journal of an early pkic: ``at`` then
    keeps_signing: bool = False
    sparse = frozenset({"revoked_at", "keeps_signing"})
    times = frozenset({"at", "revoked_at", "invalidity"})

    def fold(self, state: State) -> None:
        at, invalidity = Stamp.parse(self.revoked_at or self.at), self.invalidity
        state.record_revoked(self.name, self.serial, self.reason, at, Stamp.parse(invalidity) if invalidity else None, self.keeps_signing)

    def files(self, sink: FileSink) -> None:
        if self.remove_files:
            for path in _CERT_FILES:
                sink.remove(path(self.name))

    def trailer(self) -> str:
        return revoked_trailer(self.name, self.serial, self.reason)


@dataclass(frozen=True, kw_only=True)
class CrlOp(JournalOp):
    """An authority's CRL signed: its state record (``info``) and its DER (base64); or,
    planned cleanup of an authority that signs no more, its CRL files ``removed``."""

    kind = "crl"
    records = {"info": crl_info}
    authority: str
    info: CrlInfo
    der: str | None = None
    removed: list[str] | None = None
    sparse = frozenset({"der", "removed"})

    def fold(self, state: State) -> None:
        state.record_crl(self.authority, self.info)

    def files(self, sink: FileSink) -> None:
        if self.removed is None or self.der is not None:
            der = base64.b64decode(self._need(self.der, "der"))
            sink.write(layout.crl_path(self.authority), der)
            pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
            sink.write(layout.crl_path(self.authority, pem=True), pem)
        own = {layout.crl_path(self.authority), layout.crl_path(self.authority, pem=True)}
        for rel in self.removed or []:
            if rel in own:  # only this authority's own CRL files, whatever the line says
                sink.remove(rel)


@dataclass(frozen=True, kw_only=True)
class OcspOp(JournalOp):
    """A certificate's OCSP record changed: a response signed (``der``, at ``info``'s
    file), its file renamed (``moved_from``) or removed (``removed``)."""

    kind = "ocsp"
    records = {"info": ocsp_info}
    name: str
    serial: str
    info: OcspInfo
    der: str | None = None
    moved_from: str | None = None
    removed: str | None = None
    sparse = frozenset({"der", "moved_from", "removed"})

    def fold(self, state: State) -> None:
        state.record_ocsp(self.name, self.serial, self.info)

    def files(self, sink: FileSink) -> None:
        if self.moved_from:
            sink.rename(self.moved_from, self._need(self.info.get("file"), "info.file"))
        if self.der:
            sink.write(self._need(self.info.get("file"), "info.file"), base64.b64decode(self.der))
        if self.removed:
            sink.remove(self.removed)


@dataclass(frozen=True, kw_only=True)
class ResponderOp(JournalOp):
    """A delegated OCSP responder made for ``authority``: its record, certificate and key."""

    kind = "responder"
    records = {"record": cert_record}
    authority: str
    record: Record  # handed to the state as it is
    cert_pem: str | None = None
    key_doc: str | None = None
    rules: Rules | None = None
    sparse = frozenset({"cert_pem", "key_doc", "rules"})

    def fold(self, state: State) -> None:
        _fold_rules(state, self.rules)
        state.record_responder(self.authority, self.record, Stamp.parse(self.at))

    def files(self, sink: FileSink) -> None:
        sink.write(layout.responder_cert_path(self.authority), self._need(self.cert_pem, "cert_pem").encode())
        sink.write(layout.responder_key_path(self.authority), self._need(self.key_doc, "key_doc").encode())


@dataclass(frozen=True, kw_only=True)
class ResponderRetiredOp(JournalOp):
    """publish.ocsp turned off: ``authority``'s delegated responder and its files go."""

    kind = "responder_retired"
    authority: str

    def fold(self, state: State) -> None:
        state.record_responder_retired(self.authority, Stamp.parse(self.at))

    def files(self, sink: FileSink) -> None:
        sink.remove(layout.responder_cert_path(self.authority))
        sink.remove(layout.responder_key_path(self.authority))


@dataclass(frozen=True, kw_only=True)
class CompromisedOp(JournalOp):
    """A declared key compromise carried out (``entry``: name, at, key, applied_at)."""

    kind = "compromised"
    entry: Compromised

    def fold(self, state: State) -> None:
        state.record_compromised(self.entry)


@dataclass(frozen=True, kw_only=True)
class MovedOp(JournalOp):
    """An entry renamed (``moved:`` in pki.yaml): its records and files follow."""

    kind = "moved"
    old: str  # "from" in the journal
    new: str  # "to"
    renamed = {"old": "from", "new": "to"}

    def fold(self, state: State) -> None:
        state.record_moved(self.old, self.new)

    def files(self, sink: FileSink) -> None:
        for path in _CERT_FILES + _AUTHORITY_FILES:
            sink.rename(path(self.old), path(self.new))

    def trailer(self) -> str:
        return moved_trailer(self.old, self.new)


# Every kind of step an apply journals. A step of another kind was written by a newer
# pkic (or is not a journal at all): folding it would silently drop what that apply did.
KINDS: dict[str, type[JournalOp]] = {c.kind: c for c in JournalOp.__subclasses__()}  # every class above

_HINT = "finish the interrupted apply with the pkic that began it (upgrade pkic), or delete the .pkic/ directory and plan again"


def unknown_step(kind: object, step: int) -> PkicError:
    """The refusal of a step whose kind this pkic does not know (``step``: its line)."""
    return fail(
        JOURNAL_PATH,
        f"step {step} is not one this pkic knows (op {quote(kind)}): written by a newer pkic, or not a journal pkic wrote",
        _HINT,
    )


def parse_op(d: Op, step: int = 1) -> JournalOp:
    """One journal line (``step``: its place in the journal, for the refusal) as its step."""
    kind = d.get("op") if isinstance(d, dict) else None
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise unknown_step(kind, step)
    try:
        return cls.from_json(d)
    except KeyError as exc:
        raise fail(JOURNAL_PATH, f"step {step} ({kind}) has no {exc.args[0]!r}: not a journal pkic wrote", _HINT) from None
    except (ValueError, TypeError):  # a time that is not one (model/stamp.py), a record that is no mapping
        raise fail(JOURNAL_PATH, f"step {step} ({kind}) holds a time or a record pkic did not write", _HINT) from None
