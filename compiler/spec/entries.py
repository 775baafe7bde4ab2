"""One entry of pki.yaml as it must be: defaults applied, names sorted and unique, its
issuer's URLs and its CSR's key taken in, with the problems of the entry alone. The
checks between entries are :mod:`compiler.spec.resolution`'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from compiler.model.bounded import Locator
from compiler.model.durations import default_refresh_before, default_renew_before, format_duration
from compiler.model.errors import Diagnostic
from compiler.spec.effective import AuthorityEntry, CaSettings, Entry, EntrySpec, LeafEntry
from compiler.spec.models import Authority, Certificate, Defaults, Subject

SUBJECT_ORDER = ("C", "ST", "L", "O", "OU", "CN")
DEFAULT_LIFETIME = {
    "root": timedelta(days=3650),
    "intermediate": timedelta(days=1825),
    "certificate": timedelta(days=90),
}
# A root's CRL lists only authorities and its key is best used seldom: it lives long. An
# intermediate's lists leaves and is re-signed often: a revocation reaches clients in days
DEFAULT_CRL_LIFETIME = {"root": timedelta(days=90), "intermediate": timedelta(days=7)}
DEFAULT_OCSP_LIFETIME = timedelta(days=4)
DEFAULT_RESPONDER_LIFETIME = {"root": timedelta(days=365), "intermediate": timedelta(days=30)}


def _subject(defaults: Subject | None, own: Subject | None) -> list[list[str]]:
    """The entry's subject over the default one (a null value removes a default), in
    X.500 order."""
    values: dict[str, str] = {}
    if defaults is not None:
        values.update({k: v for k, v in defaults.model_dump().items() if v is not None})
    if own is not None:
        for k in own.model_fields_set:
            v = getattr(own, k)
            if v is None:
                values.pop(k, None)
            else:
                values[k] = v
    return [[k, values[k]] for k in SUBJECT_ORDER if k in values]


def _ip_key(value: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(value)
    return (ip.version, int(ip))


def _issuer_urls(body: EntrySpec, issuer: Authority | None) -> None:
    """The issuer's CRL/OCSP/caIssuers URLs, which go into what it issues (only when set,
    so specs without them keep their digests)."""
    if issuer is None:
        return
    if issuer.crl_url:
        body["crl_url"] = issuer.crl_url
    if issuer.ocsp_url:
        body["ocsp_url"] = issuer.ocsp_url
    if issuer.ca_issuers_url:
        body["ca_issuers_url"] = issuer.ca_issuers_url


def _check_renew_before(loc: Locator, path: tuple[str, str], renew_before: timedelta, lifetime: timedelta) -> list[Diagnostic]:
    diags = []
    if renew_before >= lifetime:
        diags.append(
            loc.diag(
                (*path, "renew_before"),
                f"renew_before ({format_duration(renew_before)}) must be shorter than the lifetime ({format_duration(lifetime)})",
            )
        )
    return diags


def _name_constraints(a: Authority) -> dict[str, list[str]] | None:
    """The authority's name constraints, each list sorted and unique, empty ones left out."""
    if a.name_constraints is None:
        return None
    nc = {k: sorted(set(v)) for k, v in a.name_constraints.model_dump().items() if v}
    return nc or None


def _ca_settings(loc: Locator, name: str, a: Authority) -> tuple[CaSettings, list[Diagnostic]]:
    """How the authority publishes revocation: its CRL and OCSP lifetimes and refresh."""
    diags = []
    tier = "root" if a.issuer is None else "intermediate"
    crl_lifetime = a.crl_lifetime or DEFAULT_CRL_LIFETIME[tier]
    ocsp_lifetime = a.ocsp_lifetime or DEFAULT_OCSP_LIFETIME
    ca = CaSettings(
        crl_lifetime=crl_lifetime,
        crl_renew_before=a.crl_renew_before or default_refresh_before(crl_lifetime),
        ocsp_signer=a.ocsp_signer,
        ocsp_lifetime=ocsp_lifetime,
        ocsp_renew_before=a.ocsp_renew_before or default_refresh_before(ocsp_lifetime),
        responder_lifetime=a.ocsp_responder_lifetime or DEFAULT_RESPONDER_LIFETIME[tier],
        revoke_superseded=a.revoke_superseded,
    )
    for fname, short, longer in (
        ("crl_renew_before", ca.crl_renew_before, crl_lifetime),
        ("ocsp_renew_before", ca.ocsp_renew_before, ocsp_lifetime),
    ):
        if short >= longer:
            diags.append(
                loc.diag(
                    ("authorities", name, fname),
                    f"{fname} ({format_duration(short)}) must be shorter than the lifetime it refreshes ({format_duration(longer)})",
                )
            )
    return ca, diags


