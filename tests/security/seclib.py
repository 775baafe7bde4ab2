"""Shared machinery of the security suite: a forge (a main repo, a bare remote, pull
requests merged into main) and what CI runs after a merge, with its checks.

Every test plays one attacker's pull request: the attacker can write any file of the
repository (pki.yaml, policies/, csrs/, .sops.yaml, out/, out.seal, .pkic/, symlinks);
CI holds the age identity and the seal key (here: pkic.env's SOPS_AGE_KEY_FILE and
PKIC_SEAL_KEY_FILE) and runs ``pkic plan`` and ``pkic apply --yes --commit`` in a fresh
clone of main after the merge.

One template (``pkic init``, committed, applied with ``--commit`` at NOW, cloned bare)
is built once per session; each test gets its own copy of it (repos, remote and the
secrets), so no test sees another's keys or history.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import NOW, Pkic, make_pkic, unsealed
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from helpers import SOPS

T1 = "2026-11-28T12:00:00Z"  # a day after the first apply: nothing is due
T_OCSP = "2026-12-01T06:00:00Z"  # OCSP responses (4d, re-signed 2d before) are due
T_WEB = "2027-02-01T12:00:00Z"  # day 66: web and payments (90d, renew 30d before) are due
T_EXPIRED = "2027-03-27T12:00:00Z"  # both leaves expired (notAfter 2027-02-25)

API = "  api:\n    issuer: services-ca\n    dns: [api.example.com]\n"
WEB_DNS = "dns: [web.example.com, www.example.com]"


# --------------------------------------------------------------------------- git


def git(env: dict, repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(repo), *args], check=False, capture_output=True, text=True, env={**env, "LC_ALL": "C"})
    if check:
        assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------- what changed on disk


def tree_snapshot(repo: Path) -> dict[str, tuple]:
    """out/ and out.seal exactly as on disk, without following any symlink: path ->
    ("file", mode, bytes) or ("link", target) or ("other", mode)."""
    found: dict[str, tuple] = {}

    def one(path: Path) -> None:
        rel = str(path.relative_to(repo))
        st = os.lstat(path)
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_file():
            found[rel] = ("file", st.st_mode & 0o777, path.read_bytes())
        elif not path.is_dir():
            found[rel] = ("other", st.st_mode)

    if os.path.lexists(repo / "out.seal"):
        one(repo / "out.seal")
    if os.path.lexists(repo / "out"):
        one(repo / "out")
        for dirpath, dirs, files in os.walk(repo / "out"):
            for n in dirs + files:
                one(Path(dirpath) / n)
    return found


def serials(repo: Path) -> set[str]:
    """Every serial the state on disk records (empty if it cannot be read)."""
    try:
        body = json.loads((repo / "out" / "state.json").read_text())
        return {r["serial"] for recs in body["certificates"].values() for r in recs}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def read_state(repo: Path) -> dict:
    return json.loads((repo / "out" / "state.json").read_text())


def write_state(repo: Path, body: dict) -> None:
    (repo / "out" / "state.json").write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


def no_crash(proc: subprocess.CompletedProcess) -> None:
    """No traceback, no crash: exit 0 or 1, or `pkic check`'s UNKNOWN (3, its documented
    exit code when it cannot read the state, for Nagios and Prometheus)."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "pkic crashed" not in text, text
    unknown = proc.returncode == 3 and (proc.stdout.startswith("PKIC UNKNOWN - ") or '"status": "UNKNOWN"' in proc.stdout)
    assert proc.returncode in (0, 1) or unknown, (proc.returncode, text)


# --------------------------------------------------------------------------- the forge


@dataclass
class CiRun:
    """One CI job after a merge: plan, then apply --commit, in a fresh clone of main."""

    repo: Path
    plan: subprocess.CompletedProcess | None
    apply: subprocess.CompletedProcess
    head_before: str
    head_after: str
    out_before: dict
    out_after: dict
    serials_before: set
    serials_after: set
    porcelain: str


