"""Bad input is one clear message per mistake, and nothing is written.

The rule: every user mistake is reported as ``error: <file>:<line>:<col>: <field path>:
<message>`` (plus an optional ``  hint:`` line), every problem of a run at once, exit
code 1, no traceback, and out/ byte-identical afterwards. The end-to-end tests run both
``plan`` and ``apply --yes`` on an applied repo, so out/ is not empty; the diagnostic
tables (YAML syntax, unknown fields, wrong types, SANs, name constraints) run
in-process against the loader, and one row of each also end to end, to hold the two
renderings equal (test_the_loader_prints_what_the_cli_prints).

Specs are written as single-line edits of BASE (below, with its line numbers) so the
expected positions can be read off the listing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import NOW, snapshot, unsealed, write_spec

# Line numbers, for reading the expected positions below:
#  1 version: 1
#  2 defaults:
#  3   key: ecdsa-p256
#  4   subject: {O: Example Corp, C: US}
#  5 authorities:
#  6   root-ca:
#  7     subject: {CN: Example Root CA}
#  8     key: ecdsa-p384
#  9     lifetime: 10y
# 10   services-ca:
# 11     issuer: root-ca
# 12     subject: {CN: Example Services CA}
# 13     lifetime: 3y
# 14     path_length: 0
# 15     name_constraints: {permitted_dns: [svc.internal, example.com]}
# 16 certificates:
# 17   web:
# 18     issuer: services-ca
# 19     profile: server
# 20     dns: [web.example.com, www.example.com]
# 21     ip: [10.0.0.5]
# 22     lifetime: 90d
# 23     renew_before: 30d
# 24   payments:
# 25     issuer: services-ca
# 26     profile: client
# 27     subject: {CN: payments}
# 28     uri: [spiffe://example.com/payments]
BASE = textwrap.dedent(
    """\
    version: 1
    defaults:
      key: ecdsa-p256
      subject: {O: Example Corp, C: US}
    authorities:
      root-ca:
        subject: {CN: Example Root CA}
        key: ecdsa-p384
        lifetime: 10y
      services-ca:
        issuer: root-ca
        subject: {CN: Example Services CA}
        lifetime: 3y
        path_length: 0
        name_constraints: {permitted_dns: [svc.internal, example.com]}
    certificates:
      web:
        issuer: services-ca
        profile: server
        dns: [web.example.com, www.example.com]
        ip: [10.0.0.5]
        lifetime: 90d
        renew_before: 30d
      payments:
        issuer: services-ca
        profile: client
        subject: {CN: payments}
        uri: [spiffe://example.com/payments]
    """
)

NEW_LEAF = "  api:\n    issuer: services-ca\n    dns: [api.svc.internal]\n"


def edit(*changes: tuple[str, str], base: str = BASE) -> str:
    """BASE with whole lines replaced; each old line must occur exactly once."""
    text = base
    for old, new in changes:
        assert text.count(old + "\n") == 1, f"{old!r} is not one line of the spec"
        text = text.replace(old + "\n", new + "\n")
    return text


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def diag(stderr: str, where: str, path: str | None = None) -> tuple[str, str | None]:
    """The one diagnostic at ``where`` (``file:line:col``) for ``path``: (message, hint)."""
    prefix = f"error: {where}: " + (f"{path}: " if path else "")
    lines = stderr.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one diagnostic starting {prefix!r}, got {len(hits)} in:\n{stderr}"
    i = hits[0]
    hint = None
    if i + 1 < len(lines) and lines[i + 1].startswith("  hint: "):
        hint = lines[i + 1].removeprefix("  hint: ")
    return lines[i][len(prefix):], hint


def assert_clean_failure(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{text}"
    assert "Traceback" not in text and "pkic crashed" not in text, text


COMMANDS = (("plan",), ("apply", "--yes"))


def rejected(pkic, repo: Path, text: str | None = None, *, count: int = 1, commands=COMMANDS, env: dict | None = None, now: str = NOW) -> str:
    """Write ``text`` as pki.yaml, run each command: every run must fail cleanly with
    the same ``count`` diagnostics on stderr, print nothing on stdout, and leave out/
    byte-identical. Returns stderr."""
    if text is not None:
        write_spec(repo, text)
    before = snapshot(repo / "out")
    outputs = []
    for cmd in commands:
        proc = pkic(*cmd, "--now", now, cwd=repo, env=env)
        assert_clean_failure(proc)
        assert proc.stdout == "", f"pkic {' '.join(cmd)} printed on stdout:\n{proc.stdout}"
        errors = error_lines(proc.stderr)
        assert len(errors) == count, f"pkic {' '.join(cmd)}: expected {count} diagnostic(s), got {len(errors)}:\n{proc.stderr}"
        if count > 1:
            assert f"{count} problems found; nothing was changed." in proc.stderr
        else:
            assert "problems found" not in proc.stderr
        assert snapshot(repo / "out") == before, f"pkic {' '.join(cmd)} changed out/"
        outputs.append(proc.stderr)
    assert all(o == outputs[0] for o in outputs), f"plan and apply disagree:\n{outputs}"
    return outputs[0]


@pytest.fixture(scope="module")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `pkic init` repo per module for the diagnostic tables, which run in-process
    against the loader (the end-to-end runs above and below cover exit code, no
    traceback and out/ untouched; test_the_loader_prints_what_the_cli_prints holds the
    two renderings equal)."""
    from conftest import make_pkic

    base = tmp_path_factory.mktemp("spec")
    make_pkic(base).ok("init", str(base / "pki"))
    return base / "pki"


def loaded(repo: Path, text: str, *, count: int = 1) -> str:
    """The diagnostics the CLI prints on stderr for ``text`` as pki.yaml, made by the
    loader in this process: ``count`` of them, each as ``error: ...`` with its hint."""
    from compiler.model.errors import PkicError
    from compiler.spec import load, locate

    write_spec(repo, text)
    try:
        load(repo, caches=None)
    except PkicError as exc:
        lines = [f"error: {d.render()}" for d in locate(repo, exc.diagnostics)]
        if len(exc.diagnostics) > 1:
            lines.append(f"{len(exc.diagnostics)} problems found; nothing was changed.")
        stderr = "\n".join(lines) + "\n"
        assert len(error_lines(stderr)) == count, stderr
        return stderr
    raise AssertionError("the loader accepted the spec")


def test_base_spec_is_valid(applied, pkic):
    """BASE is the init example without comments: it plans clean on the applied repo."""
    write_spec(applied, BASE)
    p = pkic.ok("plan", "--detailed-exitcode", "--now", NOW, cwd=applied)
    assert "No changes" in p.stdout


@pytest.mark.parametrize(
    "change",
    [
        ("    lifetime: 90d", "     lifetime: 90d"),
        ("    path_length: 0", "    pathlength: 0"),
        ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, '*.*.example.com']"),
        ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, web.example.org]"),
    ],
    ids=["yaml", "unknown-field", "san", "name-constraints"],
)
def test_the_loader_prints_what_the_cli_prints(applied, pkic, spec_repo, change):
    """The tables below run in-process against the loader: one row of each, end to end,
    gives the CLI's stderr, byte for byte."""
    assert loaded(spec_repo, edit(change)) == rejected(pkic, applied, edit(change))


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize(
    "change, where, fragment",
    [
        pytest.param(
            ("    lifetime: 90d", "     lifetime: 90d"),  # one space too many, line 22
            "pki.yaml:22:6", "expected <block end>, but found '<block mapping start>'",
            id="bad-indentation",
        ),
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, www.example.com"),
            # the unclosed '[' (line 20) is noticed at the ':' of the next line
            "pki.yaml:21:7", "expected ',' or ']', but got ':'",
            id="unclosed-bracket",
        ),
        pytest.param(
            ("    subject: {CN: Example Root CA}", "    subject: {CN: Example Root CA"),
            "pki.yaml:8:8", "expected ',' or '}', but got ':'",
            id="unclosed-brace",
        ),
        pytest.param(
            ("  root-ca:", "\troot-ca:"),
            "pki.yaml:6:1", "found character '\\t' that cannot start any token",
            id="tab",
        ),
    ],
)
def test_yaml_syntax_error(spec_repo, change, where, fragment):
    stderr = loaded(spec_repo, edit(change))
    message, hint = diag(stderr, where)
    assert message.startswith("YAML syntax error: ") and fragment in message, message
    assert hint == "check indentation, quoting and colons"