def authority_entry(
    loc: Locator, name: str, a: Authority, *, defaults: Defaults, issuer: Authority | None, depth: int
) -> tuple[Entry, list[Diagnostic]]:
    """The authority ``name`` as it must be (``issuer``: the authority above it, if any),
    and the problems of it alone."""
    diags: list[Diagnostic] = []
    lifetime = a.lifetime or DEFAULT_LIFETIME["root" if a.issuer is None else "intermediate"]
    subject = _subject(defaults.subject, a.subject)
    if not any(k == "CN" for k, _ in subject):
        diags.append(loc.diag(("authorities", name, "subject"), "an authority needs a subject CN", "add subject: {CN: ...}"))
    body: EntrySpec = {
        "kind": "authority",
        "issuer": a.issuer,
        "subject": subject,
        "key": a.key or defaults.key,
        "lifetime": format_duration(lifetime),
        "path_length": a.path_length,
        "name_constraints": _name_constraints(a),
        "rekey": a.rekey,
    }
    if a.ocsp_signer == "self":
        body["ocsp_signer"] = "self"
    _issuer_urls(body, issuer)
    ca, more = _ca_settings(loc, name, a)
    diags += more
    renew_before = a.renew_before or default_renew_before(lifetime)
    diags += _check_renew_before(loc, ("authorities", name), renew_before, lifetime)
    pols = tuple([a.policy] if isinstance(a.policy, str) else (a.policy or []))
    entry = AuthorityEntry(
        name=name,
        issuer=a.issuer,
        spec=body,
        lifetime=lifetime,
        renew_before=renew_before,
        depth=depth,
        revoke=a.revoke,
        key_compromised=a.key_compromised,
        ca=ca,
        policies=pols,
    )
    return entry, diags


def _csr_names(
    loc: Locator, diags: list[Diagnostic], name: str, c: Certificate, body: EntrySpec, repo: Path | None
) -> dict[str, list[str]] | None:
    """Take the key from the certificate's CSR (into ``body``); returns the names the CSR
    asks for that pki.yaml does not list (None: none). A CSR that cannot be read, or
    whose key contradicts ``key``, is a problem of the spec (added to ``diags``)."""
    from compiler.x509.csr import CsrError, load_csr  # here: only a spec with CSRs pays for loading them

    if c.csr is None or repo is None:
        return None
    try:
        info = load_csr(repo / c.csr, repo)
    except CsrError as exc:
        diags.append(
            loc.diag(
                ("certificates", name, "csr"),
                f"{c.csr}: {exc}",
                "regenerate it on the host (`pkic csr` or `openssl req -new`) and commit it",
            )
        )
        return None
    if c.key is not None and c.key != info.key_type:
        diags.append(
            loc.diag(
                ("certificates", name, "key"),
                f"key {c.key} does not match the CSR's {info.key_type} key",
                "remove `key`: a CSR brings its own",
            )
        )
    body["key"] = info.key_type
    body["csr_key"] = info.public_key_sha256
    listed: Mapping[str, list[str]] = body  # type: ignore[assignment]  # (by the CSR's kinds of name: dns, ip, uri, email)
    extra = {k: [v for v in vals if v not in listed.get(k, [])] for k, vals in info.names.items()}
    return {k: v for k, v in extra.items() if v} or None


def certificate_entry(
    loc: Locator, name: str, c: Certificate, *, defaults: Defaults, issuer: Authority | None, depth: int, repo: Path | None
) -> tuple[Entry, list[Diagnostic]]:
    """The leaf ``name`` as it must be (``issuer``: the authority that signs it; its CSR,
    if any, read from ``repo``), and the problems of it alone."""
    diags: list[Diagnostic] = []
    lifetime = c.lifetime or DEFAULT_LIFETIME["certificate"]
    subject = _subject(defaults.subject, c.subject)
    body: EntrySpec = {
        "kind": "certificate",
        "issuer": c.issuer,
        "profile": c.profile,
        "subject": subject,
        "dns": sorted(set(c.dns)),
        "ip": sorted(set(c.ip), key=_ip_key),
        "uri": sorted(set(c.uri)),
        "email": sorted(set(c.email)),
        "key": c.key or defaults.key,
        "lifetime": format_duration(lifetime),
        "rekey": c.rekey,
    }
    _issuer_urls(body, issuer)
    extra = _csr_names(loc, diags, name, c, body, repo)
    renew_before = c.renew_before or default_renew_before(lifetime)
    diags += _check_renew_before(loc, ("certificates", name), renew_before, lifetime)
    if c.profile in ("server", "peer") and not (c.dns or c.ip):
        diags.append(
            loc.diag(
                ("certificates", name),
                f"a {c.profile} certificate needs at least one dns or ip name",
                "add dns: [host.example.com] (clients check names against the SAN, not the CN)",
            )
        )
    if not (c.dns or c.ip or c.uri or c.email or any(k == "CN" for k, _ in subject)):
        diags.append(loc.diag(("certificates", name), "a certificate needs a name: a subject CN or at least one of dns, ip, uri, email"))
    entry = LeafEntry(
        name=name,
        issuer=c.issuer,
        spec=body,
        lifetime=lifetime,
        renew_before=renew_before,
        reuse_key=c.reuse_key,
        depth=depth,
        revoke=c.revoke,
        key_compromised=c.key_compromised,
        csr_path=c.csr,
        csr_extra_names=extra,
    )
    return entry, diags
