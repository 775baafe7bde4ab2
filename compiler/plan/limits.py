"""Limits outside pkic that a plan must respect: the last date X.509 can express, and
verifiers known to refuse valid certificates (said as warnings in the plan).
"""

from __future__ import annotations

from datetime import UTC, datetime

from compiler.model.durations import format_duration
from compiler.model.errors import Diagnostic, PkicError
from compiler.spec import EffectiveSpec
from compiler.state import ts

LAST_X509_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def check_horizon(spec: EffectiveSpec, now: datetime) -> None:
    """Every validity pkic would compute from ``now`` must fit an X.509 date (GeneralizedTime
    ends in 9999): a lifetime past it is an error on that field, not an overflow later."""
    room = LAST_X509_TIME - now
    diags: list[Diagnostic] = []
    for name, e in spec.entries.items():
        section = "authorities" if e.kind == "authority" else "certificates"
        fields = [("lifetime", e.lifetime)]
        if e.ca is not None:
            fields += [
                ("crl_lifetime", e.ca.crl_lifetime),
                ("ocsp_lifetime", e.ca.ocsp_lifetime),
                ("ocsp_responder_lifetime", e.ca.responder_lifetime),
            ]
        for field_name, value in fields:
            if value > room:
                diags.append(
                    Diagnostic(
                        "pki.yaml",
                        None,
                        None,
                        f"{section}.{name}.{field_name}",
                        f"{format_duration(value)} from {ts(now)} is past the last date X.509 can express (9999-12-31)",
                        "choose a shorter lifetime",
                    )
                )
    if diags:
        raise PkicError(diags)


def verifier_caveats(spec: EffectiveSpec, names: list[str]) -> list[str]:
    """Known verifier limits that certificates this plan signs run into (issue 13 item 9;
    tests/interop holds each against the real verifier). Valid X.509, refused by some:

    * URI or email name constraints above a leaf with a URI or email SAN: cryptography's
      verifier (PolicyBuilder) and webpki-based ones (rustls) refuse the leaf (the SPIFFE
      case); OpenSSL, GnuTLS and Go accept it;
    * an Ed25519 authority: the same verifiers refuse chains through it."""
    out: list[str] = []
    entries = spec.entries
    for name in names:
        entry = entries.get(name)
        if entry is None:
            continue
        if entry.kind == "authority" and entry.key_type == "ed25519":
            out.append(
                f"{name}: an Ed25519 authority; cryptography's verifier (PolicyBuilder) and webpki-based clients (rustls) "
                "refuse chains through it (OpenSSL, GnuTLS, Go and Node accept them)"
            )
        if entry.kind != "certificate" or not (entry.spec.get("uri") or entry.spec.get("email")):
            continue
        anc = entry.issuer
        while anc is not None:
            nc = entries[anc].spec.get("name_constraints") or {}
            kinds = [k for k in ("uri", "email") if entry.spec.get(k) and (nc.get(f"permitted_{k}") or nc.get(f"excluded_{k}"))]
            if kinds:
                out.append(
                    f"{name}: {' and '.join(kinds)} name constraints on {anc} above its {' and '.join(k.upper() if k == 'uri' else k for k in kinds)} "
                    "SAN; cryptography's verifier (PolicyBuilder) and webpki-based clients (rustls) refuse such a leaf "
                    "(OpenSSL, GnuTLS, Go and Node accept it)"
                )
                break
            anc = entries[anc].issuer
    return out
