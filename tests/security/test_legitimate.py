"""The legitimate twins of the attacks: what CI must keep doing.

A reviewed pki.yaml change merged and applied (commit with a ``Pki-Seal`` trailer,
``verify --seal`` in a fresh clone), a scheduled renewal, the renewal of already-expired
certificates (OCSP responses renamed and removed in one run) with ``--commit`` leaving a
clean tree, git's preconditions checked before anything is signed (a ``.gitattributes``
from a pull request that would make git store other bytes than the sealed ones), and an
unsealed local experiment that still works and says so.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from conftest import REPO_ROOT

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import (  # noqa: E402
    API,
    T1,
    T_EXPIRED,
    T_WEB,
    assert_applied,
    assert_refused,
    edit_spec,
    read_state,
    trailers,
)

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


def _seal(repo) -> tuple[dict, str]:
    raw = (repo / "out.seal").read_bytes()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


@pytest.mark.slow
def test_a_reviewed_change_is_applied_sealed_and_verifiable(forge):
    before, _ = _seal(forge.main)
    run = forge.reviewed_change("add-api", lambda t: edit_spec(t, add=API), T1)
    assert_applied(run)
    seal, digest = _seal(run.repo)
    assert seal["serial"] == before["serial"] + 1 and seal["prev"] == hashlib.sha256(forge.git(forge.main, "show", "HEAD~1:out.seal").stdout.encode()).hexdigest()
    assert ("Pki-Seal", f"{seal['serial']} {digest}") in trailers(forge, run.repo)
    assert forge.git(run.repo, "rev-parse", "HEAD:out").stdout.strip() == seal["out_tree"]
    assert "api" in read_state(run.repo)["certificates"]
    fresh = forge.clone("auditor")
    v = forge.pkic.ok("verify", "--seal", "--now", T1, cwd=fresh)
    assert f"seal serial {seal['serial']}" in v.stdout and "form one chain" in v.stdout
    key_line = next(line for line in (forge.pkic.home / "seal" / "pkic-seal.key").read_text().splitlines() if "public key:" in line)
    forge.pkic.ok("verify", "--seal", "--seal-key", key_line.split("public key: ")[1].strip(), "--now", T1, cwd=fresh)
    assert forge.pkic("verify", "--seal", "--seal-key", "ed25519:" + "A" * 43 + "=", cwd=fresh).returncode == 1
    assert "seal: sealed: seal serial" in forge.pkic.ok("status", "--now", T1, cwd=fresh).stdout
    assert forge.pkic("plan", "--detailed-exitcode", "--now", T1, cwd=fresh).returncode == 0


@pytest.mark.slow
def test_a_scheduled_renewal_is_applied_and_sealed(forge):
    before = read_state(forge.main)["certificates"]["web"][0]["serial"]
    run = forge.ci(T_WEB)
    assert_applied(run)
    assert read_state(run.repo)["certificates"]["web"][0]["serial"] != before
    assert any(k == "Pki-Renewed" and v.startswith("web ") for k, v in trailers(forge, run.repo)), trailers(forge, run.repo)
    forge.pkic.ok("verify", "--seal", "--now", T_WEB, cwd=forge.clone("auditor"))


@pytest.mark.slow
def test_renewing_expired_certificates_commits_a_clean_tree(forge):
    """Both leaves expired: their OCSP responses are renamed (web.<serial>.der) and, as
    expired, removed in the same run; --commit must stage the removal, not fail after
    signing."""
    run = forge.ci(T_EXPIRED)
    assert_applied(run)
    assert {k for k, _ in trailers(forge, run.repo)} >= {"Pki-Renewed", "Pki-Seal"}
    files = forge.git(run.repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD").stdout.split()
    assert {"out.seal", "out/state.json", "out/ocsp/web.der", "out/keys/web.sops.yaml"} <= set(files), files
    ocsp = sorted(p.name for p in (run.repo / "out" / "ocsp").iterdir())
    assert "web.der" in ocsp and not any(re.fullmatch(r"web\.[0-9a-f]+\.der", n) for n in ocsp), ocsp
    assert forge.git(run.repo, "ls-files", "out/ocsp").stdout.split() == [f"out/ocsp/{n}" for n in ocsp]
    forge.pkic.ok("verify", "--seal", "--now", T_EXPIRED, cwd=forge.clone("auditor"))
    again = forge.ci(T_EXPIRED)  # nothing left to do
    assert again.apply.returncode == 0 and again.head_after == again.head_before


@pytest.mark.parametrize("attributes", ["out/** text eol=crlf\n", "*.pem ident\n", "* text=auto\n", "out.seal filter=lfs\n"])
def test_gitattributes_for_out_are_refused_before_signing(forge, attributes):
    """A pull request adds .gitattributes: git would commit (and check out) other bytes
    than the sealed ones, and every later apply would be refused. Apply --commit must
    refuse it before it signs anything."""
    forge.pull_request("attrs", lambda a: (a / ".gitattributes").write_text(attributes), "repo: line endings")
    run = forge.ci(T_WEB, plan=False)
    assert_refused(run, ".gitattributes: changes how git checks out pkic's output")


def test_no_committer_identity_is_refused_before_signing(forge):
    env = {k: "" for k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=str(forge.root / "no-gitconfig"), EMAIL="")
    run = forge.ci(T_WEB, plan=False, env=env)
    assert_refused(run, "git does not know who commits")


def test_an_unsealed_local_experiment_still_works_and_says_so(local):
    pk, repo = local
    p = pk.ok("apply", "--yes", "--now", T_WEB, cwd=repo)
    assert "seal: unsealed" in p.stdout and "; unsealed." in p.stdout, p.stdout
    assert not (repo / "out.seal").exists()
    assert "seal: unsealed" in pk.ok("status", "--now", T_WEB, cwd=repo).stdout
    assert "seal: unsealed" in pk.ok("plan", "--now", T_WEB, cwd=repo).stdout


def test_the_shipped_workflows_give_apply_the_seal_key_and_plan_the_history():
    """CI holds the seal key: every workflow step that runs `pkic apply` gets
    PKIC_SEAL_KEY; every job that runs plan or apply checks out the whole history (the
    seal's freshness is read from it)."""
    from ruamel.yaml import YAML

    for path in sorted((REPO_ROOT / "compiler" / "templates" / "workflows").glob("*.yml")):
        doc = YAML(typ="safe").load(path.read_text())
        for job in doc["jobs"].values():
            runs = " ".join(step.get("run", "") for step in job["steps"])
            if "pkic plan" in runs or "pkic apply" in runs:
                checkout = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
                assert checkout and all((s.get("with") or {}).get("fetch-depth") == 0 for s in checkout), path.name
            for step in job["steps"]:
                if "pkic apply" in step.get("run", ""):
                    assert step.get("env", {}).get("PKIC_SEAL_KEY") == "${{ secrets.PKIC_SEAL_KEY }}", (path.name, step.get("name"))


def test_gitattributes_aimed_at_a_future_file_name_are_refused_before_signing(forge):
    """`out/certs/api*.pem text eol=crlf` names no file that exists yet: a sample check
    misses it, the new certificate is committed, and the next checkout rewrites it, so
    every later apply finds out/ unsealed. Every path the apply may write is checked."""
    def change(a) -> None:
        (a / "pki.yaml").write_text((a / "pki.yaml").read_text() + API)
        (a / ".gitattributes").write_text("out/certs/api*.pem text eol=crlf\n")
    forge.pull_request("api-and-attributes", change, "pki: add api")
    run = forge.ci(T1, plan=False)  # plan has nothing to object to: it commits nothing
    assert_refused(run, ".gitattributes: changes how git checks out pkic's output")
