"""Policies (``policies/<name>.yaml``): what an authority may issue, checked at plan time
against the effective spec, before anything is signed.

A policy attached to an authority (``policy: services`` or a list) constrains everything
that authority signs, and a certificate must satisfy every policy on its chain, so a
child authority can only narrow. Every violation of a run is reported, each with the
place in pki.yaml and the rule in the policy file.

Name rules (all case-insensitive, on the IDNA A-label form):

* ``allowed_dns`` / ``forbidden_dns``: exact names or patterns where ``*`` stands for
  exactly one DNS label (``*.svc.internal`` matches ``a.svc.internal``, not
  ``a.b.svc.internal`` nor ``svc.internal``). A wildcard certificate name
  (``*.svc.internal``) needs ``allow_wildcards: true`` and a pattern covering it.
* ``allowed_uri`` / ``forbidden_uri``: ``scheme://host[:port]/path-pattern``; scheme,
  host and port must match exactly, then ``*`` in the path matches any run of
  characters (``spiffe://example.com/*`` never matches ``spiffe://example.com.evil/x``).
* ``allowed_ip`` / ``forbidden_ip``: CIDR ranges.
* ``allowed_email_domains``: the domain after ``@``, exactly.

Forbidden always wins over allowed. A list that is absent allows everything of its kind;
an empty list allows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from compiler.layout import SPEC_FILE
from compiler.model import names
from compiler.model.bounded import Locator, quote
from compiler.model.errors import Diagnostic, PkicError
from compiler.policy.constraints import ip_within, openssl_hostlike
from compiler.policy.matching import dns_matches, dns_overlaps, subject_matches, uri_matches
from compiler.spec import Duration, EffectiveSpec, Entry, IpNetwork, KeyTypeName, Profile, pydantic_diags, read_document
from compiler.spec.effective import san_lists

POLICY_DIR = "policies"
# a path through a YAML document: keys and list indexes (Locator.diag)
YamlPath = tuple[str | int, ...]


class Compromises(Protocol):
    """What check_state reads of the state: the declared key compromises (a Protocol,
    not the State: policy sits below state)."""

    @property
    def compromised(self) -> Sequence[Mapping[str, object]]: ...


def _dns_pattern(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("pattern", "{shown} is not a DNS name pattern", {"shown": quote(value)})
    labels = value.strip().rstrip(".").split(".")
    out = []
    for label in labels:
        if label == "*":
            out.append("*")
            continue
        try:
            out.append(names.dns_label(label))
        except ValueError:
            raise PydanticCustomError(
                "pattern", "{shown} is not a DNS name pattern ('*' stands for one whole label)", {"shown": quote(value)}
            ) from None
    return ".".join(out)


def _uri_pattern(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("pattern", "{shown} is not a URI pattern", {"shown": quote(value)})
    parts = urlsplit(value.strip())
    if not parts.scheme or not parts.netloc or "*" in parts.netloc or "*" in parts.scheme:
        raise PydanticCustomError(
            "pattern", "{shown} is not a URI pattern (scheme://host/path, '*' only in the path)", {"shown": quote(value)}
        )
    return value.strip()


DnsPattern = Annotated[
    str, BeforeValidator(_dns_pattern), WithJsonSchema({"type": "string", "examples": ["*.svc.internal", "api.example.com"]})
]
UriPattern = Annotated[str, BeforeValidator(_uri_pattern), WithJsonSchema({"type": "string", "examples": ["spiffe://example.com/*"]})]
SubjectField = Literal["C", "ST", "L", "O", "OU", "CN"]
SubjectPattern = Annotated[str, Field(min_length=1, max_length=128)]


class Policy(BaseModel):
    """policies/<name>.yaml"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    allowed_dns: list[DnsPattern] | None = Field(None, description="names or patterns ('*' = one label); absent: any")
    forbidden_dns: list[DnsPattern] = Field([], description="names or patterns never allowed (wins over allowed)")
    allow_wildcards: bool = Field(False, description="whether wildcard certificate names (*.x) are allowed")
    allowed_ip: list[IpNetwork] | None = Field(None, description="CIDR ranges; absent: any")
    forbidden_ip: list[IpNetwork] = []
    allowed_uri: list[UriPattern] | None = Field(None, description="scheme://host/path-pattern; absent: any")
    forbidden_uri: list[UriPattern] = []
    allowed_email_domains: list[Annotated[str, BeforeValidator(lambda v: names.dns_name(v, allow_wildcard=False))]] | None = None
    max_lifetime: Duration | None = None
    allowed_key_types: list[KeyTypeName] | None = None
    min_rsa_bits: Annotated[int, Field(ge=1024)] | None = None
    allowed_profiles: list[Profile] | None = None
    max_sans: Annotated[int, Field(ge=0)] | None = None
    required_subject: list[SubjectField] = []
    allowed_subject: dict[SubjectField, list[SubjectPattern]] | None = Field(
        None,
        description="per subject field, the values allowed ('*' matches any run of characters; case-insensitive); a field not listed: any",
    )
    forbidden_subject: dict[SubjectField, list[SubjectPattern]] = Field(
        {}, description="per subject field, values never allowed ('*' matches any run of characters; case-insensitive; wins over allowed)"
    )
    require_csr: bool = Field(False, description="leaves must come from a CSR (the key never leaves its host)")
    reject_csr_extra_names: bool = Field(False, description="refuse a CSR that asks for names pki.yaml does not list")


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pkic policy"
    return schema


