"""The recorded state (``out/state.json``), the apply journal and the repo lock.

The state remembers every certificate ever issued, grouped by name, newest first:
serial, fingerprints, validity, issuer, the effective spec it was built from (and its
digest) and its status (active, superseded, revoked). It also carries a lineage (a
stable id for this PKI) and a serial that grows with every apply that changed something,
so a saved plan can be checked against the state it was made from.

An apply never rewrites the whole state per certificate: it appends one line per
completed certificate to ``.pkic/journal.jsonl`` and folds the journal into
``out/state.json`` (written atomically) at the end. A journal left by a killed apply is
folded by the next apply (and reported by the next plan); folding is idempotent.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compiler.model.bounded import MAX_DEPTH, json_depth_ok, quote
from compiler.model.errors import fail

STATE_FORMAT = "pkic-state"
STATE_VERSION = 1
STATE_PATH = "out/state.json"
WORK_DIR = ".pkic"
JOURNAL_PATH = f"{WORK_DIR}/journal.jsonl"
LOCK_PATH = f"{WORK_DIR}/lock"

ACTIVE, SUPERSEDED, REVOKED = "active", "superseded", "revoked"
REQUIRED = frozenset({"status", "serial", "kind", "not_after", "spec"})


def ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ts_cache: dict[str, datetime] = {}


def parse_ts(text: str) -> datetime:
    """``2026-11-27T12:00:00Z`` -> an aware datetime (memoised: states repeat them a lot)."""
    dt = _ts_cache.get(text)
    if dt is None:
        if len(text) != 20 or text[10] != "T" or text[19] != "Z":
            raise ValueError(f"not a UTC timestamp: {text!r}")
        dt = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
        if len(_ts_cache) < 100_000:
            _ts_cache[text] = dt
    return dt


@dataclass
class State:
    lineage: str | None = None
    serial: int = 0
    # name -> records, newest first. A record is a plain JSON-able dict.
    certificates: dict[str, list[dict]] = field(default_factory=dict)
    pending: int = 0  # journal records folded in memory but not yet written to state.json
    # authority -> the last CRL: number, this_update, next_update, key_id, serials, sha256
    crls: dict[str, dict] = field(default_factory=dict)
    # authority -> delegated OCSP responder certificates, newest first
    responders: dict[str, list[dict]] = field(default_factory=dict)
    # declared key compromises that have been carried out: name, at, public_key_sha256
    compromised: list[dict] = field(default_factory=list)
    # SOPS rules key files were ever encrypted under: digest -> normalised rule. A record
    # names its key's rules in ``key_rules`` (oldest first; the last is the file's now)
    rules: dict[str, dict] = field(default_factory=dict)
    # the lifecycle settings the last apply acted under (publication lifetimes, renewal
    # windows, revoke_superseded, publish...): a change of them is spec-driven work
    settings: dict | None = None

    def compromised_keys(self) -> set[str]:
        return {c["public_key_sha256"] for c in self.compromised if c.get("public_key_sha256")}

    def compromise_done(self, name: str, at: str) -> bool:
        return any(c["name"] == name and c["at"] == at for c in self.compromised)

    def responder(self, authority: str) -> dict | None:
        recs = self.responders.get(authority)
        return recs[0] if recs and recs[0]["status"] == ACTIVE else None

    def active(self, name: str) -> dict | None:
        recs = self.certificates.get(name)
        if recs and recs[0]["status"] == ACTIVE:
            return recs[0]
        return None

    def signer_record(self, name: str) -> dict | None:
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

    def last_issued(self, name: str, key_id: str) -> str | None:
        """The latest notAfter among the certificates ``name`` signed with ``key_id``."""
        last = None
        for recs in self.certificates.values():
            for r in recs:
                if r.get("issuer") == name and r.get("issuer_key_id") == key_id and (last is None or r["not_after"] > last):
                    last = r["not_after"]
        return last

    def latest(self, name: str) -> dict | None:
        recs = self.certificates.get(name)
        return recs[0] if recs else None

    def active_names(self) -> list[str]:
        return [n for n, recs in self.certificates.items() if recs and recs[0]["status"] == ACTIVE]

    def to_json(self) -> str:
        """Sorted, one record per line: a change to a certificate is a change to its
        line in git, and writing 10,000 records takes a fraction of a second."""

        def rec(r: dict) -> str:
            return json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))

        def section(items: dict, many: bool) -> str:
            if not items:
                return "{}"
            parts = []
            for n in sorted(items):
                value = items[n]
                if many:
                    inner = ",\n".join(f"   {rec(r)}" for r in value)
                    parts.append(f"  {json.dumps(n, ensure_ascii=False)}: [\n{inner}\n  ]")
                else:
                    parts.append(f"  {json.dumps(n, ensure_ascii=False)}: {rec(value)}")
            return "{\n" + ",\n".join(parts) + "\n }"

        compromised = ",\n".join(f"  {rec(c)}" for c in self.compromised)
        return (
            "{\n"
            f' "certificates": {section(self.certificates, True)},\n'
            f' "compromised": [' + (f"\n{compromised}\n ]" if compromised else "]") + ",\n"
            f' "crls": {section(self.crls, False)},\n'
            f' "format": {json.dumps(STATE_FORMAT)},\n'
            f' "lineage": {json.dumps(self.lineage)},\n'
            f' "responders": {section(self.responders, True)},\n'
            f' "serial": {self.serial},\n'
            f' "settings": {json.dumps(self.settings, sort_keys=True, ensure_ascii=False)},\n'
            f' "sops_rules": {section(self.rules, False)},\n'
            f' "version": {STATE_VERSION}\n'
            "}\n"
        )

    # ------------------------------------------------------------------ mutations
    # Each mutation is idempotent so that folding a journal twice changes nothing.

    @staticmethod
    def _push(recs: list[dict], record: dict, at: str) -> bool:
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

    def record_issued(self, name: str, record: dict, at: str) -> None:
        self._push(self.certificates.setdefault(name, []), record, at)

    def record_revoked(
        self, name: str, serial: str, reason: str, at: str, invalidity: str | None = None, keeps_signing: bool = False
    ) -> None:
        for r in self.certificates.get(name, []):
            if r["serial"] == serial and r["status"] != REVOKED:
                r["status"] = REVOKED
                r["revoked_at"] = at
                r["revocation_reason"] = reason
                if invalidity:
                    r["invalidity_date"] = invalidity
                if keeps_signing:  # an authority: signs its CRL and OCSP responses on
                    r["keeps_signing"] = True

    def record_crl(self, authority: str, info: dict) -> None:
        self.crls[authority] = info
        # a serial listed on a CRL issued after its certificate expired may drop off the next one
        listed = set(info["serials"])
        for recs in (self.certificates.get(n, []) for n in info.get("names", [])):
            for r in recs:
                if r["serial"] in listed and r["not_after"] < info["this_update"]:
                    r["crl_listed_after_expiry"] = True

    def record_ocsp(self, name: str, serial: str, info: dict) -> None:
        for r in self.certificates.get(name, []):
            if r["serial"] == serial:
                r["ocsp"] = info

    def record_responder(self, authority: str, record: dict, at: str) -> None:
        recs = self.responders.setdefault(authority, [])
        if self._push(recs, record, at):
            del recs[3:]  # responders are short-lived; keep the last few

    def record_responder_retired(self, authority: str, at: str) -> None:
        """publish.ocsp was turned off: the authority's delegated responder is no longer
        in use (its files are removed); a re-enable makes a new one."""
        for r in self.responders.get(authority, []):
            if r["status"] == ACTIVE:
                r["status"] = SUPERSEDED
                r["superseded_at"] = r["retired_at"] = at

    def record_compromised(self, entry: dict) -> None:
        if entry not in self.compromised:
            self.compromised.append(entry)

    def record_moved(self, old: str, new: str) -> None:
        if old in self.certificates and new not in self.certificates:
            recs = self.certificates.pop(old)
            for r in recs:
                r["name"] = new
                if old not in r.setdefault("moved_from", []):
                    r["moved_from"].append(old)
            self.certificates[new] = recs
        # an authority's CRL (its number keeps growing: RFC 5280 5.2.3) and responders follow
        for table in (self.crls, self.responders):
            if old in table and new not in table:
                table[new] = table.pop(old)
        for info in self.crls.values():
            if old in info.get("names", []):
                info["names"] = sorted(new if n == old else n for n in info["names"])
        # children name their issuer: follow the rename
        for recs in self.certificates.values():
            for r in recs:
                if r.get("issuer") == old:
                    r["issuer"] = new
                if r.get("spec", {}).get("issuer") == old:
                    r["spec"]["issuer"] = new

    def record_reencrypted(self, name: str, authority: str | None, digest: str, public_key_sha256: str, file_sha256: str | None) -> None:
        """A key file re-encrypted under the rule ``digest``: its key's records say so."""
        recs = self.responders.get(authority, []) if authority else self.certificates.get(name, [])
        for r in recs:
            if r.get("public_key_sha256") == public_key_sha256:
                kr = r.setdefault("key_rules", [])
                if not kr or kr[-1] != digest:
                    kr.append(digest)
                if file_sha256:
                    r["key_file_sha256"] = file_sha256

    def apply_op(self, op: dict) -> None:
        kind = op["op"]
        if op.get("rules"):
            for d, rule in op["rules"].items():
                self.rules.setdefault(d, rule)
        if kind == "settings":
            self.settings = op["settings"]
        elif kind == "reencrypted":
            self.record_reencrypted(op["name"], op.get("authority"), op["rule"], op["public_key_sha256"], op.get("key_file_sha256"))
        if kind == "issued":
            self.record_issued(op["name"], op["record"], op["at"])
        elif kind == "revoked":
            self.record_revoked(
                op["name"],
                op["serial"],
                op["reason"],
                op.get("revoked_at") or op["at"],
                op.get("invalidity"),
                bool(op.get("keeps_signing")),
            )
        elif kind == "crl":
            self.record_crl(op["authority"], op["info"])
        elif kind == "ocsp":
            self.record_ocsp(op["name"], op["serial"], op["info"])
        elif kind == "responder":
            self.record_responder(op["authority"], op["record"], op["at"])
        elif kind == "responder_retired":
            self.record_responder_retired(op["authority"], op["at"])
        elif kind == "compromised":
            self.record_compromised(op["entry"])
        elif kind == "moved":
            self.record_moved(op["from"], op["to"])
        elif kind == "begin":
            if self.lineage is None:
                self.lineage = op["lineage"]
        elif kind == "commit":
            self.serial = max(self.serial, op["serial"])


