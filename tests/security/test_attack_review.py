"""Red-team attacks on "reviewed = signed" (issue 11, parts 1-3): the content-bound
reviewed digest, what the reviewer sees, and .sops.yaml as planned intent.

Each test is written as the attacker's pull request, then what CI runs. Each asserts
the secure behaviour: it fails while the attack works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyrage
import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import API, T1, T_WEB, assert_refused, edit_spec  # noqa: E402
from test_reviewed import _decrypts, _reviewed_pr, _spec  # noqa: E402 - the same pull-request machinery

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


def _add_api(a: Path) -> None:
    (a / "pki.yaml").write_text(edit_spec((a / "pki.yaml").read_text(), add=API))


def _services_ca(extra: str):
    """services-ca gains settings (lines under it, indented by four)."""
    return _spec(lambda t: edit_spec(t, replace=(("    path_length: 0\n", "    path_length: 0\n" + extra),)))


# --------------------------------------------------------------------------- 1. what the digest leaves out
#
# An authority's publication settings are not part of the effective spec (they are
# CaSettings), so they are in neither the reviewed digest nor needs_review. Raising
# them makes pkic sign, at once (the refresh window is half the lifetime), OCSP
# responses "good" for ten years (replayable long after a revocation), CRLs whose
# nextUpdate is ten years away (a replayed old CRL hides every later revocation), and
# a delegated OCSP-signing certificate of the new lifetime.

LONG_LIVED = {
    "ocsp_lifetime": "    ocsp_lifetime: 3650d\n",
    "crl_lifetime": "    crl_lifetime: 3650d\n",
    "ocsp_responder_lifetime": "    ocsp_responder_lifetime: 1000d\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("setting", sorted(LONG_LIVED))
def test_a_publication_lifetime_raised_after_review_makes_the_digest_stale(forge, setting):
    reviewed = _reviewed_pr(forge, "api", _add_api, _services_ca(LONG_LIVED[setting]))
    run = forge.ci(T1, plan=False, args=("--reviewed", reviewed))
    assert_refused(run, "not the reviewed one")


@pytest.mark.parametrize("setting", sorted(LONG_LIVED))
def test_a_publication_lifetime_raised_is_not_time_driven_work(forge, setting):
    """Merged with no reviewed plan (or a reviewed plan that showed nothing spec-driven):
    the scheduled `--reviewed none` job must not sign ten-year OCSP responses or CRLs."""
    forge.pull_request("long-lived", _services_ca(LONG_LIVED[setting]))
    body = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=forge.clone("view")).stdout)
    run = forge.ci(T1, plan=False, args=("--reviewed", "none"))
    assert_refused(run, "no reviewed plan")
    assert body["needs_review"], "a changed publication lifetime is spec-driven"


def test_revoke_superseded_turned_on_is_not_time_driven_work(forge):
    """`revoke_superseded` is an authority setting, not spec: a pull request that turns it
    on plans nothing spec-driven (same digest as no change), and the scheduled job's
    renewals then revoke (and sign onto the CRL) every certificate they replace, with no
    reviewed plan that showed a single revocation."""
    forge.pull_request("supersede", _services_ca("    revoke_superseded: true\n"))
    body = json.loads(forge.pkic("plan", "--json", "--now", T_WEB, cwd=forge.clone("view")).stdout)
    run = forge.ci(T_WEB, plan=False, args=("--reviewed", "none"))
    revoked = [r for c in body["changes"] for r in c["revokes"]]
    assert revoked and body["needs_review"]  # a settings change: spec-driven
    assert any("revoke_superseded False -> True" in c for c in body["settings_changes"]), body["settings_changes"]
    assert_refused(run, "no reviewed plan")


# --------------------------------------------------------------------------- 2. what the reviewer sees


def _markdown(forge, a: Path, *extra: str) -> str:
    p = forge.pkic("plan", "--format", "markdown", "--base", "origin/main", "--now", T1, *extra, cwd=a)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _visible(md: str) -> str:
    """The comment as a reader sees it: rendered as CommonMark (with tables), HTML
    comments dropped (GitHub shows none)."""
    import re

    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(md)
    return re.sub(r"<!--.*?-->", "", html, flags=re.S)


def _touch_workflow(a: Path) -> None:
    wf = a / ".github" / "workflows" / "apply.yml"
    wf.write_text(wf.read_text() + "# runs with the CA identity after merge\n")


def test_a_workflow_change_is_not_hidden_behind_forty_other_paths(forge):
    """"Every changed path outside the PKI inputs" is shown as not planned; the comment
    names only the first 40, in sorted order. Forty files of a `.devcontainer/` (which
    sorts before `.github/`) push the workflow change out of sight, behind a bare "…"."""
    def change(a: Path) -> None:
        _add_api(a)
        _touch_workflow(a)
        (a / ".devcontainer").mkdir()
        for i in range(40):
            (a / ".devcontainer" / f"feature-{i:02d}.json").write_text("{}\n")
    a = forge.branch("devcontainer", change)
    md = _markdown(forge, a)
    assert "not planned: review as code" in md
    assert "`.github/workflows/apply.yml`" in md, "the workflow change is not named in the comment"


def test_a_path_name_cannot_hide_other_paths_in_the_comment(forge):
    """File names are the PR author's: a backtick ends the code span pkic wraps a path
    in, and an HTML comment opened by one file name and closed by another swallows every
    path that sorts between them, the workflow included. GitHub shows nothing of it."""
    def change(a: Path) -> None:
        _add_api(a)
        _touch_workflow(a)
        (a / "-`<!-- ").write_text("x\n")  # sorts before .github/
        (a / "z`-->`").write_text("x\n")  # sorts after it
    a = forge.branch("names", change)
    md = _markdown(forge, a)
    line = next(ln for ln in md.splitlines() if "not planned: review as code" in ln)
    assert ".github/workflows/apply.yml" in _visible(line), f"a file name hides the workflow change from the reader:\n{line}"


def test_a_policy_diff_cannot_be_blanked_by_a_gitattributes_under_policies(forge):
    """`policies/.gitattributes` is under policies/: it is neither a policy (no diff) nor
    listed as "not planned". With `-diff` it turns every policy's diff into "Binary files
    differ", which pkic cuts as a header: the reviewer gets an empty diff for a policy
    that now allows another domain for ten years."""
    def base(a: Path) -> None:
        (a / "policies" / "services.yaml").write_text("allowed_dns: ['*.example.com']\nmax_lifetime: 400d\n")
        (a / "pki.yaml").write_text((a / "pki.yaml").read_text().replace("    path_length: 0\n", "    path_length: 0\n    policy: services\n", 1))
    forge.pull_request("policy", base)

    def loosen(a: Path) -> None:
        (a / "policies" / ".gitattributes").write_text("*.yaml -diff\n")
        (a / "policies" / "services.yaml").write_text("allowed_dns: ['*.example.com', '*.attacker.net']\nmax_lifetime: 3650d\n")
    a = forge.branch("loosen", loosen)
    md = _markdown(forge, a)
    assert "#### Policy `policies/services.yaml`" in md, md
    assert "3650d" in md and "attacker.net" in md, f"the policy's diff is blank in the comment:\n{md}"
    assert "policies/.gitattributes" in md, "a .gitattributes is code to review, wherever it is"


# --------------------------------------------------------------------------- 3. .sops.yaml as planned intent


def test_a_shamir_rule_shown_in_the_plan_is_the_one_sops_applies(forge, tmp_path):
    """`(?i)` with a non-ASCII letter: Python's re folds 'İ' (U+0130) to 'i', Go's regexp
    (sops) does not. `_go_agrees` lets it through, so the plan (Python) shows rule 1 for
    services-ca's key: 2 of 2 key groups, [team] | [team, B], B alone can decrypt
    nothing. A key_groups rule goes through the sops binary, which (Go) takes rule 2:
    one group, team or B. The check after sops compares the master keys as a set, which
    are the same: the file is written, and B alone decrypts the services-ca key."""
    b = pyrage.x25519.Identity.generate()
    team = forge.main.joinpath(".sops.yaml").read_text().split("age: ")[1].split()[0]

    def rules(a: Path) -> None:
        text = (a / ".sops.yaml").read_text()
        shamir = ("  - path_regex: (?i)^out/keys/serv\u0130ces-ca\\.sops\\.yaml$\n"
                  "    encrypted_regex: ^private_key$\n"
                  f"    key_groups:\n      - age: [{team}]\n      - age: [{team}, {b.to_public()}]\n"
                  "    shamir_threshold: 2\n"
                  # shadowed by rule 1, as Python reads it
                  "  - path_regex: (?i)^out/keys/serv.ces-ca\\.sops\\.yaml$\n"
                  "    encrypted_regex: ^private_key$\n"
                  f"    age: {team},{b.to_public()}\n")
        (a / ".sops.yaml").write_text(text.replace("creation_rules:\n", "creation_rules:\n" + shamir, 1))
    a = forge.branch("shamir", rules)
    p = forge.pkic("plan", "--json", "--now", T1, cwd=a)
    if p.returncode == 1 and "Go's regexp" in p.stderr:  # refused in plan: secure (the rule is not guessed)
        forge.merge("shamir")
        assert_refused(forge.ci(T1, plan=False, args=("--reviewed", "none")), "Go's regexp")
        return
    body = json.loads(p.stdout)
    [r] = body["reencrypt"]
    assert r["path"] == "out/keys/services-ca.sops.yaml" and r["to"]["threshold"] == 2
    assert r["to"]["groups"] == sorted([[f"age:{team}"], sorted([f"age:{team}", f"age:{b.to_public()}"])])
    forge.merge("shamir")
    run = forge.ci(T1, plan=False, args=("--reviewed", body["reviewed_digest"]))
    if run.apply.returncode != 0:  # refusing is secure too
        return
    assert not _decrypts(run.repo, "out/keys/services-ca.sops.yaml", b, tmp_path / "b"), \
        "the plan showed 2 of 2 key groups (B holds one share); B alone decrypts the services-ca key"


@pytest.mark.slow
def test_a_new_recipient_is_named_in_the_comment_however_long_the_plan(forge):
    """A long plan is cut to fit a comment, every list by the same number of rows. The
    attacker pads .sops.yaml with rules for paths pkic never writes, then adds one rule
    for one of 700 new certificates: its row, and the rules diff past the padding, are
    cut, and the seal's ".sops.yaml changed" note stops at 8,000 characters (80 padding
    rules). The comment then names the attacker's recipient nowhere; only the job
    summary does. A recipient that could decrypt nothing before is what a reviewer must
    see."""
    attacker = str(pyrage.x25519.Identity.generate().to_public())
    many = "".join(f"  svc-{i:04d}:\n    issuer: services-ca\n    dns: [svc-{i:04d}.svc.internal]\n" for i in range(700))

    def change(a: Path) -> None:
        (a / "pki.yaml").write_text(edit_spec((a / "pki.yaml").read_text(), add=many))
        text = (a / ".sops.yaml").read_text()
        team = text.split("age: ")[1].split()[0]
        pad = "".join(f"  - path_regex: ^docs/team-{i:02d}/.*\\.yaml$\n    encrypted_regex: ^password$\n    age: {team}\n" for i in range(80))
        rule = f"  - path_regex: ^out/keys/svc-0650\\.sops\\.yaml$\n    encrypted_regex: ^private_key$\n    age: {team},{attacker}\n"
        (a / ".sops.yaml").write_text(text.replace("creation_rules:\n", "creation_rules:\n" + pad + rule, 1))
    a = forge.branch("many", change)
    body = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=a).stdout)
    assert any(attacker in json.dumps(c["recipients"]) for c in body["changes"] if c["name"] == "svc-0650")
    cut = _markdown(forge, a, "--max-chars", "60000")
    assert len(cut) <= 60000
    assert attacker in cut, "the comment never names the recipient that can decrypt svc-0650's new key"


def test_an_unsealed_state_cannot_vouch_for_a_foreign_backend(local):
    """The refusal of a key file naming a foreign backend rests on the rule the *state*
    records for it. In an unsealed repository the state is as writable as the key file:
    record a rule with the attacker's Vault for services-ca (its digest is computable),
    name that Vault in the key file, and sops is started with VAULT_TOKEN and contacts
    it. Whatever the state says, a backend that .sops.yaml never named (so no plan ever
    showed) must not be contacted."""
    from seclib import read_state, write_state
    from test_reviewed import Listener

    from compiler.spec.sops_rules import rule_digest

    pkic, repo = local
    listener = Listener()
    try:
        vault = f"http://127.0.0.1:{listener.port}"
        body = read_state(repo)
        team = (repo / ".sops.yaml").read_text().split("age: ")[1].split()[0]
        rule = {"groups": [sorted([f"age:{team}", f"hc_vault:{vault}/v1/sops/keys/ca"])], "threshold": None,
                "encrypt": {"encrypted_regex": "^private_key$"}, "mac_only_encrypted": False}
        d = rule_digest(rule)
        body.setdefault("sops_rules", {})[d] = rule
        body["certificates"]["services-ca"][0]["key_rules"] = [d]
        write_state(repo, body)
        rel = repo / "out" / "keys" / "services-ca.sops.yaml"
        stanza = (f"    hc_vault:\n        - vault_address: {vault}\n          engine_path: sops\n"
                  "          key_name: ca\n          created_at: \"2026-11-27T12:00:00Z\"\n          enc: vault:v1:AAAA\n")
        import re

        # the Vault stanza in place of the age one: sops must ask the Vault for the data key
        rel.write_text(re.sub(r"    age:\n(?:        .*\n)+", stanza, rel.read_text(), count=1))
        p = pkic("apply", "--yes", "--now", T_WEB, cwd=repo, env={"VAULT_TOKEN": "s.secret"})
        assert listener.connections == 0, f"sops contacted the state's Vault ({listener.connections} connection(s)):\n{p.stdout}{p.stderr}"
    finally:
        listener.close()