def test_duplicate_yaml_key(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    renew_before: 30d", "    lifetime: 60d")))
    message, _ = diag(stderr, "pki.yaml:23:5")
    assert "duplicate key" in message and "lifetime" in message, message


def test_duplicate_entry_name(applied, pkic):
    stderr = rejected(pkic, applied, edit(("  payments:", "  web:")))
    message, _ = diag(stderr, "pki.yaml:24:3")
    assert "duplicate key" in message and "web" in message, message


def test_duplicate_yaml_key_names_the_field(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    renew_before: 30d", "    lifetime: 60d")))
    message, _ = diag(stderr, "pki.yaml:23:5", "certificates.web.lifetime")
    assert "duplicate key" in message


def test_top_level_not_a_mapping(applied, pkic):
    stderr = rejected(pkic, applied, "- version: 1\n- authorities: {}\n")
    message, _ = diag(stderr, "pki.yaml:1:1")
    assert "the top level must be a mapping" in message


def test_empty_file(applied, pkic):
    stderr = rejected(pkic, applied, "# nothing yet\n")
    message, hint = diag(stderr, "pki.yaml:1:1")
    assert message == "the file is empty" and "pkic init" in hint


# --------------------------------------------------------------------------- schema


def test_unknown_field_points_at_the_key(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    lifetime: 90d", "    lifetme: 90d")))
    message, _ = diag(stderr, "pki.yaml:22:5", "certificates.web.lifetme")
    assert message == "unknown field 'lifetme'"


@pytest.mark.parametrize(
    "change, where, path, suggestion",
    [
        pytest.param(("defaults:", "defualts:"), "pki.yaml:2:1", "defualts", "defaults", id="top-level"),
        pytest.param(
            ("    lifetime: 90d", "    lifetme: 90d"), "pki.yaml:22:5", "certificates.web.lifetme", "lifetime",
            id="certificate-field"
        ),
        pytest.param(
            ("    path_length: 0", "    pathlength: 0"), "pki.yaml:14:5", "authorities.services-ca.pathlength", "path_length",
            id="authority-field"
        ),
    ],
)
def test_unknown_field_suggests_the_known_one(spec_repo, change, where, path, suggestion):
    stderr = loaded(spec_repo, edit(change))
    message, hint = diag(stderr, where, path)
    assert message.startswith("unknown field ")
    assert hint == f"did you mean '{suggestion}'?", hint


@pytest.mark.parametrize(
    "change, where, path, fragments",
    [
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: web.example.com"),
            "pki.yaml:20:10", "certificates.web.dns", ("valid list", "'web.example.com'"),
            id="dns-string-not-list",
        ),
        pytest.param(
            ("    path_length: 0", "    path_length: zero"),
            "pki.yaml:14:18", "authorities.services-ca.path_length", ("valid integer",),
            id="path_length-not-integer",
        ),
        pytest.param(
            ("    path_length: 0", "    path_length: -1"),
            "pki.yaml:14:18", "authorities.services-ca.path_length", ("greater than or equal to 0",),
            id="path_length-negative",
        ),
        pytest.param(
            ("    subject: {CN: payments}", "    subject: CN=payments"),
            "pki.yaml:27:14", "certificates.payments.subject", ("valid dictionary", "'CN=payments'"),
            id="subject-string",
        ),
        pytest.param(
            ("    profile: client", "    profile: mtls"),
            "pki.yaml:26:14", "certificates.payments.profile", ("'mtls' is not allowed", "'server', 'client' or 'peer'"),
            id="bad-profile",
        ),
        pytest.param(
            ("version: 1", "version: 2"),
            "pki.yaml:1:10", "version", ("2 is not allowed",),
            id="bad-version",
        ),
    ],
)
def test_wrong_type(spec_repo, change, where, path, fragments):
    stderr = loaded(spec_repo, edit(change))
    message, _ = diag(stderr, where, path)
    for fragment in fragments:
        assert fragment in message, message


def test_bad_duration_is_the_spec_example(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    lifetime: 90d", "    lifetime: 90x")))
    assert error_lines(stderr) == [
        "error: pki.yaml:22:15: certificates.web.lifetime: '90x' is not a duration (use 90d, 12h, 3y or P90D)"
    ]


def test_bad_key_type(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    key: ecdsa-p384", "    key: rsa-1024")))
    message, _ = diag(stderr, "pki.yaml:8:10", "authorities.root-ca.key")
    assert message.startswith("'rsa-1024' is not allowed")
    assert "'rsa-2048'" in message and "'ecdsa-p256'" in message


def test_missing_required_field(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    issuer: services-ca\n    profile: client", "    profile: client")))
    message, _ = diag(stderr, "pki.yaml:25:5", "certificates.payments")
    assert message == "required field 'issuer' is missing"


def test_null_entry_points_at_its_key(applied, pkic):
    text = textwrap.dedent(
        """\
        version: 1
        authorities:
          root-ca:
            subject: {CN: Example Root CA}
          services-ca:
        certificates:
          web:
            issuer: root-ca
            dns: [web.example.com]
        """
    )
    stderr = rejected(pkic, applied, text)
    message, _ = diag(stderr, "pki.yaml:5:3", "authorities.services-ca")
    assert "valid dictionary" in message


# --------------------------------------------------------------------------- names (SANs)


@pytest.mark.parametrize(
    "change, where, path, fragment",
    [
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", '    dns: [web.example.com, "bad name.example.com"]'),
            "pki.yaml:20:28", "certificates.web.dns[1]", "'bad name.example.com' is not a valid DNS name",
            id="dns-space",
        ),
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, under_score.example.com]"),
            "pki.yaml:20:28", "certificates.web.dns[1]", "'under_score.example.com' is not a valid DNS name",
            id="dns-underscore",
        ),
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, '*.*.example.com']"),
            "pki.yaml:20:28", "certificates.web.dns[1]", "'*' may only be the whole leftmost label",
            id="dns-double-wildcard",
        ),
        pytest.param(
            ("    ip: [10.0.0.5]", "    ip: [10.0.0.300]"),
            "pki.yaml:21:10", "certificates.web.ip[0]", "'10.0.0.300' is not an IP address",
            id="ip-octet",
        ),
        pytest.param(
            ("    uri: [spiffe://example.com/payments]", "    uri: [example.com/payments]"),
            "pki.yaml:28:11", "certificates.payments.uri[0]", "'example.com/payments' is not an absolute URI (it needs a scheme",
            id="uri-no-scheme",
        ),
        pytest.param(
            ("    subject: {CN: payments}", "    email: [ops.example.com]"),
            "pki.yaml:27:13", "certificates.payments.email[0]", "'ops.example.com' is not an email address (local@domain)",
            id="email-no-at",
        ),
    ],
)
def test_invalid_san(spec_repo, change, where, path, fragment):
    stderr = loaded(spec_repo, edit(change))
    message, _ = diag(stderr, where, path)
    assert fragment in message, message


