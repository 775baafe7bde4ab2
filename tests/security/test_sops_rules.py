"""Attack: .sops.yaml gains a recipient, and CI encrypts the next keys to it.

The creation rules decide to whom every new key is encrypted. A pull request that only
adds an age recipient to .sops.yaml changes nothing pkic signs, so the plan is empty;
once merged, the next scheduled renewal encrypts the new web and payments keys to the
attacker as well. The seal records the digest of the creation rules (``sops_rules``),
so plan can tell the reviewer that they changed.
"""

from __future__ import annotations

import json

import pyrage
import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T_WEB  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


def _add_recipient(recipient: str):
    def change(a) -> None:
        text = (a / ".sops.yaml").read_text()
        (a / ".sops.yaml").write_text(text.replace("    age: ", f"    age: {recipient},", 1))
    return change


def test_plan_names_a_change_of_the_sops_creation_rules(forge):
    attacker = pyrage.x25519.Identity.generate()
    forge.pull_request("backup-recipient", _add_recipient(str(attacker.to_public())), "sops: add the backup recipient")
    ci = forge.clone("ci")
    text = forge.pkic("plan", "--now", T_WEB, cwd=ci)
    body = json.loads(forge.pkic("plan", "--json", "--now", T_WEB, cwd=ci).stdout)
    seal_json = json.dumps(body["seal"])
    assert ".sops.yaml" in text.stdout + text.stderr and ".sops.yaml" in seal_json, text.stdout + text.stderr
    # the reviewer is shown who can decrypt from now on: the added recipient by name
    recipient = str(attacker.to_public())
    assert "creation rules changed since the last seal" in text.stdout and recipient in text.stdout, text.stdout
    assert body["seal"]["sops_rules"]["changed"] and recipient in body["seal"]["sops_rules"]["now"]
    md = forge.pkic("plan", "--format", "markdown", "--now", T_WEB, cwd=ci).stdout
    assert "`.sops.yaml` changed" in md and recipient in md
    # and the apply that follows says it too, before it writes keys under the new rule
    assert recipient in forge.pkic("apply", "--yes", "--now", T_WEB, cwd=ci).stdout


@pytest.mark.parametrize("groups", [False, True], ids=["in-process age rule", "key groups through the sops binary"])
def test_a_rule_that_leaves_private_key_in_clear_writes_nothing(forge, groups):
    """encrypted_regex: ^name$ would commit private keys in clear. Refused before anything
    is signed, whichever writer the rule goes through."""
    def weaken(a) -> None:
        text = (a / ".sops.yaml").read_text().replace("encrypted_regex: ^private_key$", "encrypted_regex: ^name$")
        if groups:
            team = text.split("age: ")[1].strip()
            text = text.split("    age: ")[0] + f"    key_groups:\n      - age: [{team}]\n"
        (a / ".sops.yaml").write_text(text)
    forge.pull_request("weaker-rules", weaken, "sops: tidy the rules")
    ci = forge.clone("ci")
    before = forge.git(ci, "rev-parse", "HEAD").stdout
    out_before = {p: p.read_bytes() for p in sorted((ci / "out").rglob("*")) if p.is_file()}
    p = forge.pkic("apply", "--yes", "--commit", "--now", T_WEB, cwd=ci)
    assert p.returncode == 1 and "would leave private_key in clear" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert {p: p.read_bytes() for p in sorted((ci / "out").rglob("*")) if p.is_file()} == out_before
    assert forge.git(ci, "rev-parse", "HEAD").stdout == before
    assert not (ci / ".pkic" / "journal.jsonl").exists()  # refused before the first step