# The state grows with the PKI (~1.5 KB a certificate): it cannot share the 10 MiB cap
# of the hand-written inputs. Its nesting is bounded like theirs (bounded.loads_json).
MAX_STATE = 1 << 30


def load_state(repo: Path) -> State:
    from compiler.layout import read_file
    from compiler.model.bounded import loads_json

    try:
        data = read_file(repo, STATE_PATH, max_size=MAX_STATE)  # never through a symlink
        if data is None:
            return State()
    except OSError as exc:
        raise fail(STATE_PATH, f"cannot read the state: {exc}") from None
    body = loads_json(data, STATE_PATH, "restore it from git (`git checkout -- out/state.json`); never edit it by hand", what="the state")
    if not isinstance(body, dict) or body.get("format") != STATE_FORMAT:
        raise fail(
            STATE_PATH,
            'this is not a pkic state file (no "format": "pkic-state")',
            "out/ belongs to pkic; move other files elsewhere or restore it from git",
        )
    if body.get("version") != STATE_VERSION:
        raise fail(
            STATE_PATH,
            f"state version {quote(body.get('version'))} is not supported by this pkic (it reads version {STATE_VERSION})",
            "upgrade pkic",
        )
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
    _check_names(certs, crls, responders, body.get("compromised") or [])
    rules = body.get("sops_rules") or {}
    if not isinstance(rules, dict) or not all(
        isinstance(d, str) and isinstance(r, dict) and isinstance(r.get("groups"), list) for d, r in rules.items()
    ):
        raise fail(STATE_PATH, "the state is damaged (sops_rules)", "restore it from git")
    settings = body.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise fail(STATE_PATH, "the state is damaged (settings)", "restore it from git")
    return State(body.get("lineage"), body["serial"], certs, 0, crls, responders, body.get("compromised") or [], rules, settings)


