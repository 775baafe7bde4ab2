"""Attack: symlinks committed in a pull request (git stores them; CI's checkout makes them).

* pki.yaml (or a policy, a CSR, .sops.yaml) pointing at a file on CI's machine: a
  secret would leak through a parse error, or another spec would be applied than the
  one reviewed. Each must be refused by name, never followed, never quoted.
* A symlink inside out/ (out/certs/evil.pem -> /etc/passwd, out/ itself, state.json):
  apply must refuse it (pkic never writes one); ``pkic serve`` must not serve the
  target's bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import ocsp_request  # noqa: E402

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import (  # noqa: E402
    API,
    T1,
    Served,
    assert_refused,
    edit_spec,
    no_crash,
    read_state,
    tree_snapshot,
    write_state,
)

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

SECRET = "hunter2-7f3a9c"


def _ci_secret(forge, kind: str) -> tuple[str, dict]:
    """A secret on CI's machine, and where a symlink reaches it."""
    secrets = forge.root / "runner"
    secrets.mkdir(exist_ok=True)
    if kind == "environ":
        return "/proc/self/environ", {"CI_DEPLOY_TOKEN": SECRET}
    path = secrets / "secrets.env"
    path.write_text(f"SECRET={SECRET}\n" if kind == "text" else f"SECRET: {SECRET}\nversion: 1\n")
    return str(path), {}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "yaml", "environ"])
def test_pki_yaml_symlink_to_a_secret_is_refused_and_never_quoted(forge, kind):
    target, env = _ci_secret(forge, kind)

    def change(a: Path) -> None:
        (a / "pki.yaml").unlink()
        os.symlink(target, a / "pki.yaml")

    forge.pull_request("spec-link", change, "pki: share the spec")
    run = forge.ci(T1, env=env)
    assert_refused(run, "pki.yaml: is a symlink")
    v = forge.pkic("validate", cwd=run.repo, env=env)
    assert v.returncode == 1 and "pki.yaml: is a symlink" in v.stderr, v.stdout + v.stderr
    for p in (run.plan, run.apply, v):
        assert SECRET not in p.stdout + p.stderr


def test_pki_yaml_symlink_to_a_valid_spec_is_not_followed(forge):
    """A symlink to a spec that parses: validate, plan and apply must still refuse it
    rather than apply another file than the reviewed pki.yaml."""
    outside = forge.root / "runner" / "other-pki.yaml"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text((forge.main / "pki.yaml").read_text() + "  rogue:\n    issuer: services-ca\n    dns: [rogue.example.com]\n")

    def change(a: Path) -> None:
        (a / "pki.yaml").unlink()
        os.symlink(outside, a / "pki.yaml")

    forge.pull_request("spec-link", change, "pki: share the spec")
    run = forge.ci(T1)
    assert "rogue" not in read_state(run.repo)["certificates"]
    v = forge.pkic("validate", cwd=run.repo)
    assert v.returncode == 1 and "pki.yaml: is a symlink" in v.stderr, v.stdout + v.stderr
    assert_refused(run, "pki.yaml: is a symlink")


def _csr(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.example.com")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), critical=False).sign(key, hashes.SHA256()))
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))


CSR_LEAF = "  api:\n    issuer: services-ca\n    csr: csrs/api.csr.pem\n    dns: [api.example.com]\n"


def _link_input(forge, what: str):
    """The attacker's change: one input (or the directory holding it) as a symlink to a
    valid file outside the repo. Returns (change, name the error must give)."""
    outside = forge.root / "runner"
    outside.mkdir(exist_ok=True)

    def change(a: Path) -> None:
        spec = a / "pki.yaml"
        if what.startswith("policy"):
            (outside / "lax.yaml").write_text("max_lifetime: 100y\n")
            spec.write_text(edit_spec(spec.read_text(), replace=(("    path_length: 0\n", "    path_length: 0\n    policy: lax\n"),)))
            if what == "policy-file":
                (a / "policies" / "lax.yaml").symlink_to(outside / "lax.yaml")
            else:
                os.rename(a / "policies", outside / "policies-dir")
                (outside / "policies-dir" / "lax.yaml").write_text("max_lifetime: 100y\n")
                (a / "policies").symlink_to(outside / "policies-dir")
        elif what.startswith("csr"):
            (outside / "csrs").mkdir(exist_ok=True)
            _csr(outside / "csrs" / "api.csr.pem")
            spec.write_text(spec.read_text() + CSR_LEAF)
            if what == "csr-file":
                (a / "csrs").mkdir(exist_ok=True)
                (a / "csrs" / "api.csr.pem").symlink_to(outside / "csrs" / "api.csr.pem")
            else:
                (a / "csrs").symlink_to(outside / "csrs")
        elif what == "sops-config":
            (outside / "sops.yaml").write_text((a / ".sops.yaml").read_text())
            (a / ".sops.yaml").unlink()
            (a / ".sops.yaml").symlink_to(outside / "sops.yaml")
            spec.write_text(spec.read_text() + API)

    named = {"policy-file": "policies/lax.yaml", "policy-dir": "policies", "csr-file": "csrs/api.csr.pem", "csr-dir": "csrs", "sops-config": ".sops.yaml"}[what]
    return change, named


