"""Apply details: any .sops.yaml rule works (key groups, Shamir), only the keys needed
are decrypted, the sops binary is required only by apply, confirmation on a terminal,
and the README's first command works as written."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from conftest import NOW, REPO_ROOT, snapshot, unsealed, write_spec
from helpers import active, assert_all_verify, assert_keys_match, sops_rules_before_team


def add_leaf(repo: Path, name: str, issuer: str = "services-ca") -> None:
    text = (repo / "pki.yaml").read_text()
    text += f"  {name}:\n    issuer: {issuer}\n    dns: [{name}.example.com]\n"
    write_spec(repo, text)


@pytest.mark.slow
def test_shamir_key_groups_are_honoured(repo, pkic):
    """A root key split 2-of-2 between two identities: one identity alone cannot sign."""
    ids = [pyrage.x25519.Identity.generate() for _ in range(2)]
    sops_rules_before_team(
        repo,
        "  - path_regex: ^out/keys/root-ca\\.sops\\.yaml$\n"
        "    encrypted_regex: ^private_key$\n"
        "    shamir_threshold: 2\n"
        "    key_groups:\n"
        f"      - age: [{ids[0].to_public()}]\n"
        f"      - age: [{ids[1].to_public()}]\n",
    )
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    root_doc = (repo / "out/keys/root-ca.sops.yaml").read_text()
    assert "shamir_threshold: 2" in root_doc and str(ids[0].to_public()) in root_doc and str(ids[1].to_public()) in root_doc
    # a change that needs the root key to sign: a second intermediate
    text = (repo / "pki.yaml").read_text().replace("certificates:\n", "  ops-ca:\n    issuer: root-ca\n    subject: {CN: Ops CA}\n    lifetime: 1y\ncertificates:\n")
    write_spec(repo, text)
    team_file = Path(pkic.env["SOPS_AGE_KEY_FILE"])
    one = repo.parent / "one.txt"
    one.write_text(team_file.read_text() + f"{ids[0]}\n")
    before = snapshot(repo / "out")
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo, env={"SOPS_AGE_KEY_FILE": str(one)})
    assert p.returncode == 1 and "could not decrypt the key of 'root-ca'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and snapshot(repo / "out") == before
    both = repo.parent / "both.txt"
    both.write_text(team_file.read_text() + f"{ids[0]}\n{ids[1]}\n")
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo, env={"SOPS_AGE_KEY_FILE": str(both)})
    assert "ops-ca" in active(repo)
    assert_all_verify(repo)
    assert_keys_match(repo, {**pkic.env, "SOPS_AGE_KEY_FILE": str(both)})


def test_only_the_needed_authority_keys_are_decrypted(applied, pkic):
    # the root key is not needed to add a leaf under services-ca: make it undecryptable
    # (in an unsealed repo: a sealed one refuses a key file that is not the sealed one)
    env = unsealed(applied)
    (applied / "out/keys/root-ca.sops.yaml").write_text("not: a sops file\n")
    add_leaf(applied, "extra")
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert "extra" in active(applied)
    # a leaf that needs no authority key at all is impossible, but a renewal of
    # services-ca (same key) needs only the root's: now it fails, clearly, with nothing written
    before = snapshot(applied / "out")
    p = pkic("apply", "--yes", "--now", "2028-12-01T00:00:00Z", cwd=applied, env=env)
    assert p.returncode == 1 and "root-ca" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert snapshot(applied / "out") == before


def test_missing_sops_binary_only_matters_to_apply(applied, pkic):
    """Plain age rules are written in-process; a rule that needs the binary (here key
    groups) fails clearly without it, before anything is written."""
    add_leaf(applied, "extra")
    team = (applied / ".sops.yaml").read_text().split("age: ")[1].strip()
    (applied / ".sops.yaml").write_text(
        "creation_rules:\n  - path_regex: ^out/keys/.*\\.sops\\.yaml$\n    encrypted_regex: ^private_key$\n"
        f"    key_groups:\n      - age: [{team}]\n"
    )
    env = {"PKIC_SOPS": str(applied / "no-such-sops")}
    assert pkic("plan", "--now", NOW, cwd=applied, env=env).returncode == 0
    before = snapshot(applied / "out")
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert p.returncode == 1 and "sops" in p.stderr and "Traceback" not in p.stderr
    assert snapshot(applied / "out") == before


def test_plain_age_rules_need_no_sops_process(applied, pkic):
    """The in-process writer and reader handle plain age rules entirely."""
    add_leaf(applied, "extra")
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied, env={"PKIC_SOPS": str(applied / "no-such-sops")})
    assert_keys_match(applied, pkic.env)


def _run_on_terminal(args: list[str], cwd: Path, env: dict, answer: bytes) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"Apply these changes?" in output:
            os.write(master, answer)
            answered = True
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, output.decode(errors="replace")


@pytest.mark.slow
def test_apply_asks_on_a_terminal(applied, pkic):
    add_leaf(applied, "extra")
    before = snapshot(applied / "out")
    rc, text = _run_on_terminal(["apply", "--now", NOW], applied, pkic.env, b"n\n")
    assert rc == 1 and "Apply these changes?" in text and "Cancelled" in text
    assert snapshot(applied / "out") == before
    rc, text = _run_on_terminal(["apply", "--now", NOW], applied, pkic.env, b"y\n")
    assert rc == 0 and "Apply complete" in text, text
    assert "extra" in active(applied)


@pytest.mark.slow
def test_readme_first_command_runs_as_written(tmp_path, pkic):
    readme = (REPO_ROOT / "README.md").read_text()
    first = re.search(r"```sh\n# [^\n]*\n([^\n]+)\n", readme).group(1)
    install = "python3 -m pip install . && "
    assert first.startswith(install)
    # pkic is already installed here; run the rest exactly, with pkic on PATH
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pkic").write_text(f"#!/bin/sh\nexec {sys.executable} -m compiler.cli \"$@\"\n")
    (bindir / "pkic").chmod(0o755)
    # as on a fresh machine: no seal key named anywhere, so init puts it beside the age identity
    env = {**{k: v for k, v in pkic.env.items() if k != "PKIC_SEAL_KEY_FILE"}, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", first[len(install):]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 certificates, chains, CRLs and keys verified" in proc.stdout
    assert "sealed (seal serial 2)" in proc.stdout and "seal: sealed" in proc.stdout
    made = [p for p in tmp_path.rglob("pkic-seal.key")]
    assert len(made) == 1 and (made[0].parent / "age-keys.txt").is_file() and made[0].stat().st_mode & 0o777 == 0o600