def test_plan_shows_every_rule_including_one_aimed_at_some_key_files(forge):
    """A rule prepended for out/keys/ocsp-responders/ only, with an extra recipient: the
    plan must show it (a summary of the rule for one example path would not)."""
    attacker = pyrage.x25519.Identity.generate()

    def prepend(a) -> None:
        text = (a / ".sops.yaml").read_text()
        team = text.split("age: ")[1].strip()
        rule = f"  - path_regex: ^out/keys/ocsp-responders/\n    encrypted_regex: ^private_key$\n    age: {team},{attacker.to_public()}\n"
        (a / ".sops.yaml").write_text(text.replace("creation_rules:\n", "creation_rules:\n" + rule, 1))
    forge.pull_request("responders-backup", prepend, "sops: back up responder keys")
    ci = forge.clone("ci")
    text = forge.pkic("plan", "--now", T_WEB, cwd=ci).stdout
    assert "^out/keys/ocsp-responders/" in text and str(attacker.to_public()) in text, text


@pytest.mark.parametrize("posix", [False, True], ids=["{,1}: a repetition to Python, text to Go", "[[:alnum:]]: a class to Go, not to Python"])
def test_a_rule_go_and_python_read_differently_is_refused(forge, tmp_path, posix):
    """sops (Go) and Python read some regular expressions differently: pkic cannot show
    the reviewer who would decrypt the keys, so it refuses the rule (plan and apply),
    rather than guess or let sops pick a rule the plan did not show."""
    attacker = pyrage.x25519.Identity.generate()

    def prepend(a) -> None:
        text = (a / ".sops.yaml").read_text()
        team = text.split("age: ")[1].strip()
        if posix:  # to sops, rule 1 covers every key file; Python would fall through to rule 2
            rule = (f"  - path_regex: ^out/keys/(ocsp-responders/)?[[:alnum:]][-_.[:alnum:]]*\\.sops\\.yaml$\n    encrypted_regex: ^private_key$\n    age: {team}\n"
                    f"  - path_regex: ^out/\n    encrypted_regex: ^private_key$\n    age: {team},{attacker.to_public()}\n")
        else:
            rule = f"  - path_regex: ^out/keys/w{{,1}}eb\\.sops\\.yaml$\n    encrypted_regex: ^private_key$\n    age: {team},{attacker.to_public()}\n"
        (a / ".sops.yaml").write_text(text.replace("creation_rules:\n", "creation_rules:\n" + rule, 1))
    forge.pull_request("odd-regex", prepend, "sops: a rule")
    ci = forge.clone("ci")
    out_before = {p: p.read_bytes() for p in sorted((ci / "out").rglob("*")) if p.is_file()}
    for cmd in (("plan", "--now", T_WEB), ("apply", "--yes", "--now", T_WEB)):
        p = forge.pkic(*cmd, cwd=ci)
        assert p.returncode == 1 and "Go's regexp" in p.stderr and "Traceback" not in p.stderr, (cmd, p.stdout, p.stderr)
    assert {p: p.read_bytes() for p in sorted((ci / "out").rglob("*")) if p.is_file()} == out_before
    assert str(attacker.to_public()) not in (ci / "out" / "keys" / "web.sops.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("text, fragment", [
    ("creation_rules:\n  - path_regex: a\n    path_regex: b\n", "duplicate key"),
    ("creation_rules:\n  - path_regex: '('\n    age: x\n", "is not a regular expression"),
    ("creation_rules:\n  - path_regex: 5\n", "must be a string"),
    ("creation_rules:\n  - encrypted_regex: 5\n", "must be a string"),
    ("creation_rules:\n  - unencrypted_suffix: 5\n", "must be a string"),
    ("creation_rules: 7\n", "must be a list"),
    ("[" * 5000 + "]" * 5000 + "\n", ".sops.yaml"),
])
def test_a_broken_sops_yaml_is_a_clear_error_in_plan_and_apply(forge, text, fragment):
    forge.pull_request("broken-sops", lambda a: (a / ".sops.yaml").write_text(text), "sops: edit")
    ci = forge.clone("ci")
    for cmd in (("plan", "--now", T_WEB), ("apply", "--yes", "--now", T_WEB)):
        p = forge.pkic(*cmd, cwd=ci)
        assert p.returncode == 1 and fragment in p.stderr and "Traceback" not in p.stderr and "crashed" not in p.stderr, (cmd, p.stderr)
