"""Policies, name constraints and CSR signing, end to end through the CLI.

* a table of sentences: each row is one policy rule, a spec edit that breaks it, and the
  violations expected (field path, message fragment, policy file:line, the exact place in
  pki.yaml); `plan`, `validate` and `apply --yes` all exit 1 and leave out/ byte-identical;
* unit tests of the matching functions (``dns_matches``, ``uri_matches``), with a
  hypothesis property: a ``*`` pattern never matches a name of another label count;
* name constraints: refused at plan time, and a certificate forced past the planner is
  refused by ``openssl verify``;
* CSR signing: only the CSR's public key is used, the key never enters the repo, DER and
  PEM are the same request, a new key reissues, bad CSRs are errors naming the file,
  compromised keys are refused;
* ``pkic csr`` (host side), ``pkic schema --policy``, ``pkic validate``.

Specs are edits of the init example (see tests/spec/test_errors.py for its listing), whose
services-ca has ``name_constraints: {permitted_dns: [svc.internal, example.com]}``: the
policy rows use names inside those constraints so that only the policy speaks.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import NOW, Pkic, make_pkic, snapshot, write_spec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import active, cert, epoch, openssl_verify, scan_for_leaks, state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.policy import constraints
from compiler.policy.matching import dns_matches, uri_matches

ERROR_RE = re.compile(r"^error: (?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<msg>.*)$")
WEB_DNS = "dns: [web.example.com, www.example.com]"
WEB_IP = "ip: [10.0.0.5]"
WEB_LIFE = "    lifetime: 90d\n    renew_before: 30d\n"
PAY_URI = "uri: [spiffe://example.com/payments]"
ANCHOR = {"root-ca": "    lifetime: 10y\n", "services-ca": "    path_length: 0\n"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def applied_template(tmp_path_factory) -> Path:
    """conftest's `applied` (the init example applied at NOW), made once per module."""
    base = tmp_path_factory.mktemp("policy-template")
    runner = make_pkic(base)
    runner.ok("init", str(base / "pki"))
    runner.ok("apply", "--yes", "--now", NOW, cwd=base / "pki")
    return base


@pytest.fixture
def applied(applied_template: Path, tmp_path: Path, pkic: Pkic) -> Path:
    """Overrides conftest's `applied` with a copy of the module's template (repo and age
    identity), at the same place (tmp_path / "pki"): the same repo, without an init and
    an apply per test."""
    shutil.copytree(applied_template / "pki", tmp_path / "pki", symlinks=True)
    identity = Path(pkic.env["SOPS_AGE_KEY_FILE"])
    identity.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(applied_template / "home" / "age" / "keys.txt", identity)
    seal_key = Path(pkic.env["PKIC_SEAL_KEY_FILE"])
    seal_key.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(applied_template / "home" / "seal" / "pkic-seal.key", seal_key)
    return tmp_path / "pki"


# --------------------------------------------------------------------------- helpers


def spec_text(repo: Path) -> str:
    return (repo / "pki.yaml").read_text(encoding="utf-8")


def edit(text: str, *pairs: tuple[str, str]) -> str:
    """Replace each ``old`` (which must occur exactly once: no silent no-op edits)."""
    for old, new in pairs:
        assert text.count(old) == 1, f"edit anchor {old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def attach(text: str, authority: str, value: str) -> str:
    return edit(text, (ANCHOR[authority], f"{ANCHOR[authority]}    policy: {value}\n"))


def write_policy(repo: Path, name: str, body: str) -> None:
    (repo / "policies").mkdir(exist_ok=True)
    (repo / "policies" / f"{name}.yaml").write_text(body, encoding="utf-8")


def rule_line(body: str, rule: str) -> int | None:
    for i, line in enumerate(body.splitlines(), 1):
        if line.startswith(f"{rule}:"):
            return i
    return None


