"""The recorded state in memory: every certificate ever issued, grouped by name, newest first.

A record is what ``out/state.json`` holds for one certificate: serial, fingerprints,
validity, issuer, the effective spec it was built from (and its digest) and its status
(active, superseded, revoked). The state also carries a lineage (a stable id for this
PKI) and a serial that grows with every apply that changed something, so a saved plan
can be checked against the state it was made from.

Records are JSON objects typed key by key (:class:`CertRecord`, :class:`OcspInfo`,
:class:`CrlInfo`, :class:`Compromised`), so the file and the journal keep their bytes and
an older pkic's fields pass through untouched. Their times are parsed once, when the
state or a journal step is read (:func:`cert_record`, :func:`crl_info`,
:func:`ocsp_info`), into stamps (:class:`~compiler.model.stamp.Stamp`), which compare as times
and print as the file's text, and written back as text (:meth:`State.to_json`,
:func:`as_json`). Serials stay lower-case hex: the form every file pkic writes names a
certificate by (plan, journal, trailers, CRL lists, OCSP file names); only the X.509
builders need the integer. Every mutation is idempotent, so that folding a journal twice
changes nothing (each journal step folds itself in through them: ops.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, TypeVar, cast

from compiler.model.stamp import Stamp, stamp_json
from compiler.spec.effective import EntrySpec
from compiler.spec.sops_rules import SopsRule
from compiler.state.spans import FileSpans

STATE_FORMAT = "pkic-state"
# The state's format version: the "version" field of out/state.json, written by every
# release so far as 1. A change to what a record means is a new version, with a step in
# migrate.py that brings the previous one up to it.
STATE_VERSION = 1

ACTIVE, SUPERSEDED, REVOKED = "active", "superseded", "revoked"


class Published(TypedDict, total=False):
    """A signed publication's window: a CRL's or an OCSP response's (state/revocation.py
    tells from it when it is re-signed)."""

    this_update: Stamp
    next_update: Stamp
    refresh_at: Stamp  # when it is re-signed (written for CRLs; a response's comes from pki.yaml)


class OcspInfo(Published, total=False):
    """A certificate's last published OCSP response (its record's ``ocsp``)."""

    status: str  # good | revoked
    signer: str  # self | delegated
    file: str | None  # out/ocsp/<name>.der, <name>-<serial>.der for an older one; None once removed
    sha256: str
    removed_at: Stamp  # publish.ocsp was turned off: when, and why
    removed_because: str


class CertRecord(TypedDict, total=False):
    """One certificate ever issued, as ``certificates.<name>`` lists them (newest first);
    a delegated OCSP responder's certificate too (``responders.<authority>``), which has
    no name, kind or spec. The state's loader (store.py) checks every field the code
    reads before anything uses it."""

    name: str
    kind: str  # authority | certificate
    status: str  # active | superseded | revoked
    serial: str  # lower-case hex, even length
    subject: str  # RFC 4514
    issuer: str | None  # the issuing authority's name; None for a root
    issuer_serial: str | None
    issuer_key_id: str
    key_id: str
    key_type: str
    key_source: str  # generated | kept | csr
    public_key_sha256: str
    sha256: str  # of the certificate's DER
    not_before: Stamp
    not_after: Stamp
    issued_at: Stamp
    action: str  # issue | reissue | renew
    reasons: list[str]
    spec: EntrySpec  # the effective spec it was built from (spec/effective.py)
    spec_digest: str
    key_rules: list[str]  # the SOPS rules its key file was encrypted under, oldest first
    key_file_sha256: str
    ocsp: OcspInfo
    superseded_at: Stamp
    superseded_by: str
    retired_at: Stamp  # a responder: publish.ocsp was turned off
    revoked_at: Stamp
    revocation_reason: str
    invalidity_date: Stamp
    keeps_signing: bool  # an authority revoked in place: signs its CRL and OCSP on
    moved_from: list[str]  # its earlier names
    crl_listed_after_expiry: bool


class CrlInfo(Published, total=False):
    """An authority's last CRL (``crls.<authority>``)."""

    number: int
    key_id: str  # the key that signed it
    serials: list[str]  # the serials it lists, sorted
    names: list[str]  # whose certificates those are
    sha256: str
    bundled: bool  # out/trust/crls.pem holds it
    removed_at: Stamp  # the authority signs no more: its CRL files were removed then


class Compromised(TypedDict, total=False):
    """A declared key compromise that has been carried out (``compromised``)."""

    name: str
    at: str  # as pki.yaml declares it
    public_key_sha256: str | None  # None: no certificate was active, nothing was revoked
    applied_at: str  # the apply that carried it out


