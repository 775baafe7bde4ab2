"""The effective spec: what pki.yaml asks for once defaults are applied, names
normalised and issuers resolved. Everything after :mod:`compiler.spec` (policy, plan,
apply, the commands) works on these classes, never on the YAML.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypedDict

from compiler.model.bounded import Locator
from compiler.model.keytype import KeyType
from compiler.spec.models import OcspSigner

EntryKind = Literal["authority", "certificate"]


class EntrySpec(TypedDict, total=False):
    """An entry's effective spec as JSON: everything its certificate is built from,
    canonical (defaults applied, names normalised and sorted). It is digested (a change
    reissues), stored in the state with each certificate (``CertRecord.spec``) and shown
    in plans as a whole, so it stays a JSON object; this says what its keys hold. A key
    absent here is absent in the object (the URLs when unset, ``ocsp_signer`` unless
    ``self``, ``csr_key`` without a CSR), so that adding one never changes the digest of
    a spec without it."""

    kind: EntryKind
    issuer: str | None
    subject: list[list[str]]  # [attribute, value] pairs, X.500 order
    key: str  # a KeyType's value
    lifetime: str  # a duration as pki.yaml writes them
    rekey: int  # bumped to force a new key
    # authorities
    path_length: int | None
    name_constraints: dict[str, list[str]] | None  # permitted_dns, excluded_ip...: sorted, unique
    ocsp_signer: str  # "self" (absent: delegated)
    # leaves
    profile: str  # server | client | peer | ...
    dns: list[str]
    ip: list[str]
    uri: list[str]
    email: list[str]
    csr_key: str  # the CSR's public key SHA-256 (the key is the host's)
    # what the issuer writes into what it signs
    crl_url: str
    ocsp_url: str
    ca_issuers_url: str


def san_lists(spec: EntrySpec) -> dict[str, list[str]]:
    """A spec's subject alternative names by kind: dns, ip, uri, email (each may be empty)."""
    return {"dns": spec.get("dns", []), "ip": spec.get("ip", []), "uri": spec.get("uri", []), "email": spec.get("email", [])}


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def spec_digest(spec: Mapping[str, Any]) -> str:
    """SHA-256 of canonical JSON: a certificate is reissued when its entry's digest changes."""
    data = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CaSettings:
    """How an authority publishes revocation information (not part of its certificate)."""

    crl_lifetime: timedelta
    crl_renew_before: timedelta
    ocsp_signer: OcspSigner
    ocsp_lifetime: timedelta
    ocsp_renew_before: timedelta
    responder_lifetime: timedelta
    revoke_superseded: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One certificate as it must be: the spec with defaults applied, names normalised.
    Made as an :class:`AuthorityEntry` or a :class:`LeafEntry`; the fields both share live here,
    and what only one of them has is None (or empty) on the other."""

    name: str
    kind: EntryKind
    issuer: str | None  # None: a self-signed root
    spec: EntrySpec  # canonical and JSON-able: everything the certificate is built from
    lifetime: timedelta
    renew_before: timedelta
    reuse_key: bool = False
    depth: int = 0
    revoke: str | None = None  # revoked in place, with this reason
    key_compromised: str | None = None  # timestamp of a declared key compromise
    ca: CaSettings | None = None  # lifecycle settings of an authority
    policies: tuple[str, ...] = ()  # authorities: policies on what they sign
    csr_path: str | None = None  # leaves from a CSR: the key is external
    csr_extra_names: dict[str, list[str]] | None = None  # names the CSR asks for that pki.yaml does not list

    @property
    def is_root(self) -> bool:
        return self.issuer is None

    @staticmethod
    def make(**fields: Any) -> Entry:
        """An AuthorityEntry or a LeafEntry, by ``kind``."""
        return AuthorityEntry(**fields) if fields.get("kind") == "authority" else LeafEntry(**fields)

    @property
    def key_type(self) -> KeyType:
        return KeyType(self.spec["key"])

    @property
    def digest(self) -> str:
        return spec_digest(self.spec)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthorityEntry(Entry):
    """A certificate authority: signs certificates, CRLs and (through its delegated
    responder, or itself) OCSP responses; carries its lifecycle settings and policies."""

    kind: EntryKind = "authority"
    ca: CaSettings | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LeafEntry(Entry):
    """An end-entity certificate: its key is made by pkic or comes from a CSR."""

    kind: EntryKind = "certificate"


@dataclass(frozen=True)
class PublishSettings:
    ocsp: bool = True
    ocsp_dir: str = "out/ocsp"


@dataclass
class EffectiveSpec:
    entries: dict[str, Entry]  # parents first, deterministic
    moved: dict[str, str] = field(default_factory=dict)  # from -> to
    children: dict[str, list[str]] = field(default_factory=dict)
    publish: PublishSettings = field(default_factory=PublishSettings)
    locator: Locator | None = None
    # the other reviewed inputs, set by the caller that plans (not from the cache):
    # .sops.yaml's creation rules (None: no .sops.yaml) and the policies in use, as data
    sops_rules: list[dict[str, Any]] | None = None
    policy_data: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """spec_digest of ``{"entries": {name: spec}, "moved": [...]}``, hashed an entry
        at a time (whole, the text was 40 MB at 100,000 entries): the same bytes, as
        json.dumps with sorted keys lays them out (tests hold the two equal)."""
        h = hashlib.sha256(b'{"entries":{')
        encode = _CANONICAL.encode
        sep = b""
        for name in sorted(self.entries):
            h.update(sep + encode(name).encode() + b":" + encode(self.entries[name].spec).encode())
            sep = b","
        h.update(b'},"moved":' + encode(sorted(self.moved.items())).encode() + b"}")
        return h.hexdigest()