class Forge:
    def __init__(self, pkic: Pkic, root: Path):
        self.pkic = pkic
        self.root = root
        self.main = root / "main"
        self.origin = root / "origin.git"
        self.n = 0

    # ---- git
    def git(self, repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return git(self.pkic.env, repo, *args, check=check)

    def head(self, repo: Path | None = None, rev: str = "HEAD") -> str:
        return self.git(repo or self.main, "rev-parse", rev).stdout.strip()

    def porcelain(self, repo: Path) -> str:
        return self.git(repo, "status", "--porcelain=v1", "--untracked-files=all").stdout

    def clone(self, label: str, *extra: str) -> Path:
        self.n += 1
        where = self.root / f"{label}-{self.n}"
        subprocess.run(["git", "clone", "-q", *extra, str(self.origin) if not extra else f"file://{self.origin}", str(where)],
                       check=True, capture_output=True, env=self.pkic.env)
        return where

    def sync(self) -> None:
        """The maintainer's clone catches up with the remote (CI pushed)."""
        self.git(self.main, "pull", "-q", "--ff-only", "origin", "main")

    # ---- pull requests
    def branch(self, branch: str, change: Callable[[Path], None], message: str | None = None) -> Path:
        """The contributor's clone with ``change`` committed on ``branch`` and pushed."""
        a = self.clone(f"pr-{branch}")
        self.git(a, "switch", "-q", "-c", branch)
        change(a)
        self.git(a, "add", "-A")
        self.git(a, "commit", "-q", "-m", message or f"{branch}: a change")
        self.git(a, "push", "-q", "origin", branch)
        return a

    def merge(self, branch: str) -> str:
        """A maintainer merges the pull request into main (a merge commit) and pushes."""
        self.sync()
        self.git(self.main, "fetch", "-q", "origin")
        self.git(self.main, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{self.n} from contributor/{branch}", f"origin/{branch}")
        self.git(self.main, "push", "-q", "origin", "main")
        return self.head()

    def pull_request(self, branch: str, change: Callable[[Path], None], message: str | None = None) -> str:
        self.branch(branch, change, message)
        return self.merge(branch)

    def revert(self, merge: str) -> str:
        self.sync()
        self.git(self.main, "revert", "-m", "1", "--no-edit", merge)
        self.git(self.main, "push", "-q", "origin", "main")
        return self.head()

    # ---- CI
    def ci(self, now: str, *, plan: bool = True, env: dict | None = None, push: bool = True, args: tuple = ()) -> CiRun:
        repo = self.clone("ci")
        head_before, out_before, serials_before = self.head(repo), tree_snapshot(repo), serials(repo)
        plan_proc = self.pkic("plan", "--now", now, cwd=repo, env=env) if plan else None
        apply_proc = self.pkic("apply", "--yes", "--commit", "--now", now, *args, cwd=repo, env=env)
        run = CiRun(repo, plan_proc, apply_proc, head_before, self.head(repo), out_before, tree_snapshot(repo),
                    serials_before, serials(repo), self.porcelain(repo))
        if apply_proc.returncode == 0 and push and run.head_after != head_before:
            self.git(repo, "push", "-q", "origin", "HEAD:main")
            self.sync()
        return run

    def reviewed_change(self, branch: str, edit: Callable[[str], str], now: str) -> CiRun:
        """A reviewed pki.yaml change, merged, then applied and pushed by CI."""
        def change(a: Path) -> None:
            spec = a / "pki.yaml"
            spec.write_text(edit(spec.read_text()))

        self.pull_request(branch, change, f"pki: {branch}")
        run = self.ci(now)
        assert run.apply.returncode == 0, run.apply.stdout + run.apply.stderr
        return run


def assert_refused(run: CiRun, *needles: str, plan_needles: tuple[str, ...] | None = None) -> None:
    """CI's apply refused, naming every needle, and changed nothing: out/, out.seal,
    the state's serials, HEAD and the work tree are as the clone had them. CI's plan
    (no secret) exits 1 naming the first needle (or plan_needles)."""
    a = run.apply
    text = a.stdout + a.stderr
    assert a.returncode == 1, text
    for n in needles:
        assert n in a.stderr, f"{n!r} not in apply's output:\n{text}"
    assert "Traceback" not in text and "pkic crashed" not in text, text
    assert "Apply complete" not in a.stdout and "Committed" not in a.stdout, text
    assert run.out_after == run.out_before, sorted(k for k in set(run.out_after) | set(run.out_before) if run.out_after.get(k) != run.out_before.get(k))
    assert run.serials_after == run.serials_before  # nothing new signed
    assert run.head_after == run.head_before  # no commit
    assert run.porcelain == "", run.porcelain
    if run.plan is not None:
        p = run.plan
        ptext = p.stdout + p.stderr
        assert p.returncode == 1, ptext
        assert "Traceback" not in ptext and "pkic crashed" not in ptext, ptext
        for n in plan_needles if plan_needles is not None else needles[:1]:
            assert n in ptext, f"{n!r} not in plan's output:\n{ptext}"


def assert_applied(run: CiRun) -> None:
    """CI's apply signed, sealed and committed, and left a clean tree."""
    a = run.apply
    text = a.stdout + a.stderr
    assert a.returncode == 0, text
    assert "Traceback" not in text
    assert "sealed (seal serial" in a.stdout, text
    assert run.head_after != run.head_before, text
    assert run.porcelain == "", run.porcelain


def trailers(forge: Forge, repo: Path, rev: str = "HEAD") -> list[tuple[str, str]]:
    out = forge.git(repo, "log", "-1", "--format=%(trailers:only,unfold)", rev).stdout
    return [tuple(line.split(": ", 1)) for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """Built once: `pkic init`, committed on main, applied with --commit at NOW, cloned bare."""
    base = tmp_path_factory.mktemp("template")
    pk = make_pkic(base)
    main = base / "main"
    pk.ok("init", str(main))
    git(pk.env, main, "symbolic-ref", "HEAD", "refs/heads/main")
    git(pk.env, main, "add", "-A")
    git(pk.env, main, "commit", "-q", "-m", "pki: the initial spec")
    pk.ok("apply", "--yes", "--commit", "--now", NOW, cwd=main)
    assert git(pk.env, main, "status", "--porcelain").stdout == ""
    subprocess.run(["git", "clone", "-q", "--bare", str(main), str(base / "origin.git")], check=True, capture_output=True, env=pk.env)
    return base


@pytest.fixture
def forge(template: Path, tmp_path: Path) -> Forge:
    """This test's own copy of the template: main, its bare remote, CI's secrets."""
    pk = make_pkic(tmp_path)
    for sub in ("age", "seal"):
        shutil.copytree(template / "home" / sub, pk.home / sub)
    shutil.copytree(template / "main", tmp_path / "main", symlinks=True)
    shutil.copytree(template / "origin.git", tmp_path / "origin.git", symlinks=True)
    f = Forge(pk, tmp_path)
    f.git(f.main, "remote", "add", "origin", str(f.origin))
    f.git(f.main, "fetch", "-q", "origin")
    f.git(f.main, "branch", "-q", "--set-upstream-to=origin/main")
    return f


@pytest.fixture
def local(template: Path, tmp_path: Path) -> tuple[Pkic, Path]:
    """An unsealed local experiment: the applied template's files, no git, no out.seal,
    no seal key (the env of the returned runner has none)."""
    pk = make_pkic(tmp_path)
    shutil.copytree(template / "home" / "age", pk.home / "age")
    repo = tmp_path / "pki"
    shutil.copytree(template / "main", repo, symlinks=True, ignore=shutil.ignore_patterns(".git", ".pkic"))
    pk.env.update(unsealed(repo))
    return pk, repo


# --------------------------------------------------------------------------- the attacker's tools


def age_recipient(repo: Path) -> str:
    return (repo / ".sops.yaml").read_text().split("age: ")[1].split()[0]


def public_key_sha256(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sops_encrypt_key(repo: Path, name: str, key, key_type: str, scratch: Path) -> bytes:
    """What anyone can do with CI's *public* age recipient: encrypt their own key with
    the real sops binary, under the repo's creation rules, as out/keys/<name>.sops.yaml."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    doc = (f"name: {name}\nkey_type: {key_type}\npublic_key_sha256: {public_key_sha256(key.public_key())}\n"
           "private_key: |\n" + textwrap.indent(pem, "  "))
    scratch.mkdir(parents=True, exist_ok=True)
    plain = scratch / f"{name}.plain.yaml"
    plain.write_text(doc)
    env = {"PATH": os.environ["PATH"], "HOME": str(scratch)}  # the attacker has no identity
    proc = subprocess.run([SOPS, "encrypt", "--filename-override", f"out/keys/{name}.sops.yaml", "--input-type", "yaml",
                           "--output-type", "yaml", str(plain)], check=False, cwd=repo, env=env, capture_output=True)
    plain.unlink()
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"PRIVATE KEY" not in proc.stdout and age_recipient(repo).encode() in proc.stdout
    (repo / "out" / "keys" / f"{name}.sops.yaml").write_bytes(proc.stdout)
    return proc.stdout


def self_signed(key, cn: str, not_before: datetime, not_after: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA384()))


def replace_root(repo: Path, scratch: Path) -> dict:
    """The attacker's consistent rewrite of root-ca: their own P-384 key (encrypted to
    CI's recipient), their self-signed certificate in every file that holds it (pem,
    der, chain, trust bundle), and the state's record of it updated to match."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert = self_signed(key, "Example Root CA", datetime(2026, 11, 27, 11, 59, tzinfo=UTC), datetime(2036, 11, 24, 12, tzinfo=UTC))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    certs = repo / "out" / "certs"
    (certs / "root-ca.pem").write_bytes(pem)
    (certs / "root-ca.chain.pem").write_bytes(pem)
    (certs / "root-ca.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (repo / "out" / "trust" / "bundle.pem").write_bytes(pem)
    key_doc = sops_encrypt_key(repo, "root-ca", key, "ecdsa-p384", scratch)
    body = read_state(repo)
    rec = body["certificates"]["root-ca"][0]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    rec.update(serial=format(cert.serial_number, "x"), sha256=cert.fingerprint(hashes.SHA256()).hex(), public_key_sha256=public_key_sha256(key.public_key()),
               key_id=ski, issuer_key_id=ski, key_file_sha256=hashlib.sha256(key_doc).hexdigest())
    write_state(repo, body)
    return {"key": key, "cert": cert}


def seal_signed_bytes(body: dict) -> bytes:
    """pkic's seal format (it is open source): what the Ed25519 signature covers."""
    return b"pkic-seal-v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def ed25519_public_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def forge_seal(env: dict, repo: Path, key: Ed25519PrivateKey) -> dict:
    """Re-seal out/ as it now is with the attacker's own Ed25519 key: the next serial
    after the genuine seal, linked to it (prev), over git's tree id of out/."""
    old_raw = (repo / "out.seal").read_bytes()
    old = json.loads(old_raw)
    git(env, repo, "add", "-A", "out")
    tree = git(env, repo, "write-tree", "--prefix=out/").stdout.strip()
    body = {k: v for k, v in old.items() if k != "signature"}
    body.update(serial=old["serial"] + 1, prev=hashlib.sha256(old_raw).hexdigest(), out_tree=tree, public_key=ed25519_public_text(key),
                state_serial=read_state(repo)["serial"], sealed_at=T1)
    signature = base64.b64encode(key.sign(seal_signed_bytes(body))).decode()
    (repo / "out.seal").write_text(json.dumps({**body, "signature": signature}, sort_keys=True, indent=1) + "\n")
    return body


def edit_spec(text: str, *, add: str = "", replace: tuple[tuple[str, str], ...] = ()) -> str:
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    return text + add


# --------------------------------------------------------------------------- pkic serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`pkic serve` on 127.0.0.1 in a subprocess of ours; stopped by its own pid."""

    def __init__(self, pkic: Pkic, repo: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                     cwd=repo, env=pkic.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"pkic serve did not start: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
                time.sleep(0.05)

    def get(self, path: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers={"Content-Type": ctype} if ctype else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


