"""Resolution: the validated models become the effective spec, defaults applied, names
normalised, issuers resolved, checked as a whole, in a canonical parents-first order.

:func:`resolve` runs small named checks in a fixed order, each adding what it finds to
one list, so one run reports every cross-field problem at once. An entry whose issuer
cannot be resolved is left out with everything below it: its problem is reported once,
not again as follow-ons.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from compiler.layout import name_problem
from compiler.model.bounded import Locator, quote
from compiler.model.errors import Diagnostic, PkicError
from compiler.spec.diagnostics import sorted_diagnostics
from compiler.spec.effective import EffectiveSpec, Entry, PublishSettings
from compiler.spec.entries import authority_entry, certificate_entry
from compiler.spec.models import Authority, Certificate, Moved, Spec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass
class _Work:
    """What the checks share: the entries still in play, and every problem found."""

    loc: Locator
    auths: dict[str, Authority]
    certs: dict[str, Certificate]
    diags: list[Diagnostic] = field(default_factory=list)

    def prune(self, bad: set[str]) -> None:
        """Leave out entries hanging below ``bad`` ones: their problems are reported already."""
        for items in (self.auths, self.certs):
            for name in list(items):
                if name in bad:
                    del items[name]
        changed = True
        while changed:
            changed = False
            for items in (self.auths, self.certs):
                for name in [n for n, e in items.items() if e.issuer in bad]:
                    del items[name]
                    bad.add(name)
                    changed = True

    def depth_of(self, name: str) -> int:
        """How many authorities are above ``name`` (0 for a root)."""
        d, node = 0, self.auths[name].issuer if name in self.auths else self.certs[name].issuer
        while node is not None:
            d += 1
            node = self.auths[node].issuer
        return d


def resolve(spec: Spec, loc: Locator, broken: frozenset[str] = frozenset(), repo: Path | None = None) -> EffectiveSpec:
    """Turn the validated models into the effective spec; every cross-field problem at once.

    ``broken`` names entries that failed validation and were left out of ``spec``:
    references to them are not reported again, and what hangs below them is skipped.
    """
    from compiler.policy.constraints import check_name_constraints  # lazy: policy imports compiler.spec

    w = _Work(loc, dict(spec.authorities), dict(spec.certificates))
    w.prune(set(broken))
    _check_names(w)
    unresolved = _check_issuers(w, broken) | _check_cycles(w)
    for name in set(w.auths) & set(w.certs):
        w.certs.pop(name)
    w.prune(unresolved)

    entries: dict[str, Entry] = {}
    children: dict[str, list[str]] = {}
    for name, a in w.auths.items():
        issuer = w.auths.get(a.issuer) if a.issuer else None
        entries[name], diags = authority_entry(loc, name, a, defaults=spec.defaults, issuer=issuer, depth=w.depth_of(name))
        w.diags += diags
        if a.issuer:
            children.setdefault(a.issuer, []).append(name)
    for name, c in w.certs.items():
        issuer = w.auths.get(c.issuer)
        entries[name], diags = certificate_entry(loc, name, c, defaults=spec.defaults, issuer=issuer, depth=w.depth_of(name), repo=repo)
        w.diags += diags
        children.setdefault(c.issuer, []).append(name)

    _check_lifetimes(w, entries)
    _check_path_lengths(w, entries)
    moved = _moved(w, spec.moved, entries)
    w.diags.extend(check_name_constraints(entries, loc))
    if w.diags:
        raise PkicError(sorted_diagnostics(w.diags))

    publish = PublishSettings(spec.publish.ocsp, spec.publish.ocsp_dir.rstrip("/"))
    return EffectiveSpec(canonical_order(entries, children), moved, {k: sorted(v) for k, v in children.items()}, publish, loc)


# --------------------------------------------------------------------------- the whole


def _check_names(w: _Work) -> None:
    """Every name becomes a file name, and authorities and certificates share one namespace."""
    for section, items in (("authorities", w.auths), ("certificates", w.certs)):
        for name in items:
            problem = (
                "use letters, digits, '.', '_' and '-' (it becomes a file name)"
                if not NAME_RE.match(name) or ".." in name
                else name_problem(name)
            )
            if problem:
                w.diags.append(w.loc.diag((section, name), f"{quote(name)} is not a valid name", problem, key=True))
    for name in sorted(set(w.auths) & set(w.certs)):
        w.diags.append(
            w.loc.diag(
                ("certificates", name),
                f"duplicate name '{name}': it is also an authority",
                "names are shared by authorities and certificates; rename one",
                key=True,
            )
        )


def _check_issuers(w: _Work, broken: frozenset[str]) -> set[str]:
    """Each issuer is a known authority (not a leaf, not itself); returns the entries
    whose issuer is not."""
    unresolved: set[str] = set()

    def check(section: str, name: str, issuer: str | None) -> None:
        if issuer is None or issuer in w.auths or issuer in broken:
            return
        unresolved.add(name)
        path = (section, name, "issuer")
        if issuer in w.certs:
            w.diags.append(
                w.loc.diag(
                    path,
                    f"'{issuer}' is a certificate, not an authority: a leaf cannot issue",
                    "move it to authorities, or pick an authority as issuer",
                )
            )
        else:
            close = difflib.get_close_matches(issuer, list(w.auths), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known authorities: {', '.join(sorted(w.auths)) or 'none'}"
            w.diags.append(w.loc.diag(path, f"unknown issuer '{issuer}'", hint))

    for name, a in w.auths.items():
        check("authorities", name, a.issuer)
        if a.issuer == name:
            unresolved.add(name)
            w.diags.append(
                w.loc.diag(
                    ("authorities", name, "issuer"), "an authority cannot name itself as issuer", "omit issuer for a self-signed root"
                )
            )
    for name, c in w.certs.items():
        check("certificates", name, c.issuer)
    return unresolved


def _check_cycles(w: _Work) -> set[str]:
    """Authorities issuing each other in a ring have no root; returns the authorities in one."""
    in_cycles: set[str] = set()
    reported: set[frozenset[str]] = set()
    for start in sorted(w.auths):
        path: list[str] = []
        node: str | None = start
        while node is not None and node in w.auths and node not in path:
            path.append(node)
            node = w.auths[node].issuer
        if node is not None and node in path:
            cycle = path[path.index(node) :]
            if len(cycle) > 1 and frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                in_cycles.update(cycle)
                first = min(cycle)
                i = cycle.index(first)
                ring = cycle[i:] + cycle[:i] + [first]
                w.diags.append(
                    w.loc.diag(
                        ("authorities", first, "issuer"),
                        "issuer cycle: " + " -> ".join(ring),
                        "one authority in the cycle must be a root (no issuer)",
                    )
                )
    return in_cycles


# --------------------------------------------------------------------------- between entries


def _check_lifetimes(w: _Work, entries: dict[str, Entry]) -> None:
    """A certificate never outlives its issuer."""
    for name, e in entries.items():
        if e.issuer is None:
            continue
        parent = entries[e.issuer]
        if e.lifetime > parent.lifetime:
            section = "authorities" if e.kind == "authority" else "certificates"
            written: Authority | Certificate = w.auths[name] if e.kind == "authority" else w.certs[name]
            field_path = (section, name, "lifetime") if written.lifetime else (section, name)
            w.diags.append(
                w.loc.diag(
                    field_path,
                    f"lifetime {e.spec['lifetime']} is longer than its issuer '{e.issuer}' ({parent.spec['lifetime']}): a certificate never outlives its issuer",
                    f"shorten it, or lengthen {e.issuer}'s lifetime",
                )
            )


def _check_path_lengths(w: _Work, entries: dict[str, Entry]) -> None:
    """No authority sits deeper below another than that one's path_length allows."""
    for name, e in entries.items():
        if e.kind != "authority" or e.issuer is None:
            continue
        hops: int = 1
        anc: str | None = e.issuer
        while anc is not None:
            pl = entries[anc].spec["path_length"]
            if pl is not None and hops > pl:
                w.diags.append(
                    w.loc.diag(
                        ("authorities", name, "issuer"),
                        f"path length exceeded: '{anc}' has path_length {pl}, and '{name}' would be authority number {hops} below it",
                        f"raise path_length on '{anc}' or issue '{name}' from higher up",
                    )
                )
                break
            hops += 1
            anc = entries[anc].issuer


