"""Attack: paths taken from files a pull request writes.

The state names certificates, authorities and OCSP response files; pkic turns names into
paths. A state that records ``ocsp.file: ../../.github/CODEOWNERS`` (or an absolute
path) would make apply overwrite or delete a file outside out/ when it re-signs that
OCSP response; a certificate named ``../x`` would put its files outside out/certs.
``publish.ocsp_dir`` in pki.yaml is the reviewed twin of the same thing.

Sealed repositories refuse such a state before reading it (it is not the sealed one);
unsealed ones (local experiments) must refuse it when loading the state. Either way the
target file is untouched and nothing is signed.
"""

from __future__ import annotations

import pytest
from conftest import NOW

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, T_OCSP, assert_refused, read_state, tree_snapshot, write_state  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

CODEOWNERS = "* @security-team\n"


def _ocsp_file(body: dict, value: str) -> dict:
    body["certificates"]["web"][0]["ocsp"]["file"] = value
    return body


def test_an_ocsp_path_out_of_the_repo_in_a_pull_request_is_refused(forge):
    def change(a):
        (a / ".github" / "CODEOWNERS").write_text(CODEOWNERS)
        write_state(a, _ocsp_file(read_state(a), "../../.github/CODEOWNERS"))

    forge.pull_request("ocsp-path", change, "out: move the OCSP response")
    run = forge.ci(T_OCSP)  # OCSP responses are due: apply would re-sign web's
    # plan reads the state first, and names the path it records
    assert_refused(run, "out/state.json: edited by hand (changed): not what the seal covers",
                   plan_needles=("records an OCSP response at '../../.github/CODEOWNERS', which is not where pkic puts it",))
    assert (run.repo / ".github" / "CODEOWNERS").read_text() == CODEOWNERS


def _victims(repo):
    """Files an OCSP path could reach: one in the repo, one outside it."""
    (repo / ".github").mkdir(exist_ok=True)
    (repo / ".github" / "CODEOWNERS").write_text(CODEOWNERS)
    outside = repo.parent / "victim.txt"
    outside.write_text("precious\n")
    return {repo / ".github" / "CODEOWNERS": CODEOWNERS, outside: "precious\n"}


OCSP_PATHS = {
    "dotdot": "../../.github/CODEOWNERS",
    "in-repo": ".github/CODEOWNERS",
    "absolute": "{outside}",
    "dotdot-in-out": "out/ocsp/../../.github/CODEOWNERS",
    "reserved-dir": "out/certs/web.der",
    "other-name": "out/ocsp/payments.der",
}


@pytest.mark.slow
@pytest.mark.parametrize("value", list(OCSP_PATHS.values()), ids=list(OCSP_PATHS))
def test_an_ocsp_path_in_the_state_is_refused_even_unsealed(local, value):
    pk, repo = local
    victims = _victims(repo)
    value = value.format(outside=repo.parent / "victim.txt")
    write_state(repo, _ocsp_file(read_state(repo), value))
    before = tree_snapshot(repo)
    for cmd in (("apply", "--yes", "--now", T_OCSP), ("plan", "--now", T_OCSP)):
        p = pk(*cmd, cwd=repo)
        assert p.returncode == 1, (cmd, p.stdout, p.stderr)
        assert "out/state.json: certificates.web: records an OCSP response at" in p.stderr and "which is not where pkic puts it" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    assert tree_snapshot(repo) == before
    for path, text in victims.items():
        assert path.read_text() == text


NAMES = {
    "dotdot-cert": lambda b: b["certificates"].__setitem__("../x", b["certificates"].pop("web")),
    "slash-cert": lambda b: b["certificates"].__setitem__("x/../../y", b["certificates"].pop("payments")),
    "absolute-cert": lambda b: b["certificates"].__setitem__("/tmp/x", b["certificates"].pop("payments")),
    "dotdot-issuer": lambda b: b["certificates"]["web"][0].__setitem__("issuer", "../../services-ca"),
    "dotdot-crl": lambda b: b["crls"].__setitem__("../../evil", b["crls"].pop("services-ca")),
    "dotdot-responder": lambda b: b["responders"].__setitem__("../evil", b["responders"].pop("services-ca")),
    "path-serial": lambda b: b["certificates"]["web"][0].__setitem__("serial", "../../x"),
}


