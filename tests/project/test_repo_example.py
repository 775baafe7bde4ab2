"""The repository's own pki.yaml and policies/ are the worked example: they must stay valid."""

import json

from conftest import NOW, REPO_ROOT


def test_repo_example_validates_and_plans(pkic):
    pkic.ok("-C", str(REPO_ROOT), "validate")
    plan = json.loads(pkic.ok("-C", str(REPO_ROOT), "plan", "--json", "--now", NOW).stdout)
    got = {c["name"]: (c["action"], c["key"]) for c in plan["changes"]}
    assert got == {"root-ca": ("issue", "new"), "services-ca": ("issue", "new"), "web": ("issue", "new"),
                   "payments": ("issue", "new"), "db": ("issue", "external")}
    # nothing is written by a plan
    assert not (REPO_ROOT / "out" / "state.json").exists()


def test_repo_example_policies_bite(tmp_path, pkic):
    import shutil

    repo = tmp_path / "copy"
    shutil.copytree(REPO_ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", "out"))
    text = (repo / "pki.yaml").read_text().replace("dns: [web.example.com, www.example.com]", "dns: [web.example.com, admin.example.com]")
    (repo / "pki.yaml").write_text(text)
    p = pkic("validate", cwd=repo)
    assert p.returncode == 1
    assert "certificates.web.dns[1]: 'admin.example.com' is not allowed by policies/services.yaml:5 (forbidden_dns: 'admin.example.com')" in p.stderr