# A certificate or responder record: the name most of the code knows it by
Record = CertRecord
# The lifecycle settings an apply acted under (open JSON: plan/planner.py writes them)
Settings = dict[str, Any]
_V = TypeVar("_V")


def ts(dt: datetime) -> str:
    """A time as the state and every report write it: ``2026-11-27T12:00:00Z``."""
    return str(Stamp.of(dt))


def parse_ts(text: str) -> Stamp:
    """``2026-11-27T12:00:00Z`` (a time pkic wrote: a plan's, a journal step's) -> its stamp."""
    return Stamp.parse(text)


# The fields that hold times, parsed into stamps when a record is read (state, journal)
CERT_STAMPS = ("not_before", "not_after", "issued_at", "superseded_at", "retired_at", "revoked_at", "invalidity_date")
PUBLISHED_STAMPS = ("this_update", "next_update", "refresh_at", "removed_at")


def _stamped(d: dict[str, Any], keys: tuple[str, ...], memo: dict[str, Stamp]) -> None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str):
            s = memo.get(v)
            if s is None:
                s = memo[v] = Stamp.parse(v)
            d[k] = s


def cert_record(d: dict[str, Any], memo: dict[str, Stamp] | None = None) -> CertRecord:
    """A certificate or responder record read as JSON (the state, a journal step), its
    times parsed into stamps, in place (ValueError: one is not a stamp). ``memo``: the
    stamps parsed so far (a state's records share most of their times)."""
    memo = {} if memo is None else memo
    _stamped(d, CERT_STAMPS, memo)
    if isinstance(d.get("ocsp"), dict):
        d["ocsp"] = ocsp = dict(d["ocsp"])  # (its own: a journal step's line is left as read)
        _stamped(ocsp, PUBLISHED_STAMPS, memo)
    return cast(CertRecord, d)


def as_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record (certificate, responder, CRL, OCSP) as JSON: a copy, its stamps as text."""
    d: dict[str, Any] = {k: str(v) if isinstance(v, Stamp) else v for k, v in record.items()}
    if isinstance(d.get("ocsp"), dict):
        d["ocsp"] = as_json(d["ocsp"])
    return d


def crl_info(d: dict[str, Any], memo: dict[str, Stamp] | None = None) -> CrlInfo:
    """A CRL's record read as JSON, its times parsed, in place."""
    _stamped(d, PUBLISHED_STAMPS, {} if memo is None else memo)
    return cast(CrlInfo, d)


def ocsp_info(d: dict[str, Any]) -> OcspInfo:
    """An OCSP response's record read as JSON (a journal step's), its times parsed, in place."""
    _stamped(d, PUBLISHED_STAMPS, {})
    return cast(OcspInfo, d)


# a state of at most this many names is also serialised whole on every write, as a check
# of the kept texts (~30 ms at 1,000): every test's apply runs it
CHECK_WHOLE = 1000


