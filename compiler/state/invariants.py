"""What only grows (or stays) from one seal to the next: lineage, serial, revocations,
compromises, CRL numbers. Apply refuses to seal a state that breaks one."""

from __future__ import annotations

import json
from dataclasses import dataclass

from compiler.state.records import State


@dataclass(frozen=True)
class Invariants:
    """What only grows (or stays) from one seal to the next."""

    lineage: str | None
    serial: int
    revoked: frozenset[str]
    compromised: frozenset[str]
    crl_numbers: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, state: State) -> Invariants:
        revoked = frozenset(
            f"{r.get('issuer_key_id')}:{r['serial']}" for recs in state.certificates.values() for r in recs if r["status"] == "revoked"
        )
        compromised = frozenset(json.dumps({k: v for k, v in c.items() if k != "name"}, sort_keys=True) for c in state.compromised)
        numbers: dict[str, int] = {}
        for a, i in state.crls.items():
            recs = state.certificates.get(a) or [{}]
            for name in (a, *recs[0].get("moved_from", [])):  # a moved authority's CRL keeps its number
                numbers[name] = max(numbers.get(name, 0), int(i.get("number", 0)))
        return cls(state.lineage, state.serial, revoked, compromised, tuple(sorted(numbers.items())))

    def broken_by(self, new: Invariants, growth: bool = True) -> list[str]:
        out = []
        if self.lineage is not None and new.lineage != self.lineage:
            out.append(f"the lineage changed ({self.lineage} -> {new.lineage})")
        if growth and new.serial <= self.serial:
            out.append(f"the state serial did not grow ({self.serial} -> {new.serial})")
        if not self.revoked <= new.revoked:
            out.append(f"{len(self.revoked - new.revoked)} revoked certificate(s) are no longer revoked")
        if not self.compromised <= new.compromised:
            out.append("a recorded key compromise disappeared")
        numbers = dict(new.crl_numbers)
        for a, n in self.crl_numbers:
            if numbers.get(a, -1) < n:
                out.append(f"the CRL number of {a} went back ({n} -> {numbers.get(a)})")
        return out
