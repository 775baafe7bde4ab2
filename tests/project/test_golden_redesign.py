"""Golden outputs recorded before the typed-core redesign (issue 14): for fixed inputs,
clock, serial source and keys, every file in out/, the state, a journal, the plan as
JSON and markdown, and the commit messages of three applies. The redesign must keep
them byte-identical (the planned cleanup publications excepted, said in the test that
changed them).

The randomness is fixed by ``tests/golden/redesign/driver.py`` (it patches the
randomness sources, not pkic). What stays random is masked, and only that: the SOPS
envelope of each key file (age's ephemeral key, the data key, the MAC and the
ciphertext; the readable fields are kept) and the key files' hashes; and in each OCSP
response its producedAt, which cryptography's builder takes from the wall clock (no
API sets it), so its signature and hash (in the state, the seal and the commit
trailer) too. An OCSP response is compared as its fields, every one but those two.

Regenerate with ``PKIC_UPDATE_GOLDEN=1`` (then read the diff before committing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent.parent / "golden" / "redesign"
DRIVER = HERE / "driver.py"
REPO_ROOT = Path(__file__).resolve().parents[2]

SPEC = """\
version: 1
defaults:
  key: ecdsa-p256
  subject: {O: Golden Corp, C: US}
authorities:
  root-ca:
    subject: {CN: Golden Root CA}
    key: ed25519
    lifetime: 10y
    crl_url: http://pki.golden.test/crl/root-ca.crl
    ocsp_url: http://pki.golden.test/ocsp
  services-ca:
    issuer: root-ca
    subject: {CN: Golden Services CA}
    key: ed25519
    lifetime: 3y
    path_length: 0
    name_constraints: {permitted_dns: [svc.internal, golden.test]}
    crl_url: http://pki.golden.test/crl/services-ca.crl
    ocsp_url: http://pki.golden.test/ocsp