# --------------------------------------------------------------------------- references


def test_unknown_issuer_suggests(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    issuer: services-ca\n    profile: server", "    issuer: servces-ca\n    profile: server")))
    message, hint = diag(stderr, "pki.yaml:18:13", "certificates.web.issuer")
    assert message == "unknown issuer 'servces-ca'"
    assert hint == "did you mean 'services-ca'?"


def test_leaf_used_as_issuer(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    issuer: services-ca\n    profile: client", "    issuer: web\n    profile: client")))
    message, _ = diag(stderr, "pki.yaml:25:13", "certificates.payments.issuer")
    assert message.startswith("'web' is a certificate, not an authority")


def test_issuer_cycle(applied, pkic):
    # root-ca -> services-ca -> root-ca: no root left
    stderr = rejected(pkic, applied, edit(("    key: ecdsa-p384", "    issuer: services-ca")))
    message, hint = diag(stderr, "pki.yaml:8:13", "authorities.root-ca.issuer")
    assert message == "issuer cycle: root-ca -> services-ca -> root-ca"
    assert "root" in hint


def test_issuer_cycle_of_new_authorities(applied, pkic):
    text = edit(("    name_constraints: {permitted_dns: [svc.internal, example.com]}",
                 "    name_constraints: {permitted_dns: [svc.internal, example.com]}\n"
                 "  a-ca:\n"               # 16
                 "    issuer: b-ca\n"       # 17
                 "    subject: {CN: A}\n"   # 18
                 "  b-ca:\n"               # 19
                 "    issuer: a-ca\n"       # 20
                 "    subject: {CN: B}"))   # 21
    stderr = rejected(pkic, applied, text)
    message, _ = diag(stderr, "pki.yaml:17:13", "authorities.a-ca.issuer")
    assert message == "issuer cycle: a-ca -> b-ca -> a-ca"


def test_authority_names_itself(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    issuer: root-ca", "    issuer: services-ca")))
    message, _ = diag(stderr, "pki.yaml:11:13", "authorities.services-ca.issuer")
    assert "cannot name itself" in message


def test_duplicate_name_across_authorities_and_certificates(applied, pkic):
    stderr = rejected(pkic, applied, edit(("  payments:", "  services-ca:")))
    message, hint = diag(stderr, "pki.yaml:24:3", "certificates.services-ca")
    assert message == "duplicate name 'services-ca': it is also an authority"
    assert "rename" in hint


def test_invalid_entry_name(applied, pkic):
    stderr = rejected(pkic, applied, edit(("  payments:", "  ../payments:")))
    message, _ = diag(stderr, "pki.yaml:24:3", "certificates.../payments")
    assert message == "'../payments' is not a valid name"


# --------------------------------------------------------------------------- hierarchy rules


def test_lifetime_longer_than_issuer(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    lifetime: 90d", "    lifetime: 4y")))
    message, _ = diag(stderr, "pki.yaml:22:15", "certificates.web.lifetime")
    assert message.startswith("lifetime 4y is longer than its issuer 'services-ca' (3y)")


def test_authority_lifetime_longer_than_issuer(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    lifetime: 3y", "    lifetime: 11y")))
    message, _ = diag(stderr, "pki.yaml:13:15", "authorities.services-ca.lifetime")
    assert message.startswith("lifetime 11y is longer than its issuer 'root-ca' (10y)")


def test_path_length_exceeded(applied, pkic):
    text = edit(("    name_constraints: {permitted_dns: [svc.internal, example.com]}",
                 "    name_constraints: {permitted_dns: [svc.internal, example.com]}\n"
                 "  team-ca:\n"                    # 16
                 "    issuer: services-ca\n"       # 17
                 "    subject: {CN: Team CA}\n"    # 18
                 "    lifetime: 1y"))              # 19
    stderr = rejected(pkic, applied, text)
    message, hint = diag(stderr, "pki.yaml:17:13", "authorities.team-ca.issuer")
    assert message.startswith("path length exceeded: 'services-ca' has path_length 0")
    assert "path_length" in hint


def test_renew_before_not_shorter_than_lifetime(applied, pkic):
    stderr = rejected(pkic, applied, edit(("    renew_before: 30d", "    renew_before: 90d")))
    message, _ = diag(stderr, "pki.yaml:23:19", "certificates.web.renew_before")
    assert message == "renew_before (90d) must be shorter than the lifetime (90d)"


@pytest.mark.parametrize(
    "change, where, path, name",
    [
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, web.example.org]"),
            "pki.yaml:20:28", "certificates.web.dns[1]", "web.example.org", id="dns",
        ),
        pytest.param(
            ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.com, notexample.com]"),
            "pki.yaml:20:28", "certificates.web.dns[1]", "notexample.com", id="dns-suffix-is-not-a-subdomain",
        ),
    ],
)
def test_name_outside_name_constraints(spec_repo, change, where, path, name):
    stderr = loaded(spec_repo, edit(change))
    message, hint = diag(stderr, where, path)
    assert message.startswith(f"'{name}' is outside the name constraints of 'services-ca'")
    assert "permitted_dns" in message and "clients would reject it" in hint


# --------------------------------------------------------------------------- all at once


def test_schema_mistakes_all_reported_in_one_run(applied, pkic):
    text = edit(
        ("    key: ecdsa-p384", "    key: rsa-1024"),                                   # 8
        ("    path_length: 0", "    path_length: zero"),                               # 14
        ("    dns: [web.example.com, www.example.com]", "    dns: web.example.com"),   # 20
        ("    ip: [10.0.0.5]", "    ip: [10.0.0.300]"),                                # 21
        ("    lifetime: 90d", "    lifetme: 90d"),                                     # 22
        ("    renew_before: 30d", "    renew_before: 30x"),                            # 23
        ("    uri: [spiffe://example.com/payments]", "    uri: [example.com/payments]"),  # 28
    )
    stderr = rejected(pkic, applied, text, count=7)
    for where, path in [
        ("pki.yaml:8:10", "authorities.root-ca.key"),
        ("pki.yaml:14:18", "authorities.services-ca.path_length"),
        ("pki.yaml:20:10", "certificates.web.dns"),
        ("pki.yaml:21:10", "certificates.web.ip[0]"),
        ("pki.yaml:22:5", "certificates.web.lifetme"),
        ("pki.yaml:23:19", "certificates.web.renew_before"),
        ("pki.yaml:28:11", "certificates.payments.uri[0]"),
    ]:
        diag(stderr, where, path)


def test_reference_mistakes_all_reported_in_one_run(applied, pkic):
    text = edit(
        ("    key: ecdsa-p384", "    issuer: services-ca"),                  # 8: cycle
        ("    issuer: services-ca\n    profile: server", "    issuer: servces-ca\n    profile: server"),  # 18
        ("    issuer: services-ca\n    profile: client", "    issuer: web\n    profile: client"),  # 25
    )
    stderr = rejected(pkic, applied, text, count=3)
    diag(stderr, "pki.yaml:8:13", "authorities.root-ca.issuer")
    diag(stderr, "pki.yaml:18:13", "certificates.web.issuer")
    diag(stderr, "pki.yaml:25:13", "certificates.payments.issuer")


def test_hierarchy_mistakes_all_reported_in_one_run(applied, pkic):
    text = edit(
        ("    name_constraints: {permitted_dns: [svc.internal, example.com]}",
         "    name_constraints: {permitted_dns: [svc.internal, example.com]}\n"
         "  team-ca:\n"                    # 16
         "    issuer: services-ca\n"       # 17
         "    subject: {CN: Team CA}\n"    # 18
         "    lifetime: 1y"),              # 19
        ("    dns: [web.example.com, www.example.com]", "    dns: [web.example.org]"),  # 24
        ("    lifetime: 90d", "    lifetime: 4y"),                                     # 26
    )
    stderr = rejected(pkic, applied, text, count=3)
    diag(stderr, "pki.yaml:17:13", "authorities.team-ca.issuer")
    diag(stderr, "pki.yaml:24:11", "certificates.web.dns[0]")
    diag(stderr, "pki.yaml:26:15", "certificates.web.lifetime")


def test_mistakes_of_every_kind_reported_in_one_run(applied, pkic):
    """A schema mistake must not hide a reference or hierarchy mistake elsewhere."""
    text = edit(
        ("    lifetime: 3y", "    lifetime: 11y"),                                              # 13: hierarchy
        ("    issuer: services-ca\n    profile: server", "    issuer: servces-ca\n    profile: server"),  # 18: reference
        ("    uri: [spiffe://example.com/payments]", "    uri: [example.com/payments]"),          # 28: schema
    )
    stderr = rejected(pkic, applied, text, count=3)
    diag(stderr, "pki.yaml:13:15", "authorities.services-ca.lifetime")
    diag(stderr, "pki.yaml:18:13", "certificates.web.issuer")
    diag(stderr, "pki.yaml:28:11", "certificates.payments.uri[0]")


def test_mistakes_in_one_entry_reported_in_one_run(applied, pkic):
    text = edit(
        ("    issuer: services-ca\n    profile: server", "    issuer: servces-ca\n    profile: server"),  # 18: reference
        ("    lifetime: 90d", "    lifetime: 90x"),                                                     # 22: schema
    )
    stderr = rejected(pkic, applied, text, count=2)
    diag(stderr, "pki.yaml:18:13", "certificates.web.issuer")
    diag(stderr, "pki.yaml:22:15", "certificates.web.lifetime")


# --------------------------------------------------------------------------- the state file


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, where, fragment",
    [
        pytest.param('{"hello": 1}\n', "out/state.json", "this is not a pkic state file", id="foreign"),
        pytest.param('{"format": "pkic-state",\n "serial": 1,,\n}\n', "out/state.json:2:14", "the state is not valid JSON", id="invalid-json"),
        pytest.param("", "out/state.json:1:1", "the state is not valid JSON", id="empty"),
        pytest.param('{"format": "pkic-state", "version": 99, "serial": 1, "certificates": {}}\n', "out/state.json", "state version 99 is not supported", id="future-version"),
    ],
)
def test_unreadable_state_file(applied, pkic, content, where, fragment):
    (applied / "out" / "state.json").write_text(content, encoding="utf-8")
    # sealed: apply refuses before it reads the state, naming the file
    refused_by_seal(pkic, applied, "out/state.json")
    # unsealed (or plan and status, which read it): the loader's own message
    env = unsealed(applied)
    stderr = rejected(pkic, applied, commands=(("plan",), ("apply", "--yes"), ("status",)), env=env)
    message, hint = diag(stderr, where)
    assert fragment in message, message
    assert hint and ("git" in hint or "upgrade" in hint)


def refused_by_seal(pkic, repo: Path, rel: str) -> None:
    """apply in a sealed repo refuses a damaged out/ before reading it: one diagnostic
    naming the file, a hint to restore it from git, nothing changed."""
    before = snapshot(repo / "out")
    proc = pkic("apply", "--yes", "--now", NOW, cwd=repo)
    assert_clean_failure(proc)
    message, hint = diag(proc.stderr, rel)
    assert "not what the seal covers" in message and "git checkout" in hint, proc.stderr
    assert snapshot(repo / "out") == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "certificates",
    [
        pytest.param({"web": [{}]}, id="empty-record"),
        pytest.param({"web": {}}, id="record-list-is-a-mapping"),
        pytest.param({"web": ["active"]}, id="record-is-a-string"),
    ],
)
def test_damaged_state_record(applied, pkic, certificates):
    body = json.loads((applied / "out" / "state.json").read_text())
    body["certificates"].update(certificates)
    (applied / "out" / "state.json").write_text(json.dumps(body), encoding="utf-8")
    refused_by_seal(pkic, applied, "out/state.json")
    stderr = rejected(pkic, applied, commands=(("plan",), ("apply", "--yes"), ("status",)), env=unsealed(applied))
    message, _ = diag(stderr, "out/state.json")
    assert "damaged" in message, message


