"""The incremental load: a plan of a one-line change resolves that entry, not all of them.

pki.yaml is split into its entries by a line scan (:func:`split`): each entry of
``authorities`` and ``certificates`` is the run of lines from its key line to the next
line as little indented. A resolved certificate is kept in the entry cache under the
SHA-256 of its own text, with the digest of what it depends on: ``defaults``, and the
text of every authority above it (``deps``), and its CSR's digest. The next load takes
every certificate whose text and dependencies are unchanged from the cache, and parses,
validates and resolves only the others, with every authority (there are few), through
the same code as a full load.

The split is only taken when it is certain to read the file as a YAML parser would;
anything else (flow or quoted keys at entry level, tabs, line breaks other than ``\\n``,
directives, document markers, aliases, an entry that does not parse alone, names a
parser would type as something other than text) gives None, and the caller loads the
whole file. Any problem in the spec does the same: the full load reports it, with
positions. The cache lives beside the resolved-spec cache, in the user's cache
directory. apply takes from it only records it made itself: each record apply writes
carries an HMAC under a key derived from the seal key, which a plan (no secret) cannot
make; without a seal key apply loads the whole file.

Longer than 400 lines: the split, the cache's records and the check that a full load
read the file as the split does are one contract; apart, each would have to trust the
others' reading of the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compiler import __version__, layout
from compiler.model.bounded import MAX_BYTES, Locator, yaml_counts
from compiler.model.errors import PkicError
from compiler.spec import cache
from compiler.spec.effective import EffectiveSpec, Entry
from compiler.spec.models import SPEC_FILE, Moved, Spec
from compiler.spec.parse import parse_yaml

ENTRY_CACHE = "entries.json"
# a head line (JSON: format, pkic, code), then a line a record: its entry's text digest,
# its mac (or "-"), and the record as JSON text (one line: json.dumps escapes every
# control character). Format 2 held the records as strings inside one JSON object: each
# escaped on writing and decoded twice on reading, a second and a half at W100k.
ENTRY_FORMAT = 3
# more certificates than this changed (a fifth, at least 200): the whole file is loaded
# instead, which parses faster than as many entries one at a time
MIN_MISSES = 200
MISS_SHARE = 5
PARSE_CHUNK = 4096  # cached records parsed a chunk at a time, each chunk in one call

_SECTIONS = ("authorities", "certificates")
_SECTION = re.compile(r"(authorities|certificates):(?:[ ]*|[ ]+#.*)\Z")  # (YAML: a comment after a space only)
_TOP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:(?:[ ].*)?\Z")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_ENTRY_KEY = re.compile(rf"(?:({_NAME})|\"({_NAME})\"|'({_NAME})'):(?:[ ].*)?\Z")
# plain scalars that YAML (1.1 or 1.2) types as something other than text
_NOT_TEXT = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})
# line breaks other than \n (libyaml reads the last three as breaks too), a BOM
_ODD_BREAKS = ("\r", "\x85", "\u2028", "\u2029", "\ufeff")
# any character YAML does not accept in a stream: the split hands some lines (section
# headers, comments between pieces) to no parser, so the whole text is checked for them
_UNACCEPTABLE = re.compile("[^\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class Split:
    """pki.yaml cut at its entries: ``rest`` is every top-level key but the two sections,
    as the runs of lines between them (each a piece of its own: a quoted scalar opened in
    one run must not be read as closed in the next); ``sections`` each section's entries,
    name -> its lines."""

    rest: list[str]
    sections: dict[str, dict[str, str]] = field(default_factory=dict)


def split(text: str) -> Split | None:
    """``text`` cut at its entries, or None when the cut is not certain to be what a
    YAML parser reads (see the module's docstring)."""
    if any(c in text for c in _ODD_BREAKS) or "\t" in text or _UNACCEPTABLE.search(text):
        return None
    rest: list[str] = []
    runs: list[list[str]] = [rest]  # the contiguous runs of top-level lines
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None  # the section being read (None: top level)
    current: list[str] | None = None  # the lines of the entry being read
    indent = 0  # the section's entry indentation (0: not known yet)
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        if not stripped or stripped[0] == "#":  # blank or a comment: wherever it is
            (current if current is not None else rest if section is None else []).append(line)
            continue
        col = len(line) - len(stripped)
        if col == 0:
            if section is not None and not section:
                return None  # a section header with no entry below it: null, not a mapping
            m = _SECTION.fullmatch(line)
            if m:
                if m.group(1) in sections:
                    return None  # the section twice: the parser refuses a duplicate key
                section = sections[m.group(1)] = {}
                current, indent = None, 0
                if rest:
                    rest = []
                    runs.append(rest)
                continue
            if not _TOP_KEY.fullmatch(line):
                return None  # a directive, a document marker, a quoted or complex key ...
            section = current = None
            rest.append(line)
            continue
        if section is None:
            if current is None and not rest:
                return None  # an indented first line
            rest.append(line)
            continue
        if indent == 0:
            indent = col
        if col < indent:
            return None
        if col == indent:
            m = _ENTRY_KEY.fullmatch(line, indent)
            if m is None:
                return None
            name = m.group(1) or m.group(2) or m.group(3)
            if name in section or (m.group(1) and (name[0].isdigit() or name.lower() in _NOT_TEXT)):
                return None  # twice, or a plain scalar a parser may type as a number, a boolean ...
            current = section[name] = [line]
            continue
        if current is None:
            return None
        current.append(line)
    if section is not None and not section:
        return None
    return Split(
        ["\n".join(run) + "\n" for run in runs if any(ln.strip() and not ln.lstrip(" ").startswith("#") for ln in run)],
        {name: {entry: "\n".join(lines) + "\n" for entry, lines in items.items()} for name, items in sections.items()},
    )


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


class _NoChain(Exception):
    pass


def _chains(split_: Split, defaults: Any, issuers: dict[str, Any]) -> dict[str, str] | None:
    """Each authority's ``deps`` digest: ``defaults`` and the text of it and of every
    authority above it. None: an issuer that is no authority here, or a ring."""
    base = _digest(__version__, cache.code_digest(), repr(defaults))
    texts = split_.sections.get("authorities", {})
    out: dict[str, str] = {}

    def chain(name: str, below: frozenset[str]) -> str:
        if name in out:
            return out[name]
        if name in below or name not in texts:
            raise _NoChain
        parent = issuers.get(name)
        if parent is not None and not isinstance(parent, str):
            raise _NoChain
        out[name] = _digest(base if parent is None else chain(parent, below | {name}), texts[name])
        return out[name]

    try:
        for name in texts:
            chain(name, frozenset())
    except (_NoChain, RecursionError):
        return None
    return out


def _cache_file(repo: Path) -> Path:
    return cache.cache_dir(repo) / ENTRY_CACHE


# a record: (its JSON text, its mac or None)
Record = tuple[str, str | None]
_RECORD_LINE = re.compile(r"^([0-9a-f]{64}) ([0-9a-f]{64}|-) (\{.*\})$", re.MULTILINE)


def _head() -> str:
    return json.dumps({"format": ENTRY_FORMAT, "pkic": __version__, "code": cache.code_digest()}, separators=(",", ":"))


def decode_records(body: str) -> dict[str, Record] | None:
    """The records of an entry-cache file's text (text digest -> record), or None: not
    this code's. A damaged line is left out (a miss, never a crash). Read in place (at
    W100k the text is 60 MB: no copy of it cut into lines)."""
    head = _head()
    if not body.startswith(head + "\n"):
        return None
    records: dict[str, Record] = {}
    for m in _RECORD_LINE.finditer(body, len(head) + 1):
        digest, mac, text = m.groups()
        records[digest] = (text, None if mac == "-" else mac)
    return records


def encode_records(records: dict[str, Record]) -> Iterator[str]:
    """An entry-cache file's text, a line at a time (100,000 records are tens of MB)."""
    yield _head() + "\n"
    for digest, (text, mac) in records.items():
        yield f"{digest} {mac or '-'} {text}\n"


def _read_records(repo: Path) -> dict[str, Record] | None:
    """The entry cache's records (text digest -> record), or None: none kept, or not ours."""
    try:
        return decode_records(cache.read_private(_cache_file(repo)).decode("utf-8"))
    except (OSError, ValueError):
        return None


def _csr_digest(repo: Path, rel: str | None) -> str | None:
    if rel is None:
        return None
    return hashlib.sha256(layout.read_input(repo, rel)).hexdigest()


def _mac(key: bytes, digest: str, text: str) -> str:
    """A record's authentication under ``key``: its entry's text digest and the record's text."""
    return hmac.digest(key, digest.encode() + b"\0" + text.encode(), "sha256").hex()  # (one call: hmac.new costs 10 µs)


def _authentic(item: Record | None, digest: str, mac_key: bytes | None) -> str | None:
    """The record text of ``item`` if there is one (and, with ``mac_key``, one apply
    itself made)."""
    if item is None:
        return None
    text, mac = item
    if mac_key is not None and not (mac is not None and hmac.compare_digest(mac, _mac(mac_key, digest, text))):
        return None
    return text


def _parsed(texts: list[str]) -> list[Any]:
    """The records ``texts``, parsed in one call (its keys shared: a hundred thousand
    records each holding their own copy of a dozen key strings is tens of MB), or one by
    one where that fails (a damaged record is then a miss, never a crash)."""
    try:
        whole = json.loads("[" + ",".join(texts) + "]")
        if isinstance(whole, list) and len(whole) == len(texts):
            return whole
    except (ValueError, RecursionError):
        pass
    out: list[Any] = []
    for text in texts:
        try:
            out.append(json.loads(text))
        except (ValueError, RecursionError):
            out.append(None)
    return out


def _hit(repo: Path, record: Any, name: str, chains: dict[str, str]) -> Entry | None:
    """The cached certificate ``name``, if ``record`` is it and all it depends on is unchanged."""
    try:
        if record["name"] != name or chains.get(record["issuer"]) != record["deps"]:
            return None
        entry = cache.load_entry(record["entry"])
        if entry.name != name or entry.kind != "certificate" or entry.issuer != record["issuer"]:
            return None
        if _csr_digest(repo, entry.csr_path) != record["csr"]:
            return None
        return entry
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, PkicError):
        return None