certificates:
  web:
    issuer: services-ca
    profile: server
    dns: [web.golden.test, www.golden.test]
    ip: [10.0.0.5]
    lifetime: 90d
    renew_before: 30d
  api:
    issuer: services-ca
    profile: server
    dns: [api.svc.internal]
    lifetime: 60d
  payments:
    issuer: services-ca
    profile: client
    key: ecdsa-p384
    subject: {CN: payments}
    uri: [spiffe://golden.test/payments]
  mesh:
    issuer: services-ca
    profile: peer
    dns: [mesh.svc.internal]
    lifetime: 30d
"""

EDIT = [  # the second apply: a SAN added, one revoked, one renamed, one new
    ("    dns: [web.golden.test, www.golden.test]\n", "    dns: [web.golden.test, www.golden.test, static.golden.test]\n"),
    ("  payments:\n", "  payments:\n    revoke: key_compromise\n"),
    ("  mesh:\n", "  mesh2:\n"),
]
ADDED = """  db:
    issuer: services-ca
    profile: client
    subject: {CN: db}
moved:
  - {from: mesh, to: mesh2}
"""

STEPS = [  # seed, --now, spec
    ("a1", "2026-11-27T12:00:00Z", "first"),
    ("a2", "2026-11-28T12:00:00Z", "edited"),
    ("a3", "2027-01-20T12:00:00Z", "edited"),  # renewals, CRLs and responses due
]

ENC = re.compile(r"ENC\[[^\]]*\]")


def _run(env: dict, cwd: Path, seed: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *args], cwd=cwd, env={**env, "PKIC_GOLDEN_SEED": seed}, capture_output=True, text=True
    )
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def _key_file(text: str) -> str:
    """A SOPS key file with its random envelope masked: the readable fields stay."""
    head = text.split("\nsops:", 1)[0]
    return ENC.sub("ENC[masked]", head) + "\nsops: masked\n"


def _state(text: str) -> str:
    text = re.sub(r'"key_file_sha256": "[0-9a-f]{64}"', '"key_file_sha256": "masked"', text)
    return re.sub(r'("ocsp": \{[^{}]*"sha256": )"[0-9a-f]{64}"', r'\1"masked"', text)


def _ocsp(data: bytes) -> str:
    """An OCSP response as its fields: all but producedAt and the signature."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    r = ocsp.load_der_ocsp_response(data)
    if r.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"status {r.response_status}"
    fields = [
        f"responder {r.responder_key_hash.hex() if r.responder_key_hash else r.responder_name}",
        f"signature algorithm {r.signature_algorithm_oid.dotted_string}",
        f"extensions {[e.oid.dotted_string for e in r.extensions]}",
        f"certificates {[hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in r.certificates]}",
    ]
    for one in r.responses:
        fields.append(
            f"{one.serial_number:x} {one.issuer_key_hash.hex()} {one.issuer_name_hash.hex()} {one.hash_algorithm.name} "
            f"{one.certificate_status} {one.this_update_utc} {one.next_update_utc} {one.revocation_time_utc} {one.revocation_reason}"
        )
    del hashes
    return "\n".join(fields) + "\n"


def _mask_seal(text: str) -> str:
    text = re.sub(r"(Committed \d+ file\(s\) as )[0-9a-f]+", r"\1masked", text)
    return re.sub(r"(Pki-Seal: \d+ )[0-9a-f]{64}", r"\1masked", text)


def _journal(text: str) -> str:
    """The journal, one step a line, with the same masks as out/."""
    import base64

    lines = []
    for line in text.splitlines():
        op = json.loads(line)
        if isinstance(op.get("seal"), str):
            op["seal"] = "masked"  # the seal's digest: it hashes key files and OCSP responses
        if isinstance(op.get("tree"), str):
            op["tree"] = "masked"  # the sealed tree's id: it hashes key files and OCSP responses too
        if "key_doc" in op:
            op["key_doc"] = _key_file(op["key_doc"])
        if isinstance(op.get("listing"), dict):
            op["listing"] = {
                k: ("masked" if k.startswith(("out/keys/", "out/ocsp/", "out/state.json")) else v) for k, v in op["listing"].items()
            }
        if op.get("op") == "ocsp" and op.get("der"):
            op["der"] = _ocsp(base64.b64decode(op["der"]))
        if isinstance(op.get("info"), dict) and op.get("op") == "ocsp":
            op["info"]["sha256"] = "masked"
        if isinstance(op.get("record"), dict) and "key_file_sha256" in op["record"]:
            op["record"]["key_file_sha256"] = "masked"
        lines.append(json.dumps(op, sort_keys=True, indent=1))
    return "\n".join(lines) + "\n"


def _snapshot(repo: Path) -> dict[str, str]:
    """Every file under out/ (text as text, binary as its sha256), the seal masked where
    it hashes key files."""
    out: dict[str, str] = {}
    for p in sorted((repo / "out").rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(repo).as_posix()
        data = p.read_bytes()
        if rel.startswith("out/keys/"):
            out[rel] = _key_file(data.decode())
        elif rel == "out/state.json":
            out[rel] = _state(data.decode())
        elif rel.startswith("out/ocsp/"):
            out[rel] = _ocsp(data)
        elif rel.endswith((".pem", ".json", ".yaml", ".md", ".txt")):
            out[rel] = data.decode()
        else:
            out[rel] = "sha256:" + hashlib.sha256(data).hexdigest()
    return out


def _mask_run(text: str) -> str:
    text = re.sub(r"/tmp/\S+", "<tmp>", text)
    return re.sub(r"seal serial \d+, state serial \d+, key ed25519:\S+", "seal <masked>", text)


def _scenario(tmp: Path, spec: str = SPEC, hash_seed: str = "0") -> dict:
    home = tmp / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKIC_", "SOPS_", "GIT_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        PKIC_TIME_TRAVEL="1",
        PKIC_JOBS="0",
        SOPS_AGE_KEY_FILE=str(home / "age.txt"),
        PKIC_SEAL_KEY_FILE=str(home / "seal.key"),
        GIT_AUTHOR_NAME="Golden",
        GIT_AUTHOR_EMAIL="golden@example.test",
        GIT_COMMITTER_NAME="Golden",
        GIT_COMMITTER_EMAIL="golden@example.test",
        GIT_AUTHOR_DATE="2026-11-27T12:00:00Z",
        GIT_COMMITTER_DATE="2026-11-27T12:00:00Z",
        PYTHONPATH=str(REPO_ROOT),
        PYTHONHASHSEED=hash_seed,
    )
    repo = tmp / "pki"
    _run(env, tmp, "init", "init", str(repo))
    (repo / "pki.yaml").write_text(spec)
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "golden spec"], cwd=repo, env=env, check=True, capture_output=True)
    edited = spec
    for old, new in EDIT:
        assert old in edited
        edited = edited.replace(old, new, 1)
    edited = edited.replace("moved:\n", "") + ADDED
    record: dict = {}
    for seed, now, which in STEPS:
        if which == "edited" and (repo / "pki.yaml").read_text() != edited:
            (repo / "pki.yaml").write_text(edited)
            subprocess.run(["git", "commit", "-qam", "edit"], cwd=repo, env=env, check=True, capture_output=True)
        step: dict = {}
        step["plan.json"] = re.sub(
            r'"digest": "[0-9a-f]{64}"', '"digest": "masked"', _run(env, repo, seed, "plan", "--json", "--now", now).stdout
        )
        step["plan.md"] = _mask_run(_run(env, repo, seed, "plan", "--format", "markdown", "--now", now).stdout)
        step["plan.txt"] = _mask_run(_run(env, repo, seed, "plan", "--now", now).stdout)
        if seed == "a2":  # a journal: the apply is killed after its 2nd issued step, then finished
            killed = _run({**env, "PKIC_FAULT": "journal:2"}, repo, seed, "apply", "--yes", "--now", now, ok=False)
            assert killed.returncode != 0
            step["journal.jsonl"] = _journal((repo / ".pkic" / "journal.jsonl").read_text())
            step["apply.txt"] = _mask_seal(_mask_run(_run(env, repo, seed + "r", "apply", "--yes", "--commit", "--now", now).stdout))
        else:
            step["apply.txt"] = _mask_seal(_mask_run(_run(env, repo, seed, "apply", "--yes", "--commit", "--now", now).stdout))
        step["commit"] = _mask_seal(
            subprocess.run(["git", "log", "-1", "--format=%B"], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
        )
        step["out"] = _snapshot(repo)
        record[seed] = step
    return record


def _flatten(record: dict) -> dict[str, str]:
    flat: dict[str, str] = {}
    for seed, step in record.items():
        for k, v in step.items():
            if k == "out":
                for rel, text in v.items():
                    flat[f"{seed}/{rel}"] = text
            else:
                flat[f"{seed}/{k}"] = v
    return flat


@pytest.mark.slow
def test_outputs_match_the_goldens_recorded_before_the_redesign(tmp_path):
    flat = _flatten(_scenario(tmp_path))
    expected_dir = HERE / "expected"
    if os.environ.get("PKIC_UPDATE_GOLDEN"):
        import shutil

        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in flat.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text)
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text() for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(flat) == sorted(expected), "files differ: " + str(sorted(set(flat) ^ set(expected)))
    for rel in expected:
        assert flat[rel] == expected[rel], f"{rel} differs from its golden"