@dataclass
class LoadedPolicy:
    name: str
    file: str
    policy: Policy
    loc: Locator

    def line(self, rule: str) -> int | None:
        return self.loc.at((rule,), key=True)[0] if rule in (self.loc.doc or {}) else None

    def where(self, rule: str) -> str:
        line = self.line(rule)
        return f"{self.file}:{line}" if line else self.file


def load_policies(repo: Path, wanted: set[str], spec_loc: Locator, refs: dict[str, list[YamlPath]]) -> dict[str, LoadedPolicy]:
    """Load every policy named in pki.yaml; unknown names and bad files are diagnostics."""
    diags: list[Diagnostic] = []
    out: dict[str, LoadedPolicy] = {}
    for name in sorted(wanted):
        rel = f"{POLICY_DIR}/{name}.yaml"
        path = repo / rel
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not path.is_file():
            available = sorted(p.stem for p in (repo / POLICY_DIR).glob("*.yaml")) if (repo / POLICY_DIR).is_dir() else []
            for ref in refs.get(name, []):
                diags.append(
                    spec_loc.diag(ref, f"no policy '{name}' ({rel} does not exist)", f"available: {', '.join(available) or 'none'}")
                )
            continue
        try:
            doc, loc = read_document(path, rel)
            out[name] = LoadedPolicy(name, rel, Policy.model_validate(doc), loc)
        except ValidationError as exc:
            diags.extend(pydantic_diags(exc, loc, Policy))
        except PkicError as exc:
            diags.extend(exc.diagnostics)
    if diags:
        raise PkicError(diags)
    return out


def _quote(items: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in items)