def _parse(text: str) -> Any:
    """One piece of pki.yaml, bounded as the whole file is; None: it has an alias (the
    limits on expansion are the whole file's), or does not parse alone."""
    counts = yaml_counts(text, SPEC_FILE)
    if counts is None or counts[0] != counts[1]:
        return None
    try:
        return parse_yaml(text, SPEC_FILE, fast=True, checked=True)
    except PkicError:
        return None


def load(repo: Path, data: bytes, mac_key: bytes | None = None) -> EffectiveSpec | None:
    """pki.yaml (``data``) resolved with the entry cache's help, or None: the caller
    loads the whole file (no cache yet, too much changed, a split that is not certain,
    or any problem in the spec, which the full load reports). ``mac_key`` (apply's,
    derived from the seal key): only records authenticated with it are taken, and the
    records this load makes are authenticated with it."""
    records = _read_records(repo)
    if not records or len(data) > MAX_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = split(text)
    if parts is None or not parts.sections.get("certificates"):
        return None
    try:
        done = _resolve(repo, parts, records, mac_key)
    except (PkicError, ValidationError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if done is None:
        return None
    effective, kept, fresh, chains = done
    if fresh:
        _write(repo, {**kept, **_records(repo, parts, effective, fresh, chains, mac_key)})
    return effective


def _top_level(parts: Split) -> dict[str, Any] | None:
    """The top-level keys but the sections, each run of them parsed on its own; None when
    a run does not parse alone to a mapping, or a key is written twice."""
    out: dict[str, Any] = {}
    for run in parts.rest:
        doc = _parse(run)
        if not isinstance(doc, dict) or set(doc) & (set(out) | set(parts.sections)):
            return None
        out.update(doc)
    return out


def _resolve(
    repo: Path, parts: Split, records: dict[str, Record], mac_key: bytes | None
) -> tuple[EffectiveSpec, dict[str, Record], list[str], dict[str, str]] | None:
    """The effective spec, the records it took from the cache (by digest), the names of
    the certificates it resolved afresh, and every authority's ``deps``."""
    from compiler.spec.resolution import canonical_order, moves_of, resolve

    rest = _top_level(parts)
    if rest is None:
        return None
    auth_texts = parts.sections.get("authorities", {})
    auths: dict[str, Any] = {}
    if auth_texts:
        doc = _parse("authorities:\n" + "".join(auth_texts.values()))
        if not isinstance(doc, dict) or not isinstance(doc.get("authorities"), dict) or list(doc["authorities"]) != list(auth_texts):
            return None
        auths = doc["authorities"]
    issuers = {n: (a.get("issuer") if isinstance(a, dict) else None) for n, a in auths.items()}
    chains = _chains(parts, rest.get("defaults"), issuers)
    if chains is None:
        return None
    certs = parts.sections["certificates"]
    hits: dict[str, Entry] = {}
    kept: dict[str, Record] = {}
    found: list[tuple[str, str, str]] = []  # (name, digest, record text)
    for name, text in certs.items():
        digest = _digest(text)
        record = _authentic(records.get(digest), digest, mac_key)
        if record is not None:
            found.append((name, digest, record))
    for start in range(0, len(found), PARSE_CHUNK):  # (all at once, their dicts were 250 MB at W100k)
        part = found[start : start + PARSE_CHUNK]
        for (name, digest, _), parsed in zip(part, _parsed([r for _, _, r in part]), strict=True):
            entry = _hit(repo, parsed, name, chains)
            if entry is not None:
                hits[name] = entry
                kept[digest] = records[digest]
    misses = {name: text for name, text in certs.items() if name not in hits}  # (in the file's order)
    if len(misses) > max(MIN_MISSES, len(certs) // MISS_SHARE):
        return None
    fresh: dict[str, Any] = {}
    for name, text in misses.items():
        doc = _parse("certificates:\n" + text)
        if not isinstance(doc, dict) or list(doc) != ["certificates"] or not isinstance(doc["certificates"], dict):
            return None
        if list(doc["certificates"]) != [name]:
            return None
        fresh[name] = doc["certificates"][name]
    partial = {k: v for k, v in rest.items() if k != "moved"}
    partial["authorities"] = auths
    partial["certificates"] = fresh
    effective = resolve(Spec.model_validate(partial), Locator(SPEC_FILE, partial), repo=repo)
    entries = dict(effective.entries)
    children = {k: list(v) for k, v in effective.children.items()}
    for name, entry in hits.items():
        if name in entries:
            return None  # also an authority: the full load reports it
        entries[name] = entry
        assert entry.issuer is not None
        children.setdefault(entry.issuer, []).append(name)
    moves: list[Moved] = Spec.model_validate({"version": 1, "moved": rest["moved"]}).moved if "moved" in rest else []
    moved = moves_of(moves, entries)
    if moved is None:
        return None
    whole = EffectiveSpec(
        canonical_order(entries, children),
        moved,
        {k: sorted(v) for k, v in children.items()},
        effective.publish,
        Locator(SPEC_FILE, {}),
    )
    return whole, kept, list(fresh), chains


def _records(
    repo: Path, parts: Split, effective: EffectiveSpec, names: Any, chains: dict[str, str], mac_key: bytes | None = None
) -> dict[str, Record]:
    """The cache records of the certificates ``names`` of ``effective``, by text digest
    (authenticated with ``mac_key``, when apply makes them)."""
    texts = parts.sections["certificates"]
    records: dict[str, Record] = {}
    encode = _COMPACT.encode  # (one encoder: json.dumps makes one a call)
    for name in names:
        entry = effective.entries.get(name)
        if entry is None or entry.kind != "certificate" or entry.issuer not in chains or name not in texts:
            continue
        digest = _digest(texts[name])
        text = encode(
            {
                "name": name,
                "issuer": entry.issuer,
                "deps": chains[entry.issuer],
                "csr": _csr_digest(repo, entry.csr_path),
                "entry": cache.dump_entry(entry),
            }
        )
        records[digest] = (text, None if mac_key is None else _mac(mac_key, digest, text))
    return records


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # (ensure_ascii: a record is one line)


def _write(repo: Path, records: dict[str, Record]) -> bool:
    """The entry cache, written a record at a time (100,000 records are tens of MB)."""
    return cache.write_private(_cache_file(repo), encode_records(records))


@dataclass
class Parsed:
    """What :func:`store` needs of the whole document a full load parsed (kept instead of
    the document, which is let go before resolving)."""

    top: dict[str, Any]  # the top-level keys but the sections
    authorities: Any
    certificates: list[str] | None  # the certificates' names, in order

    @staticmethod
    def of(doc: dict[str, Any]) -> Parsed:
        certs = doc.get("certificates")
        return Parsed(
            {k: v for k, v in doc.items() if k not in _SECTIONS},
            doc.get("authorities"),
            list(certs) if isinstance(certs, dict) else None,
        )


def store(repo: Path, data: bytes, effective: EffectiveSpec, parsed: Parsed, mac_key: bytes | None = None) -> bool:
    """Keep the certificates of ``effective`` (resolved by a full load from pki.yaml's
    bytes ``data``, which parsed whole to ``parsed``) for the next load, only where the
    split reads the file as the parser did (otherwise a piece cached under its own text
    could stand for what the parser read differently). Every run of top-level lines and
    the authorities must parse alone to what the whole document holds, so each section
    starts where the parser starts it; the parser's certificates must be the split's, in
    order, so none ran into the next (a key line is one only where all before it is
    closed); and a certificate whose lines may hold an alias (a ``*`` but in a quoted
    ``*.`` wildcard) is not kept: what it stands for is elsewhere. Returns whether it kept
    them."""
    try:
        parts = split(data.decode("utf-8"))
        if parts is None or not parts.sections.get("certificates"):
            return False
        if _top_level(parts) != parsed.top:
            return False
        auth_texts = parts.sections.get("authorities", {})
        if auth_texts and _parse("authorities:\n" + "".join(auth_texts.values())) != {"authorities": parsed.authorities}:
            return False
        texts = parts.sections["certificates"]
        if parsed.certificates != list(texts):
            return False
        same = [n for n, text in texts.items() if "*" not in text.replace('"*.', "").replace("'*.", "")]
        issuers = {n: e.issuer for n, e in effective.entries.items() if e.kind == "authority"}
        if set(issuers) != set(auth_texts):
            return False
        chains = _chains(parts, parsed.top.get("defaults"), issuers)
        if chains is None:
            return False
        records = _records(repo, parts, effective, same, chains, mac_key)
        if mac_key is None:  # a plan: what apply authenticated stays so where the text is the same
            for digest, (text, mac) in (_read_records(repo) or {}).items():
                new = records.get(digest)
                if new is not None and mac is not None and text == new[0]:
                    records[digest] = (text, mac)
        return _write(repo, records)
    except (OSError, UnicodeDecodeError, TypeError, ValueError, PkicError):
        return False
