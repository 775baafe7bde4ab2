"""The state file ``out/state.json``: read, checked as data, brought up to this pkic's format.

The state is written by :meth:`State.to_json` (sorted, one record per line) and read
here. Everything in it is checked before anything uses it: names become paths, so each
must be a valid name, and every field the code reads must have its type, so that a
damaged state is an error naming the place, never a crash. A state written by an older
pkic is migrated in memory (:mod:`compiler.state.migrate`); one written by a newer pkic
is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from compiler.layout import SERIAL, STATE_PATH, check_name, is_ocsp_file, open_chunks, read_chunks, read_file
from compiler.model.bounded import MAX_DEPTH, json_text, loads_json, parse_json_text
from compiler.model.errors import PkicError, fail
from compiler.model.heap import long_lived
from compiler.model.stamp import Stamp
from compiler.state.migrate import upgrade
from compiler.state.outtree import blob_id
from compiler.state.records import (
    ACTIVE,
    REVOKED,
    STATE_FORMAT,
    SUPERSEDED,
    CertRecord,
    Compromised,
    CrlInfo,
    State,
    cert_record,
    crl_info,
    parse_ts,
    records_text,
)
from compiler.state.spans import FileSpans
from compiler.state.streamed import parse_streamed

if TYPE_CHECKING:
    from compiler.spec.cache import Verdicts

REQUIRED = frozenset({"status", "serial", "kind", "not_before", "not_after", "spec"})
# pkic's serials are random 159-bit numbers: 40 hex digits, and never fewer than 16 (the
# odds are 2^-95). A shorter one would let <name>.<serial>.der, an older certificate's
# OCSP file, be another name's <name>.der (a name may not end in '.' and 16 hex digits).
MIN_SERIAL_DIGITS = 16


# The state grows with the PKI (~1.5 KB a certificate): it cannot share the 10 MiB cap
# of the hand-written inputs. Its nesting is bounded like theirs (bounded.loads_json).
MAX_STATE = 1 << 30


def load_state(repo: Path, *, keep_text: bool = False, verdicts: Verdicts | None = None, blob: tuple[str, str] | None = None) -> State:
    """``out/state.json`` checked and in this pkic's format; an empty state if there is
    none. ``keep_text``: keep each name's records as written, for an apply to write the
    state back in proportion to its change (see ``State.texts``). ``verdicts``: the
    names, serials and fields of the same bytes are not checked again by the same code
    (at 100,000 certificates, a second; see spec.cache.Verdicts). ``blob``: (object
    format, git blob id) the bytes read must have: apply's, from the seal gate's scan,
    so that the state it acts on is the file the gate proved sealed, whatever the file
    times said."""
    with long_lived():  # (the records live as long as the command: see model.heap)
        return _load_state(repo, keep_text, verdicts, blob)


def _load_state(repo: Path, keep_text: bool, verdicts: Verdicts | None, blob: tuple[str, str] | None) -> State:
    try:
        with open_chunks(repo, STATE_PATH, MAX_STATE) as pieces:  # never through a symlink
            if pieces is None:
                return State(texts={} if keep_text else None)
            streamed = parse_streamed(pieces.size, pieces, blob[0] if blob else None, MAX_DEPTH)
        if streamed is not None:
            body, digest, spans = streamed.body, streamed.digest, streamed.spans
            if blob is not None and streamed.blob != blob[1]:
                raise _changed()
        else:  # not laid out as pkic writes it: parsed whole, which reports any problem
            (body, digest), spans = _parse_whole(repo, blob), None
    except OSError as exc:
        raise fail(STATE_PATH, f"cannot read the state: {exc}") from None
    known = verdicts is not None and verdicts.passed("state", digest)
    # a file this code wrote (apply's verdict, kept when it wrote it) is kept as spans of
    # the file, not as 100 MB of text made again from the records (see FileSpans)
    ours = keep_text and verdicts is not None and verdicts.passed(WRITTEN, digest)
    if spans is not None:
        certs = body.get("certificates") if isinstance(body, dict) else None
        if not ours or not isinstance(certs, dict) or list(certs) != list(spans):
            spans = None
    state = _state_of(body, keep_text=keep_text and spans is None, names_checked=known)
    if spans is not None:
        state.texts = FileSpans(lambda: read_chunks(repo, STATE_PATH), spans, digest)
    if verdicts is not None and not known:
        verdicts.note("state", digest)
    return state


def _changed() -> PkicError:
    return fail(STATE_PATH, "is not the file the seal gate found: it changed while apply ran", "restore it from git and apply again")


def _parse_whole(repo: Path, blob: tuple[str, str] | None) -> tuple[Any, bytes]:
    """The state parsed in one piece (any layout): its JSON and SHA-256. (No spans: a
    file laid out as pkic writes it is streamed; one that was not is kept as text.)"""
    data = read_file(repo, STATE_PATH, max_size=MAX_STATE)
    if data is None:
        raise _changed()  # (it was there a moment ago)
    if blob is not None and blob_id(blob[0], data) != blob[1]:
        raise _changed()
    digest = hashlib.sha256(data).digest()
    text = json_text(data, STATE_PATH, _HINT, what="the state")
    del data  # (123 MB at 100,000 certificates: never alive beside its text and the objects)
    return parse_json_text(text, STATE_PATH, _HINT, what="the state"), digest


WRITTEN = "state-written"  # the verdict an apply keeps on the state it wrote


_HINT = "restore it from git (`git checkout -- out/state.json`); never edit it by hand"


def state_from_json(data: bytes, *, keep_text: bool = False) -> State:
    """A state file's bytes, checked as data and in this pkic's format (errors name out/state.json)."""
    return _state_of(loads_json(data, STATE_PATH, _HINT, what="the state"), keep_text=keep_text)


def _state_of(body: Any, *, keep_text: bool = False, names_checked: bool = False) -> State:
    """A state file's JSON, checked as data and in this pkic's format. ``names_checked``:
    its bytes passed :func:`_check_names` before (see load_state)."""
    if not isinstance(body, dict) or body.get("format") != STATE_FORMAT:
        raise fail(
            STATE_PATH,
            'this is not a pkic state file (no "format": "pkic-state")',
            "out/ belongs to pkic; move other files elsewhere or restore it from git",
        )
    body = upgrade(body)
    certs = body.get("certificates")
    if not isinstance(certs, dict) or not isinstance(body.get("serial"), int):
        raise fail(STATE_PATH, "the state is damaged (certificates or serial missing)", "restore it from git")
    for name, recs in certs.items():
        if not (isinstance(recs, list) and recs and all(isinstance(r, dict) and REQUIRED <= r.keys() for r in recs)):
            raise fail(
                STATE_PATH,
                f"the state is damaged at certificates.{name}",
                "restore it from git (`git checkout -- out/state.json`); never edit it by hand",
            )
    crls, responders = body.get("crls") or {}, body.get("responders") or {}
    if not isinstance(crls, dict) or not isinstance(responders, dict) or not isinstance(body.get("compromised") or [], list):
        raise fail(STATE_PATH, "the state is damaged (crls, responders or compromised)", "restore it from git")
    if not names_checked:
        _check_names(certs, crls, responders, body.get("compromised") or [])
    rules = body.get("sops_rules") or {}
    if not isinstance(rules, dict) or not all(
        isinstance(d, str)
        and isinstance(r, dict)
        and isinstance(r.get("groups"), list)
        and all(isinstance(g, list) and all(isinstance(m, str) for m in g) for g in r["groups"])
        for d, r in rules.items()
    ):
        raise fail(STATE_PATH, "the state is damaged (sops_rules)", "restore it from git")
    settings = body.get("settings")
    if settings is not None and not (
        isinstance(settings, dict)
        and isinstance(settings.get("authorities") or {}, dict)
        and all(isinstance(v, dict) for v in (settings.get("authorities") or {}).values())
        and isinstance(settings.get("certificates") or {}, dict)
        and all(isinstance(v, list) or v is None for v in (settings.get("certificates") or {}).values())
    ):
        raise fail(STATE_PATH, "the state is damaged (settings)", "restore it from git")
    # as to_json writes them: times are still their text, which Stamp.parse holds canonical
    texts = {name: records_text(recs) for name, recs in certs.items()} if keep_text else None
    try:  # their times parsed, once (every one the code reads was checked above)
        memo: dict[str, Stamp] = {}
        for recs in (*certs.values(), *responders.values()):
            for r in recs:
                cert_record(r, memo)
        for info in crls.values():
            crl_info(info, memo)
    except ValueError:
        raise fail(STATE_PATH, "the state is damaged: a time in it is not a UTC timestamp", "restore it from git") from None
    # checked as data above: from here on the records are what their types say
    return State(
        body.get("lineage"),
        body["serial"],
        cast(dict[str, list[CertRecord]], certs),
        0,
        cast(dict[str, CrlInfo], crls),
        cast(dict[str, list[CertRecord]], responders),
        cast(list[Compromised], body.get("compromised") or []),
        rules,
        settings,
        texts,
    )


_STATUSES = frozenset({ACTIVE, SUPERSEDED, REVOKED})
_Json = dict[str, Any]  # a record as read, before it is checked


def _check_names(certs: dict[str, list[_Json]], crls: dict[str, Any], responders: dict[str, Any], compromised: list[Any]) -> None:
    """The state as data: names in it become paths, so each must be a valid name, each
    serial hex, each recorded OCSP file exactly where pkic puts that name's response
    (paths are computed from validated names, never taken from the state as they
    stand); and every field the code reads has its type, so that a damaged state is an
    error naming it, never a crash."""

    def damaged(where: str, what: str) -> PkicError:
        return fail(where, f"the state is damaged: {what}", "restore it from git (`git checkout -- out/state.json`); never edit it by hand")

    valid: set[str] = set()  # the times seen so far (a state's records share most of them)

    def stamp(value: object) -> bool:
        if not isinstance(value, str):
            return False
        if value not in valid:
            try:
                parse_ts(value)
            except ValueError:
                return False
            valid.add(value)
        return True

    claimed: dict[str, str] = {}  # OCSP file -> the name whose record names it
    for name, recs in certs.items():
        where = f"{STATE_PATH}: certificates.{str(name)[:40]}"
        check_name(name, where)
        serials: set[str] = set()
        for r in recs:
            serial = r["serial"]
            if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
                raise fail(where, f"serial {str(serial)[:40]!r} is not hex", "restore the state from git")
            if len(serial) < MIN_SERIAL_DIGITS:
                raise damaged(where, f"serial {serial} is shorter than any pkic makes ({MIN_SERIAL_DIGITS} hex digits or more)")
            if serial in serials:
                raise damaged(where, f"serial {serial[:40]} is recorded twice")
            serials.add(serial)
            if not (isinstance(r["status"], str) and r["status"] in _STATUSES and r["kind"] in ("authority", "certificate")):
                raise damaged(where, "status or kind")
            if not isinstance(r["spec"], dict):
                raise damaged(where, "spec")
            for k in ("dns", "ip", "uri", "email"):
                if not isinstance(r["spec"].get(k, []), list) or not all(isinstance(v, str) for v in r["spec"].get(k, [])):
                    raise damaged(where, f"spec.{k} is not a list of names")
            if not stamp(r["not_after"]) or not stamp(r["not_before"]):
                raise damaged(where, "not_after or not_before is not a UTC timestamp")
            for k in ("revoked_at", "superseded_at", "invalidity_date"):
                if k in r and r[k] is not None and not stamp(r[k]):
                    raise damaged(where, f"{k} is not a UTC timestamp")
            for k in ("key_id", "issuer_key_id", "public_key_sha256", "sha256"):
                if k in r and r[k] is not None and not (isinstance(r[k], str) and SERIAL.fullmatch(r[k] or "0")):
                    raise damaged(where, f"{k} is not hex")
            if r.get("issuer") is not None:
                check_name(r["issuer"], where + ".issuer")
            if r.get("issuer") != r["spec"].get("issuer", r.get("issuer")):
                raise damaged(where, "its issuer is not the one its spec names")
            info = r.get("ocsp")
            if info is not None:
                if isinstance(info, dict) and not all(stamp(info.get(k)) for k in ("this_update", "next_update")):
                    raise damaged(where, "ocsp.this_update or ocsp.next_update is not a UTC timestamp")
                f = info.get("file") if isinstance(info, dict) else 0
                # (a moved name's response is renamed later in the apply that moved it: an
                # interrupted one leaves it under the old name until its journal is finished)
                moved = r.get("moved_from") or []
                if not isinstance(moved, list):
                    raise damaged(where, "moved_from")
                for old in moved:
                    check_name(old, where + ".moved_from")
                gone = [old for old in moved if old not in certs]  # a name still in use is not this record's
                if f is not None and not (isinstance(f, str) and any(is_ocsp_file(f, n, serial) for n in (name, *gone))):
                    raise fail(
                        where,
                        f"records an OCSP response at {str(f)[:80]!r}, which is not where pkic puts it",
                        "restore the state from git; never edit it by hand",
                    )
                if f is not None and claimed.setdefault(f, name) != name:  # never another name's response
                    raise fail(
                        where,
                        f"records an OCSP response at {str(f)[:80]!r}, which certificates.{claimed[f]} records too",
                        "restore the state from git; never edit it by hand",
                    )
    _check_issuer_chains(certs, damaged)
    for a in list(crls) + list(responders):
        check_name(a, f"{STATE_PATH}: {str(a)[:40]}")
    for a, info in crls.items():
        if not (
            isinstance(info, dict)
            and isinstance(info.get("number"), int)
            and not isinstance(info.get("number"), bool)
            and stamp(info.get("this_update"))
            and stamp(info.get("next_update"))
            and isinstance(info.get("serials", []), list)
            and all(isinstance(x, str) for x in info.get("serials", []))
            and (info.get("refresh_at") is None or stamp(info.get("refresh_at")))
        ):
            raise damaged(f"{STATE_PATH}: crls.{a}", "number, this_update, next_update or serials")
    for a, recs in responders.items():
        if not (
            isinstance(recs, list)
            and all(
                isinstance(r, dict)
                and isinstance(r.get("status"), str)
                and r.get("status") in _STATUSES
                and stamp(r.get("not_after"))
                and stamp(r.get("not_before"))
                and isinstance(r.get("serial"), str)
                and len(r["serial"]) >= MIN_SERIAL_DIGITS
                for r in recs
            )
        ):
            raise damaged(f"{STATE_PATH}: responders.{a}", "a responder record")
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("at"), str) for c in compromised):
        raise damaged(f"{STATE_PATH}: compromised", "an entry")


def _check_issuer_chains(certs: dict[str, list[_Json]], damaged: Callable[[str, str], PkicError]) -> None:
    """Every name's latest record leads, issuer by issuer, to a root: an issuer cycle
    would make every chain walk (apply's chain files, the trust bundle) endless."""
    ok: set[str] = set()
    for name in certs:
        path: list[str] = []
        at: str | None = name
        while at is not None and at not in ok:
            if at in path:
                raise damaged(
                    f"{STATE_PATH}: certificates.{str(name)[:40]}", f"its issuers go round in a circle ({' -> '.join(path[-5:])} -> {at})"
                )
            path.append(at)
            recs = certs.get(at)
            at = recs[0].get("issuer") if recs else None
        ok.update(path)