@pytest.mark.slow
@pytest.mark.parametrize("what", ["policy-file", "policy-dir", "csr-file", "csr-dir"])
def test_an_input_symlink_is_refused_not_followed(forge, what):
    change, named = _link_input(forge, what)
    forge.pull_request(f"link-{what}", change, f"pki: {what}")
    run = forge.ci(T1)
    assert_refused(run, named)
    for p in (run.plan, run.apply, forge.pkic("validate", cwd=run.repo)):
        assert p.returncode == 1 and "symlink" in p.stderr and named in p.stderr, p.stdout + p.stderr
    assert "api" not in read_state(run.repo)["certificates"]


def test_a_sops_config_symlink_is_refused_not_followed(forge):
    change, _named = _link_input(forge, "sops-config")
    forge.pull_request("link-sops", change, "pki: add api")
    run = forge.ci(T1, plan=False)
    assert_refused(run, ".sops.yaml: is a symlink")
    # plan reads no .sops.yaml (it encrypts nothing); whatever it says, it neither crashes nor follows the link
    no_crash(forge.pkic("plan", "--now", T1, cwd=run.repo))


OUT_LINKS = {
    "new-file": lambda a, outside: (a / "out" / "certs" / "evil.pem").symlink_to("/etc/passwd"),
    "state": lambda a, outside: (
        (outside / "state.json").write_bytes((a / "out" / "state.json").read_bytes()),
        (a / "out" / "state.json").unlink(), (a / "out" / "state.json").symlink_to(outside / "state.json")),
    "out-dir": lambda a, outside: (os.rename(a / "out", outside / "out"), (a / "out").symlink_to(outside / "out")),
    "dir-inside": lambda a, outside: (os.rename(a / "out" / "crl", outside / "crl"), (a / "out" / "crl").symlink_to(outside / "crl")),
    "seal": lambda a, outside: (os.rename(a / "out.seal", outside / "out.seal"), (a / "out.seal").symlink_to(outside / "out.seal")),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(OUT_LINKS), ids=list(OUT_LINKS))
def test_a_symlink_in_out_is_refused(forge, how):
    """Even a link to a byte-identical copy: pkic never writes one, never follows one."""
    outside = forge.root / "runner"
    outside.mkdir(exist_ok=True)
    forge.pull_request(f"out-link-{how}", lambda a: OUT_LINKS[how](a, outside), "out: tidy")
    run = forge.ci(T1)
    named = {"new-file": "out/certs/evil.pem", "state": "out/state.json", "out-dir": "out", "dir-inside": "out/crl", "seal": "out.seal"}[how]
    assert_refused(run, f"error: {named}: ", "symlink", plan_needles=(f"error: {named}: ", "symlink"))
    assert "root:" not in run.apply.stdout + run.apply.stderr + run.plan.stdout + run.plan.stderr


def test_a_fifo_in_out_is_refused(forge):
    """A FIFO cannot come from git, but one on CI's disk must not hang or pass."""
    os.mkfifo(forge.main / "out" / "certs" / "stuck.pem")
    before = tree_snapshot(forge.main)
    head = forge.head()
    p = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=forge.main)
    assert p.returncode == 1 and "out/certs/stuck.pem" in p.stderr and "not a regular file" in p.stderr, p.stdout + p.stderr
    assert tree_snapshot(forge.main) == before and forge.head() == head


def _serve_repo(forge) -> Path:
    """main after a refused merge that committed symlinks into out/ (a publisher pulls main)."""
    def change(a: Path) -> None:
        (a / "out" / "certs" / "leak.pem").symlink_to("/etc/passwd")
        (a / "out" / "crl" / "leak.crl").symlink_to("/etc/passwd")
    forge.pull_request("publish", change, "out: publish more")
    return forge.clone("publisher")


@pytest.mark.slow
def test_serve_does_not_follow_a_symlink_in_out(forge):
    repo = _serve_repo(forge)
    secret = Path("/etc/passwd").read_bytes()
    with Served(forge.pkic, repo) as s:
        assert s.get("/certs/web.pem")[0] == 200  # it serves
        for path in ("/certs/leak.pem", "/crl/leak.crl"):
            code, body = s.get(path)
            assert secret not in body and code in (403, 404), (path, code, body[:80])


@pytest.mark.slow
def test_serve_answers_ocsp_only_from_files_inside_out(forge):
    """A state (merged, refused by apply) whose ocsp.file points outside out/: an OCSP
    request for web's serial must not return that file."""
    from cryptography.x509 import ocsp

    victim = forge.root / "runner" / "deploy-token"
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(SECRET.encode())

    def change(a: Path) -> None:
        body = read_state(a)
        body["certificates"]["web"][0]["ocsp"]["file"] = str(victim)
        write_state(a, body)

    forge.pull_request("ocsp-elsewhere", change, "out: move web's OCSP response")
    repo = forge.clone("publisher")
    web = x509.load_pem_x509_certificate((repo / "out/certs/web.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((repo / "out/certs/services-ca.pem").read_bytes())
    req = ocsp_request(web, issuer)
    pay = x509.load_pem_x509_certificate((repo / "out/certs/payments.pem").read_bytes())
    good = ocsp_request(pay, issuer)
    with Served(forge.pkic, repo) as s:
        assert s.get("/ocsp", data=good, ctype="application/ocsp-request") == (200, (repo / "out/ocsp/payments.der").read_bytes())  # it answers
        code, body = s.get("/ocsp", data=req, ctype="application/ocsp-request")
        assert SECRET.encode() not in body, (code, body[:80])
        assert ocsp.load_der_ocsp_response(body).response_status != ocsp.OCSPResponseStatus.SUCCESSFUL