def check_entry(
    entry: Entry, policy: LoadedPolicy, csr_names: dict[str, list[str]] | None = None
) -> list[tuple[str, int | None, str, str]]:
    """Violations as (field, index in the effective list or None, value, why)."""
    p, spec = policy.policy, entry.spec
    out: list[tuple[str, int | None, str, str]] = []
    leaf = entry.kind == "certificate"
    w = policy.where

    def bad(f: str, i: int | None, value: str, rule: str, detail: str) -> None:
        out.append((f, i, value, f"is not allowed by {w(rule)} ({rule}: {detail})"))

    if leaf:
        for i, n in enumerate(spec.get("dns", [])):
            hit = next((pat for pat in p.forbidden_dns if dns_overlaps(n, pat)), None)
            if hit:
                bad("dns", i, n, "forbidden_dns", f"'{hit}'")
            elif n.startswith("*.") and not p.allow_wildcards:
                bad("dns", i, n, "allow_wildcards", "false")
            elif p.allowed_dns is not None and not any(dns_matches(n, pat) for pat in p.allowed_dns):
                bad("dns", i, n, "allowed_dns", _quote(p.allowed_dns) or "none")
        for i, n in enumerate(spec.get("ip", [])):
            hit = next((net for net in p.forbidden_ip if ip_within(n, net)), None)
            if hit:
                bad("ip", i, n, "forbidden_ip", hit)
            elif p.allowed_ip is not None and not any(ip_within(n, net) for net in p.allowed_ip):
                bad("ip", i, n, "allowed_ip", ", ".join(p.allowed_ip) or "none")
        for i, n in enumerate(spec.get("uri", [])):
            hit = next((pat for pat in p.forbidden_uri if uri_matches(n, pat)), None)
            if hit:
                bad("uri", i, n, "forbidden_uri", f"'{hit}'")
            elif p.allowed_uri is not None and not any(uri_matches(n, pat) for pat in p.allowed_uri):
                bad("uri", i, n, "allowed_uri", _quote(p.allowed_uri) or "none")
        for i, n in enumerate(spec.get("email", [])):
            if p.allowed_email_domains is not None and n.rsplit("@", 1)[1].lower() not in p.allowed_email_domains:
                bad("email", i, n, "allowed_email_domains", _quote(p.allowed_email_domains) or "none")
        if p.allowed_profiles is not None and spec["profile"] not in p.allowed_profiles:
            bad("profile", None, spec["profile"], "allowed_profiles", ", ".join(p.allowed_profiles))
        count = sum(len(v) for v in san_lists(spec).values())
        if p.max_sans is not None and count > p.max_sans:
            out.append(("dns", None, f"{count} names", f"are more than {w('max_sans')} allows (max_sans: {p.max_sans})"))
        if p.require_csr and not spec.get("csr_key"):
            out.append(("csr", None, entry.name, f"must come from a CSR: {w('require_csr')} (require_csr: true)"))
        if csr_names and p.reject_csr_extra_names:
            for _kind, values in csr_names.items():
                for v in values:
                    out.append(
                        ("csr", None, v, f"is asked for by the CSR but not listed in pki.yaml, refused by {w('reject_csr_extra_names')}")
                    )
    if p.max_lifetime is not None and entry.lifetime > p.max_lifetime:
        bad("lifetime", None, spec["lifetime"], "max_lifetime", _fmt(p.max_lifetime))
    key = spec["key"]
    if p.allowed_key_types is not None and key not in p.allowed_key_types:
        bad("key", None, key, "allowed_key_types", ", ".join(p.allowed_key_types))
    if p.min_rsa_bits is not None and key.startswith("rsa-") and int(key[4:]) < p.min_rsa_bits:
        bad("key", None, key, "min_rsa_bits", str(p.min_rsa_bits))
    for k, v in spec["subject"]:
        hit = next(
            (pat for pat in cast(Mapping[str, list[SubjectPattern]], p.forbidden_subject).get(k, []) if subject_matches(v, pat)), None
        )
        if hit:
            out.append(("subject", None, f"{k}={v}", f"is not allowed by {w('forbidden_subject')} (forbidden_subject.{k}: '{hit}')"))
        elif p.allowed_subject is not None and k in p.allowed_subject and not any(subject_matches(v, pat) for pat in p.allowed_subject[k]):
            out.append(
                (
                    "subject",
                    None,
                    f"{k}={v}",
                    f"is not allowed by {w('allowed_subject')} (allowed_subject.{k}: {_quote(p.allowed_subject[k]) or 'none'})",
                )
            )
    if leaf:  # a CN that is a host name is one to OpenSSL (and to people): the DNS rules hold for it
        for k, v in spec["subject"]:
            n = v.lower().rstrip(".")  # a trailing dot names the same host
            if k != "CN" or not (openssl_hostlike(n) or (n.startswith("*.") and openssl_hostlike(n[2:]))):
                continue  # (a wildcard CN too: with no DNS SAN, OpenSSL and Python match host names against it)
            hit = next((pat for pat in p.forbidden_dns if dns_overlaps(n, pat)), None)
            if hit:
                out.append(("subject", None, f"CN={v}", f"is a host name not allowed by {w('forbidden_dns')} (forbidden_dns: '{hit}')"))
            elif n.startswith("*.") and not p.allow_wildcards:
                out.append(
                    ("subject", None, f"CN={v}", f"is a wildcard host name, not allowed by {w('allow_wildcards')} (allow_wildcards: false)")
                )
            elif p.allowed_dns is not None and not any(dns_matches(n, pat) for pat in p.allowed_dns):
                out.append(
                    (
                        "subject",
                        None,
                        f"CN={v}",
                        f"is a host name not allowed by {w('allowed_dns')} (allowed_dns: {_quote(p.allowed_dns) or 'none'})",
                    )
                )
    present = {k for k, _ in spec["subject"]}
    for f in p.required_subject:
        if f not in present:
            out.append(("subject", None, f, f"is required by {w('required_subject')} (required_subject: {', '.join(p.required_subject)})"))
    return out


