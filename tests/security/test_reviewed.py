"""Reviewed = signed: the reviewed digest binds content, and .sops.yaml is planned intent.

Attacks played here (issue 11):

* a pull request is reviewed, then its author pushes one more commit that changes what
  a certificate contains (a SAN, the profile, the subject, the lifetime), loosens a
  policy or adds a recipient to .sops.yaml: CI's apply with the reviewed digest refuses;
* a renewal whose content or recipients changed runs as "time-driven" with no review:
  ``apply --reviewed none`` (what the scheduled job runs) refuses it;
* team changes: a recipient added, then one removed, each through a reviewed plan; the
  real ``sops`` then decrypts every key file with the new identity alone and not with
  the removed one, and the plan names what the removed one can still read in history;
* a key file whose own SOPS metadata names a foreign backend (a Vault on 127.0.0.1):
  refused before sops runs, and the listener sees no connection;
* sops runs with an environment reduced to what the rule's backends need.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pyrage
import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from forkrun import FORK_SAFE  # noqa: E402
from helpers import SOPS  # noqa: E402
from seclib import API, T1, T_WEB, WEB_DNS, assert_applied, assert_refused, edit_spec  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

POLICY = "allowed_dns: ['*.example.com']\nmax_lifetime: 400d\n"


def _spec(edit):
    def change(a: Path) -> None:
        (a / "pki.yaml").write_text(edit((a / "pki.yaml").read_text()))
    return change


def _add_api_with_policy(a: Path) -> None:
    (a / "policies" / "services.yaml").write_text(POLICY)
    text = (a / "pki.yaml").read_text().replace("    path_length: 0\n", "    path_length: 0\n    policy: services\n", 1)
    (a / "pki.yaml").write_text(edit_spec(text, add=API))


def _add_recipient(recipient: str):
    def change(a: Path) -> None:
        text = (a / ".sops.yaml").read_text()
        (a / ".sops.yaml").write_text(text.replace("    age: ", f"    age: {recipient},", 1))
    return change


def _reviewed_pr(forge, branch: str, change, after=None, now: str = T1) -> str:
    """A pull request: its plan is reviewed (the digest taken), then ``after`` (if any)
    is pushed on top of it, and the pull request is merged. Returns the reviewed digest."""
    a = forge.branch(branch, change)
    p = forge.pkic("plan", "--json", "--now", now, cwd=a)
    assert p.returncode == 0, p.stderr
    reviewed = json.loads(p.stdout)["reviewed_digest"]
    if after is not None:
        after(a)
        forge.git(a, "add", "-A")
        forge.git(a, "commit", "-q", "-m", f"{branch}: one more thing")
        forge.git(a, "push", "-q", "origin", branch)
    forge.merge(branch)
    return reviewed


AFTER_REVIEW = {
    "a SAN": _spec(lambda t: t.replace("dns: [api.example.com]", "dns: [api.example.com, admin.example.com]")),
    "the profile": _spec(lambda t: t.replace("    dns: [api.example.com]\n", "    dns: [api.example.com]\n    profile: peer\n")),
    "the subject": _spec(lambda t: t.replace("    dns: [api.example.com]\n", "    dns: [api.example.com]\n    subject: {O: system:masters}\n")),
    "the lifetime": _spec(lambda t: t.replace("    dns: [api.example.com]\n", "    dns: [api.example.com]\n    lifetime: 365d\n")),
    "a policy": lambda a: (a / "policies" / "services.yaml").write_text(POLICY.replace("400d", "3650d")),
    "the recipients": _add_recipient(str(pyrage.x25519.Identity.generate().to_public())),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", sorted(AFTER_REVIEW))
def test_an_edit_after_review_makes_the_reviewed_digest_stale(forge, what):
    reviewed = _reviewed_pr(forge, "api", _add_api_with_policy, AFTER_REVIEW[what])
    run = forge.ci(T1, plan=False, args=("--reviewed", reviewed))
    assert_refused(run, "not the reviewed one")


def test_the_reviewed_digest_unchanged_is_accepted_and_time_driven_work_rides_along(forge):
    reviewed = _reviewed_pr(forge, "api", _add_api_with_policy)
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", reviewed))  # renewals came due since the review
    assert_applied(run)
    assert "renew" in run.apply.stdout and "api" in run.apply.stdout


@pytest.mark.slow
def test_the_digest_has_no_serial_date_or_state_serial(forge):
    """A nightly renewal between review and merge must not make the review stale."""
    a = forge.branch("api", _add_api_with_policy)
    before = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=a).stdout)
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))  # main renews web and payments meanwhile
    assert_applied(run)
    forge.git(a, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")
    after = json.loads(forge.pkic("plan", "--json", "--now", T_WEB, cwd=a).stdout)
    assert after["state_serial"] != before["state_serial"]
    assert after["reviewed_digest"] == before["reviewed_digest"]


@pytest.mark.slow
def test_without_review_only_time_driven_work_runs(forge):
    """`--reviewed none` (the scheduled job): renewals of unchanged content under an
    unchanged rule run; a spec change, or a renewal whose recipients changed, does not."""
    # a merged .sops.yaml change: the due renewals would encrypt new keys to a new recipient
    forge.pull_request("backup", _add_recipient(str(pyrage.x25519.Identity.generate().to_public())))
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))
    assert_refused(run, "no reviewed plan")
    forge.revert(forge.head())
    # a content change merged without a reviewed plan
    forge.pull_request("web", _spec(lambda t: t.replace(WEB_DNS, "dns: [web.example.com]")))
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))
    assert_refused(run, "no reviewed plan")
    forge.revert(forge.head())
    # nothing spec-driven left: the renewals run
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))
    assert_applied(run)
    body = json.loads(forge.pkic("plan", "--json", "--now", T_WEB, cwd=forge.clone("check")).stdout)
    assert body["needs_review"] is False and not body["changes"]


def _decrypts(repo: Path, rel: str, identity, scratch: Path) -> bool:
    scratch.mkdir(parents=True, exist_ok=True)
    ident = scratch / "id.txt"
    ident.write_text(str(identity) + "\n")
    p = subprocess.run([SOPS, "decrypt", "--extract", '["private_key"]', rel], cwd=repo, capture_output=True,
                       env={"PATH": os.environ["PATH"], "HOME": str(scratch), "SOPS_AGE_KEY_FILE": str(ident)})
    ident.unlink()
    return p.returncode == 0 and b"PRIVATE KEY" in p.stdout


@pytest.mark.slow
def test_a_team_change_re_encrypts_every_key_file_for_the_new_recipients_only(forge, tmp_path):
    old_text = (forge.main / ".sops.yaml").read_text()
    old = old_text.split("age: ")[1].split()[0]
    newcomer = pyrage.x25519.Identity.generate()
    # 1. add the newcomer, reviewed: every key file is re-encrypted (fresh data key)
    reviewed = _reviewed_pr(forge, "add-newcomer", _add_recipient(str(newcomer.to_public())))
    plan = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=forge.clone("pr-view")).stdout)
    assert plan["needs_review"] and len(plan["reencrypt"]) == 6
    assert all(r["added"] == [f"age:{newcomer.to_public()}"] and not r["removed"] for r in plan["reencrypt"])
    run = forge.ci(T1, plan=False, args=("--reviewed", reviewed))
    assert_applied(run)
    keys = sorted(str(p.relative_to(run.repo)) for p in (run.repo / "out" / "keys").rglob("*.sops.yaml"))
    assert len(keys) == 6
    before = {k: (run.repo / k).read_text() for k in keys}
    assert all(_decrypts(run.repo, k, newcomer, tmp_path / "n") for k in keys)

    # 2. remove the old recipient, reviewed: the plan says what it can still read in history
    def remove_old(a: Path) -> None:
        (a / ".sops.yaml").write_text((a / ".sops.yaml").read_text().replace(f"{old},", "").replace(f",{old}", ""))
    a = forge.branch("remove-old", remove_old)
    body = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=a).stdout)
    assert sorted(body["exposed"][f"age:{old}"]) == ["payments", "root-ca", "root-ca OCSP responder", "services-ca",
                                                    "services-ca OCSP responder", "web"]
    text = forge.pkic("plan", "--now", T1, cwd=a).stdout
    assert "still in git history" in text and "Rekey" in text
    md = forge.pkic("plan", "--format", "markdown", "--now", T1, cwd=a).stdout
    assert "could decrypt 6 key(s) still in git history" in md and f"−{old}" in md
    forge.merge("remove-old")
    run = forge.ci(T1, plan=False, args=("--reviewed", body["reviewed_digest"]))
    assert_applied(run)
    for k in keys:
        text = (run.repo / k).read_text()
        assert old not in text and str(newcomer.to_public()) in text and "ENC[AES256_GCM" in text
        assert _decrypts(run.repo, k, newcomer, tmp_path / "n")
        # a fresh data key: the one of step 1 (which the removed identity can unwrap
        # from git history) does not open the new file
        assert _data_key(before[k], newcomer) != _data_key(text, newcomer)
    identity_text = (forge.pkic.home / "age" / "keys.txt").read_text()
    old_identity = pyrage.x25519.Identity.from_str(next(ln for ln in identity_text.splitlines() if ln.startswith("AGE-SECRET-KEY-")))
    assert not any(_decrypts(run.repo, k, old_identity, tmp_path / "o") for k in keys)
    # the state knows the files it wrote: verify (with the new identity) finds nothing edited by hand
    ident = tmp_path / "newcomer.txt"
    ident.write_text(str(newcomer) + "\n")
    v = forge.pkic("verify", "--keys", "--now", T1, cwd=run.repo, env={"SOPS_AGE_KEY_FILE": str(ident)})
    assert v.returncode == 0, v.stdout + v.stderr


def _data_key(text: str, identity) -> bytes:
    """The file's data key, unwrapped with ``identity`` (pyrage, independent of pkic)."""
    import base64

    from ruamel.yaml import YAML

    meta = YAML(typ="safe").load(text)["sops"]
    for stanza in meta["age"]:
        body = "".join(ln.strip() for ln in stanza["enc"].splitlines() if ln.strip() and not ln.startswith("-----"))
        try:
            return pyrage.decrypt(base64.b64decode(body), [identity])
        except Exception:
            continue
    raise AssertionError("no stanza for this identity")


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections (a stand-in for a Vault)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"{FORK_SAFE}Vault stand-in")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def test_a_key_file_naming_a_foreign_backend_is_refused_before_sops_runs(local):
    """The services-ca key file gains a Vault master key in its own metadata: sops would
    contact that Vault with this machine's credentials. Refused; no connection made."""
    pkic, repo = local
    listener = Listener()
    try:
        rel = repo / "out" / "keys" / "services-ca.sops.yaml"
        text = rel.read_text()
        vault = (f"    hc_vault:\n        - vault_address: http://127.0.0.1:{listener.port}\n          engine_path: sops\n"
                 "          key_name: ca\n          created_at: \"2026-11-27T12:00:00Z\"\n          enc: vault:v1:AAAA\n")
        rel.write_text(text.replace("    age:\n", vault + "    age:\n", 1))
        before = {p: p.read_bytes() for p in sorted((repo / "out").rglob("*")) if p.is_file()}
        for inprocess in ("1", "0"):
            p = pkic("apply", "--yes", "--now", T_WEB, cwd=repo, env={"PKIC_SOPS_INPROCESS": inprocess, "VAULT_TOKEN": "s.secret"})
            assert p.returncode == 1 and "names master keys the state does not record" in p.stderr, p.stdout + p.stderr
            assert "hc_vault:http://127.0.0.1" in p.stderr and "Traceback" not in p.stderr
        assert listener.connections == 0
        assert {p: p.read_bytes() for p in sorted((repo / "out").rglob("*")) if p.is_file()} == before
    finally:
        listener.close()