_STATUSES = frozenset({ACTIVE, SUPERSEDED, REVOKED})


def _check_names(certs: dict, crls: dict, responders: dict, compromised: list | None = None) -> None:
    """The state as data: names in it become paths, so each must be a valid name, each
    serial hex, each recorded OCSP file exactly where pkic puts that name's response
    (paths are computed from validated names, never taken from the state as they
    stand); and every field the code reads has its type, so that a damaged state is an
    error naming it, never a crash."""
    from compiler.layout import SERIAL, check_name, is_ocsp_file

    def damaged(where: str, what: str) -> Exception:
        return fail(where, f"the state is damaged: {what}", "restore it from git (`git checkout -- out/state.json`); never edit it by hand")

    def stamp(value: object) -> bool:
        try:
            parse_ts(value)  # type: ignore[arg-type]
            return True
        except (ValueError, TypeError):
            return False

    for name, recs in certs.items():
        where = f"{STATE_PATH}: certificates.{str(name)[:40]}"
        check_name(name, where)
        for r in recs:
            serial = r["serial"]
            if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
                raise fail(where, f"serial {str(serial)[:40]!r} is not hex", "restore the state from git")
            if r["status"] not in _STATUSES or r["kind"] not in ("authority", "certificate") or not isinstance(r["spec"], dict):
                raise damaged(where, "status, kind or spec")
            for k in ("not_after", "not_before", "revoked_at", "superseded_at", "invalidity_date"):
                if k in r and r[k] is not None and not stamp(r[k]):
                    raise damaged(where, f"{k} is not a UTC timestamp")
            for k in ("key_id", "issuer_key_id", "public_key_sha256", "sha256"):
                if k in r and r[k] is not None and not (isinstance(r[k], str) and SERIAL.fullmatch(r[k] or "0")):
                    raise damaged(where, f"{k} is not hex")
            if r.get("issuer") is not None:
                check_name(r["issuer"], where + ".issuer")
            info = r.get("ocsp")
            if info is not None:
                f = info.get("file") if isinstance(info, dict) else 0
                # (a moved name's response is renamed later in the apply that moved it: an
                # interrupted one leaves it under the old name until its journal is finished)
                moved = r.get("moved_from") or []
                if not isinstance(moved, list):
                    raise damaged(where, "moved_from")
                for old in moved:
                    check_name(old, where + ".moved_from")
                if f is not None and not (isinstance(f, str) and any(is_ocsp_file(f, n, serial) for n in (name, *moved))):
                    raise fail(
                        where,
                        f"records an OCSP response at {str(f)[:80]!r}, which is not where pkic puts it",
                        "restore the state from git; never edit it by hand",
                    )
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
        ):
            raise damaged(f"{STATE_PATH}: crls.{a}", "number, this_update, next_update or serials")
    for a, recs in responders.items():
        if not (
            isinstance(recs, list)
            and all(
                isinstance(r, dict) and r.get("status") in _STATUSES and stamp(r.get("not_after")) and isinstance(r.get("serial"), str)
                for r in recs
            )
        ):
            raise damaged(f"{STATE_PATH}: responders.{a}", "a responder record")
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("at"), str) for c in compromised or []):
        raise damaged(f"{STATE_PATH}: compromised", "an entry")