def _fmt(d: timedelta) -> str:
    from compiler.model.durations import format_duration

    return format_duration(d)


def _located(repo: Path, loc: Locator) -> Locator:
    """The fast loader keeps no positions: re-read pki.yaml with them, only when needed."""
    if loc.positioned:
        return loc
    return read_document(repo / SPEC_FILE)[1]


def check_all(spec: EffectiveSpec, repo: Path, state: Compromises | None = None) -> None:
    """Policies, and the state's memory of compromised keys: raise every violation at once."""
    loc = spec.locator or Locator(SPEC_FILE, {})  # (resolve always sets it; unpositioned, it is re-read below)
    try:
        diags = check(spec, repo, loc)
        if state is not None:
            diags += check_state(spec, state, loc)
        again = bool(diags)
    except PkicError:
        again = True  # e.g. a missing policy file: locate it below
    if again:
        loc = _located(repo, loc)
        diags = check(spec, repo, loc) + (check_state(spec, state, loc) if state is not None else [])
        raise PkicError(sorted(set(diags), key=lambda d: (d.file != "pki.yaml", d.file, d.line or 0, d.column or 0, d.path)))


def check_state(spec: EffectiveSpec, state: Compromises, loc: Locator) -> list[Diagnostic]:
    bad = {c["public_key_sha256"]: c for c in state.compromised if c.get("public_key_sha256")}
    diags = []
    for name, e in spec.entries.items():
        if e.spec.get("csr_key") and e.spec["csr_key"] in bad:
            c = bad[e.spec["csr_key"]]
            diags.append(
                loc.diag(
                    ("certificates", name, "csr"),
                    f"{e.csr_path}: its key was declared compromised ({c['name']}, {c['at']}) and is refused forever",
                    "generate a new key and CSR on the host (`pkic csr`)",
                )
            )
    return diags


def check(spec: EffectiveSpec, repo: Path, loc: Locator) -> list[Diagnostic]:
    """Every policy violation of the effective spec, located in pki.yaml and the policy."""
    refs: dict[str, list[YamlPath]] = {}
    for name, e in spec.entries.items():
        for i, pol in enumerate(e.policies):
            refs.setdefault(pol, []).append(("authorities", name, "policy") if len(e.policies) == 1 else ("authorities", name, "policy", i))
    if not refs:
        return []
    policies = load_policies(repo, set(refs), loc, refs)
    diags = []
    for name, entry in spec.entries.items():
        section = "authorities" if entry.kind == "authority" else "certificates"
        anc = entry.issuer
        seen: set[str] = set()
        while anc is not None:
            for pol in spec.entries[anc].policies:
                if pol in seen:
                    continue
                seen.add(pol)
                for f, index, value, why in check_entry(entry, policies[pol], entry.csr_extra_names):
                    path: YamlPath = (section, name, f)
                    if index is not None:
                        path = (section, name, f, original_index(loc, section, name, f, value, index))
                    if f == "csr" and entry.csr_path is None:
                        path = (section, name)
                    diags.append(loc.diag(path, f"{quote(value)} {why}", _hint(f)))
            anc = spec.entries[anc].issuer
    return diags


def _hint(field: str) -> str | None:
    return {
        "dns": "change the name, or the policy in a reviewed pull request",
        "lifetime": "shorten the lifetime",
        "key": "pick an allowed key type",
        "csr": "add csr: csrs/<name>.csr.pem (see `pkic csr`)",
    }.get(field)


def original_index(loc: Locator, section: str, name: str, f: str, value: str, fallback: int) -> int:
    from compiler.spec import raw_index

    i = raw_index(loc, section, name, f, value, fallback)
    return fallback if i is None else i  # (raw_index gives the fallback back: never None here)


def snapshot(spec: EffectiveSpec, repo: Path) -> dict[str, dict[str, Any]]:
    """The policies pki.yaml uses, as data (comments and layout don't count): bound into
    the reviewed digest, so a policy loosened after review makes that review stale."""
    wanted = {p for e in spec.entries.values() for p in e.policies}
    if not wanted:
        return {}
    loaded = load_policies(repo, wanted, spec.locator or Locator(SPEC_FILE, {}), {})  # (no refs: the locator goes unused)
    return {name: lp.policy.model_dump(mode="json") for name, lp in sorted(loaded.items())}
