"""Parallel signing: long runs of new-key leaves are generated, signed and sealed in
forked worker processes (benchmarks/: a cold W10k apply ~20% faster on 2 cores).

The workload here is small, so PKIC_PARALLEL_MIN=1 forces the workers on; PKIC_JOBS=0
gives the serial path to compare with. What users see must not change: real sops
decrypts every key, openssl verifies every chain, pkilint passes, and nothing random
is shared between workers (keys, serials, SOPS data keys and age stanzas all differ).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from ruamel.yaml import YAML

from conftest import NOW, snapshot, write_spec
from helpers import active, assert_all_verify, assert_keys_match, pkilint_many, scan_for_leaks, sops_rules_before_team, state

PARALLEL = {"PKIC_PARALLEL_MIN": "1", "PKIC_JOBS": "2"}
SERIAL = {"PKIC_JOBS": "0"}


def spec(leaves: int) -> str:
    lines = [
        "version: 1",
        "defaults: {key: ecdsa-p256, subject: {O: Example Corp, C: US}}",
        "authorities:",
        "  root-ca: {subject: {CN: Test Root}, key: ecdsa-p384, lifetime: 10y, crl_url: http://pki.example.com/root.crl}",
        "  ca-a: {issuer: root-ca, subject: {CN: CA A}, lifetime: 3y, path_length: 0, crl_url: http://pki.example.com/a.crl}",
        "  ca-b: {issuer: root-ca, subject: {CN: CA B}, key: ed25519, lifetime: 3y, path_length: 0}",
        "certificates:",
    ]
    for i in range(leaves):
        ca = "ca-a" if i % 2 else "ca-b"
        key = "ecdsa-p384" if i % 5 == 0 else "ecdsa-p256"
        lines.append(f"  svc-{i:02d}: {{issuer: {ca}, key: {key}, dns: [svc-{i:02d}.example.com], lifetime: 90d}}")
    return "\n".join(lines) + "\n"


def key_docs(repo):
    return {p.name: YAML(typ="safe").load(p.read_text()) for p in sorted((repo / "out/keys").glob("*.sops.yaml"))}


@pytest.mark.slow
def test_parallel_apply_is_the_serial_apply(tmp_path, pkic):
    repos = {}
    for mode, env in (("parallel", PARALLEL), ("serial", SERIAL)):
        pkic.ok("init", str(tmp_path / mode))
        repo = repos[mode] = tmp_path / mode
        write_spec(repo, spec(30))
        out = pkic.ok("apply", "--yes", "--now", NOW, cwd=repo, env=env).stdout
        # the three authorities in the main process, every leaf in the workers
        assert ("33 issued (30 signed in 2 worker processes)" if mode == "parallel" else "33 issued;") in out, out
    par, ser = repos["parallel"], repos["serial"]
    # the same files, the same records in the same order (only keys and serials differ)
    assert sorted(snapshot(par / "out")) == sorted(snapshot(ser / "out"))
    strip = lambda recs: [{k: v for k, v in r.items() if k in ("name", "issuer", "subject", "key_type", "key_source", "spec_digest", "not_before", "not_after")} for r in recs]  # noqa: E731
    sp, ss = state(par)["certificates"], state(ser)["certificates"]
    assert list(sp) == list(ss) and all(strip(sp[n]) == strip(ss[n]) for n in sp)
    # nothing random is shared between the workers
    recs = [r for recs in sp.values() for r in recs]
    assert len({r["serial"] for r in recs}) == len(recs)
    assert len({r["public_key_sha256"] for r in recs}) == len(recs)
    docs = key_docs(par)
    stanzas = [a["enc"] for d in docs.values() for a in d["sops"]["age"]]
    ivs = [m for d in docs.values() for m in re.findall(r"iv:([^,]+),", d["private_key"])]
    assert len(set(stanzas)) == len(stanzas) == len(docs) and len(set(ivs)) == len(ivs) == len(docs)
    # the real sops decrypts every key and it matches its certificate; chains verify
    assert_keys_match(par, pkic.env)
    assert_all_verify(par)
    assert scan_for_leaks(par, []) == []
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=par).returncode == 0


@pytest.mark.slow
def test_parallel_leaves_pass_pkilint(tmp_path, pkic):
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    write_spec(repo, spec(6))
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo, env=PARALLEL)
    names = [f"svc-{i:02d}" for i in range(6)]
    reports = pkilint_many([["lint_pkix_cert", str(repo / f"out/certs/{name}.pem")] for name in names])  # one linter process
    bad = {
        name: [(f["severity"], f["code"]) for r in report["results"] for f in r["finding_descriptions"] if f["severity"] in ("FATAL", "ERROR", "WARNING")]
        for name, report in zip(names, reports, strict=True)
    }
    assert bad == {name: [] for name in names}


def faulty_apply(tmp_path, pkic, fault: str, **popen) -> tuple:
    """A fresh repo of 30 leaves and an apply with PKIC_FAULT=fault, workers forced on.
    The timeout proves no worker hangs on (it would keep the pipes open)."""
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    write_spec(repo, spec(30))
    env = {**pkic.env, **PARALLEL, "PKIC_FAULT": fault}
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "apply", "--yes", "--now", NOW], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60, **popen)
    return repo, proc


@pytest.mark.slow
def test_killed_parallel_apply_is_finished(tmp_path, pkic):
    """Killed in the middle of a worker run (as SIGKILL would): the workers go too, the
    next plan reports it, the next apply finishes it, and every file is whole."""
    repo, proc = faulty_apply(tmp_path, pkic, "journal:12")
    assert proc.returncode == 137, proc.stderr
    assert not (repo / "out/state.json").exists()
    # at once: the workers died with the parent and hold no lock
    again = pkic("apply", "--yes", "--now", NOW, cwd=repo, env=PARALLEL)
    assert again.returncode == 0, again.stderr
    assert "Finished an interrupted apply" in again.stderr and "signed in 2 worker processes" in again.stdout
    assert len(active(repo)) == 33
    assert not (repo / ".pkic/journal.jsonl").exists() and not list((repo / "out").rglob(".*tmp-*"))
    assert_keys_match(repo, pkic.env)
    assert_all_verify(repo)
    assert pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=repo).returncode == 0


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_apply_cleanly(tmp_path, pkic):
    """A worker killed (the OOM killer, kill -9) must not hang the apply: it stops with
    one clear error, what was signed before is recorded, and the next apply finishes."""
    repo, proc = faulty_apply(tmp_path, pkic, "worker:3")
    assert proc.returncode == 1 and "a signing worker process died" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert {"root-ca", "ca-a"} <= set(active(repo)) and len(active(repo)) < 33  # its chunk and later ones are lost
    assert_all_verify(repo)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo, env=PARALLEL)
    assert len(active(repo)) == 33
    assert_keys_match(repo, pkic.env)


@pytest.mark.slow
def test_ctrl_c_in_a_parallel_apply(tmp_path, pkic):
    """Ctrl-C (SIGINT to the process group, sent at the 12th step): one line, no worker
    tracebacks, the steps done are recorded and verify, and the next apply finishes."""
    repo, proc = faulty_apply(tmp_path, pkic, "interrupt:12", start_new_session=True)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Interrupted."), proc.stderr
    assert "Traceback" not in proc.stderr and "Worker" not in proc.stderr, proc.stderr
    assert 12 <= len(active(repo)) < 33 and not (repo / ".pkic/journal.jsonl").exists()  # the 12th step too
    assert_all_verify(repo)
    assert "signed in 2 worker processes" in pkic.ok("apply", "--yes", "--now", NOW, cwd=repo, env=PARALLEL).stdout
    assert len(active(repo)) == 33
    assert_keys_match(repo, pkic.env)


def test_a_sops_rule_that_fails_is_one_clear_error_before_anything_is_signed(tmp_path, pkic):
    """sops failing for one key's rule: found by the trial encryption before the first
    signature (each rule is tried once), the same report on the serial and the parallel
    path, and nothing issued (a failure half-way would leave certificates signed)."""
    seen = {}
    for mode, env in (("parallel", PARALLEL), ("serial", SERIAL)):
        pkic.ok("init", str(tmp_path / mode))
        repo = tmp_path / mode
        sops_rules_before_team(repo, "  - path_regex: ^out/keys/svc-07\\.sops\\.yaml$\n    pgp: '0000000000000000000000000000000000000000'\n")
        write_spec(repo, spec(12))
        p = pkic("apply", "--yes", "--now", NOW, cwd=repo, env=env)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert "sops could not encrypt out/keys/svc-07.sops.yaml" in p.stderr and "tried before signing anything" in p.stderr, p.stderr
        assert not (repo / "out" / "state.json").exists() and not (repo / ".pkic" / "journal.jsonl").exists()
        # the same report (up to gpg's own chatter, which differs on a first run)
        seen[mode] = [line.split(" with master key")[0] for line in p.stderr.splitlines() if "svc-07" in line]
    assert seen["parallel"] == seen["serial"]


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"PKIC_JOBS": "many"}, {"PKIC_PARALLEL_MIN": "some"}, {"PKIC_PARALLEL_MIN": "0", "PKIC_JOBS": "1"}])
def test_bad_knob_values(applied, pkic, env):
    write_spec(applied, (applied / "pki.yaml").read_text().replace("www.example.com]", "www.example.com, x.example.com]"))
    before = snapshot(applied / "out")
    p = subprocess.run([sys.executable, "-m", "compiler.cli", "apply", "--yes", "--now", NOW], cwd=applied, env={**pkic.env, **env},
                       capture_output=True, text=True, timeout=60)
    if env.get("PKIC_PARALLEL_MIN") == "0":  # taken as 1, not an endless loop
        assert p.returncode == 0 and "signed in 1 worker process" in p.stdout, p.stderr
        return
    assert p.returncode == 1 and list(env)[0] in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert snapshot(applied / "out") == before