# --------------------------------------------------------------------------- journal


def read_journal(repo: Path) -> list[dict]:
    """Every complete line of the journal (a torn last line from a kill is ignored)."""
    _check_work_dir(repo)
    from compiler.layout import read_file

    data = read_file(repo, JOURNAL_PATH, max_size=MAX_STATE)  # bounded, never through a symlink
    if data is None:
        return []
    ops = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        if not json_depth_ok(line):
            raise fail(
                JOURNAL_PATH,
                f"a step is nested more than {MAX_DEPTH} levels deep: not a journal pkic wrote",
                "delete the .pkic/ directory (it is never committed) and plan again",
            )
        try:
            ops.append(json.loads(line))
        except (ValueError, RecursionError):
            break  # the torn tail of a killed write: that step never completed
    return ops


def load_with_journal(repo: Path) -> tuple[State, list[dict]]:
    """The state as the last (possibly interrupted) apply left it."""
    state = load_state(repo)
    ops = read_journal(repo)
    if ops:
        _check_not_committed(repo)
        if ops[0].get("op") != "begin" or (state.lineage and ops[0].get("lineage") != state.lineage):
            raise fail(JOURNAL_PATH, "the journal does not belong to this state", f"remove {JOURNAL_PATH} if out/ was restored from git")
        for op in ops:
            state.apply_op(op)
        state.pending = sum(1 for op in ops if op["op"] not in ("begin", "commit"))
    return state, ops