def _moved(w: _Work, moves: list[Moved], entries: dict[str, Entry]) -> dict[str, str]:
    """The renames, old name -> new: the old name gone, the new one present, each once."""
    moved: dict[str, str] = {}
    targets: set[str] = set()
    for i, m in enumerate(moves):
        if m.from_ in entries:
            w.diags.append(w.loc.diag(("moved", i, "from"), f"'{m.from_}' is still in pki.yaml; a moved entry's old name must be gone"))
        if m.to not in entries:
            w.diags.append(w.loc.diag(("moved", i, "to"), f"'{m.to}' is not in pki.yaml"))
        if m.from_ in moved or m.to in targets:
            w.diags.append(w.loc.diag(("moved", i), f"'{m.from_}' -> '{m.to}' repeats an earlier move"))
        moved[m.from_] = m.to
        targets.add(m.to)
    return moved


def moves_of(moves: list[Moved], entries: dict[str, Entry]) -> dict[str, str] | None:
    """The renames of ``moves`` among ``entries``, or None when any is wrong (the full
    load reports it with its position)."""
    from compiler.spec.models import SPEC_FILE

    w = _Work(Locator(SPEC_FILE, {}), {}, {})
    moved = _moved(w, moves, entries)
    return None if w.diags else moved


def canonical_order(entries: dict[str, Entry], children: dict[str, list[str]]) -> dict[str, Entry]:
    """Depth-first from the roots, authorities before leaves, then by name: the order of
    plans, state and out/, whatever the order in pki.yaml."""
    ordered: dict[str, Entry] = {}

    def visit(name: str) -> None:
        ordered[name] = entries[name]
        kids = children.get(name, [])
        for kid in sorted(kids, key=lambda n: (entries[n].kind != "authority", n)):
            visit(kid)

    for root in sorted(n for n, e in entries.items() if e.issuer is None):
        visit(root)
    return ordered