def test_damaged_out_certificate_fails_cleanly_without_writing(applied, pkic):
    """A missing issuer certificate in out/certs is a clear error, not a crash."""
    add_leaf(applied)
    (applied / "out" / "certs" / "services-ca.pem").unlink()
    refused_by_seal(pkic, applied, "out/certs/services-ca.pem")
    env = unsealed(applied)
    before = snapshot(applied / "out")
    proc = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert_clean_failure(proc)
    message, hint = diag(proc.stderr, "out/certs/services-ca.pem")
    assert "missing" in message and "git" in hint
    assert snapshot(applied / "out") == before


def test_corrupt_out_certificate_fails_cleanly_without_writing(applied, pkic):
    add_leaf(applied)
    (applied / "out" / "certs" / "services-ca.pem").write_text("garbage\n")
    refused_by_seal(pkic, applied, "out/certs/services-ca.pem")
    env = unsealed(applied)
    before = snapshot(applied / "out")
    proc = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert_clean_failure(proc)
    message, _ = diag(proc.stderr, "out/certs/services-ca.pem")
    assert "services-ca" in message
    assert snapshot(applied / "out") == before


# --------------------------------------------------------------------------- apply-time secrets


def add_leaf(repo: Path) -> None:
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + NEW_LEAF, encoding="utf-8")


