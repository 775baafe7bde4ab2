"""pki.yaml: the models (and so the JSON Schema), loading with line numbers, and
resolution into an *effective spec*: defaults applied, names normalised, issuers
resolved, checked as a whole, in a canonical parents-first order.

Only this module knows the YAML; everything after it works on :class:`EffectiveSpec`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from compiler.layout import name_problem
from compiler.model import names
from compiler.model.bounded import Locator, check_yaml, quote, yaml_nodes
from compiler.model.bounded import dotted as _dotted
from compiler.model.bounded import yaml_error as _yaml_error
from compiler.model.durations import DURATION_PATTERN, format_duration, parse_duration
from compiler.model.errors import Diagnostic, PkicError
from compiler.model.keytype import KeyType

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
SUBJECT_ORDER = ("C", "ST", "L", "O", "OU", "CN")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_LIFETIME = {
    "root": timedelta(days=3650),
    "intermediate": timedelta(days=1825),
    "certificate": timedelta(days=90),
}


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", "{why}", {"why": str(exc)}) from None


def _wrap(fn):
    def check(value: Any) -> Any:
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


def raw_index(loc: Locator, section: str, name: str, field_name: str, value: str, fallback: int | None = None) -> int | None:
    """The index of a normalised ``value`` in the list as written in pki.yaml."""
    raw = ((loc.doc or {}).get(section) or {}).get(name) or {}
    items = raw.get(field_name) if isinstance(raw, dict) else None
    if isinstance(items, list):
        norm = {"dns": names.dns_name, "ip": names.ip_address, "uri": names.uri, "email": names.email}.get(field_name)
        for i, item in enumerate(items):
            try:
                if (norm(item) if norm else item) == value:
                    return i
            except ValueError:
                continue
    return fallback


def _relpath(value: Any) -> str:
    if (
        not isinstance(value, str)
        or len(value) > 255
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
    from compiler.layout import ocsp_dir_problem

    value = _relpath(value).rstrip("/")
    problem = ocsp_dir_problem(value)
    if problem:
        raise PydanticCustomError("path", "{value!r}: " + problem, {"value": value})
    return value


CsrPath = Annotated[str, BeforeValidator(_relpath), WithJsonSchema({"type": "string", "examples": ["csrs/db.csr.pem"]})]


def _timestamp(value: Any) -> str:
    from datetime import date, datetime

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
    crl_url: Uri | None = Field(None, description="CRL distribution point put into what this authority issues")
    ocsp_url: Uri | None = Field(None, description="OCSP responder URL (AIA) put into what this authority issues")
    ca_issuers_url: Uri | None = Field(None, description="URL of this authority's DER certificate (AIA caIssuers) put into what it issues")
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


def json_schema() -> dict:
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pki.yaml"
    return schema


# --------------------------------------------------------------------------- locating


# --------------------------------------------------------------------------- loading


def _locate_duplicate(text: str, exc: PkicError) -> PkicError:
    """Give a duplicate-key error its field path: libyaml's composer keeps duplicates, so
    find the mapping that holds the key twice, the second time at the reported line."""
    import yaml

    d = exc.diagnostics[0]
    m = re.match(r"duplicate key (['\"])(.*)\1:", d.message)
    nodes = yaml_nodes(text) if m and d.line is not None else None
    if nodes is None or m is None:
        return exc
    key = m.group(2)

    def holder(node: Any, path: tuple, seen: set[int]) -> tuple | None:
        if id(node) in seen:  # an alias: already walked
            return None
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
            if len(keys) > 1 and any(k.start_mark.line + 1 == d.line for k in keys[1:]):
                return path
            for k, v in node.value:
                sub = holder(v, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",), seen)
                if sub is not None:
                    return sub
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = holder(item, path + (i,), seen)
                if sub is not None:
                    return sub
        return None

    where = holder(nodes, (), set())
    if where is None:
        return exc
    return PkicError([Diagnostic(d.file, d.line, d.column, _dotted(where + (key,)), d.message, d.hint)])


_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null", "timestamp")}


class _Fallback(Exception):
    """The quick composer met something it leaves to ruamel."""


def _quick_compose(text: str) -> Any:
    """The parsed document, or None to leave it to ruamel.

    ruamel's C loader calls a Python resolver while composing each of a large spec's
    ~100,000 scalars. PyYAML's libyaml composer (the same C scanner) does the structure
    about three times faster; every plain scalar that could be something other than a
    string is still typed by ruamel's own YAML 1.2 resolver and constructor, so the
    result is what ruamel gives (tests/test_spec_parse.py holds the two equal). Tags,
    merge keys, duplicate keys, YAML directives and any error go to ruamel."""
    if "%YAML" in text:
        return None
    try:
        import yaml
        from ruamel.yaml.cyaml import CSafeLoader as RuamelLoader
        from ruamel.yaml.nodes import ScalarNode as RuamelScalar
    except ImportError:
        return None
    if not hasattr(yaml, "CSafeLoader"):  # PyYAML built without libyaml
        return None

    class Composer(yaml.CSafeLoader):
        def resolve(self, kind, value, implicit):  # typing is decided below, by ruamel
            return ""

    ruamel = RuamelLoader("")
    first = {k for k in ruamel.yaml_implicit_resolvers if k}
    scalar, mapping = yaml.nodes.ScalarNode, yaml.nodes.MappingNode

    def convert(node) -> Any:
        if node.tag != "":
            raise _Fallback  # an explicit tag
        if isinstance(node, scalar):
            v = node.value
            if node.style or (v and v[0] not in first):
                return v  # quoted, block, or a plain scalar no implicit type can match
            tag = ruamel.resolve(RuamelScalar, v, (True, False))
            name = str(tag)
            if name == "tag:yaml.org,2002:str":
                return v
            if name not in _SCALAR_TAGS:
                raise _Fallback  # a merge key, '=' ...
            return ruamel.construct_object(RuamelScalar(tag, v), deep=True)
        if isinstance(node, mapping):
            out = {convert(k): convert(v) for k, v in node.value}
            if len(out) != len(node.value):
                raise _Fallback  # duplicate keys: ruamel reports them
            return out
        return [convert(x) for x in node.value]

    loader = Composer(text)
    try:
        node = loader.get_single_node()
        return None if node is None else convert(node)
    except Exception:  # _Fallback, a YAML error, a value ruamel would refuse or warn on...
        return None
    finally:
        loader.dispose()
        ruamel.dispose()


def parse_yaml(text: str, filename: str, *, fast: bool = False) -> Any:
    """Parse YAML. ``fast`` uses ruamel's C safe loader (plain dicts, no line numbers,
    about 5x faster), or quicker still _quick_compose; the round-trip loader keeps
    positions for error messages."""
    check_yaml(text, filename)  # size, depth, aliases, numbers: before anything composes it
    try:
        if fast:
            doc = _quick_compose(text)
            if doc is not None:
                return doc
            try:
                from ruamel.yaml.cyaml import CSafeLoader  # the C parser with the safe constructor
            except ImportError:  # no ruamel.yaml.clib: the pure-Python safe loader
                CSafeLoader = None
            if CSafeLoader is not None:
                loader = CSafeLoader(text)
                loader.allow_duplicate_keys = False
                try:
                    return loader.get_single_data()
                finally:
                    loader.dispose()
        yaml = YAML(typ="safe" if fast else "rt")
        yaml.allow_duplicate_keys = False
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise PkicError([_yaml_error(filename, exc)]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad unicode)
        raise PkicError([Diagnostic(filename, None, None, "", f"cannot parse YAML: {quote(str(exc), 200)}")]) from None


def _pydantic_diags(exc: ValidationError, loc: Locator, model: type[BaseModel]) -> list[Diagnostic]:
    diags = []
    for err in exc.errors(include_url=False):
        path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("function-before", "function-after")))
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        hint = None
        if kind == "extra_forbidden":
            field_name = path[-1]
            known = _known_fields(model, path[:-1])
            close = difflib.get_close_matches(str(field_name), known, n=1)
            msg = f"unknown field {quote(str(field_name))}"
            hint = f"did you mean '{close[0]}'?" if close else (f"known fields: {', '.join(known)}" if known else None)
            diags.append(loc.diag(path, msg, hint, key=True))
            continue
        if kind == "missing":
            msg = f"required field '{path[-1]}' is missing"
            diags.append(loc.diag(path[:-1], msg))
            continue
        if kind == "literal_error":
            msg = f"{_show(err['input'])} is not allowed: {msg[0].lower()}{msg[1:]}"
        elif kind.endswith(("_type", "_parsing")) or kind in ("model_type", "dict_type", "list_type"):
            msg = f"{msg[0].lower()}{msg[1:]} (got {_kind_of(err['input'])} {_show(err['input'])})"
        elif kind in ("string_pattern_mismatch", "greater_than_equal", "less_than_equal", "string_too_long", "string_too_short"):
            msg = f"{_show(err['input'])}: {msg[0].lower()}{msg[1:]}"
        diags.append(loc.diag(path, msg, hint))
    return sorted(diags, key=lambda d: (d.line or 0, d.column or 0, d.path))


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "nothing (null)"
    return "a string" if isinstance(value, str) else type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, dict):
        value = dict(value)
    elif isinstance(value, list):
        value = list(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _known_fields(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names allowed at ``path`` (for did-you-mean hints)."""
    current: Any = model
    parts = list(path)
    while parts:
        part = parts.pop(0)
        if isinstance(current, tuple):  # dict[str, X] / list[X]: this part is the key or index
            current = current[1]
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(part)
            if f is None:
                return []
            current = _unwrap(f.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return []


def _unwrap(annotation: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict,):
        return ("dict", _unwrap(args[1]))
    if origin in (list,):
        return ("list", _unwrap(args[0]))
    if args and origin is not Literal:
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
    return annotation


def cache_dir(repo: Path) -> Path:
    """Where resolved specs of ``repo`` are cached: in the user's cache directory, never
    in the repository. A cache file committed in a pull request would otherwise stand in
    for pki.yaml: the plan and the apply would follow it, not the reviewed spec."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = hashlib.sha256(os.fsencode(os.path.realpath(repo))).hexdigest()[:32]
    return Path(base) / "pkic" / "spec" / where


CACHE_FORMAT = 2
_CODE_DIGEST: str | None = None


def _code_digest() -> str:
    """The digest of the code that resolves a spec: a cache never outlives a change to it."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        h = hashlib.sha256()
        here = Path(__file__).parent
        for mod in ("spec.py", "names.py", "constraints.py", "csr.py", "durations.py"):
            try:
                h.update((here / mod).read_bytes())
            except OSError:
                h.update(mod.encode())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def _private_dir(path: Path) -> None:
    """Make ``path`` and its cache parents, mode 0700; refuse one that is not ours alone."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")


def _read_cache(cache: Path) -> bytes:
    """A cache file, only from a private directory of ours (another user could plant one)."""
    st = os.lstat(cache.parent)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError("not a private cache directory")
    fd = os.open(cache, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _cache_path(path: Path, data: bytes) -> Path:
    return cache_dir(path.parent) / f"{path.name}.{hashlib.sha256(data).hexdigest()}.json"


def _td(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _dump_effective(eff: EffectiveSpec, csrs: dict[str, str]) -> str:
    from compiler import __version__

    def entry(e: Entry) -> dict:
        return {
            "name": e.name,
            "kind": e.kind,
            "issuer": e.issuer,
            "spec": e.spec,
            "lifetime": e.lifetime.total_seconds(),
            "renew_before": e.renew_before.total_seconds(),
            "reuse_key": e.reuse_key,
            "depth": e.depth,
            "revoke": e.revoke,
            "key_compromised": e.key_compromised,
            "ca": None if e.ca is None else {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in e.ca.__dict__.items()},
            "policies": list(e.policies),
            "csr_path": e.csr_path,
            "csr_extra_names": e.csr_extra_names,
        }

    return json.dumps(
        {
            "format": CACHE_FORMAT,
            "pkic": __version__,
            "code": _code_digest(),
            "csrs": csrs,
            "entries": [entry(e) for e in eff.entries.values()],
            "moved": eff.moved,
            "children": eff.children,
            "publish": {"ocsp": eff.publish.ocsp, "ocsp_dir": eff.publish.ocsp_dir},
        }
    )


def _load_effective(text: bytes, repo: Path) -> EffectiveSpec | None:
    from compiler import __version__

    body = json.loads(text)  # callers catch ValueError and RecursionError
    if body.get("format") != CACHE_FORMAT or body.get("pkic") != __version__ or body.get("code") != _code_digest():
        return None
    from compiler import layout

    for rel, digest in body["csrs"].items():  # a CSR changed: resolve again
        try:
            if hashlib.sha256(layout.read_input(repo, rel)).hexdigest() != digest:
                return None
        except (OSError, PkicError):
            return None
    entries = {}
    for d in body["entries"]:
        ca = d["ca"]
        if ca is not None:
            ca = CaSettings(**{k: (_td(v) if k not in ("ocsp_signer", "revoke_superseded") else v) for k, v in ca.items()})
        entries[d["name"]] = Entry(
            d["name"],
            d["kind"],
            d["issuer"],
            d["spec"],
            _td(d["lifetime"]),
            _td(d["renew_before"]),
            d["reuse_key"],
            d["depth"],
            d["revoke"],
            d["key_compromised"],
            ca,
            tuple(d["policies"]),
            d["csr_path"],
            d["csr_extra_names"],
        )
    publish = PublishSettings(body["publish"]["ocsp"], body["publish"]["ocsp_dir"])
    return EffectiveSpec(entries, body["moved"], body["children"], publish, Locator(SPEC_FILE, {}))


def _store_cache(path: Path, data: bytes, eff: EffectiveSpec, repo: Path) -> None:
    """Keep the resolved spec, keyed by the bytes of pki.yaml (and of its CSRs inside)."""
    from compiler import layout

    cache = _cache_path(path, data)
    try:
        csrs = {e.csr_path: hashlib.sha256(layout.read_input(repo, e.csr_path)).hexdigest() for e in eff.entries.values() if e.csr_path}
        _private_dir(cache.parent)
        for old in cache.parent.glob(f"{path.name}.*.json"):
            old.unlink()
        staging = cache.with_name(cache.name + f".tmp-{os.getpid()}")
        staging.write_text(_dump_effective(eff, csrs), encoding="utf-8")
        os.replace(staging, cache)
    except (OSError, TypeError, ValueError, PkicError):
        pass


def _read(path: Path, display: str) -> bytes:
    """An input file: ``display`` is its path in the repo, ``path`` the same file (so the
    repo is ``path`` without ``display``). Read without following any symlink."""
    from compiler import layout

    text = str(path)
    if not text.endswith(display) or display.startswith("/"):
        return path.read_bytes()
    repo = Path(text[: len(text) - len(display)] or ".")
    return layout.read_input(repo, display)


ROUND_TRIP_NODES = 50_000  # ~5 s of ruamel's round-trip loader


def read_document(path: Path, display: str = SPEC_FILE, *, fast: bool = False) -> tuple[Any, Locator]:
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
    modest = written <= ROUND_TRIP_NODES if written is not None else len(text) <= 256 * 1024
    try:
        doc = parse_yaml(text, display, fast=True)
    except PkicError as exc:
        if not modest:
            raise _locate_duplicate(text, exc) from None
        try:  # ruamel's libyaml refuses some YAML 1.2 (`[spiffe://x/y]`) its own parser reads
            doc = parse_yaml(text, display)
        except PkicError as exc2:
            raise _locate_duplicate(text, exc2) from None
    nodes = None if fast else yaml_nodes(text)
    if not fast and nodes is None and modest:
        doc = parse_yaml(text, display)
    loc = Locator(display, doc, nodes)
    if doc is None:
        raise PkicError([Diagnostic(display, 1, 1, "", "the file is empty", "start from `pkic init` or the README example")])
    if not isinstance(doc, dict):
        raise PkicError([loc.diag((), "the top level must be a mapping (version, defaults, authorities, certificates)")])
    return doc, loc


def _partial(doc: dict) -> tuple[Spec, frozenset[str], frozenset[str]] | None:
    """The valid part of a document that failed validation, so the cross-field checks
    can still report on it in the same run; and the names of the entries left out."""
    out: dict[str, Any] = {"version": 1}
    broken: set[str] = set()
    trimmed_paths: set[str] = set()
    for key, model in (("defaults", Defaults), ("moved", None)):
        if key in doc:
            try:
                if model is not None:
                    model.model_validate(doc[key])
                else:
                    Spec.model_validate({"version": 1, "moved": doc[key]})
                out[key] = doc[key]
            except ValidationError:
                pass
    for section, model in (("authorities", Authority), ("certificates", Certificate)):
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
        raise PkicError(_pydantic_diags(exc, loc, Spec)) from None
    return spec, loc


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Entry:
    """One certificate as it must be: the spec with defaults applied, names normalised."""

    name: str
    kind: str  # "authority" | "certificate"
    issuer: str | None  # None: a self-signed root
    spec: dict  # canonical and JSON-able: everything the certificate is built from
    lifetime: timedelta
    renew_before: timedelta
    reuse_key: bool = False
    depth: int = 0
    revoke: str | None = None  # revoked in place, with this reason
    key_compromised: str | None = None  # timestamp of a declared key compromise
    ca: CaSettings | None = None  # lifecycle settings of an authority
    policies: tuple[str, ...] = ()  # authorities: policies on what they sign
    csr_path: str | None = None  # leaves from a CSR: the key is external
    csr_extra_names: dict | None = None  # names the CSR asks for that pki.yaml does not list

    @property
    def is_root(self) -> bool:
        return self.issuer is None

    @property
    def key_type(self) -> KeyType:
        return KeyType(self.spec["key"])

    @property
    def digest(self) -> str:
        return spec_digest(self.spec)


@dataclass(frozen=True)
class CaSettings:
    """How an authority publishes revocation information (not part of its certificate)."""

    crl_lifetime: timedelta
    crl_renew_before: timedelta
    ocsp_signer: str
    ocsp_lifetime: timedelta
    ocsp_renew_before: timedelta
    responder_lifetime: timedelta
    revoke_superseded: bool


@dataclass(frozen=True)
class PublishSettings:
    ocsp: bool = True
    ocsp_dir: str = "out/ocsp"


def spec_digest(spec: dict) -> str:
    data = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass
class EffectiveSpec:
    entries: dict[str, Entry]  # parents first, deterministic
    moved: dict[str, str] = field(default_factory=dict)  # from -> to
    children: dict[str, list[str]] = field(default_factory=dict)
    publish: PublishSettings = field(default_factory=PublishSettings)
    locator: Locator | None = None
    # the other reviewed inputs, set by the caller that plans (not from the cache):
    # .sops.yaml's creation rules (None: no .sops.yaml) and the policies in use, as data
    sops_rules: list | None = None
    policy_data: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        data = {"entries": {n: e.spec for n, e in self.entries.items()}, "moved": sorted(self.moved.items())}
        return spec_digest(data)


def _subject(defaults: Subject | None, own: Subject | None) -> list[list[str]]:
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


def _sorted_unique(values: list[str], key=None) -> list[str]:
    return sorted(set(values), key=key)


def _ip_key(value: str):
    import ipaddress

    ip = ipaddress.ip_address(value)
    return (ip.version, int(ip))


def resolve(spec: Spec, loc: Locator, broken: frozenset[str] = frozenset(), repo: Path | None = None) -> EffectiveSpec:
    """Turn the validated models into the effective spec; every cross-field problem at once.

    ``broken`` names entries that failed validation and were left out of ``spec``:
    references to them are not reported again, and what hangs below them is skipped.
    """
    from compiler.policy.constraints import check_name_constraints
    from compiler.x509.csr import CsrError, load_csr

    diags: list[Diagnostic] = []
    auths, certs = dict(spec.authorities), dict(spec.certificates)

    def prune(bad: set[str]) -> None:
        """Leave out entries hanging below ``bad`` ones: their problems are reported already."""
        for items in (auths, certs):
            for name in list(items):
                if name in bad:
                    del items[name]
        changed = True
        while changed:
            changed = False
            for items in (auths, certs):
                for name in [n for n, e in items.items() if e.issuer in bad]:
                    del items[name]
                    bad.add(name)
                    changed = True

    prune(set(broken))

    for section, items in (("authorities", auths), ("certificates", certs)):
        for name in items:
            problem = (
                "use letters, digits, '.', '_' and '-' (it becomes a file name)"
                if not NAME_RE.match(name) or ".." in name
                else name_problem(name)
            )
            if problem:
                diags.append(loc.diag((section, name), f"{quote(name)} is not a valid name", problem, key=True))
    for name in sorted(set(auths) & set(certs)):
        diags.append(
            loc.diag(
                ("certificates", name),
                f"duplicate name '{name}': it is also an authority",
                "names are shared by authorities and certificates; rename one",
                key=True,
            )
        )

    unresolved: set[str] = set()

    def check_issuer(section: str, name: str, issuer: str | None) -> None:
        if issuer is None or issuer in auths or issuer in broken:
            return
        unresolved.add(name)
        path = (section, name, "issuer")
        if issuer in certs:
            diags.append(
                loc.diag(
                    path,
                    f"'{issuer}' is a certificate, not an authority: a leaf cannot issue",
                    "move it to authorities, or pick an authority as issuer",
                )
            )
        else:
            close = difflib.get_close_matches(issuer, list(auths), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known authorities: {', '.join(sorted(auths)) or 'none'}"
            diags.append(loc.diag(path, f"unknown issuer '{issuer}'", hint))

    for name, a in auths.items():
        check_issuer("authorities", name, a.issuer)
        if a.issuer == name:
            unresolved.add(name)
            diags.append(
                loc.diag(("authorities", name, "issuer"), "an authority cannot name itself as issuer", "omit issuer for a self-signed root")
            )
    for name, c in certs.items():
        check_issuer("certificates", name, c.issuer)

    # cycles among authorities
    reported: set[frozenset] = set()
    for start in sorted(auths):
        path: list[str] = []
        node: str | None = start
        while node is not None and node in auths and node not in path:
            path.append(node)
            node = auths[node].issuer
        if node is not None and node in path:
            cycle = path[path.index(node) :]
            if len(cycle) > 1 and frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                unresolved.update(cycle)
                first = min(cycle)
                i = cycle.index(first)
                ring = cycle[i:] + cycle[:i] + [first]
                diags.append(
                    loc.diag(
                        ("authorities", first, "issuer"),
                        "issuer cycle: " + " -> ".join(ring),
                        "one authority in the cycle must be a root (no issuer)",
                    )
                )
    for name in set(auths) & set(certs):
        certs.pop(name)
    prune(unresolved)

    defaults = spec.defaults
    entries_unordered: dict[str, Entry] = {}
    children: dict[str, list[str]] = {}

    def depth_of(name: str) -> int:
        d, node = 0, auths[name].issuer if name in auths else certs[name].issuer
        while node is not None:
            d += 1
            node = auths[node].issuer
        return d

    for name, a in auths.items():
        is_root = a.issuer is None
        lifetime = a.lifetime or DEFAULT_LIFETIME["root" if is_root else "intermediate"]
        nc = a.name_constraints.model_dump() if a.name_constraints else None
        if nc is not None:
            nc = {k: sorted(set(v)) for k, v in nc.items() if v}
            if not nc:
                nc = None
        subject = _subject(defaults.subject, a.subject)
        if not any(k == "CN" for k, _ in subject):
            diags.append(loc.diag(("authorities", name, "subject"), "an authority needs a subject CN", "add subject: {CN: ...}"))
        body = {
            "kind": "authority",
            "issuer": a.issuer,
            "subject": subject,
            "key": a.key or defaults.key,
            "lifetime": format_duration(lifetime),
            "path_length": a.path_length,
            "name_constraints": nc,
            "rekey": a.rekey,
        }
        if a.ocsp_signer == "self":
            body["ocsp_signer"] = "self"
        body.update(_issuer_urls(auths.get(a.issuer) if a.issuer else None))
        crl_lifetime = a.crl_lifetime or (timedelta(days=90) if is_root else timedelta(days=7))
        ocsp_lifetime = a.ocsp_lifetime or timedelta(days=4)
        ca = CaSettings(
            crl_lifetime=crl_lifetime,
            crl_renew_before=a.crl_renew_before or crl_lifetime / 2,
            ocsp_signer=a.ocsp_signer,
            ocsp_lifetime=ocsp_lifetime,
            ocsp_renew_before=a.ocsp_renew_before or ocsp_lifetime / 2,
            responder_lifetime=a.ocsp_responder_lifetime or (timedelta(days=365) if is_root else timedelta(days=30)),
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
        renew_before = a.renew_before or lifetime / 3
        if renew_before >= lifetime:
            diags.append(
                loc.diag(
                    ("authorities", name, "renew_before"),
                    f"renew_before ({format_duration(renew_before)}) must be shorter than the lifetime ({format_duration(lifetime)})",
                )
            )
        pols = tuple([a.policy] if isinstance(a.policy, str) else (a.policy or []))
        entries_unordered[name] = Entry(
            name, "authority", a.issuer, body, lifetime, renew_before, False, depth_of(name), a.revoke, a.key_compromised, ca, pols
        )
        if a.issuer:
            children.setdefault(a.issuer, []).append(name)

    for name, c in certs.items():
        lifetime = c.lifetime or DEFAULT_LIFETIME["certificate"]
        subject = _subject(defaults.subject, c.subject)
        body = {
            "kind": "certificate",
            "issuer": c.issuer,
            "profile": c.profile,
            "subject": subject,
            "dns": _sorted_unique(c.dns),
            "ip": _sorted_unique(c.ip, key=_ip_key),
            "uri": _sorted_unique(c.uri),
            "email": _sorted_unique(c.email),
            "key": c.key or defaults.key,
            "lifetime": format_duration(lifetime),
            "rekey": c.rekey,
        }
        body.update(_issuer_urls(auths.get(c.issuer)))
        extra = None
        if c.csr is not None:
            info = None
            if repo is not None:
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
            if info is not None:
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
                extra = {k: [v for v in vals if v not in body.get(k, [])] for k, vals in info.names.items()}
                extra = {k: v for k, v in extra.items() if v} or None
        renew_before = c.renew_before or lifetime / 3
        if renew_before >= lifetime:
            diags.append(
                loc.diag(
                    ("certificates", name, "renew_before"),
                    f"renew_before ({format_duration(renew_before)}) must be shorter than the lifetime ({format_duration(lifetime)})",
                )
            )
        if c.profile in ("server", "peer") and not (c.dns or c.ip):
            diags.append(
                loc.diag(
                    ("certificates", name),
                    f"a {c.profile} certificate needs at least one dns or ip name",
                    "add dns: [host.example.com] (clients check names against the SAN, not the CN)",
                )
            )
        if not (c.dns or c.ip or c.uri or c.email or any(k == "CN" for k, _ in subject)):
            diags.append(
                loc.diag(("certificates", name), "a certificate needs a name: a subject CN or at least one of dns, ip, uri, email")
            )
        entries_unordered[name] = Entry(
            name,
            "certificate",
            c.issuer,
            body,
            lifetime,
            c.renew_before or lifetime / 3,
            c.reuse_key,
            depth_of(name),
            c.revoke,
            c.key_compromised,
            None,
            (),
            c.csr,
            extra,
        )
        children.setdefault(c.issuer, []).append(name)

    # lifetimes never beyond the issuer's, path lengths respected
    for name, e in entries_unordered.items():
        section = "authorities" if e.kind == "authority" else "certificates"
        if e.issuer is None:
            continue
        parent = entries_unordered[e.issuer]
        if e.lifetime > parent.lifetime:
            field_path = (section, name, "lifetime") if (auths.get(name) or certs.get(name)).lifetime else (section, name)
            diags.append(
                loc.diag(
                    field_path,
                    f"lifetime {e.spec['lifetime']} is longer than its issuer '{e.issuer}' ({parent.spec['lifetime']}): a certificate never outlives its issuer",
                    f"shorten it, or lengthen {e.issuer}'s lifetime",
                )
            )
        if e.kind == "authority":
            hops, anc = 1, e.issuer
            while anc is not None:
                pl = entries_unordered[anc].spec["path_length"]
                if pl is not None and hops > pl:
                    diags.append(
                        loc.diag(
                            (section, name, "issuer"),
                            f"path length exceeded: '{anc}' has path_length {pl}, and '{name}' would be authority number {hops} below it",
                            f"raise path_length on '{anc}' or issue '{name}' from higher up",
                        )
                    )
                    break
                hops += 1
                anc = entries_unordered[anc].issuer

    # moved blocks
    moved: dict[str, str] = {}
    targets: set[str] = set()
    for i, m in enumerate(spec.moved):
        if m.from_ in entries_unordered:
            diags.append(loc.diag(("moved", i, "from"), f"'{m.from_}' is still in pki.yaml; a moved entry's old name must be gone"))
        if m.to not in entries_unordered:
            diags.append(loc.diag(("moved", i, "to"), f"'{m.to}' is not in pki.yaml"))
        if m.from_ in moved or m.to in targets:
            diags.append(loc.diag(("moved", i), f"'{m.from_}' -> '{m.to}' repeats an earlier move"))
        moved[m.from_] = m.to
        targets.add(m.to)

    diags.extend(check_name_constraints(entries_unordered, loc))
    if diags:
        raise PkicError(sorted(set(diags), key=lambda d: (d.line or 0, d.column or 0, d.path)))

    # canonical order: depth-first from the roots, authorities before leaves, then by name
    ordered: dict[str, Entry] = {}

    def visit(name: str) -> None:
        ordered[name] = entries_unordered[name]
        kids = children.get(name, [])
        for kid in sorted(kids, key=lambda n: (entries_unordered[n].kind != "authority", n)):
            visit(kid)

    for root in sorted(n for n, e in entries_unordered.items() if e.issuer is None):
        visit(root)
    publish = PublishSettings(spec.publish.ocsp, spec.publish.ocsp_dir.rstrip("/"))
    return EffectiveSpec(ordered, moved, {k: sorted(v) for k, v in children.items()}, publish, loc)


def _issuer_urls(issuer: Authority | None) -> dict:
    """The issuer's CRL/OCSP/caIssuers URLs, which go into what it issues (only when set,
    so specs without them keep their digests)."""
    if issuer is None:
        return {}
    urls = {"crl_url": issuer.crl_url, "ocsp_url": issuer.ocsp_url, "ca_issuers_url": issuer.ca_issuers_url}
    return {k: v for k, v in urls.items() if v}


def load(repo: Path, *, use_cache: bool = True) -> EffectiveSpec:
    """Load, validate and resolve pki.yaml; on failure, every problem found in one error.

    The common, valid case is parsed with the fast C loader; only when something is
    wrong is the file parsed again with the round-trip loader, to locate each problem.
    A spec that resolved once is kept in the user's cache directory (see cache_dir),
    keyed by the SHA-256 of pki.yaml and checked against the CSRs it read: at 10,000
    entries it loads in a fraction of the time of parsing, validating and resolving.

    apply passes ``use_cache=False``: the cache is not reviewed input, and nothing is
    signed from it (plan may use it: it signs nothing). pki.yaml is read only as a
    regular file reached through no symlink.
    """
    from compiler import layout

    path = repo / SPEC_FILE
    try:
        data = layout.read_input(repo, SPEC_FILE)
        cached = None
        if use_cache:
            try:
                cached = _load_effective(_read_cache(_cache_path(path, data)), repo)
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                cached = None
        if cached is not None:
            return cached
        try:
            doc = parse_yaml(data.decode("utf-8"), path.name, fast=True)
        except PkicError:
            # libyaml is YAML 1.1 and refuses some valid YAML 1.2 (a URI such as
            # spiffe://x/y in a flow list): the round-trip loader reads it
            doc, _ = read_document(path)
        if isinstance(doc, dict):
            effective = resolve(Spec.model_validate(doc), Locator(SPEC_FILE, doc), repo=repo)
            if use_cache:
                _store_cache(path, data, effective, repo)
            return effective
    except (OSError, UnicodeDecodeError, ValidationError, PkicError):
        pass
    doc, loc = read_document(repo / SPEC_FILE)
    try:
        spec = Spec.model_validate(doc)
    except ValidationError as exc:
        diags = _pydantic_diags(exc, loc, Spec)
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
        raise PkicError(sorted(set(diags), key=lambda d: (d.line or 0, d.column or 0, d.path))) from None
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