def _permuted(text: str, seed: int) -> str:
    """The same spec written differently: the top-level sections and every mapping's keys
    in another order (certificates stay last, where the scenario appends to them; a
    subject keeps its order, which is the order of the RDNs in the name)."""
    import io
    import random

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    rng = random.Random(seed)
    yaml = YAML()
    yaml.width = 4096

    def shuffle(node):
        if isinstance(node, dict):
            keys = list(node)
            rng.shuffle(keys)
            if "certificates" in keys:
                keys.remove("certificates")
                keys.append("certificates")
            fresh = CommentedMap()
            for k in keys:
                fresh[k] = node[k] if k == "subject" else shuffle(node[k])
            if hasattr(node, "fa") and node.fa.flow_style():
                fresh.fa.set_flow_style()
            return fresh
        return node

    data = shuffle(yaml.load(text))
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


@pytest.mark.slow
def test_the_scenario_is_deterministic(tmp_path):
    """Two runs give the same record: what the goldens hold is not left to chance. The
    second runs with another PYTHONHASHSEED (so set and dict-of-str orders differ) and the
    spec written in another order (sections, entries, fields): the output may depend on
    what the spec says, not on how it is laid out or on the process's hash seed."""
    permuted = _permuted(SPEC, seed=7)
    assert permuted != SPEC and yaml_equal(permuted, SPEC)
    a = _flatten(_scenario(tmp_path / "a"))
    b = _flatten(_scenario(tmp_path / "b", spec=permuted, hash_seed="4242"))
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    assert not diff, diff


def yaml_equal(x: str, y: str) -> bool:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)  # as pkic reads it (ruamel's C scanner refuses spiffe:// in [ ])
    return json.dumps(yaml.load(x), sort_keys=True) == json.dumps(yaml.load(y), sort_keys=True)
