"""Issue 13, items 1, 2 and 9: what real verifiers would refuse is refused (or named) at
validate and plan, not discovered by a client.

1. A subject CN under DNS name constraints, when the leaf has no DNS SAN: GnuTLS checks
   every CN of a server (serverAuth) certificate as a DNS name; OpenSSL (so nginx,
   HAProxy, curl, Node, Python) checks a CN that looks like a host name, for any EKU.
   Policies see the subject too.
2. An IP literal in ``dns:`` (any form inet_aton reads, or an all-digit last label, or
   an IPv6 literal) is refused with "put it under ip:".
"""

from __future__ import annotations

import pytest

from compiler.model import names
from compiler.policy.constraints import openssl_hostlike


def add(repo, text: str) -> None:
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.rstrip("\n") + "\n" + text)


# services-ca in the init example: name_constraints {permitted_dns: [svc.internal, example.com]}

@pytest.mark.parametrize("entry, fragment", [
    # OpenSSL: "billing.prod" looks like a host name -> checked, outside -> "permitted subtree violation"
    ("  billing:\n    issuer: services-ca\n    profile: client\n    subject: {CN: billing.prod}\n    uri: [spiffe://example.com/billing]\n",
     "OpenSSL checks a CN that looks like a host name"),
    # GnuTLS: a server certificate's CN is checked as a DNS name: not one -> refused
    ("  ipsvc:\n    issuer: services-ca\n    subject: {CN: Interop IP Service}\n    ip: [10.0.0.9]\n",
     "GnuTLS checks the CN of a server certificate as a DNS name"),
    # a SPIFFE peer with only a URI SAN and a one-label CN: GnuTLS refuses it
    ("  spiffe-peer:\n    issuer: services-ca\n    profile: peer\n    subject: {CN: payments}\n    uri: [spiffe://example.com/p]\n    ip: [10.0.0.8]\n",
     "GnuTLS checks the CN of a server certificate"),
])
def test_a_cn_verifiers_would_check_against_the_constraints_is_refused(pkic, repo, entry, fragment):
    add(repo, entry)
    name = entry.split(":")[0].strip()
    for command in (("validate",), ("plan", "--now", "2026-11-27T12:00:00Z")):
        proc = pkic(*command, cwd=repo)
        assert proc.returncode == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        line = next(x for x in proc.stderr.splitlines() if f"certificates.{name}.subject.CN" in x)
        assert line.startswith("error: pki.yaml:") and line.split(":")[2].strip().isdigit(), line
        assert "drop the CN, add a dns: name" in proc.stderr


@pytest.mark.parametrize("entry", [
    # with a DNS SAN, neither library looks at the CN
    "  named:\n    issuer: services-ca\n    subject: {CN: Some Display Name}\n    dns: [named.svc.internal]\n",
    # a client CN that is not host-like (one label): OpenSSL does not check it; GnuTLS only checks serverAuth
    "  okclient:\n    issuer: services-ca\n    profile: client\n    subject: {CN: billing}\n    uri: [spiffe://example.com/billing]\n",
    # a server CN inside the constraints, with an IP SAN only
    "  inside:\n    issuer: services-ca\n    subject: {CN: db.svc.internal}\n    ip: [10.0.0.10]\n",
])
def test_a_cn_the_verifiers_accept_is_accepted(pkic, repo, entry):
    add(repo, entry)
    pkic.ok("validate", cwd=repo)


def test_openssl_hostlike_follows_cn2dnsid():
    for cn in ("billing.prod", "a.b", "a_b.c-d", "x1.y2.z3"):
        assert openssl_hostlike(cn), cn
    for cn in ("billing", "Interop IP Service", ".a.b", "a.b.", "a..b", "a.-b", "a-.b", "-a.b", "a.b-", "é.b", "a b.c", ""):
        assert not openssl_hostlike(cn), cn


def test_policies_see_the_subject(pkic, repo):
    spec = (repo / "pki.yaml").read_text()
    assert "    path_length: 0\n" in spec
    (repo / "pki.yaml").write_text(spec.replace("    path_length: 0\n", "    path_length: 0\n    policy: services\n", 1))
    (repo / "policies" / "services.yaml").write_text(
        "forbidden_dns: [admin.example.com]\n"
        "forbidden_subject: {O: ['system:*']}\n"
        "allowed_subject: {OU: [Platform, 'Team *']}\n")
    add(repo, "  admin:\n    issuer: services-ca\n    profile: client\n    subject: {CN: admin.example.com}\n    uri: [spiffe://example.com/admin]\n"
              "  masters:\n    issuer: services-ca\n    profile: client\n    subject: {O: System:Masters, CN: kube}\n    uri: [spiffe://example.com/kube]\n"
              "  ou:\n    issuer: services-ca\n    profile: client\n    subject: {OU: Finance, CN: ou}\n    uri: [spiffe://example.com/ou]\n"
              "  fine:\n    issuer: services-ca\n    profile: client\n    subject: {OU: Team Payments, CN: fine}\n    uri: [spiffe://example.com/fine]\n")
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "CN=admin.example.com" in err and "forbidden_dns" in err  # a host-name CN is a DNS name to policy
    assert "O=System:Masters" in err and "forbidden_subject.O: 'system:*'" in err  # case-insensitive
    assert "OU=Finance" in err and "allowed_subject" in err
    assert "fine" not in err.replace("define", "")