def test_missing_sops_config_fails_apply_only(applied, pkic):
    add_leaf(applied)
    (applied / ".sops.yaml").unlink()
    p = pkic.ok("plan", "--now", NOW, cwd=applied)
    assert "api" in p.stdout and "1 to issue" in p.stdout
    before = snapshot(applied / "out")
    proc = pkic("apply", "--yes", "--now", NOW, cwd=applied)
    assert_clean_failure(proc)
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    message, hint = diag(proc.stderr, ".sops.yaml")
    assert message.startswith("missing") and ".sops.yaml" in hint
    assert snapshot(applied / "out") == before


def no_identity_env(tmp_path: Path) -> dict:
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir(exist_ok=True)
    return {"HOME": str(empty_home), "SOPS_AGE_KEY_FILE": str(tmp_path / "nowhere" / "keys.txt")}


def test_missing_age_identity_fails_apply_not_plan(applied, pkic, tmp_path):
    add_leaf(applied)
    env = no_identity_env(tmp_path)
    p = pkic.ok("plan", "--now", NOW, cwd=applied, env=env)  # plan needs no secret
    assert "api" in p.stdout and "1 to issue" in p.stdout
    before = snapshot(applied / "out")
    proc = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert_clean_failure(proc)
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    message, hint = diag(proc.stderr, "out/keys/services-ca.sops.yaml")
    assert message.startswith("sops could not decrypt the key of 'services-ca'")
    assert "SOPS_AGE_KEY" in hint
    assert snapshot(applied / "out") == before
    # with the identity back, the same apply goes through
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert (applied / "out" / "certs" / "api.pem").is_file()


