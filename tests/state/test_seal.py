"""The seal's parts, each against an independent judge: the tree id of out/ against git's
own `write-tree`; the seal file's parser against damaged and forged documents; the
invariants; and the commands around it (init, status, plan, check) as a user meets them.
The attacks as pull requests live in tests/security/."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import NOW, init_applied_committed, snapshot, unsealed
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compiler.model.errors import PkicError
from compiler.state import EMPTY_TREE, Invariants, State, parse_seal, public_text, render_seal, scan_out, tree_id


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


# --------------------------------------------------------------------------- the tree id, judged by git


TRICKY = {
    # git sorts a directory as if its name ended in '/': "a.b" < "a/" < "a0", and "a-" < "a.b"
    "out/a.b": b"file a.b\n",
    "out/a/x.pem": b"in dir a\n",
    "out/a0": b"a0\n",
    "out/a-": b"dash\n",
    "out/deep/er/still/file.der": bytes(range(256)),
    "out/empty": b"",
    "out/certs/web.pem": b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
}


@pytest.mark.parametrize("algo", ["sha1", "sha256"])
def test_tree_id_is_gits_write_tree(tmp_path, algo):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", f"--object-format={algo}")
    for rel, data in TRICKY.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    (repo / "out/run.sh").write_bytes(b"#!/bin/sh\n")
    (repo / "out/run.sh").chmod(0o755)
    listing = scan_out(repo, algo)
    git(repo, "add", "-A", "out")
    assert tree_id(listing, algo) == git(repo, "write-tree", "--prefix=out/")
    assert listing["out/run.sh"][0] == "100755" and listing["out/a.b"][0] == "100644"
    # the empty tree, and a changed byte changes the id
    empty = subprocess.run(["git", "-C", str(repo), "hash-object", "-t", "tree", "--stdin"], input=b"", capture_output=True, check=True).stdout
    assert tree_id({}, algo) == EMPTY_TREE[algo] == empty.decode().strip()
    (repo / "out/a.b").write_bytes(b"file a.B\n")
    assert tree_id(scan_out(repo, algo), algo) != tree_id(listing, algo)


@pytest.mark.parametrize("algo", ["sha1", "sha256"])
def test_a_large_file_is_hashed_as_it_is_read(tmp_path, monkeypatch, algo):
    """A file over the streaming size (1 MiB; 64 bytes here) is hashed in pieces, not held
    whole: its blob id is still git's; and the scan takes any file the state may be (at
    100,000 certificates renewed twice the state is 280 MB: a bound below the state's
    made pkic refuse the state it had just written)."""
    from compiler.state import MAX_STATE, outtree

    assert outtree.MAX_OUT_FILE >= MAX_STATE
    monkeypatch.setattr(outtree, "STREAM", 64)
    repo = tmp_path / "r"
    (repo / "out").mkdir(parents=True)
    git(repo, "init", "-q", f"--object-format={algo}")
    for name, size in (("small", 10), ("edge", 64), ("over", 65), ("large", 64 * 50 + 7)):
        (repo / "out" / name).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    listing = scan_out(repo, algo)
    for name in ("small", "edge", "over", "large"):
        assert listing[f"out/{name}"][1] == git(repo, "hash-object", f"out/{name}")


@pytest.mark.parametrize("size", [10, 64, 65, 64 * 50 + 7])
@pytest.mark.parametrize("change", [-2, -1, 1, 2, 5000])
def test_a_file_that_changes_size_while_read_is_refused(tmp_path, monkeypatch, size, change):
    """A file whose size is not the one its descriptor had when pkic looked (it grew or
    shrank in between) is refused, small or streamed, never hashed as whatever was read
    (found by a review: a small file that grew got a blob id of neither content)."""
    from compiler.state import outtree

    monkeypatch.setattr(outtree, "STREAM", 64)
    f = tmp_path / "f"
    f.write_bytes(b"y" * (size + change))
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(PkicError, match="changed while pkic read it"):
            outtree._blob_of(fd, size, "sha1", "out/f")
    finally:
        os.close(fd)


def test_tree_id_is_of_the_bytes_on_disk_not_what_gitattributes_make_of_them(tmp_path):
    """The seal covers the bytes on disk. With `text` set, `git add` stores a CRLF file
    as LF: git's tree then differs from pkic's (so a checkout that converts is caught),
    and pkic's equals git's for the same bytes staged with no filter."""
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitattributes").write_text("*.pem text\n")
    (repo / "out").mkdir()
    (repo / "out/x.pem").write_bytes(b"line\r\n")
    mine = tree_id(scan_out(repo, "sha1"), "sha1")
    git(repo, "add", "out")
    assert git(repo, "write-tree", "--prefix=out/") != mine  # git normalised the line ending
    blob = git(repo, "hash-object", "-w", "--no-filters", "out/x.pem")
    git(repo, "update-index", "--cacheinfo", f"100644,{blob},out/x.pem")
    assert git(repo, "write-tree", "--prefix=out/") == mine


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_scan_refuses_links_and_special_files(tmp_path, kind):
    repo = tmp_path / "r"
    (repo / "out/certs").mkdir(parents=True)
    target = repo / "out/certs/evil.pem"
    if kind == "symlink":
        target.symlink_to("/etc/passwd")
    else:
        os.mkfifo(target)
    with pytest.raises(PkicError) as exc:
        scan_out(repo, "sha1")
    assert "out/certs/evil.pem" in exc.value.diagnostics[0].render()


def test_out_itself_as_a_symlink_is_refused(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (repo / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PkicError):
        scan_out(repo, "sha1")


# --------------------------------------------------------------------------- the seal file


def make(key: Ed25519PrivateKey, **over) -> bytes:
    body = {"lineage": "L", "serial": 3, "prev": "ab" * 32, "out_tree": EMPTY_TREE["sha1"], "object_format": "sha1",
            "state_serial": 2, "sops_rules": "none", "sealed_at": NOW, **over}
    return render_seal(key, body)


def test_a_seal_verifies_only_under_its_key_and_only_unchanged():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw = make(key)
    s = parse_seal(raw)
    assert s.valid_under(public_text(key.public_key()))
    assert not s.valid_under(public_text(other.public_key()))
    # every field is signed: change one, keep the signature
    body = json.loads(raw)
    for field, value in (("serial", 4), ("out_tree", "0" * 40), ("prev", None), ("lineage", "M"), ("state_serial", 9), ("sops_rules", "x")):
        forged = parse_seal(json.dumps({**body, field: value}).encode())
        assert not forged.valid_under(public_text(key.public_key())), field
    # an attacker's own key, named in the file, is still not the key apply derives
    mine = parse_seal(make(other))
    assert mine.valid_under(mine.public_key) and not mine.valid_under(public_text(key.public_key()))


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"not json", b'{"format": "pkic-seal"}',
    b"{" + b'"a": 1,' * 20000 + b'"b": 2}',
])
def test_a_damaged_seal_is_an_error_not_a_crash(raw):
    with pytest.raises(PkicError) as exc:
        parse_seal(raw)
    assert "not a pkic seal" in exc.value.diagnostics[0].message


def test_extra_or_mistyped_fields_are_refused():
    body = json.loads(make(Ed25519PrivateKey.generate()))
    for bad in ({**body, "extra": 1}, {**body, "serial": "3"}, {**body, "serial": True}, {k: v for k, v in body.items() if k != "prev"}):
        with pytest.raises(PkicError):
            parse_seal(json.dumps(bad).encode())


# --------------------------------------------------------------------------- invariants


def state_with(serial: int, revoked: list[str], crl: int, lineage: str = "L") -> State:
    recs = {f"n{s}": [{"serial": s, "status": "revoked" if s in revoked else "active", "issuer_key_id": "k", "kind": "certificate",
                       "not_after": NOW, "spec": {}}] for s in ("01", "02", "03")}
    return State(lineage, serial, recs, 0, {"ca": {"number": crl}}, {}, [])


def test_invariants():
    before = Invariants.of(state_with(5, ["01"], 3))
    assert before.broken_by(Invariants.of(state_with(6, ["01", "02"], 4))) == []
    assert "no longer revoked" in " ".join(before.broken_by(Invariants.of(state_with(6, [], 4))))
    assert "went back" in " ".join(before.broken_by(Invariants.of(state_with(6, ["01"], 2))))
    assert "did not grow" in " ".join(before.broken_by(Invariants.of(state_with(5, ["01"], 3))))
    assert before.broken_by(Invariants.of(state_with(5, ["01"], 3)), growth=False) == []
    assert "lineage" in " ".join(before.broken_by(Invariants.of(state_with(6, ["01"], 3, "M"))))


# --------------------------------------------------------------------------- the commands


def test_init_seals_and_never_puts_a_secret_in_the_repo(tmp_path, pkic):
    p = pkic.ok("init", str(tmp_path / "pki"))
    assert "seal key made" in p.stdout
    body = json.loads((tmp_path / "pki/out.seal").read_text())
    assert body["serial"] == 1 and body["out_tree"] == EMPTY_TREE["sha1"] and body["public_key"].startswith("ed25519:")
    key_file = Path(pkic.env["PKIC_SEAL_KEY_FILE"])
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert body["public_key"] in key_file.read_text()  # the file says which seal it makes
    # a second repo reuses the key
    assert "seal key reused" in pkic.ok("init", str(tmp_path / "pki2")).stdout
    # either secret inside the new repository: refused, nothing written
    for var in ("SOPS_AGE_KEY_FILE", "PKIC_SEAL_KEY_FILE"):
        target = tmp_path / f"in-{var}"
        p = pkic("init", str(target), env={var: str(target / "secret.txt")})
        assert p.returncode == 1 and "inside the new repository" in p.stderr and var in p.stderr, p.stderr
        assert not target.exists()


def test_the_default_seal_key_goes_beside_the_age_identity(tmp_path, pkic):
    env = {"PKIC_SEAL_KEY_FILE": "", "SOPS_AGE_KEY_FILE": str(tmp_path / "ids" / "age.txt")}
    pkic.ok("init", str(tmp_path / "pki"), env=env)
    assert (tmp_path / "ids" / "pkic-seal.key").is_file()
    pkic.ok("apply", "--yes", "--now", NOW, cwd=tmp_path / "pki", env=env)
    assert json.loads((tmp_path / "pki/out.seal").read_text())["serial"] == 2


@pytest.mark.slow
def test_status_and_plan_say_sealed_or_unsealed(applied, pkic):
    assert "seal: sealed: seal serial 2" in pkic.ok("status", "--now", NOW, cwd=applied).stdout
    assert "seal: sealed" in pkic.ok("plan", "--now", NOW, cwd=applied).stdout
    body = json.loads(pkic.ok("plan", "--json", "--now", NOW, cwd=applied).stdout)
    assert body["seal"]["ok"] and body["seal"]["mode"] == "sealed" and body["seal"]["problems"] == []
    env = unsealed(applied)
    assert "seal: unsealed" in pkic.ok("status", "--now", NOW, cwd=applied, env=env).stdout
    assert "seal: unsealed" in pkic.ok("plan", "--now", NOW, cwd=applied, env=env).stdout
    assert "seal: unsealed" in pkic.ok("apply", "--yes", "--now", NOW, cwd=applied, env=env).stdout


def test_a_seal_key_with_an_unsealed_out_asks_for_adoption(applied, pkic):
    (applied / "out.seal").unlink()
    before = snapshot(applied / "out")
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied)
    assert p.returncode == 1 and "out: is not sealed" in p.stderr and "pkic seal init" in p.stderr, p.stderr
    assert snapshot(applied / "out") == before
    p = pkic.ok("seal", "init", "--now", NOW, cwd=applied)
    assert "Sealed out/ (4 certificate(s) verified with their keys)" in p.stdout
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    pkic.ok("verify", "--seal", "--now", NOW, cwd=applied)


def test_seal_init_refuses_an_out_that_does_not_verify(applied, pkic):
    env = unsealed(applied)
    (applied / "out/certs/web.pem").write_text((applied / "out/certs/payments.pem").read_text())
    p = pkic("seal", "init", "--now", NOW, cwd=applied, env={k: v for k, v in env.items() if k != "PKIC_SEAL_KEY_FILE"})
    assert p.returncode == 1 and "web" in p.stderr and not (applied / "out.seal").exists(), p.stderr


@pytest.mark.slow
def test_rotating_the_seal_key(applied, pkic, tmp_path):
    new_key = tmp_path / "new-seal.key"
    pkic.ok("init", str(tmp_path / "scratch"), env={"PKIC_SEAL_KEY_FILE": str(new_key)})
    env = {"PKIC_SEAL_KEY_FILE": str(new_key)}
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    assert p.returncode == 1 and "is not sealed by the seal key" in p.stderr, p.stderr
    p = pkic("seal", "init", "--now", NOW, cwd=applied, env=env)
    assert p.returncode == 1 and "--rotate" in p.stderr
    old = json.loads((applied / "out.seal").read_text())
    pkic.ok("seal", "init", "--rotate", "--now", NOW, cwd=applied, env=env)
    new = json.loads((applied / "out.seal").read_text())
    assert new["serial"] == old["serial"] + 1 and new["public_key"] != old["public_key"] and new["out_tree"] == old["out_tree"]
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied, env=env)
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied)  # the old key no longer seals
    assert p.returncode == 1 and "is not sealed by the seal key" in p.stderr


def test_check_is_critical_when_the_trust_bundle_is_not_the_roots(applied, pkic):
    assert pkic("check", "--now", NOW, cwd=applied).returncode == 0
    extra = Ed25519PrivateKey.generate()
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Attacker Root")])
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(extra.public_key()).serial_number(1)
            .not_valid_before(t).not_valid_after(t + timedelta(days=3650)).add_extension(x509.BasicConstraints(True, None), critical=True)
            .sign(extra, None))
    with open(applied / "out/trust/bundle.pem", "ab") as fh:
        fh.write(root.public_bytes(serialization.Encoding.PEM))
    p = pkic("check", "--json", "--now", NOW, cwd=applied)
    body = json.loads(p.stdout)
    assert p.returncode == 2 and any(i["kind"] == "bundle" and i["level"] == "CRITICAL" for i in body["items"]), body
    p = pkic("verify", "--now", NOW, cwd=applied)
    assert p.returncode == 1 and "1 other certificate(s)" in p.stderr


@pytest.mark.slow
def test_a_shallow_clone_cannot_prove_freshness_and_apply_refuses(tmp_path, pkic):
    repo = init_applied_committed(pkic, tmp_path / "pki")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    p = pkic("apply", "--yes", "--now", "2027-01-15T12:00:00Z", cwd=shallow)
    assert p.returncode == 1 and "shallow clone" in p.stderr and "fetch-depth: 0" in p.stderr, p.stderr
    assert pkic("plan", "--now", NOW, cwd=shallow).returncode == 1
    git(shallow, "fetch", "-q", "--unshallow")
    pkic.ok("apply", "--yes", "--commit", "--now", "2027-01-15T12:00:00Z", cwd=shallow)


def test_odd_file_names_in_out_are_named_not_a_crash(applied, pkic):
    before = snapshot(applied / "out")
    odd = os.fsencode(applied / "out" / "certs") + b"/\xff\nnew\x1b[31m.pem"
    with open(odd, "wb") as fh:
        fh.write(b"x")
    p = pkic("apply", "--yes", "--now", NOW, cwd=applied)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "crashed" not in p.stderr, p.stderr
    assert "not what the seal covers" in p.stderr and "\x1b" not in p.stderr, p.stderr
    os.unlink(odd)
    assert snapshot(applied / "out") == before
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)


@pytest.mark.slow
@pytest.mark.parametrize("endorsed", [True, False], ids=["endorsed by the old key", "old key lost"])
def test_a_rotation_in_history_is_followed_only_when_the_old_key_endorses_it(tmp_path, pkic, endorsed):
    repo = init_applied_committed(pkic, tmp_path / "pki")
    old_key = Path(pkic.env["PKIC_SEAL_KEY_FILE"])
    new_key = tmp_path / "new-seal.key"
    pkic.ok("init", str(tmp_path / "scratch"), env={"PKIC_SEAL_KEY_FILE": str(new_key)})
    env = {"PKIC_SEAL_KEY_FILE": str(new_key)}
    args = ["seal", "init", "--rotate", "--now", NOW] + (["--old-key-file", str(old_key)] if endorsed else [])
    p = pkic.ok(*args, cwd=repo, env=env)
    assert ("not endorsed" in p.stderr) != endorsed
    git(repo, "commit", "-q", "-am", "pkic: rotate the seal key")
    new_public = json.loads((repo / "out.seal").read_text())["public_key"]
    assert ("rotation" in json.loads((repo / "out.seal").read_text())) == endorsed
    # apply (the secret) works either way
    pkic.ok("apply", "--yes", "--commit", "--now", "2027-02-01T12:00:00Z", cwd=repo, env=env)
    # no secret: verify and plan follow an endorsed rotation, and not an unendorsed one
    v = pkic("verify", "--seal", "--now", "2027-02-01T12:00:00Z", cwd=repo)
    assert (v.returncode == 0) == endorsed, v.stdout + v.stderr
    if not endorsed:
        assert "is not sealed by the seal key" in v.stderr and "--seal-key" not in v.stdout
        pkic.ok("verify", "--seal", "--seal-key", new_public, "--now", "2027-02-01T12:00:00Z", cwd=repo)
    assert (pkic("plan", "--now", "2027-02-01T12:00:00Z", cwd=repo).returncode == 0) == endorsed
    # a wrong old key cannot endorse
    other = tmp_path / "other.key"
    pkic.ok("init", str(tmp_path / "scratch2"), env={"PKIC_SEAL_KEY_FILE": str(other)})
    p = pkic("seal", "init", "--rotate", "--old-key-file", str(other), "--now", NOW, cwd=repo, env={"PKIC_SEAL_KEY_FILE": str(old_key)})
    assert p.returncode == 1 and "is not the key of the current seal" in p.stderr, p.stderr