@pytest.mark.parametrize("value", ["10.0.0.7", "10.1", "0x7f.1", "017.0.0.1", "0x7f000001", "2130706433", "web.123",
                                   "fd00::1", "[fd00::1]", "::ffff:10.0.0.1"])
def test_an_ip_literal_in_dns_is_refused_with_use_ip(value):
    with pytest.raises(ValueError) as exc:
        names.dns_name(value)
    assert "ip:" in str(exc.value)


@pytest.mark.parametrize("value", ["1e100.net", "0xdeadbeef.example.com", "web1.example.com", "123.example.com"])
def test_digits_inside_a_name_are_fine(value):
    assert names.dns_name(value) == value


def test_an_ip_in_dns_is_an_error_with_a_line(pkic, repo):
    add(repo, "  byip:\n    issuer: services-ca\n    dns: [10.0.0.7]\n")
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1 and "certificates.byip.dns[0]" in proc.stderr and "put it under ip:" in proc.stderr, proc.stderr
    assert "name constraints" not in proc.stderr  # the error says what is wrong, not that the constraints refuse it


# --------------------------------------------------------------------------- item 8: --now signs real certificates


def test_apply_far_from_the_clock_needs_time_travel(pkic, repo):
    """`apply --now T` signs real certificates and CRLs dated T: in the future they are
    not yet valid, in the past already expired. More than 5 minutes from the machine's
    clock is refused unless --time-travel says so; nothing is written."""
    env = {"PKIC_TIME_TRAVEL": ""}
    for when in ("2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z"):
        proc = pkic("apply", "--yes", "--now", when, cwd=repo, env=env)
        assert proc.returncode == 1 and "--time-travel" in proc.stderr and "this machine's clock" in proc.stderr, proc.stderr
        assert not (repo / "out").exists()
    proc = pkic.ok("apply", "--yes", "--now", "2030-01-01T00:00:00Z", "--time-travel", cwd=repo, env=env)
    assert "--time-travel" in proc.stderr and "ahead of" in proc.stderr


def test_apply_at_the_real_time_needs_nothing(pkic, repo):
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    pkic.ok("apply", "--yes", "--now", now, cwd=repo, env={"PKIC_TIME_TRAVEL": ""})


def test_check_and_verify_report_what_is_not_valid_yet(pkic, repo):
    """Signed (with --time-travel) a year ahead: check and verify at the real clock say the
    certificates, CRLs and OCSP responses are not valid yet, instead of "fine"."""
    pkic.ok("apply", "--yes", "--now", "2030-01-01T00:00:00Z", "--time-travel", cwd=repo)
    proc = pkic("check", cwd=repo)
    assert proc.returncode == 2 and "not valid yet" in proc.stdout, proc.stdout + proc.stderr
    proc = pkic("check", "--format", "json", cwd=repo)
    import json

    items = json.loads(proc.stdout)["items"]
    kinds = {i["kind"] for i in items if "not valid yet" in i["message"]}
    assert {"certificate", "crl", "ocsp"} <= kinds, items
    proc = pkic("verify", cwd=repo)
    assert proc.returncode == 1 and "not valid at" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "the CRL is not valid yet" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- item 9: verifier caveats


def test_the_plan_names_the_verifiers_a_certificate_runs_into(pkic, repo):
    spec = (repo / "pki.yaml").read_text()
    assert "name_constraints: {permitted_dns: [svc.internal, example.com]}" in spec
    spec = spec.replace("name_constraints: {permitted_dns: [svc.internal, example.com]}",
                        "name_constraints: {permitted_dns: [svc.internal, example.com], permitted_uri: [example.com]}")
    assert "\nauthorities:\n" in spec
    (repo / "pki.yaml").write_text(spec.replace("\nauthorities:\n", "\nauthorities:\n  edca:\n    issuer: root-ca\n    subject: {CN: Ed CA}\n    key: ed25519\n    path_length: 0\n", 1))
    out = pkic.ok("plan", "--now", "2026-11-27T12:00:00Z", cwd=repo).stdout
    assert "payments: uri name constraints on services-ca above its URI SAN; cryptography's verifier" in out, out
    assert "edca: an Ed25519 authority" in out
    assert "web:" not in [line.split()[0] for line in out.splitlines() if "cryptography's verifier" in line]


# --------------------------------------------------------------------------- item 6: revocation never goes silent


def test_removing_an_authority_that_still_vouches_is_refused(pkic, applied):
    """Removing services-ca (and its leaves) from pki.yaml would take its CRL out of out/
    while what it signed is unexpired: the leaves' revocation would be on no CRL. Refused,
    naming the fix (revoke it in place); nothing is written."""
    spec = (applied / "pki.yaml").read_text()
    head, _, _ = spec.partition("\ncertificates:\n")
    assert "  services-ca:\n" in head
    auths = head.split("  services-ca:\n")[0]
    (applied / "pki.yaml").write_text(auths.rstrip("\n") + "\n")
    before = {p: p.read_bytes() for p in sorted((applied / "out").rglob("*")) if p.is_file()}
    for command in (("plan", "--now", "2026-11-28T12:00:00Z"), ("apply", "--yes", "--now", "2026-11-28T12:00:00Z")):
        proc = pkic(*command, cwd=applied)
        assert proc.returncode == 1 and "'services-ca' was removed" in proc.stderr and "revoke it in place" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in sorted((applied / "out").rglob("*")) if p.is_file()} == before