def test_failed_apply_leaves_no_journal(applied, pkic, tmp_path):
    """Nothing written: not even the working journal, when no step was done."""
    add_leaf(applied)
    proc = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=no_identity_env(tmp_path))
    assert_clean_failure(proc)
    assert not (applied / ".pkic" / "journal.jsonl").exists()
    p = pkic.ok("plan", "--now", NOW, cwd=applied)
    assert "interrupted" not in p.stdout


# --------------------------------------------------------------------------- the command line


def test_apply_without_yes_and_without_terminal_refuses(applied, pkic):
    add_leaf(applied)
    before = snapshot(applied / "out")
    proc = pkic("apply", "--now", NOW, cwd=applied, input="y\n")  # stdin is a pipe, not a tty
    assert_clean_failure(proc)
    message, hint = diag(proc.stderr, "pkic")
    assert message.startswith("refusing to apply without confirmation")
    assert "--yes" in hint
    assert snapshot(applied / "out") == before
    assert not (applied / "out" / "certs" / "api.pem").exists()


@pytest.mark.parametrize("command", [("plan",), ("apply", "--yes"), ("status",)], ids=lambda c: c[0])
def test_bad_now(applied, pkic, command):
    add_leaf(applied)  # something to do, so apply would write if it got that far
    stderr = rejected(pkic, applied, commands=(command,), now="not-a-time")
    message, hint = diag(stderr, "--now")
    assert message == "'not-a-time' is not a time"
    assert "RFC 3339" in hint


