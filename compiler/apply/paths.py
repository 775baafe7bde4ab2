"""Every path in out/ an apply of a plan may write, known before it signs (``--commit``
checks them against .gitattributes first: a failure after signing would leave
certificates signed and recorded nowhere)."""

from __future__ import annotations

from compiler import layout
from compiler.plan import Plan
from compiler.spec import EffectiveSpec


def planned_paths(plan: Plan, spec: EffectiveSpec) -> list[str]:
    """Every path in out/ an apply of ``plan`` may write (for checks made before signing)."""
    paths = ["out.seal", "out/state.json", layout.TRUST_BUNDLE, layout.CRL_BUNDLE]
    names = [c.name for c in plan.changes] + list(plan.chain_updates) + [new for _, new in plan.moves]
    ocsp_dir = spec.publish.ocsp_dir
    for n in names:
        paths += [
            layout.cert_path(n),
            layout.chain_path(n),
            layout.der_path(n),
            layout.key_path(n),
            layout.ocsp_path(ocsp_dir, n),
        ]
    for c in plan.changes:  # the replaced certificate's response moves to its serial's name
        if c.serial:
            paths.append(layout.ocsp_path(ocsp_dir, c.name, c.serial))
    for p in plan.crls:
        paths += [layout.crl_path(p.name), layout.crl_path(p.name, pem=True)]
    for p in plan.responders:
        paths += [layout.responder_cert_path(p.name), layout.responder_key_path(p.name)]
    for p in plan.ocsp:
        paths += [layout.ocsp_path(ocsp_dir, p.name)] + ([layout.ocsp_path(ocsp_dir, p.name, p.serial)] if p.serial else [])
    paths += [r.path for r in plan.reencrypt]
    paths += [p for c in plan.cleanup for p in (c.file, c.to) if p is not None]
    return paths
