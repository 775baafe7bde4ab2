"""The in-process SOPS writer and reader, judged by the real sops binary both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyrage
import pytest

from compiler.keys import keystore
from compiler.keys import sops_age
from compiler.model.keytype import KeyType
from helpers import SOPS


def rules_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / ".sops.yaml"
    p.write_text(body)
    return p


@pytest.fixture
def ident(tmp_path, monkeypatch):
    i = pyrage.x25519.Identity.generate()
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{i}\n")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(keys))
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    return i


def sops_decrypt(path: Path, key: str = "private_key", env=None) -> subprocess.CompletedProcess:
    return subprocess.run([SOPS, "decrypt", "--extract", f'["{key}"]', str(path)], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("regex,mac_only", [("^private_key$", False), (None, False), ("^private_key$", True)], ids=["encrypted_regex", "encrypt-all", "mac_only_encrypted"])
def test_in_process_files_decrypt_with_real_sops(tmp_path, ident, regex, mac_only):
    rule = sops_age.AgeRule((str(ident.to_public()),), regex, None, mac_only)
    handle = keystore.generate(KeyType.ECDSA_P256)
    fields = keystore.key_fields("web", handle)
    doc = sops_age.write_document(fields, rule)
    f = tmp_path / "web.sops.yaml"
    f.write_text(doc)
    proc = sops_decrypt(f)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == dict(fields)["private_key"]
    # the readable fields stay readable (or are encrypted when no regex selects)
    assert ("name: web" in doc) == (regex is not None)
    assert sops_age.read_value(f.read_text(), "private_key", sops_age.identities()) == dict(fields)["private_key"]
    full = subprocess.run([SOPS, "decrypt", str(f)], capture_output=True, text=True)
    assert full.returncode == 0 and "public_key_sha256" in full.stdout


def test_two_recipients_each_decrypt(tmp_path, monkeypatch):
    a, b = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    rule = sops_age.AgeRule((str(a.to_public()), str(b.to_public())), "^private_key$", None, False)
    f = tmp_path / "k.sops.yaml"
    f.write_text(sops_age.write_document([("name", "k"), ("private_key", "secret\n")], rule))
    for ident in (a, b):
        keys = tmp_path / "one.txt"
        keys.write_text(f"{ident}\n")
        monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(keys))
        assert sops_decrypt(f).stdout == "secret\n"
        assert sops_age.read_value(f.read_text(), "private_key", sops_age.identities()) == "secret\n"


def test_files_written_by_sops_load_in_process(tmp_path, ident):
    cfg = rules_file(tmp_path, f"creation_rules:\n  - path_regex: .*\n    encrypted_regex: ^private_key$\n    age: {ident.to_public()}\n")
    handle = keystore.generate(KeyType.ED25519)
    proc = subprocess.run([SOPS, "--config", str(cfg), "encrypt", "--filename-override", "out/keys/x.sops.yaml", "--input-type", "yaml", "--output-type", "yaml"],
                          input=keystore.key_document("x", handle), capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    f = tmp_path / "x.sops.yaml"
    f.write_text(proc.stdout)
    assert sops_age.read_value(f.read_text(), "private_key", sops_age.identities()) == dict(keystore.key_fields("x", handle))["private_key"]


def test_tampering_is_caught_by_both(tmp_path, ident):
    rule = sops_age.AgeRule((str(ident.to_public()),), "^private_key$", None, False)
    f = tmp_path / "t.sops.yaml"
    f.write_text(sops_age.write_document([("name", "t"), ("private_key", "secret\n")], rule).replace("name: t", "name: u"))
    assert sops_decrypt(f).returncode != 0
    with pytest.raises(ValueError, match="MAC"):
        sops_age.read_value(f.read_text(), "private_key", sops_age.identities())


def test_wrong_identity_falls_back(tmp_path, ident, monkeypatch):
    rule = sops_age.AgeRule((str(pyrage.x25519.Identity.generate().to_public()),), "^private_key$", None, False)
    f = tmp_path / "w.sops.yaml"
    f.write_text(sops_age.write_document([("private_key", "secret\n")], rule))
    assert sops_age.read_value(f.read_text(), "private_key", sops_age.identities()) is None  # the binary then reports it


@pytest.mark.parametrize("rule,path,age_only", [
    ("- path_regex: ^out/keys/.*\\.sops\\.yaml$\n    age: AGE\n", "out/keys/a.sops.yaml", True),
    ("- path_regex: ^other/\n    age: AGE\n  - age: AGE\n", "out/keys/a.sops.yaml", True),
    ("- path_regex: ^out/keys/\n    age: AGE\n    shamir_threshold: 2\n", "out/keys/a.sops.yaml", False),
    ("- path_regex: ^out/keys/\n    key_groups:\n      - age: [AGE]\n", "out/keys/a.sops.yaml", False),
    ("- path_regex: ^out/keys/\n    kms: arn:aws:kms:eu-west-1:1:key/x\n    age: AGE\n", "out/keys/a.sops.yaml", False),
    ("- path_regex: ^out/keys/\n    pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4\n", "out/keys/a.sops.yaml", False),
    ("- path_regex: ^nothing/\n    age: AGE\n", "out/keys/a.sops.yaml", False),
], ids=["age", "second-rule", "shamir", "key-groups", "kms-too", "pgp", "no-match"])
def test_only_plain_age_rules_are_written_in_process(tmp_path, rule, path, age_only):
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    cfg = rules_file(tmp_path, "creation_rules:\n  " + rule.replace("AGE", recipient))
    got = sops_age.rule_for(cfg, path)
    assert (got is not None) == age_only
    if got:
        assert got.recipients == (recipient,)


def test_apply_writes_in_process_and_sops_reads_it(applied, pkic):
    doc = (applied / "out/keys/web.sops.yaml").read_text()
    assert f"version: {sops_age.SOPS_VERSION}" in doc
    proc = subprocess.run([SOPS, "decrypt", "--extract", '["private_key"]', "out/keys/web.sops.yaml"], cwd=applied, env=pkic.env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("-----BEGIN PRIVATE KEY-----")