def test_sops_runs_with_only_what_the_rule_needs(local, tmp_path):
    """Through the sops binary (no in-process writer), a token or cloud credential in
    CI's environment never reaches sops when the rule is age only."""
    pkic, repo = local
    dump = tmp_path / "sops-env.txt"
    wrapper = tmp_path / "sops-wrapper"
    wrapper.write_text(f"#!/bin/sh\nenv >> {dump}\nexec {SOPS} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    p = pkic("apply", "--yes", "--now", T_WEB, cwd=repo,
             env={"PKIC_SOPS_INPROCESS": "0", "PKIC_SOPS": str(wrapper), "GITHUB_TOKEN": "ghs_secret", "AWS_SECRET_ACCESS_KEY": "aws_secret",
                  "VAULT_TOKEN": "s.secret"})
    assert p.returncode == 0, p.stdout + p.stderr
    seen = dump.read_text()
    assert "SOPS_AGE_KEY_FILE=" in seen  # the age identity: what the rule needs
    for secret in ("ghs_secret", "aws_secret", "s.secret", "PKIC_SEAL_KEY"):
        assert secret not in seen


def test_the_reviewer_sees_content_recipients_diffs_and_what_is_not_planned(forge):
    newcomer = str(pyrage.x25519.Identity.generate().to_public())

    def change(a: Path) -> None:
        _add_api_with_policy(a)
        _add_recipient(newcomer)(a)
        wf = a / ".github" / "workflows" / "apply.yml"
        wf.write_text(wf.read_text() + "# runs with the CA identity after merge\n")
        (a / "tools").mkdir()
        (a / "tools" / "helper.sh").write_text("echo hi\n")
    a = forge.branch("mixed", change)
    md = forge.pkic("plan", "--format", "markdown", "--base", "origin/main", "--now", T1, cwd=a)
    assert md.returncode == 0, md.stderr
    text = md.stdout
    # what each certificate will contain, and who can decrypt its key
    row = next(ln for ln in text.splitlines() if ln.startswith("| `api` |") and "dns:api.example.com" in ln)
    assert "server" in row and "new ecdsa-p256" in row and "90d" in row and "`services-ca`" in row and newcomer in row
    # re-encryptions of the key files that stay
    assert "Key files to re-encrypt" in text and f"+{newcomer}" in text
    # the policy's diff, and .sops.yaml's rules as data
    assert "#### Policy `policies/services.yaml`" in text and "+allowed_dns: ['*.example.com']" in text
    assert "`.sops.yaml`: the rules as data" in text
    assert any(ln.startswith("+") and f'"age:{newcomer}"' in ln for ln in text.splitlines())
    # everything else is code to review
    assert "not planned: review as code" in text and "`.github/workflows/apply.yml`" in text and "`tools/helper.sh`" in text
    assert "`pki.yaml`" not in text.split("not planned: review as code")[1].split("\n")[0]
    body = json.loads(forge.pkic("plan", "--json", "--base", "origin/main", "--now", T1, cwd=a).stdout)
    assert body["review"]["outside"] == [".github/workflows/apply.yml", "tools/helper.sh"]
    assert f"Pki-Plan: {body['reviewed_digest']}" in text