def errors(stderr: str) -> list[dict]:
    """The ``error:`` lines of a run, parsed (hint lines are left out)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("error:"):
            m = ERROR_RE.match(line)
            assert m, f"not a located error line: {line!r}"
            out.append({**m.groupdict(), "line": int(m["line"]), "col": int(m["col"]), "text": line})
    return out


def assert_refused(pkic, repo: Path, *, validate: bool = True) -> list[dict]:
    """plan, validate and apply --yes all exit 1 with the same errors; out/ unchanged."""
    before = snapshot(repo / "out")
    plan = pkic("plan", "--now", NOW, cwd=repo)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    got = errors(plan.stderr)
    assert got, plan.stderr
    runs = [pkic("apply", "--yes", "--now", NOW, cwd=repo)]
    if validate:
        runs.append(pkic("validate", cwd=repo))
    for proc in runs:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert [e["text"] for e in errors(proc.stderr)] == [e["text"] for e in got], proc.stderr
    assert "Traceback" not in plan.stderr
    assert snapshot(repo / "out") == before
    if len(got) > 1:
        assert f"{len(got)} problems found; nothing was changed." in plan.stderr
    return got


def openssl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"
    return proc


def make_csr(key: Path, csr: Path, *, newkey: tuple[str, ...] = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
             subj: str = "/CN=db", san: str | None = "DNS:db.svc.internal", ca: bool = False, outform: str = "PEM") -> None:
    """A CSR made by plain openssl on the host; ``key`` exists: reuse it, else a new key."""
    csr.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    keyargs = ["-key", str(key)] if key.exists() else [*newkey, "-nodes", "-keyout", str(key)]
    ext = []
    if ca:
        ext += ["-addext", "basicConstraints=critical,CA:TRUE"]
    if san:
        ext += ["-addext", f"subjectAltName={san}"]
    openssl("req", "-new", *keyargs, "-subj", subj, *ext, "-outform", outform, "-out", str(csr))


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    data = path.read_bytes()
    return x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)


def host_key_public(path: Path) -> bytes:
    return spki(serialization.load_pem_private_key(path.read_bytes(), None).public_key())


def plan_json(pkic, repo: Path) -> dict:
    return json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=repo).stdout)


def changes(plan: dict) -> dict:
    return {c["name"]: (c["action"], [r["code"] for r in c["reasons"]], c["key"]) for c in plan["changes"]}


def sans(c: x509.Certificate) -> list:
    return list(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def pkilint_findings(path: Path) -> list:
    proc = subprocess.run(["lint_pkix_cert", "lint", "--format", "JSON", "--severity", "WARNING", str(path)],
                          capture_output=True, text=True)
    assert proc.stdout.strip(), f"no output from pkilint (exit {proc.returncode}): {proc.stderr}"
    report = json.loads(proc.stdout)
    return [(r["node_path"], f["severity"], f["code"], f["message"])
            for r in report["results"] for f in r["finding_descriptions"] if f["severity"] in ("FATAL", "ERROR", "WARNING")]


DB = "  db:\n    issuer: services-ca\n    dns: [db.svc.internal]\n    csr: {csr}\n"


def add_db(repo: Path, csr: str = "csrs/db.csr.pem", extra: str = "") -> None:
    write_spec(repo, spec_text(repo) + DB.format(csr=csr) + extra)


# --------------------------------------------------------------------------- 1. the table


@dataclass(frozen=True)
class Expect:
    path: str  # the field path in the error line
    fragment: str  # part of the message
    policy: str  # the policy file's name (policies/<policy>.yaml)
    rule: str  # the rule whose line the message must give (file only when the rule is not written)
    needle: str | None = None  # what the reported pki.yaml line:column points at


@dataclass(frozen=True)
class Row:
    policies: dict  # name -> policies/<name>.yaml text
    edits: tuple = ()  # (old, new) edits of pki.yaml
    expect: tuple = ()
    attach: tuple = (("services-ca", "services"),)


def row(sentence: str, policies: dict | str, edits: tuple, *expect: Expect, attach=(("services-ca", "services"),), marks=()):
    if isinstance(policies, str):
        policies = {"services": policies}
    return pytest.param(Row(policies, edits, expect, attach), id=sentence, marks=marks)


def E(path, fragment, rule, needle=None, policy="services"):
    return Expect(path, fragment, policy, rule, needle)


ONE_LABEL = "allowed_dns: ['*.svc.internal', '*.example.com']\n"

SENTENCES = [
    row("'*' is one label: *.svc.internal allows a.svc.internal and refuses a.b.svc.internal",
        ONE_LABEL, ((WEB_DNS, "dns: [web.example.com, a.svc.internal, a.b.svc.internal]"),),
        E("certificates.web.dns[2]", "'a.b.svc.internal' is not allowed by", "allowed_dns", "a.b.svc.internal")),
    row("'*' is one label: *.svc.internal does not match svc.internal itself",
        ONE_LABEL, ((WEB_DNS, "dns: [web.example.com, svc.internal]"),),
        E("certificates.web.dns[1]", "'svc.internal' is not allowed by", "allowed_dns", "svc.internal")),
    row("names match case-insensitively: forbidden ADMIN.Example.COM refuses Admin.example.com",
        "forbidden_dns: [ADMIN.Example.COM]\n", ((WEB_DNS, "dns: [web.example.com, Admin.example.com]"),),
        E("certificates.web.dns[1]", "'admin.example.com' is not allowed by", "forbidden_dns", "Admin.example.com")),
    row("a Unicode name is matched on its A-label: forbidden xn--bcher-kva.example.com refuses Bücher.example.com",
        "forbidden_dns: [xn--bcher-kva.example.com]\n", ((WEB_DNS, "dns: [web.example.com, Bücher.example.com]"),),
        E("certificates.web.dns[1]", "'xn--bcher-kva.example.com' is not allowed by", "forbidden_dns", "Bücher.example.com")),
    row("an A-label pattern allows the Unicode spelling (only the other name is refused)",
        "allowed_dns: [xn--bcher-kva.example.com]\n", ((WEB_DNS, "dns: [BÜCHER.example.com, web.example.com]"),),
        E("certificates.web.dns[1]", "'web.example.com' is not allowed by", "allowed_dns", "web.example.com")),
    row("a wildcard name is refused with allow_wildcards false, even when a pattern covers it",
        "allowed_dns: ['*.example.com']\nallow_wildcards: false\n", ((WEB_DNS, "dns: ['*.example.com']"),),
        E("certificates.web.dns[0]", "'*.example.com' is not allowed by", "allow_wildcards", "'*.example.com'")),
    row("a wildcard name is refused when allow_wildcards is not written (it defaults to false)",
        ONE_LABEL, ((WEB_DNS, "dns: [web.example.com, '*.svc.internal']"),),
        E("certificates.web.dns[1]", "'*.svc.internal' is not allowed by", "allow_wildcards", "'*.svc.internal'")),
    row("allow_wildcards alone is not enough: the wildcard name needs an allowed pattern covering it",
        "allowed_dns: ['*.svc.internal', web.example.com]\nallow_wildcards: true\n", ((WEB_DNS, "dns: [web.example.com, '*.example.com']"),),
        E("certificates.web.dns[1]", "'*.example.com' is not allowed by", "allowed_dns", "'*.example.com'")),
    row("forbidden wins over allowed: admin.example.com is in both lists and refused",
        "allowed_dns: ['*.example.com']\nforbidden_dns: [admin.example.com]\n", ((WEB_DNS, "dns: [web.example.com, admin.example.com]"),),
        E("certificates.web.dns[1]", "'admin.example.com' is not allowed by", "forbidden_dns", "admin.example.com")),
    row("forbidden wins over a wildcard name: *.example.com would also serve the forbidden admin.example.com",
        "allowed_dns: ['*.example.com']\nforbidden_dns: [admin.example.com]\nallow_wildcards: true\n",
        ((WEB_DNS, "dns: [web.example.com, '*.example.com']"),),
        E("certificates.web.dns[1]", "'*.example.com' is not allowed by", "forbidden_dns", "'*.example.com'")),
    row("an IP outside allowed_ip is refused",
        "allowed_ip: [10.0.0.0/24]\n", ((WEB_IP, "ip: [10.0.0.5, 10.1.0.5]"),),
        E("certificates.web.ip[1]", "'10.1.0.5' is not allowed by", "allowed_ip", "10.1.0.5")),
    row("forbidden_ip wins over allowed_ip",
        "allowed_ip: [10.0.0.0/8]\nforbidden_ip: [10.0.0.0/28]\n", (),
        E("certificates.web.ip[0]", "'10.0.0.5' is not allowed by", "forbidden_ip", "10.0.0.5")),
    row("an empty allowed list allows nothing",
        "allowed_ip: []\n", (),
        E("certificates.web.ip[0]", "(allowed_ip: none)", "allowed_ip", "10.0.0.5")),
    row("a URI on a look-alike host is refused: spiffe://example.com/* does not match spiffe://example.com.evil/x",
        "allowed_uri: ['spiffe://example.com/*']\n", ((PAY_URI, "uri: [spiffe://example.com/payments, spiffe://example.com.evil/payments]"),),
        E("certificates.payments.uri[1]", "'spiffe://example.com.evil/payments' is not allowed by", "allowed_uri", "spiffe://example.com.evil")),
    row("a URI hiding the allowed host in its userinfo is refused",
        "allowed_uri: ['spiffe://example.com/*']\n", ((PAY_URI, "uri: [spiffe://example.com@evil.example.net/payments]"),),
        E("certificates.payments.uri[0]", "'spiffe://example.com@evil.example.net/payments' is not allowed by", "allowed_uri", "spiffe://example.com@")),
    row("a URI on another port is refused",
        "allowed_uri: ['spiffe://example.com/*']\n", ((PAY_URI, "uri: [spiffe://example.com:8443/payments]"),),
        E("certificates.payments.uri[0]", "'spiffe://example.com:8443/payments' is not allowed by", "allowed_uri", "spiffe://example.com:8443")),
    row("forbidden_uri wins over allowed_uri",
        "allowed_uri: ['spiffe://example.com/*']\nforbidden_uri: ['spiffe://example.com/admin/*']\n",
        ((PAY_URI, "uri: [spiffe://example.com/payments, spiffe://example.com/admin/root]"),),
        E("certificates.payments.uri[1]", "'spiffe://example.com/admin/root' is not allowed by", "forbidden_uri", "spiffe://example.com/admin/root")),
    row("an email outside allowed_email_domains is refused, and a subdomain is another domain",
        "allowed_email_domains: [example.com]\n", ((PAY_URI, PAY_URI + "\n    email: [ops@example.com, ops@mail.example.com, ops@evil.example.net]"),),
        E("certificates.payments.email[1]", "'ops@mail.example.com' is not allowed by", "allowed_email_domains", "ops@mail.example.com"),
        E("certificates.payments.email[2]", "'ops@evil.example.net' is not allowed by", "allowed_email_domains", "ops@evil.example.net")),
    row("a lifetime above max_lifetime is refused",
        "max_lifetime: 30d\n", ((WEB_LIFE, "    lifetime: 60d\n    renew_before: 20d\n"), (PAY_URI, PAY_URI + "\n    lifetime: 30d")),
        E("certificates.web.lifetime", "'60d' is not allowed by", "max_lifetime", "60d")),
    row("a policy on the root limits the intermediate's own lifetime",
        {"base": "max_lifetime: 1y\n"}, (),
        E("authorities.services-ca.lifetime", "'3y' is not allowed by", "max_lifetime", "3y", policy="base"),
        attach=(("root-ca", "base"),)),
    row("a key type outside allowed_key_types is refused",
        "allowed_key_types: [ecdsa-p256, ecdsa-p384]\n", (("    " + WEB_DNS, "    key: ed25519\n    " + WEB_DNS),),
        E("certificates.web.key", "'ed25519' is not allowed by", "allowed_key_types", "ed25519")),
    row("an RSA key below min_rsa_bits is refused",
        "min_rsa_bits: 3072\n", (("    " + WEB_DNS, "    key: rsa-2048\n    " + WEB_DNS),),
        E("certificates.web.key", "'rsa-2048' is not allowed by", "min_rsa_bits", "rsa-2048")),
    row("a profile outside allowed_profiles is refused",
        "allowed_profiles: [server, peer]\n", (),
        E("certificates.payments.profile", "'client' is not allowed by", "allowed_profiles", "client")),
    row("more names than max_sans are refused",
        "max_sans: 2\n", (),
        E("certificates.web.dns", "'3 names' are more than", "max_sans", "[web.example.com")),
    row("a subject attribute in required_subject must be there",
        "required_subject: [O, CN]\n", (),
        E("certificates.web.subject", "'CN' is required by", "required_subject")),
    row("require_csr refuses every leaf whose key pkic would make",
        "require_csr: true\n", (),
        E("certificates.payments", "'payments' must come from a CSR", "require_csr"),
        E("certificates.web", "'web' must come from a CSR", "require_csr")),
    row("two levels: the child's policy narrows the root's (a.svc.internal refused by services)",
        {"base": ONE_LABEL, "services": "allowed_dns: ['*.example.com']\n"}, ((WEB_DNS, "dns: [web.example.com, a.svc.internal]"),),
        E("certificates.web.dns[1]", "'a.svc.internal' is not allowed by", "allowed_dns", "a.svc.internal"),
        attach=(("root-ca", "base"), ("services-ca", "services"))),
    row("two levels: the child's policy cannot widen the root's (a.svc.internal refused by base)",
        {"base": "allowed_dns: ['*.example.com']\n", "services": ONE_LABEL}, ((WEB_DNS, "dns: [web.example.com, a.svc.internal]"),),
        E("certificates.web.dns[1]", "'a.svc.internal' is not allowed by", "allowed_dns", "a.svc.internal", policy="base"),
        attach=(("root-ca", "base"), ("services-ca", "services"))),
    row("every policy of a list applies",
        {"services": "allowed_dns: ['*.example.com']\n", "short": "description: short-lived only\nmax_lifetime: 30d\n"},
        ((WEB_DNS, "dns: [web.example.com, a.svc.internal]"), (WEB_LIFE, "    lifetime: 30d\n    renew_before: 10d\n")),
        E("certificates.web.dns[1]", "'a.svc.internal' is not allowed by", "allowed_dns", "a.svc.internal"),
        E("certificates.payments.lifetime", "'90d' is not allowed by", "max_lifetime", policy="short"),
        attach=(("services-ca", "[services, short]"),)),
    row("several violations of one run are reported together",
        "allowed_dns: ['*.example.com']\nallowed_ip: [10.0.0.0/24]\nmax_lifetime: 60d\nallowed_key_types: [ecdsa-p256]\n",
        (("    " + WEB_DNS, "    key: ecdsa-p384\n    " + WEB_DNS), (WEB_DNS, "dns: [web.example.com, a.svc.internal]"),
         (WEB_IP, "ip: [10.0.0.5, 10.9.0.1]"), (PAY_URI, PAY_URI + "\n    lifetime: 30d")),
        E("certificates.web.key", "'ecdsa-p384' is not allowed by", "allowed_key_types", "ecdsa-p384"),
        E("certificates.web.dns[1]", "'a.svc.internal' is not allowed by", "allowed_dns", "a.svc.internal"),
        E("certificates.web.ip[1]", "'10.9.0.1' is not allowed by", "allowed_ip", "10.9.0.1"),
        E("certificates.web.lifetime", "'90d' is not allowed by", "max_lifetime", "90d")),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SENTENCES)
def test_policy_sentence(case: Row, applied, pkic):
    text = spec_text(applied)
    for authority, value in case.attach:
        text = attach(text, authority, value)
    write_spec(applied, edit(text, *case.edits))
    for name, body in case.policies.items():
        write_policy(applied, name, body)
    got = assert_refused(pkic, applied)
    lines = spec_text(applied).splitlines()
    assert len(got) == len(case.expect), "\n".join(e["text"] for e in got)
    for exp in case.expect:
        body = case.policies[exp.policy]
        n = rule_line(body, exp.rule)
        where = f"policies/{exp.policy}.yaml:{n} " if n else f"policies/{exp.policy}.yaml ({exp.rule}:"
        hits = [e for e in got if e["path"] == exp.path and exp.fragment in e["msg"] and where in e["msg"] and exp.rule in e["msg"]]
        assert len(hits) == 1, f"expected {exp} in:\n" + "\n".join(e["text"] for e in got)
        e = hits[0]
        assert e["file"] == "pki.yaml"
        if exp.needle is not None:
            assert lines[e["line"] - 1][e["col"] - 1:].startswith(exp.needle), (e["text"], lines[e["line"] - 1])
        else:  # at least the right entry: the line is inside its block
            name = exp.path.split(".")[1]
            start = next(i for i, ln in enumerate(lines, 1) if ln == f"  {name}:")
            assert start <= e["line"] <= start + 8, e["text"]


def test_the_example_message_names_both_places(applied, pkic):
    """The documented shape, to the character."""
    write_policy(applied, "services", "description: what services-ca may sign\nallowed_dns: ['*.svc.internal', '*.example.com']\n")
    text = attach(spec_text(applied), "services-ca", "services")
    write_spec(applied, edit(text, (WEB_DNS, "dns: [web.example.com, www.example.com, api.svc.internal, x.api.example.com]")))
    line = next(i for i, ln in enumerate(spec_text(applied).splitlines(), 1) if "x.api.example.com" in ln)
    col = spec_text(applied).splitlines()[line - 1].index("x.api.example.com") + 1
    got = assert_refused(pkic, applied)
    assert [e["text"] for e in got] == [
        f"error: pki.yaml:{line}:{col}: certificates.web.dns[3]: 'x.api.example.com' is not allowed by "
        "policies/services.yaml:2 (allowed_dns: '*.svc.internal', '*.example.com')"
    ]


def test_a_policy_that_holds_lets_plan_and_apply_pass(applied, pkic):
    write_policy(applied, "services", (
        "description: everything the init example issues, and no more\n"
        "allowed_dns: ['*.example.com', '*.svc.internal']\nforbidden_dns: [admin.example.com]\n"
        "allowed_ip: [10.0.0.0/8]\nallowed_uri: ['spiffe://example.com/*']\nallowed_email_domains: [example.com]\n"
        "max_lifetime: 90d\nallowed_key_types: [ecdsa-p256]\nmin_rsa_bits: 3072\nallowed_profiles: [server, client]\n"
        "max_sans: 3\nrequired_subject: [O, C]\n"))
    write_policy(applied, "base", "max_lifetime: 3y\n")
    write_spec(applied, attach(attach(spec_text(applied), "services-ca", "services"), "root-ca", "base"))
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied).returncode == 0
    assert "every policy holds" in pkic.ok("validate", cwd=applied).stdout
    # a new conforming leaf is issued through both policies
    write_spec(applied, spec_text(applied) + "  api:\n    issuer: services-ca\n    dns: [api.svc.internal]\n")
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert "api" in active(applied)


def test_missing_policy_file_is_an_error_at_the_policy_line(applied, pkic):
    write_policy(applied, "services", "max_lifetime: 90d\n")
    write_spec(applied, attach(spec_text(applied), "services-ca", "[services, nosuch]"))
    line = next(i for i, ln in enumerate(spec_text(applied).splitlines(), 1) if ln.startswith("    policy:"))
    got = assert_refused(pkic, applied)
    assert len(got) == 1
    assert got[0]["path"] == "authorities.services-ca.policy[1]" and got[0]["line"] == line, got[0]["text"]
    assert "no policy 'nosuch' (policies/nosuch.yaml does not exist)" in got[0]["msg"]
    assert "available: services" in pkic("validate", cwd=applied).stderr


def test_a_bad_policy_file_is_located_in_the_policy_file(applied, pkic):
    write_policy(applied, "services", "description: typo\nallowed_dnss: ['*.example.com']\nforbidden_dns: ['a*b.example.com']\n")
    write_spec(applied, attach(spec_text(applied), "services-ca", "services"))
    got = assert_refused(pkic, applied)
    where = {(e["file"], e["line"]) for e in got}
    assert ("policies/services.yaml", 2) in where and ("policies/services.yaml", 3) in where, [e["text"] for e in got]


def test_uri_with_bad_port_is_an_error_not_a_crash(applied, pkic):
    write_policy(applied, "services", "allowed_uri: ['spiffe://example.com/*']\n")
    write_spec(applied, edit(attach(spec_text(applied), "services-ca", "services"), (PAY_URI, "uri: [spiffe://example.com:99999/payments]")))
    proc = pkic("plan", "--now", NOW, cwd=applied)
    assert "Traceback" not in proc.stderr and "pkic crashed" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "certificates.payments.uri[0]" in proc.stderr, proc.stderr




# --------------------------------------------------------------------------- 2. matching units


@pytest.mark.parametrize("name,pattern,expected", [
    ("a.svc.internal", "*.svc.internal", True),
    ("a.b.svc.internal", "*.svc.internal", False),
    ("svc.internal", "*.svc.internal", False),
    ("A.SVC.Internal", "*.svc.internal", True),
    ("api.example.com", "API.EXAMPLE.COM", True),
    ("api.example.com", "api.*.com", True),
    ("api.example.org", "api.*.com", False),
    ("api.example.com", "*.*.com", True),
    ("api.example.com.evil", "*.example.com", False),
    ("xn--bcher-kva.example.com", "*.example.com", True),
    ("*.example.com", "*.example.com", True),  # a wildcard name covered by its pattern
    ("*.example.com", "api.example.com", False),  # an exact pattern never covers a wildcard
])
def test_dns_matches(name, pattern, expected):
    assert dns_matches(name, pattern) is expected


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(lambda s: s[0] != "-" != s[-1])


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(name=st.lists(LABEL, min_size=1, max_size=6), pattern=st.lists(st.one_of(st.just("*"), LABEL), min_size=1, max_size=6), data=st.data())
def test_star_pattern_never_matches_another_label_count(name, pattern, data):
    if "*" not in pattern:
        pattern[data.draw(st.integers(0, len(pattern) - 1))] = "*"
    if len(name) != len(pattern):
        assert not dns_matches(".".join(name), ".".join(pattern))
    else:  # same count: matches exactly when every literal label agrees
        assert dns_matches(".".join(name), ".".join(pattern)) == all(p in ("*", n) for n, p in zip(name, pattern))


@pytest.mark.parametrize("value,pattern,expected", [
    ("spiffe://example.com/payments", "spiffe://example.com/*", True),
    ("spiffe://example.com/ns/prod/sa/api", "spiffe://example.com/ns/*/sa/api", True),
    ("spiffe://example.com.evil/x", "spiffe://example.com/*", False),
    ("spiffe://evil.com/example.com/x", "spiffe://example.com/*", False),
    ("spiffe://example.com@evil.com/x", "spiffe://example.com/*", False),
    ("spiffe://user@example.com/x", "spiffe://example.com/*", False),
    ("spiffe://example.com:8443/x", "spiffe://example.com/*", False),
    ("spiffe://example.com:8443/x", "spiffe://example.com:8443/*", True),
    ("https://example.com/x", "spiffe://example.com/*", False),
    ("SPIFFE://Example.COM/x", "spiffe://example.com/*", True),
    ("spiffe://example.com", "spiffe://example.com/*", False),
    ("spiffe://example.com/nsX/y", "spiffe://example.com/ns/*", False),
    ("spiffe://example.com/payments", "spiffe://example.com/payments", True),
    ("spiffe://example.com/payments2", "spiffe://example.com/payments", False),
    ("https://example.com/apiZv=1", "https://example.com/api?v=1", False),
    ("spiffe://example.com/a", "spiffe://example.com/[ab]", False),
    ("spiffe://example.com/payments#admin", "spiffe://example.com/payments", False),
])
def test_uri_matches(value, pattern, expected):
    assert uri_matches(value, pattern) is expected


@pytest.mark.parametrize("name,subtree,expected", [
    ("example.com", "example.com", True),
    ("www.example.com", "example.com", True),
    ("badexample.com", "example.com", False),
    ("example.com", ".example.com", False),
    ("www.example.com", ".example.com", True),
    ("*.example.com", "example.com", True),
    ("*.example.com", "www.example.com", False),
])
def test_name_constraint_dns_subtrees(name, subtree, expected):
    assert constraints.dns_within(name, subtree) is expected


# --------------------------------------------------------------------------- 3. name constraints


def test_name_constraints_are_a_critical_extension(applied):
    ext = cert(applied, "services-ca").extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert sorted(n.value for n in ext.value.permitted_subtrees) == ["example.com", "svc.internal"]
    assert ext.value.excluded_subtrees is None


def test_names_outside_constraints_are_refused_at_plan_time(applied, pkic):
    text = edit(spec_text(applied),
                ("name_constraints: {permitted_dns: [svc.internal, example.com]}",
                 "name_constraints: {permitted_dns: [svc.internal, example.com], excluded_dns: [admin.example.com], permitted_ip: [10.0.0.0/8]}"),
                ("    lifetime: 10y\n", "    lifetime: 10y\n    name_constraints: {excluded_dns: [secret.example.com]}\n"),
                (WEB_DNS, "dns: [web.example.com, api.corp.com, badexample.com, x.admin.example.com, secret.example.com]"),
                (WEB_IP, "ip: [10.0.0.5, 192.168.0.1]"))
    write_spec(applied, text)
    got = assert_refused(pkic, applied)
    by_path = {e["path"]: e["msg"] for e in got}
    assert len(got) == 5, [e["text"] for e in got]
    assert "'api.corp.com' is outside the name constraints of 'services-ca' (not within permitted_dns" in by_path["certificates.web.dns[1]"]
    assert "'badexample.com' is outside the name constraints of 'services-ca'" in by_path["certificates.web.dns[2]"]
    assert "(within excluded_dns: admin.example.com)" in by_path["certificates.web.dns[3]"]
    assert "of 'root-ca' (within excluded_dns: secret.example.com)" in by_path["certificates.web.dns[4]"]
    assert "'192.168.0.1' is outside the name constraints of 'services-ca' (not within permitted_ip" in by_path["certificates.web.ip[1]"]


def test_certificate_forced_past_the_planner_fails_openssl(applied, pkic, monkeypatch, tmp_path):
    from compiler.keys import keystore
    from compiler.model.keytype import KeyType
    from compiler.spec import LeafEntry
    from compiler.x509.build import IssuerRef, build

    monkeypatch.setenv("SOPS_AGE_KEY_FILE", pkic.env["SOPS_AGE_KEY_FILE"])
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    signer = keystore.Keystore(applied).load("services-ca")
    issuer = IssuerRef.from_certificate(cert(applied, "services-ca"), KeyType.ECDSA_P256)
    now = datetime.fromisoformat(NOW.replace("Z", "+00:00"))
    at = str(int(epoch(NOW)) + 60)

    def forge(name: str, dns: list[str]) -> subprocess.CompletedProcess:
        spec = {"kind": "certificate", "issuer": "services-ca", "profile": "server", "subject": [["O", "Example Corp"]],
                "dns": dns, "ip": [], "uri": [], "email": [], "key": "ecdsa-p256", "lifetime": "30d", "rekey": 0}
        entry = LeafEntry(name=name, issuer="services-ca", spec=spec, lifetime=timedelta(days=30), renew_before=timedelta(days=10))
        leaf = keystore.sign(build(entry, keystore.generate(KeyType.ECDSA_P256).public_key(), issuer, x509.random_serial_number(), now), signer)
        path = tmp_path / f"{name}.pem"
        path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        return subprocess.run(["openssl", "verify", "-attime", at, "-CAfile", str(applied / "out/trust/bundle.pem"),
                               "-untrusted", str(applied / "out/certs/services-ca.pem"), str(path)], capture_output=True, text=True)

    good = forge("conforming", ["ok.svc.internal"])
    assert good.returncode == 0 and good.stdout.rstrip().endswith(": OK"), good.stdout + good.stderr
    bad = forge("rogue", ["api.corp.com"])
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "permitted subtree violation" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


# --------------------------------------------------------------------------- 4. CSR signing


@pytest.mark.slow
def test_csr_is_signed_with_pki_yaml_names_only(applied, pkic, tmp_path):
    host = tmp_path / "host"  # outside the repo (tmp_path / "pki")
    make_csr(host / "db.key", applied / "csrs/db.csr.pem", ca=True, san="DNS:db.svc.internal,DNS:extra.svc.internal,IP:10.9.9.9")
    add_db(applied)

    text = pkic.ok("plan", "--now", NOW, cwd=applied).stdout
    assert "key from its CSR" in text
    assert "db: the CSR also asks for 'extra.svc.internal', '10.9.9.9', which pki.yaml does not list (not issued)" in text
    plan = plan_json(pkic, applied)
    assert changes(plan) == {"db": ("issue", ["new"], "external")}
    assert any("extra.svc.internal" in w for w in plan["warnings"])
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)

    c = cert(applied, "db")
    assert spki(c.public_key()) == spki(load_csr(applied / "csrs/db.csr.pem").public_key()) == host_key_public(host / "db.key")
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert sans(c) == [x509.DNSName("db.svc.internal")]
    assert c.subject.rfc4514_string() == "O=Example Corp,C=US"  # pki.yaml's, not the CSR's CN=db
    rec = active(applied)["db"]
    assert rec["key_source"] == "csr" and rec["public_key_sha256"] == rec["spec"]["csr_key"]
    assert not (applied / "out/keys/db.sops.yaml").exists()
    assert sorted(p.name for p in (applied / "out/keys").glob("*.sops.yaml")) == ["payments.sops.yaml", "root-ca.sops.yaml", "services-ca.sops.yaml", "web.sops.yaml"]
    secret = [ln.encode() for ln in (host / "db.key").read_text().splitlines()[1:-1] if len(ln) >= 40]
    assert secret and scan_for_leaks(applied, secret) == []
    proc = openssl_verify(applied, "db", NOW)
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
    assert pkilint_findings(applied / "out/certs/db.pem") == []

    # the same request re-encoded as DER is the same request: nothing to do
    openssl("req", "-in", str(applied / "csrs/db.csr.pem"), "-outform", "DER", "-out", str(applied / "csrs/db.csr.der"))
    write_spec(applied, edit(spec_text(applied), ("csr: csrs/db.csr.pem", "csr: csrs/db.csr.der")))
    proc = pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # a CSR with a new key (the host rotated it) reissues
    (host / "db.key").rename(host / "db.old.key")
    make_csr(host / "db.key", applied / "csrs/db2.csr.pem")
    write_spec(applied, edit(spec_text(applied), ("csr: csrs/db.csr.der", "csr: csrs/db2.csr.pem")))
    assert changes(plan_json(pkic, applied)) == {"db": ("reissue", ["csr_key_changed"], "external")}
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert spki(cert(applied, "db").public_key()) == host_key_public(host / "db.key")
    assert state(applied)["certificates"]["db"][1]["status"] == "superseded"
    assert openssl_verify(applied, "db", NOW).returncode == 0


def _tamper(repo: Path, host: Path) -> None:
    make_csr(host / "db.key", host / "db.der", outform="DER")
    data = bytearray((host / "db.der").read_bytes())
    data[-1] ^= 0x01  # the last byte of the signature value
    (repo / "csrs").mkdir(exist_ok=True)
    (repo / "csrs/db.csr.pem").write_bytes(bytes(data))  # DER content under a .pem name is fine


BAD_CSRS = {
    "tampered signature": (_tamper, "self-signature does not verify"),
    "RSA 1024": (lambda repo, host: make_csr(host / "db.key", repo / "csrs/db.csr.pem", newkey=("-newkey", "rsa:1024")), "RSA key has 1024 bits: weak"),
    "secp256k1": (lambda repo, host: make_csr(host / "db.key", repo / "csrs/db.csr.pem", newkey=("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1")),
                  "unsupported curve secp256k1"),
    "not a CSR": (lambda repo, host: (repo / "csrs").mkdir() or (repo / "csrs/db.csr.pem").write_text("hello\n"), "not a PEM or DER certificate signing request"),
    "missing": (lambda repo, host: None, "file not found"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BAD_CSRS))
def test_bad_csr_is_an_error_naming_the_file(kind, applied, pkic, tmp_path):
    make, fragment = BAD_CSRS[kind]
    make(applied, tmp_path / "host")
    add_db(applied)
    got = assert_refused(pkic, applied)
    assert len(got) == 1
    assert got[0]["path"] == "certificates.db.csr" and got[0]["msg"].startswith("csrs/db.csr.pem: ") and fragment in got[0]["msg"], got[0]["text"]
    assert "db" not in state(applied)["certificates"]


@pytest.mark.slow
def test_csr_key_types_are_taken_from_the_csr(applied, pkic, tmp_path):
    kinds = {"ed": (("-newkey", "ed25519"), "ed25519"), "p384": (("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"), "ecdsa-p384"),
             "rsa": (("-newkey", "rsa:2048"), "rsa-2048")}
    text = spec_text(applied)
    for name, (newkey, _) in kinds.items():
        make_csr(tmp_path / "host" / f"{name}.key", applied / f"csrs/{name}.csr.pem", newkey=newkey, san=f"DNS:{name}.svc.internal")
        text += f"  {name}:\n    issuer: services-ca\n    dns: [{name}.svc.internal]\n    csr: csrs/{name}.csr.pem\n"
    write_spec(applied, text)
    assert {n: c["key_type"] for n, c in ((c["name"], c) for c in plan_json(pkic, applied)["changes"])} == {n: k for n, (_, k) in kinds.items()}
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    for name in kinds:
        assert spki(cert(applied, name).public_key()) == host_key_public(tmp_path / "host" / f"{name}.key")
        proc = openssl_verify(applied, name, NOW)
        assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
    # a `key:` that contradicts the CSR is an error at the key
    write_spec(applied, edit(spec_text(applied), ("    csr: csrs/ed.csr.pem\n", "    csr: csrs/ed.csr.pem\n    key: ecdsa-p256\n")))
    got = assert_refused(pkic, applied)
    assert [(e["path"], e["msg"]) for e in got] == [("certificates.ed.key", "key ecdsa-p256 does not match the CSR's ed25519 key")]


@pytest.mark.slow
def test_csr_policy_rules(repo, pkic, tmp_path):
    """require_csr is met by a CSR; reject_csr_extra_names refuses a CSR asking for more."""
    write_policy(repo, "hosts", "require_csr: true\nreject_csr_extra_names: true\n")
    text = edit(spec_text(repo), ("\ncertificates:\n", "  hosts-ca:\n    issuer: root-ca\n    subject: {CN: Hosts CA}\n    policy: hosts\n\ncertificates:\n"))
    write_spec(repo, text + DB.format(csr="csrs/db.csr.pem").replace("issuer: services-ca", "issuer: hosts-ca"))
    make_csr(tmp_path / "host/db.key", repo / "csrs/db.csr.pem")
    assert "every policy holds" in pkic.ok("validate", cwd=repo).stdout
    make_csr(tmp_path / "host/db.key", repo / "csrs/db.csr.pem", san="DNS:db.svc.internal,DNS:admin.svc.internal")
    got = assert_refused(pkic, repo)
    assert len(got) == 1 and got[0]["path"] == "certificates.db.csr", got
    assert "'admin.svc.internal' is asked for by the CSR but not listed in pki.yaml, refused by policies/hosts.yaml:2" in got[0]["msg"]
    # a leaf pkic would make a key for is refused under require_csr
    write_spec(repo, spec_text(repo) + "  plain:\n    issuer: hosts-ca\n    dns: [plain.svc.internal]\n")
    make_csr(tmp_path / "host/db.key", repo / "csrs/db.csr.pem")
    got = assert_refused(pkic, repo)
    assert [(e["path"], "must come from a CSR" in e["msg"]) for e in got] == [("certificates.plain", True)]


def test_compromised_csr_key_is_refused_forever(applied, pkic, tmp_path):
    host = tmp_path / "host"
    make_csr(host / "db.key", applied / "csrs/db.csr.pem")
    add_db(applied)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    old_serial = active(applied)["db"]["serial"]
    # declared compromised, with a new CSR from a new key in the same pull request
    (host / "db.key").rename(host / "db.compromised.key")
    make_csr(host / "db.key", applied / "csrs/db-new.csr.pem")
    write_spec(applied, edit(spec_text(applied), ("    csr: csrs/db.csr.pem\n", "    csr: csrs/db-new.csr.pem\n    key_compromised: 2026-11-26\n")))
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    recs = state(applied)["certificates"]["db"]
    assert recs[0]["status"] == "active" and spki(cert(applied, "db").public_key()) == host_key_public(host / "db.key")
    assert recs[1]["serial"] == old_serial and recs[1]["status"] == "revoked" and recs[1]["revocation_reason"] == "key_compromise"
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied).returncode == 0
    # later, a fresh CSR (other subject, same bytes nowhere) from the compromised key
    make_csr(host / "db.compromised.key", applied / "csrs/db-again.csr.pem", subj="/CN=db-again")
    write_spec(applied, edit(spec_text(applied), ("csr: csrs/db-new.csr.pem", "csr: csrs/db-again.csr.pem")))
    got = assert_refused(pkic, applied, validate=False)  # validate reads no state: it cannot know
    assert len(got) == 1 and got[0]["path"] == "certificates.db.csr", got
    assert got[0]["msg"].startswith("csrs/db-again.csr.pem: its key was declared compromised (db,"), got[0]["msg"]


def test_key_compromised_with_the_same_csr_is_refused(applied, pkic, tmp_path):
    make_csr(tmp_path / "host/db.key", applied / "csrs/db.csr.pem")
    add_db(applied)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    compromised = active(applied)["db"]["public_key_sha256"]
    write_spec(applied, edit(spec_text(applied), ("    csr: csrs/db.csr.pem\n", "    csr: csrs/db.csr.pem\n    key_compromised: 2026-11-26\n")))
    pkic("apply", "--yes", "--now", NOW, cwd=applied)
    now_active = active(applied).get("db")
    assert now_active is None or now_active["public_key_sha256"] != compromised, "a new certificate was issued for the compromised key"


# --------------------------------------------------------------------------- 5. pkic csr


@pytest.mark.slow
def test_pkic_csr_host_side_key_and_csr(applied, pkic, tmp_path):
    key = tmp_path / "host" / "web.key"
    proc = pkic.ok("csr", "web", "--key-out", str(key), cwd=applied)
    assert "csrs/web.csr.pem" in proc.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    req = load_csr(applied / "csrs/web.csr.pem")
    assert req.is_signature_valid and spki(req.public_key()) == host_key_public(key)
    assert sorted(req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)) == ["web.example.com", "www.example.com"]
    key_bytes = key.read_bytes()

    # refused: an existing key path (untouched), a path inside the repo (absolute or relative), an unknown name
    for args, fragment in (
        (["web", "--key-out", str(key)], "refusing to overwrite a key"),
        (["web", "--key-out", str(applied / "secrets" / "web.key")], "refusing to write a private key inside the repo"),
        (["web", "--key-out", "web.key"], "refusing to write a private key inside the repo"),
        (["nosuch", "--key-out", str(tmp_path / "host" / "x.key")], "'nosuch' is not a certificate"),
        (["services-ca", "--key-out", str(tmp_path / "host" / "y.key")], "'services-ca' is not a certificate"),
    ):
        p = pkic("csr", *args, cwd=applied)
        assert p.returncode == 1 and fragment in p.stderr, (args, p.stderr)
    assert key.read_bytes() == key_bytes
    assert not (applied / "secrets").exists() and not (applied / "web.key").exists()
    assert not (tmp_path / "host" / "x.key").exists() and not (tmp_path / "host" / "y.key").exists()

    # the CSR in pki.yaml: web is reissued from it, its generated key file goes
    write_spec(applied, edit(spec_text(applied), ("    " + WEB_DNS, "    " + WEB_DNS + "\n    csr: csrs/web.csr.pem")))
    assert changes(plan_json(pkic, applied)) == {"web": ("reissue", ["csr_key_changed"], "external")}
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert spki(cert(applied, "web").public_key()) == host_key_public(key)
    assert active(applied)["web"]["key_source"] == "csr"
    assert not (applied / "out/keys/web.sops.yaml").exists()
    assert openssl_verify(applied, "web", NOW).returncode == 0
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=applied).returncode == 0
    assert pkic("verify", "--keys", "--now", NOW, cwd=applied).returncode == 0


# --------------------------------------------------------------------------- 6. schema, validate


def test_schema_policy_is_json_with_every_rule(pkic, tmp_path):
    schema = json.loads(pkic.ok("schema", "--policy", cwd=tmp_path).stdout)
    assert schema["title"] == "pkic policy" and "2020-12" in schema["$schema"]
    assert set(schema["properties"]) >= {
        "allowed_dns", "forbidden_dns", "allow_wildcards", "allowed_ip", "forbidden_ip", "allowed_uri", "forbidden_uri",
        "allowed_email_domains", "max_lifetime", "allowed_key_types", "min_rsa_bits", "allowed_profiles", "max_sans",
        "required_subject", "require_csr", "reject_csr_extra_names",
    }
    assert schema.get("additionalProperties") is False
    spec_schema = json.loads(pkic.ok("schema", cwd=tmp_path).stdout)
    assert "policy" in json.dumps(spec_schema["$defs"]["Authority"]) and "csr" in spec_schema["$defs"]["Certificate"]["properties"]


def test_validate_exit_codes(repo, pkic):
    proc = pkic.ok("validate", cwd=repo)
    assert "pki.yaml is valid: 4 entries; every policy holds; .sops.yaml has 1 creation rule(s)." in proc.stdout
    write_policy(repo, "services", "max_lifetime: 30d\n")
    write_spec(repo, attach(spec_text(repo), "services-ca", "services"))
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1 and "max_lifetime" in proc.stderr and not (repo / "out").exists()
    assert len(errors(proc.stderr)) == 2  # web (90d) and payments (default 90d)
