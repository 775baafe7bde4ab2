"""The pki.yaml models: what a valid pki.yaml is, field by field.

These pydantic models are the JSON Schema that ``pkic schema`` prints, and every field
type normalises its value where it is read (names through :mod:`compiler.model.names`,
durations, timestamps, paths), so what is loaded is already checked. Cross-field rules
(issuers, cycles, lifetimes) are :mod:`compiler.spec.resolution`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from compiler.layout import ocsp_dir_problem
from compiler.model import names
from compiler.model.bounded import quote
from compiler.model.durations import DURATION_PATTERN, format_duration, parse_duration

SPEC_FILE = "pki.yaml"

# the values of model.keytype.KeyType (a test holds them equal), as a Literal: pydantic's
# messages ("Input should be 'ecdsa-p256', ...") and the JSON Schema stay plain strings
KeyTypeName = Literal["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]
Profile = Literal["server", "client", "peer"]
RevokeReason = Literal[
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "privilege_withdrawn",
]
OcspSigner = Literal["delegated", "self"]


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", "{why}", {"why": str(exc)}) from None


def _wrap(fn: Callable[[str], str]) -> Callable[[Any], str]:
    """A names.py normaliser as a validator: its ValueError becomes a pydantic error."""

    def check(value: Any) -> str:
        try:
            return fn(value)
        except ValueError as exc:
            raise PydanticCustomError("name", str(exc)) from None

    return check


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90d", "12h", "3y", "P90D"]}),
]
DnsName = Annotated[
    str, BeforeValidator(_wrap(names.dns_name)), WithJsonSchema({"type": "string", "examples": ["web.example.com", "*.svc.internal"]})
]
IpAddress = Annotated[
    str, BeforeValidator(_wrap(names.ip_address)), WithJsonSchema({"type": "string", "examples": ["10.0.0.5", "fd00::5"]})
]
Uri = Annotated[str, BeforeValidator(_wrap(names.uri)), WithJsonSchema({"type": "string", "examples": ["spiffe://example.com/payments"]})]
# The URLs an authority puts into what it issues: the schema's examples are HTTP, as clients fetch them
CrlUrl = Annotated[
    str, BeforeValidator(_wrap(names.uri)), WithJsonSchema({"type": "string", "examples": ["http://pki.example.com/crl/root-ca.crl"]})
]
OcspUrl = Annotated[str, BeforeValidator(_wrap(names.uri)), WithJsonSchema({"type": "string", "examples": ["http://pki.example.com/ocsp"]})]
CaIssuersUrl = Annotated[
    str, BeforeValidator(_wrap(names.uri)), WithJsonSchema({"type": "string", "examples": ["http://pki.example.com/certs/root-ca.der"]})
]
Email = Annotated[str, BeforeValidator(_wrap(names.email)), WithJsonSchema({"type": "string", "examples": ["ops@example.com"]})]
DnsDomain = Annotated[
    str, BeforeValidator(_wrap(names.dns_domain)), WithJsonSchema({"type": "string", "examples": ["example.com", ".svc.internal"]})
]
IpNetwork = Annotated[str, BeforeValidator(_wrap(names.ip_network)), WithJsonSchema({"type": "string", "examples": ["10.0.0.0/8"]})]
EmailConstraint = Annotated[
    str,
    BeforeValidator(_wrap(names.email_domain)),
    WithJsonSchema({"type": "string", "examples": ["example.com", ".example.com", "ops@example.com"]}),
]
UriHost = Annotated[
    str, BeforeValidator(_wrap(names.uri_host)), WithJsonSchema({"type": "string", "examples": ["example.com", ".example.com"]})
]
RefName = Annotated[str, Field(min_length=1, max_length=64)]
PolicyRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


# A path component limit common to Linux and macOS file systems (NAME_MAX); a CSR path
# longer than one file name is a typo or an attack, not a layout anyone needs
MAX_RELPATH_CHARS = 255


def _relpath(value: Any) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_RELPATH_CHARS
        or not re.fullmatch(r"[A-Za-z0-9._/-]+", value)
        or value.startswith("/")
        or ".." in value.split("/")
    ):
        raise PydanticCustomError(
            "path",
            "{shown} is not a relative path inside the repo (at most 255 of letters, digits, '.', '_', '-', '/'; no '..')",
            {"shown": quote(value)},
        )
    return value


def _ocsp_dir(value: Any) -> str:
    path = _relpath(value).rstrip("/")
    problem = ocsp_dir_problem(path)
    if problem:
        raise PydanticCustomError("path", "{value!r}: " + problem, {"value": path})
    return path


CsrPath = Annotated[str, BeforeValidator(_relpath), WithJsonSchema({"type": "string", "examples": ["csrs/db.csr.pem"]})]


def _timestamp(value: Any) -> str:
    dt: datetime
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PydanticCustomError(
                "timestamp", "'{value}' is not a date or time (use 2026-11-20 or 2026-11-20T08:00:00Z)", {"value": value}
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    else:
        raise PydanticCustomError("timestamp", "'{value}' is not a date or time (use 2026-11-20 or 2026-11-20T08:00:00Z)", {"value": value})
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    str, BeforeValidator(_timestamp), WithJsonSchema({"type": "string", "examples": ["2026-11-20", "2026-11-20T08:00:00Z"]})
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True)


def _printable_text(value: Any) -> Any:
    """A subject value is written into certificates: no control character (a newline, an
    ANSI escape) nor other non-printable (a bidi override) goes into one."""
    if isinstance(value, str) and not value.isprintable():
        raise PydanticCustomError("printable", "{shown} holds a control or other non-printable character", {"shown": quote(value)})
    return value


SubjectText = BeforeValidator(_printable_text)


class Subject(_Model):
    """Distinguished name attributes. In an entry, a value overrides the default; null removes it."""

    C: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="country, ISO 3166 two letters")] | None = None
    ST: Annotated[str, SubjectText, Field(min_length=1, max_length=128, description="state or province")] | None = None
    L: Annotated[str, SubjectText, Field(min_length=1, max_length=128, description="locality")] | None = None
    O: Annotated[str, SubjectText, Field(min_length=1, max_length=64, description="organization")] | None = None  # noqa: E741
    OU: Annotated[str, SubjectText, Field(min_length=1, max_length=64, description="organizational unit")] | None = None
    CN: Annotated[str, SubjectText, Field(min_length=1, max_length=64, description="common name")] | None = None


class NameConstraints(_Model):
    """RFC 5280 name constraints, written into the authority (critical) and checked at plan time."""

    permitted_dns: list[DnsDomain] = []
    excluded_dns: list[DnsDomain] = []
    permitted_ip: list[IpNetwork] = []
    excluded_ip: list[IpNetwork] = []
    permitted_email: list[EmailConstraint] = []
    excluded_email: list[EmailConstraint] = []
    permitted_uri: list[UriHost] = []
    excluded_uri: list[UriHost] = []


class Authority(_Model):
    """A certificate authority: a root (no issuer) or an intermediate."""

    issuer: RefName | None = Field(None, description="the authority that signs this one; omit for a root")
    subject: Subject | None = None
    key: KeyTypeName | None = Field(None, description="key type; defaults.key when omitted")
    lifetime: Duration | None = Field(None, description="validity; default 10y for roots, 5y for intermediates")
    renew_before: Duration | None = Field(None, description="renew when this much life is left; default a third of the lifetime")
    path_length: Annotated[int, Field(ge=0, le=100)] | None = Field(None, description="how many authorities may follow below this one")
    name_constraints: NameConstraints | None = None
    rekey: Annotated[int, Field(ge=0, le=1_000_000)] = Field(0, description="bump to force a new key at the next apply")
    description: str | None = None
    crl_url: CrlUrl | None = Field(None, description="CRL distribution point put into what this authority issues")
    ocsp_url: OcspUrl | None = Field(None, description="OCSP responder URL (AIA) put into what this authority issues")
    ca_issuers_url: CaIssuersUrl | None = Field(
        None, description="URL of this authority's DER certificate (AIA caIssuers) put into what it issues"
    )
    crl_lifetime: Duration | None = Field(None, description="validity of its CRLs; default 7d (intermediates), 90d (roots)")
    crl_renew_before: Duration | None = Field(None, description="re-sign the CRL when this much is left; default half its lifetime")
    ocsp_signer: OcspSigner = Field(
        "delegated", description="who signs OCSP responses: a delegated responder certificate, or the authority itself"
    )
    ocsp_lifetime: Duration | None = Field(None, description="validity of its OCSP responses; default 4d")
    ocsp_renew_before: Duration | None = Field(
        None, description="re-sign OCSP responses when this much is left; default half their lifetime"
    )
    ocsp_responder_lifetime: Duration | None = Field(
        None, description="lifetime of the delegated responder certificate; default 30d (intermediates), 365d (roots)"
    )
    revoke_superseded: bool = Field(False, description="revoke (reason superseded) the old certificate when a child is renewed or reissued")
    revoke: RevokeReason | None = Field(None, description="revoke this authority (on its parent's CRL) with this reason; it stays revoked")
    policy: PolicyRef | list[PolicyRef] | None = Field(
        None, description="policies/<name>.yaml constraining everything this authority signs"
    )
    key_compromised: Timestamp | None = Field(
        None, description="date the key was compromised: revoke everything with this key, reissue with a new key"
    )


class Certificate(_Model):
    """A leaf certificate."""

    issuer: RefName = Field(description="the authority that signs it")
    profile: Profile = Field("server", description="server, client, or peer (server + client, for mTLS)")
    subject: Subject | None = None
    dns: list[DnsName] = []
    ip: list[IpAddress] = []
    uri: list[Uri] = []
    email: list[Email] = []
    key: KeyTypeName | None = None
    lifetime: Duration | None = Field(None, description="validity; default 90d")
    renew_before: Duration | None = Field(None, description="renew when this much life is left; default a third of the lifetime")
    rekey: Annotated[int, Field(ge=0, le=1_000_000)] = Field(0, description="bump to force a new key at the next apply")
    reuse_key: bool = Field(False, description="keep the key on renewal (by default every renewal makes a new key)")
    description: str | None = None
    revoke: RevokeReason | None = Field(None, description="revoke this certificate with this reason; it stays revoked")
    csr: CsrPath | None = Field(None, description="a CSR (PEM or DER), path relative to the repo: only its public key is used")
    key_compromised: Timestamp | None = Field(
        None, description="date the key was compromised: revoke everything with this key, reissue with a new key"
    )


class Moved(_Model):
    """A rename: the state recorded under `from` now belongs to `to` (nothing is revoked or reissued)."""

    from_: RefName = Field(alias="from")
    to: RefName


class Defaults(_Model):
    key: KeyTypeName = "ecdsa-p256"
    subject: Subject | None = None


class Publish(_Model):
    """What apply publishes besides certificates."""

    ocsp: bool = Field(True, description="write pre-signed OCSP responses")
    ocsp_dir: Annotated[str, BeforeValidator(_ocsp_dir)] = Field(
        "out/ocsp", description="where OCSP responses go: a directory inside out/ (the seal covers it)"
    )


class Spec(_Model):
    """pki.yaml"""

    version: Literal[1]
    defaults: Defaults = Defaults()
    publish: Publish = Publish()
    authorities: dict[str, Authority] = {}
    certificates: dict[str, Certificate] = {}
    moved: list[Moved] = []


def json_schema() -> dict[str, Any]:
    """The JSON Schema of pki.yaml (``pkic schema``), for editors and CI linters."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pki.yaml"
    return schema