@pytest.mark.slow
def test_a_long_plan_fits_a_comment_and_the_digest_covers_all_of_it(forge):
    many = "".join(f"  svc-{i:04d}:\n    issuer: services-ca\n    dns: [svc-{i:04d}.svc.internal, alt-{i:04d}.example.com]\n" for i in range(700))
    a = forge.branch("many", _spec(lambda t: edit_spec(t, add=many)))
    full = forge.pkic("plan", "--format", "markdown", "--now", T1, cwd=a).stdout
    cut = forge.pkic("plan", "--format", "markdown", "--max-chars", "60000", "--now", T1, cwd=a).stdout
    digest = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=a).stdout)["reviewed_digest"]
    assert len(full) > 60000 and len(cut) <= 60000
    assert cut.startswith("<!-- pkic-plan -->\n### pkic plan: 700 to issue")
    assert "more: the full plan is in the job summary" in cut and "`svc-0000`" in cut and "`svc-0699`" not in cut
    assert f"Pki-Plan: {digest}" in cut and f"Pki-Plan: {digest}" in full


def test_a_responder_key_renewed_under_a_changed_rule_needs_review(forge):
    """A rule aimed at one delegated OCSP responder's key file, merged just before that
    responder is due: the renewal would encrypt its new key to the added recipient."""
    attacker = str(pyrage.x25519.Identity.generate().to_public())

    def prepend(a: Path) -> None:
        text = (a / ".sops.yaml").read_text()
        team = text.split("age: ")[1].split()[0]
        rule = f"  - path_regex: ^out/keys/ocsp-responders/services-ca\\.sops\\.yaml$\n    encrypted_regex: ^private_key$\n    age: {team},{attacker}\n"
        (a / ".sops.yaml").write_text(text.replace("creation_rules:\n", "creation_rules:\n" + rule, 1))
    forge.pull_request("responder-backup", prepend)
    body = json.loads(forge.pkic("plan", "--json", "--now", T_WEB, cwd=forge.clone("view")).stdout)
    assert [p["name"] for p in body["responders"]] == ["services-ca"] and not body["reencrypt"]
    assert body["needs_review"] and body["responder_keys"][0]["authority"] == "services-ca"
    assert f"age:{attacker}" in body["responder_keys"][0]["rule"]["groups"][0]
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))
    assert_refused(run, "no reviewed plan")