@dataclass
class State:
    lineage: str | None = None
    serial: int = 0
    # name -> records, newest first
    certificates: dict[str, list[Record]] = field(default_factory=dict)
    pending: int = 0  # journal records folded in memory but not yet written to state.json
    # authority -> the last CRL: number, this_update, next_update, key_id, serials, sha256
    crls: dict[str, CrlInfo] = field(default_factory=dict)
    # authority -> delegated OCSP responder certificates, newest first
    responders: dict[str, list[Record]] = field(default_factory=dict)
    # declared key compromises that have been carried out: name, at, public_key_sha256
    compromised: list[Compromised] = field(default_factory=list)
    # SOPS rules key files were ever encrypted under: digest -> normalised rule. A record
    # names its key's rules in ``key_rules`` (oldest first; the last is the file's now)
    rules: dict[str, SopsRule] = field(default_factory=dict)  # their shape is checked on load (state.store)
    # the lifecycle settings the last apply acted under (publication lifetimes, renewal
    # windows, revoke_superseded, publish...): a change of them is spec-driven work
    settings: Settings | None = None
    # Each name's certificate records as to_json writes them, made when the state was
    # read (load_state(keep_text=True), for apply) and kept while no mutation below
    # touched that name (``dirty``): writing 100,000 records after a one-leaf change
    # serialises the one. The tests hold the result equal to a whole serialisation.
    texts: dict[str, str] | FileSpans | None = field(default=None, repr=False, compare=False)
    dirty: set[str] = field(default_factory=set, repr=False, compare=False)

    def compromised_keys(self) -> set[str]:
        return {k for c in self.compromised if (k := c.get("public_key_sha256"))}

    def compromise_done(self, name: str, at: str) -> bool:
        return any(c["name"] == name and c["at"] == at for c in self.compromised)

    def responder(self, authority: str) -> Record | None:
        recs = self.responders.get(authority)
        return recs[0] if recs and recs[0]["status"] == ACTIVE else None

    def active(self, name: str) -> Record | None:
        recs = self.certificates.get(name)
        if recs and recs[0]["status"] == ACTIVE:
            return recs[0]
        return None

    def signer_record(self, name: str) -> Record | None:
        """The record whose key signs ``name``'s CRL and OCSP responses: the active one,
        or, for an authority revoked in place, its revoked record (``keeps_signing``):
        it keeps vouching for what it issued until the last of it expires."""
        recs = self.certificates.get(name)
        if not recs:
            return None
        r = recs[0]
        if r["status"] == ACTIVE or (r["status"] == REVOKED and r["kind"] == "authority" and r.get("keeps_signing")):
            return r
        return None

    def revoked_signers(self) -> list[str]:
        """Authorities revoked in place that keep signing their CRL and OCSP responses."""
        return [
            n
            for n, recs in self.certificates.items()
            if recs and recs[0]["status"] == REVOKED and recs[0]["kind"] == "authority" and recs[0].get("keeps_signing")
        ]

    def last_issued(self, name: str, key_id: str) -> Stamp | None:
        """The latest notAfter among the certificates ``name`` signed with ``key_id``."""
        last: Stamp | None = None
        for recs in self.certificates.values():
            for r in recs:
                if r.get("issuer") == name and r.get("issuer_key_id") == key_id and (last is None or r["not_after"] > last):
                    last = r["not_after"]
        return last

    def latest(self, name: str) -> Record | None:
        recs = self.certificates.get(name)
        return recs[0] if recs else None

    def active_names(self) -> list[str]:
        return [n for n, recs in self.certificates.items() if recs and recs[0]["status"] == ACTIVE]

    def to_json(self) -> str:
        """Sorted, one record per line: a change to a certificate is a change to its
        line in git. Names no mutation touched are written as they were read (``texts``);
        a state of up to CHECK_WHOLE names is also written whole and must be the same."""
        return "".join(self.json_chunks())

    def json_chunks(self) -> Iterator[str]:
        """:meth:`to_json` in pieces (one per name), for writing 100,000 records without
        holding their text twice."""
        if self.texts is not None and len(self.certificates) <= CHECK_WHOLE:
            text = "".join(self._chunks(self.texts))
            if "".join(self._chunks(None)) != text:
                raise AssertionError("out/state.json: the records kept as read differ from the state (a mutation not marked dirty)")
            yield text
            return
        yield from self._chunks(self.texts)

    def _chunks(self, kept: dict[str, str] | FileSpans | None) -> Iterator[str]:
        texts: dict[object, str] = {}  # each time's text, once (records share most of them)

        def text(value: object) -> str:
            t = texts.get(value)
            if t is None:
                t = texts[value] = stamp_json(value)
            return t

        def rec(r: Mapping[str, object]) -> str:
            return json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=text)

        def section(items: dict[str, Any], many: bool, kept: dict[str, str] | FileSpans | None = None) -> Iterator[str]:
            if not items:
                yield "{}"
                return
            sep = "{\n"
            for n in sorted(items):
                value = items[n]
                if many:
                    inner = kept.get(n) if kept is not None and n not in self.dirty else None
                    if inner is None:
                        inner = records_text(value, rec)
                    yield f"{sep}  {json.dumps(n, ensure_ascii=False)}: [\n{inner}\n  ]"
                else:
                    yield f"{sep}  {json.dumps(n, ensure_ascii=False)}: {rec(value)}"
                sep = ",\n"
            yield "\n }"

        compromised = ",\n".join(f"  {rec(c)}" for c in self.compromised)
        yield '{\n "certificates": '
        yield from section(self.certificates, True, kept)
        if isinstance(kept, FileSpans):
            kept.finish()
        yield ',\n "compromised": [' + (f"\n{compromised}\n ]" if compromised else "]") + ',\n "crls": '
        yield from section(self.crls, False)
        yield f',\n "format": {json.dumps(STATE_FORMAT)},\n "lineage": {json.dumps(self.lineage)},\n "responders": '
        yield from section(self.responders, True)
        yield (
            f',\n "serial": {self.serial},\n "settings": {json.dumps(self.settings, sort_keys=True, ensure_ascii=False)},\n "sops_rules": '
        )
        yield from section(self.rules, False)
        yield f',\n "version": {STATE_VERSION}\n}}\n'

    # ------------------------------------------------------------------ mutations
    # Each mutation is idempotent so that folding a journal twice changes nothing.

    @staticmethod
    def _push(recs: list[Record], record: Record, at: Stamp) -> bool:
        """Put ``record`` first, superseding the active one; False if already there."""
        if any(r["serial"] == record["serial"] for r in recs):
            return False
        for r in recs:
            if r["status"] == ACTIVE:
                r["status"] = SUPERSEDED
                r["superseded_at"] = at
                r["superseded_by"] = record["serial"]
        recs.insert(0, record)
        return True

    def record_issued(self, name: str, record: Record, at: Stamp) -> None:
        self.dirty.add(name)
        self._push(self.certificates.setdefault(name, []), record, at)

    def record_revoked(
        self, name: str, serial: str, reason: str, at: Stamp, invalidity: Stamp | None = None, keeps_signing: bool = False
    ) -> None:
        self.dirty.add(name)
        for r in self.certificates.get(name, []):
            if r["serial"] == serial and r["status"] != REVOKED:
                r["status"] = REVOKED
                r["revoked_at"] = at
                r["revocation_reason"] = reason
                if invalidity:
                    r["invalidity_date"] = invalidity
                if keeps_signing:  # an authority: signs its CRL and OCSP responses on
                    r["keeps_signing"] = True

    def record_crl(self, authority: str, info: CrlInfo) -> None:
        self.crls[authority] = info
        # a serial listed on a CRL issued after its certificate expired may drop off the next one
        listed = set(info["serials"])
        for n in info.get("names", []):
            for r in self.certificates.get(n, []):
                if r["serial"] in listed and r["not_after"] < info["this_update"]:
                    r["crl_listed_after_expiry"] = True
                    self.dirty.add(n)

    def record_ocsp(self, name: str, serial: str, info: OcspInfo) -> None:
        self.dirty.add(name)
        for r in self.certificates.get(name, []):
            if r["serial"] == serial:
                r["ocsp"] = info

    def record_responder(self, authority: str, record: Record, at: Stamp) -> None:
        recs = self.responders.setdefault(authority, [])
        if self._push(recs, record, at):
            del recs[3:]  # responders are short-lived; keep the last few

    def record_responder_retired(self, authority: str, at: Stamp) -> None:
        """publish.ocsp was turned off: the authority's delegated responder is no longer
        in use (its files are removed); a re-enable makes a new one."""
        for r in self.responders.get(authority, []):
            if r["status"] == ACTIVE:
                r["status"] = SUPERSEDED
                r["superseded_at"] = r["retired_at"] = at

    def record_compromised(self, entry: Compromised) -> None:
        if entry not in self.compromised:
            self.compromised.append(entry)

    def record_moved(self, old: str, new: str) -> None:
        self.dirty.update((old, new))
        if old in self.certificates and new not in self.certificates:
            recs = self.certificates.pop(old)
            for r in recs:
                r["name"] = new
                if old not in r.setdefault("moved_from", []):
                    r["moved_from"].append(old)
            self.certificates[new] = recs
        # an authority's CRL (its number keeps growing: RFC 5280 5.2.3) and responders follow
        _rename(self.crls, old, new)
        _rename(self.responders, old, new)
        for info in self.crls.values():
            if old in info.get("names", []):
                info["names"] = sorted(new if n == old else n for n in info["names"])
        # children name their issuer: follow the rename
        for n, recs in self.certificates.items():
            for r in recs:
                if r.get("issuer") == old:
                    r["issuer"] = new
                    self.dirty.add(n)
                if r.get("spec", {}).get("issuer") == old:
                    r["spec"]["issuer"] = new
                    self.dirty.add(n)

    def record_reencrypted(self, name: str, authority: str | None, digest: str, public_key_sha256: str, file_sha256: str | None) -> None:
        """A key file re-encrypted under the rule ``digest``: its key's records say so."""
        recs = self.responders.get(authority, []) if authority else self.certificates.get(name, [])
        if not authority:
            self.dirty.add(name)
        for r in recs:
            if r.get("public_key_sha256") == public_key_sha256:
                kr = r.setdefault("key_rules", [])
                if not kr or kr[-1] != digest:
                    kr.append(digest)
                if file_sha256:
                    r["key_file_sha256"] = file_sha256


def records_text(recs: list[Any], rec: Any = None) -> str:
    """One name's records in state.json: one line each. ``rec`` serialises a record
    (default: one read as JSON, times still text)."""
    one = rec or (lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(", ", ": ")))
    return ",\n".join(f"   {one(r)}" for r in recs)


def _rename(table: dict[str, _V], old: str, new: str) -> None:
    if old in table and new not in table:
        table[new] = table.pop(old)