@pytest.mark.parametrize("command", [("plan",), ("apply", "--yes")], ids=lambda c: c[0])
def test_missing_pki_yaml(pkic, tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = pkic(*command, "--now", NOW, cwd=empty)
    assert_clean_failure(proc)
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    message, hint = diag(proc.stderr, "pki.yaml")
    assert message == "file not found"
    assert "pkic init" in hint
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    "content, fragment",
    [
        pytest.param(None, "no such plan file", id="missing"),
        pytest.param("version: 1\n", "not a saved plan", id="not-json"),
        pytest.param('{"a": 1}\n', "not a saved pkic plan", id="foreign-json"),
    ],
)
def test_bad_saved_plan(applied, pkic, content, fragment):
    add_leaf(applied)
    if content is not None:
        (applied / "plan.json").write_text(content, encoding="utf-8")
    stderr = rejected(pkic, applied, commands=(("apply", "plan.json"),))
    message, hint = diag(stderr, "plan.json")
    assert message.startswith(fragment), message
    assert "pkic plan --out" in hint


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(("plan", "--bogus"), "--bogus", id="unknown-option"),
        pytest.param(("frobnicate",), "frobnicate", id="unknown-command"),
        pytest.param(("apply", "--yes", "--now"), "--now", id="option-without-value"),
        pytest.param(("apply", "a.json", "b.json"), "b.json", id="extra-argument"),
    ],
)
def test_usage_error(applied, pkic, args, fragment):
    before = snapshot(applied / "out")
    proc = pkic(*args, cwd=applied)
    assert_clean_failure(proc)
    assert fragment in proc.stderr
    assert snapshot(applied / "out") == before