@pytest.mark.slow
def test_no_core_dump_can_hold_a_key(local, tmp_path):
    """Before the first key is generated or decrypted, apply sets RLIMIT_CORE to 0 and
    marks itself not dumpable (issue 12, item 3): the sops child that pipes a clear key
    back inherits the limit. Checked in the sops child itself, and in the apply process
    through /proc (its own status is not readable by others once not dumpable)."""
    pkic, repo = local
    seen = tmp_path / "sops-limits.txt"
    wrapper = tmp_path / "sops-wrapper"
    wrapper.write_text(f"#!/bin/sh\necho \"core $(ulimit -c)\" >> {seen}\nexec {SOPS} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    import sys

    # core dumps allowed where pkic starts (the soft limit raised): pkic must lower it itself
    p = subprocess.run(["bash", "-c", 'ulimit -S -c unlimited && exec "$@"', "apply", sys.executable, "-m", "compiler.cli", "apply", "--yes", "--now", T_WEB],
                       cwd=repo, env={**pkic.env, "PKIC_SOPS_INPROCESS": "0", "PKIC_SOPS": str(wrapper)}, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = seen.read_text().splitlines()
    assert lines and set(lines) == {"core 0"}, lines
    probe = subprocess.run(
        [sys.executable, "-c",
         "import ctypes, resource\nfrom pathlib import Path\nfrom compiler.keys.keystore import Keystore\n"
         "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\nKeystore(Path('.'))\n"
         "print(resource.getrlimit(resource.RLIMIT_CORE), ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"],
        env=pkic.env, capture_output=True, text=True, cwd=repo)
    assert probe.stdout.strip() == "(0, 0) 0", probe.stdout + probe.stderr