def _check_work_dir(repo: Path) -> None:
    """.pkic/ is this machine's own working directory: a plain directory, never a link
    (a symlink committed in a pull request would point the journal somewhere else)."""
    for rel in (WORK_DIR, JOURNAL_PATH, LOCK_PATH):
        try:
            st = os.lstat(repo / rel)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or (rel == WORK_DIR) != stat.S_ISDIR(st.st_mode):
            raise fail(
                rel,
                "is not a plain "
                + ("directory" if rel == WORK_DIR else "file")
                + " (a symlink?): .pkic/ is pkic's own working directory on this machine",
                f"remove it (`rm {rel}`; if git tracks it, `git rm --cached {rel}` too), and find out who added it",
            )


def _check_not_committed(repo: Path) -> None:
    """Refuse a journal that came from git: nothing under .pkic/ may be tracked."""
    import subprocess

    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--", WORK_DIR], cwd=repo, capture_output=True)
    except OSError:  # no git on this machine: the journal cannot have come from git
        return
    why = None
    if proc.returncode == 0 and proc.stdout:
        tracked = proc.stdout.decode(errors="replace").strip("\0").split("\0")
        why = f"is committed to git ({', '.join(tracked[:3])})"
    elif proc.returncode != 0 and b"not a git repository" not in proc.stderr:
        why = "cannot be checked against git (" + proc.stderr.decode(errors="replace").strip().splitlines()[0] + ")"
    if why:
        raise fail(
            JOURNAL_PATH,
            f"{why}: a journal is this machine's record of an interrupted apply, and finishing it "
            "writes its certificates into out/ unsigned by anyone here",
            f"never commit .pkic/ (`git rm -r --cached {WORK_DIR}`), and find out who added it; fix what git says, if it says something",
        )


class Journal:
    """Append-only, one JSON line per completed step; flushed (not fsynced) per line."""

    def __init__(self, repo: Path):
        _check_work_dir(repo)
        self.path = repo / JOURNAL_PATH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def append(self, op: dict) -> None:
        self._fh.write(json.dumps(op, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def new_lineage() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- lock


class RepoLock:
    """An exclusive, non-blocking lock on the repo; released by the OS if we are killed."""

    def __init__(self, repo: Path):
        self.path = repo / LOCK_PATH
        self._fd: int | None = None

    held: set[int] = set()  # lock fds of this process: forked workers close their copies

    def __enter__(self) -> RepoLock:
        _check_work_dir(self.path.parent.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = ""
                try:
                    holder = self.path.read_text().strip()
                except OSError:
                    pass
                raise fail(
                    LOCK_PATH,
                    f"another pkic apply is running on this repo{f' ({holder})' if holder else ''}",
                    "wait for it to finish; the lock is released when it exits",
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        RepoLock.held.add(fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            RepoLock.held.discard(self._fd)
            self._fd = None