@pytest.mark.parametrize("target", ["no-such-dir/plan.json", "out"], ids=["missing-directory", "is-a-directory"])
def test_plan_out_unwritable(applied, pkic, target):
    before = snapshot(applied / "out")
    proc = pkic("plan", "--now", NOW, "--out", target, cwd=applied)
    assert_clean_failure(proc)
    message, _ = diag(proc.stderr, target)
    assert "cannot write" in message or "No such file" in message or "directory" in message, message
    assert snapshot(applied / "out") == before


def test_missing_directory_for_C(pkic, tmp_path):
    proc = pkic("-C", str(tmp_path / "nope"), "plan")
    assert_clean_failure(proc)
    assert "no such directory" in proc.stderr


def test_serve_on_an_impossible_port_is_a_user_error(applied, pkic):
    p = pkic("serve", "--port", "70000", cwd=applied)
    assert p.returncode == 1 and "cannot listen" in p.stderr and "Traceback" not in p.stderr and "crashed" not in p.stderr


def test_a_crash_log_is_private_and_never_written_through_a_symlink(tmp_path, pkic):
    """A bug (simulated: the state loader raises) is exit 3 with a log: created afresh
    (O_EXCL), mode 0600, at a name nobody can guess; a symlink planted where the old
    predictable name (pkic-crash-<pid>.log) would be is never followed."""
    import stat as stat_mod

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for pid in range(1, 200):  # the old scheme's names, all planted
        (tmp_path / f"pkic-crash-{pid}.log").symlink_to(victim)
    script = ("import sys\nimport compiler.state as st\n"
              "def boom(*a, **k):\n    raise RuntimeError('simulated bug')\n"
              "st.load_with_journal = boom\nimport compiler.cli as cli\nsys.argv = ['pkic', 'status']\nsys.exit(cli.main())\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=pkic.env, capture_output=True, text=True)
    assert p.returncode == 3 and "pkic crashed" in p.stderr and "Traceback" not in p.stderr, p.stderr
    logs = [x for x in tmp_path.iterdir() if x.name.startswith("pkic-crash-") and not x.is_symlink()]
    assert len(logs) == 1 and str(logs[0]) in p.stderr.replace("\n", "")
    assert stat_mod.S_IMODE(logs[0].stat().st_mode) == 0o600 and "simulated bug" in logs[0].read_text()
    assert victim.read_text() == "precious\n"
