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
