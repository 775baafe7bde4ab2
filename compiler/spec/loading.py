"""Reading pki.yaml: the file to a document with positions, then to the effective spec.

:func:`load` is the entry point: the resolved-spec cache when it may, else the fast
parsers, and only when something is wrong the slow, exact path that reports every
problem at once (:func:`read_document`, validation, a partial resolution of what is
valid). :func:`locate` gives positions to diagnostics made later without them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compiler import layout
from compiler.model.bounded import Locator, check_yaml, yaml_nodes
from compiler.model.errors import Diagnostic, PkicError
from compiler.model.heap import long_lived
from compiler.spec import cache, incremental
from compiler.spec.diagnostics import locate_duplicate, pydantic_diags, sorted_diagnostics
from compiler.spec.effective import EffectiveSpec
from compiler.spec.models import SPEC_FILE, Authority, Certificate, Defaults, Spec
from compiler.spec.parse import parse_yaml
from compiler.spec.resolution import resolve


def _read(path: Path, display: str) -> bytes:
    """An input file: ``display`` is its path in the repo, ``path`` the same file (so the
    repo is ``path`` without ``display``). Read without following any symlink."""
    text = str(path)
    if not text.endswith(display) or display.startswith("/"):
        return path.read_bytes()
    repo = Path(text[: len(text) - len(display)] or ".")
    return layout.read_input(repo, display)


# ruamel's round-trip loader is pure Python, ~100 us a node: it explains a document
# of at most this many nodes (~5 s), and a larger one is left to the C loaders
ROUND_TRIP_NODES = 50_000
# ... and when check_yaml cannot count the nodes (a syntax error stops it), the size
# stands in: 256 KiB is far beyond a hand-written pki.yaml, and even at ~5 bytes a node
# it is about that many nodes
ROUND_TRIP_BYTES = 256 * 1024


def read_document(path: Path, display: str = SPEC_FILE, *, fast: bool = False) -> tuple[Any, Locator]:
    """pki.yaml (or a file like it: ``display`` is its name in messages) as a mapping and
    a Locator for its positions, or PkicError with the reason. ``fast`` skips the
    positions when the document parses (they are only needed to report a problem)."""
    if fast and path.name == SPEC_FILE:
        try:
            data = _read(path, display)
            doc = parse_yaml(data.decode("utf-8"), path.name, fast=True)
            if isinstance(doc, dict):
                return doc, Locator(display, doc)
        except (OSError, UnicodeDecodeError, PkicError):
            pass  # the slow path below reports it properly
    try:
        text = _read(path, display).decode("utf-8")
    except FileNotFoundError:
        raise PkicError(
            [Diagnostic(display, None, None, "", "file not found", "run `pkic init DIR` to start a new PKI repo, or use -C DIR")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PkicError([Diagnostic(display, None, None, "", f"cannot read: {exc}")]) from None
    # The data by the C loaders; positions by libyaml's composer (bounded.yaml_nodes).
    # ruamel's round-trip loader is pure Python (~100 us a value: a 7 MB file took it ten
    # minutes): only for a modest file it must explain (its messages are clearer), or
    # for positions libyaml cannot give.
    written = check_yaml(text, display)
    # (no count: no parser reads it, a syntax error; the round-trip loader's message is clearer)
    modest = written <= ROUND_TRIP_NODES if written is not None else len(text) <= ROUND_TRIP_BYTES
    try:
        doc = parse_yaml(text, display, fast=True, checked=True)
    except PkicError as exc:
        if not modest:
            raise locate_duplicate(text, exc) from None
        try:  # ruamel's libyaml refuses some YAML 1.2 (`[spiffe://x/y]`) its own parser reads
            doc = parse_yaml(text, display, checked=True)
        except PkicError as exc2:
            raise locate_duplicate(text, exc2) from None
    nodes = None if fast else yaml_nodes(text)
    if not fast and nodes is None and modest:
        doc = parse_yaml(text, display, checked=True)
    loc = Locator(display, doc, nodes)
    if doc is None:
        raise PkicError([Diagnostic(display, 1, 1, "", "the file is empty", "start from `pkic init`, or see docs/spec.md")])
    if not isinstance(doc, dict):
        raise PkicError([loc.diag((), "the top level must be a mapping (version, defaults, authorities, certificates)")])
    return doc, loc


def _partial(doc: dict[str, Any]) -> tuple[Spec, frozenset[str], frozenset[str]] | None:
    """The valid part of a document that failed validation, so the cross-field checks
    can still report on it in the same run; and the names of the entries left out."""
    out: dict[str, Any] = {"version": 1}
    broken: set[str] = set()
    trimmed_paths: set[str] = set()
    for key in ("defaults", "moved"):
        if key in doc:
            try:
                if key == "defaults":
                    Defaults.model_validate(doc[key])
                else:
                    Spec.model_validate({"version": 1, "moved": doc[key]})
                out[key] = doc[key]
            except ValidationError:
                pass
    sections: tuple[tuple[str, type[Authority] | type[Certificate]], ...] = (("authorities", Authority), ("certificates", Certificate))
    for section, model in sections:
        items = doc.get(section)
        if not isinstance(items, dict):
            continue
        out[section] = {}
        for name, body in items.items():
            try:
                model.model_validate(body)
                out[section][name] = body
                continue
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            # check what is right in a wrong entry too: drop the failing fields, try again
            if isinstance(body, dict) and bad and not bad & {"issuer"} - set(body):
                trimmed = {k: v for k, v in body.items() if k not in bad}
                try:
                    model.model_validate(trimmed)
                    out[section][name] = trimmed
                    trimmed_paths.add(f"{section}.{name}")
                    continue
                except ValidationError:
                    pass
            broken.add(str(name))
    try:
        return Spec.model_validate(out), frozenset(broken), frozenset(trimmed_paths)
    except ValidationError:
        return None


def load_spec(path: Path, display: str = SPEC_FILE) -> tuple[Spec, Locator]:
    """Load and validate pki.yaml, raising PkicError with every problem found."""
    doc, loc = read_document(path, display)
    try:
        spec = Spec.model_validate(doc)
    except ValidationError as exc:
        raise PkicError(pydantic_diags(exc, loc, Spec)) from None
    return spec, loc


PLAN_CACHES = "plan"


def load(repo: Path, *, caches: str | bytes | None = PLAN_CACHES) -> EffectiveSpec:
    """Load, validate and resolve pki.yaml; on failure, every problem found in one error.

    The common, valid case is parsed with the fast C loader; only when something is
    wrong is the file parsed again with the round-trip loader, to locate each problem.
    A spec that resolved once is kept in the user's cache directory (see :func:`compiler.spec.cache.cache_dir`),
    keyed by the SHA-256 of pki.yaml and checked against the CSRs it read: at 10,000
    entries it loads in a fraction of the time of parsing, validating and resolving.

    ``caches``: PLAN_CACHES, the caches as a plan keeps them (it signs nothing); a key
    (apply's, derived from the seal key): only entry records authenticated with it, which
    only an apply made, and the records this load makes are authenticated with it (the
    caches are not reviewed input: nothing is signed from what a plan kept); None: no
    cache. pki.yaml is read only as a regular file reached through no symlink.
    """
    with long_lived():  # (the entries live as long as the command: see model.heap)
        return _load(repo, caches)


def _load(repo: Path, caches: str | bytes | None) -> EffectiveSpec:
    path = repo / SPEC_FILE
    plan = caches == PLAN_CACHES
    mac_key = caches if isinstance(caches, bytes) else None
    try:
        data = layout.read_input(repo, SPEC_FILE)
        cached = cache.read_cached(path, data, repo) if plan else None
        if cached is not None:
            return cached
        if plan or mac_key is not None:  # most entries unchanged since the last run: resolve only the others
            cached = incremental.load(repo, data, mac_key)
            if cached is not None:
                return cached
        fast = True
        try:
            doc = parse_yaml(data.decode("utf-8"), path.name, fast=True)
        except PkicError:
            # libyaml is YAML 1.1 and refuses some valid YAML 1.2 (a URI such as
            # spiffe://x/y in a flow list): the round-trip loader reads it
            doc, _ = read_document(path)
            fast = False
        if isinstance(doc, dict):
            spec = Spec.model_validate(doc)
            # entries are kept only from a file the fast parser read whole: the next load
            # parses a changed entry with it, alone, and the two parsers do not read every
            # text alike (`!, key` is a tag to one and two nulls to the other)
            parsed = incremental.Parsed.of(doc) if fast and (plan or mac_key is not None) else None
            # The fast parsers keep no positions, so the document has nothing more to give:
            # a problem found below is reported by the slow path, which reads the file
            # again. Let it go before resolving (100,000 entries' data is hundreds of MB).
            del doc
            effective = resolve(spec, Locator(SPEC_FILE, {}), repo=repo)
            del spec
            # the entry cache serves the next plan, changed or not; the whole-spec cache
            # (these very bytes) a file the split cannot read, or the fast parser could not
            kept = parsed is not None and incremental.store(repo, data, effective, parsed, mac_key)
            if plan and not kept:
                cache.store(path, data, effective, repo)
            return effective
    except (OSError, UnicodeDecodeError, ValidationError, PkicError):
        pass
    doc, loc = read_document(repo / SPEC_FILE)
    return _validate(doc, loc, repo)


def _validate(doc: dict[str, Any], loc: Locator, repo: Path) -> EffectiveSpec:
    """The slow path of :func:`load`: validate and resolve with positions at hand, and on
    failure report every problem, those of the valid part's cross-field checks too."""
    try:
        spec = Spec.model_validate(doc)
    except ValidationError as exc:
        diags = pydantic_diags(exc, loc, Spec)
        partial = _partial(doc)
        if partial is not None:
            try:
                resolve(partial[0], loc, partial[1], repo)
            except PkicError as more:
                # an entry checked without its wrong fields: keep only what its issuer says,
                # not follow-ons of the fields left out (defaults standing in for them)
                diags += [
                    d
                    for d in more.diagnostics
                    if not any(d.path == t or d.path.startswith(t + ".") for t in partial[2]) or d.path.endswith(".issuer")
                ]
        raise PkicError(sorted_diagnostics(diags)) from None
    return resolve(spec, loc, repo=repo)


def locate(repo: Path, diags: list[Diagnostic]) -> list[Diagnostic]:
    """Give a line to pki.yaml diagnostics made without one (by code that had no positions
    at hand, e.g. the planner): re-read pki.yaml with them, only when needed."""
    todo = [d for d in diags if d.file == SPEC_FILE and d.line is None and d.path]
    if not todo:
        return diags
    try:
        _, loc = read_document(repo / SPEC_FILE)
    except (PkicError, OSError):
        return diags
    out = []
    for d in diags:
        m = re.fullmatch(r"(authorities|certificates)\.(.+)\.([a-z_]+)", d.path) if d in todo else None
        if m:
            line, col = loc.at((m.group(1), m.group(2), m.group(3)))
            d = Diagnostic(d.file, line, col, d.path, d.message, d.hint)
        out.append(d)
    return out