@pytest.mark.parametrize("edit", list(NAMES.values()), ids=list(NAMES))
def test_a_name_in_the_state_that_is_not_a_name_is_refused(local, edit):
    pk, repo = local
    body = read_state(repo)
    edit(body)
    write_state(repo, body)
    before = tree_snapshot(repo)
    p = pk("apply", "--yes", "--now", T_OCSP, cwd=repo)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert "out/state.json" in p.stderr and ("is not a valid name" in p.stderr or "is not hex" in p.stderr), p.stderr
    assert tree_snapshot(repo) == before
    assert not (repo / "x").exists() and not (repo.parent / "evil").exists()


def test_a_dotdot_name_in_a_pull_request_is_refused(forge):
    def change(a):
        body = read_state(a)
        body["certificates"]["../x"] = body["certificates"].pop("web")
        write_state(a, body)

    forge.pull_request("rename", change, "out: rename")
    run = forge.ci(T_OCSP)
    assert_refused(run, "out/state.json: edited by hand (changed)", plan_needles=("'../x' is not a valid name",))
    assert not (run.repo / "x.pem").exists() and not (run.repo / "out" / "x.pem").exists()


OCSP_DIRS = ["../../.github", "/etc", ".github/ocsp", "out", "out/certs", "out/keys/ocsp", "out/crl", "out/trust", "out/../.github", "out/.git", "out//ocsp/.."]


@pytest.mark.parametrize("where", OCSP_DIRS)
def test_publish_ocsp_dir_must_be_inside_out(local, where):
    pk, repo = local
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text().replace("authorities:\n", f"publish: {{ocsp_dir: '{where}'}}\nauthorities:\n", 1))
    before = tree_snapshot(repo)
    p = pk("validate", cwd=repo)
    assert p.returncode == 1 and "publish.ocsp_dir" in p.stderr and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert tree_snapshot(repo) == before


@pytest.mark.slow
def test_publish_ocsp_dir_inside_out_moves_the_responses_and_seals_them(forge):
    """The legitimate twin: a reviewed ocsp_dir inside out/ is applied and sealed."""
    run = forge.reviewed_change("ocsp-dir", lambda t: t.replace("authorities:\n", "publish: {ocsp_dir: out/ocsp-public}\nauthorities:\n", 1), NOW)
    assert (run.repo / "out" / "ocsp-public" / "web.der").is_file() and not (run.repo / "out" / "ocsp" / "web.der").exists()
    assert read_state(run.repo)["certificates"]["web"][0]["ocsp"]["file"] == "out/ocsp-public/web.der"
    forge.pkic.ok("verify", "--seal", "--now", NOW, cwd=run.repo)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    ("crls", lambda s: s["crls"].update({"services-ca": 5})),
    ("not_after", lambda s: s["certificates"]["web"][0].update({"not_after": "soon"})),
    ("responders", lambda s: s["responders"].update({"services-ca": "x"})),
    ("compromised", lambda s: s.update({"compromised": [5]})),
    ("status", lambda s: s["certificates"]["web"][0].update({"status": None})),
], ids=lambda d: d[0] if isinstance(d, tuple) else str(d))
def test_a_state_of_the_wrong_shape_is_named_not_a_crash(forge, damage):
    """A pull request that damages the state: the reviewer's plan says out/ is not the
    sealed output and what is wrong (never "pkic crashed"); apply refuses."""
    import json as _json

    def change(a) -> None:
        body = _json.loads((a / "out/state.json").read_text())
        damage[1](body)
        (a / "out/state.json").write_text(_json.dumps(body))
    forge.pull_request(f"damage-{damage[0]}", change, "tidy the state")
    ci = forge.clone("ci")
    for cmd in (("plan", "--now", T1), ("plan", "--format", "markdown", "--now", T1), ("apply", "--yes", "--now", T1), ("status",), ("verify",)):
        p = forge.pkic(*cmd, cwd=ci)
        assert p.returncode == 1 and "Traceback" not in p.stderr and "crashed" not in p.stderr, (cmd, p.stdout, p.stderr)
        if cmd[0] in ("plan", "apply"):
            assert "out/state.json" in p.stderr and "not what the seal covers" in p.stderr, (cmd, p.stderr)
