"""The seal's scan of out/ remembers the blob id of each file it hashed, by inode, size,
modification and change time (compiler/state/outtree.py, BlobMemo): a file untouched
since is not read again. Plan keeps its record unauthenticated; apply keeps its own,
authenticated with a key derived from the seal key, and takes no other (not plan's, not
one changed behind its back). A write changes a file's change time, which only the
kernel sets, so an edit is always seen; times too close to the record's own are not
trusted; a damaged record is a miss."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from compiler.state import outtree
from compiler.state.outtree import BlobMemo, scan_out, tree_id

APPLY_KEY = bytes(range(32))  # what sealkey.cache_mac_key derives from a seal key


@pytest.fixture(params=["plan", "apply"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    for i in range(20):
        f = repo / "out" / "certs" / f"leaf{i}.pem"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"certificate %d\n" % i)
    return repo


@pytest.fixture
def memo(out: Path, kind: str) -> BlobMemo:
    return BlobMemo(out, APPLY_KEY if kind == "apply" else None)


def _memo_file(repo: Path, memo: BlobMemo) -> Path:
    return memo._file("sha1")


def _read_body(memo: BlobMemo) -> dict:
    raw = memo._file("sha1").read_bytes()
    if memo.mac_key is not None:
        raw = raw.partition(b"\n")[2]
    return json.loads(raw)


def _write_body(memo: BlobMemo, body: dict) -> None:
    """The record rewritten, authenticated again where it is apply's (as only the holder
    of the seal key can)."""
    import json

    raw = json.dumps(body).encode()
    if memo.mac_key is not None:
        raw = memo._mac(raw) + b"\n" + raw
    memo._file("sha1").write_bytes(raw)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = outtree._hash

    def count(algo: str, kind: bytes, data: bytes) -> bytes:
        calls[0] += 1
        return real(algo, kind, data)

    monkeypatch.setattr(outtree, "_hash", count)
    return calls


def age(memo: BlobMemo, seconds: int = 60) -> None:
    """Make the files (and so their change times) look older than the racy window by
    moving the record's time forward instead: rewrite its saved_ns."""
    body = _read_body(memo)
    body["saved_ns"] = time.time_ns() + seconds * 10**9
    _write_body(memo, body)


def test_an_unchanged_file_is_not_read_again(out: Path, memo: BlobMemo, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    first = scan_out(out, "sha1", memo=memo)
    assert calls[0] == 20
    second = scan_out(out, "sha1", memo=memo)
    assert calls[0] == 40, "files written within the racy window are hashed again"
    age(memo)
    third = scan_out(out, "sha1", memo=memo)
    assert calls[0] == 40
    assert first == second == third
    scan_out(out, "sha1")  # no record (seal init, verify, a recovery): every file read
    assert calls[0] == 60


def _set_blob(body: dict, rel: str, blob: str) -> None:
    head = body["files"][rel].rpartition(" ")[0]
    body["files"][rel] = f"{head} {blob}"


@pytest.mark.parametrize(
    "damage", [{"k": 1}, 5, [1, 2, 3, 4], "x" * 40, ["a"] * 6, "not hex", "short", "long", "spaced", "upper", "device"]
)
def test_a_damaged_record_is_a_miss_not_a_crash(out: Path, memo: BlobMemo, damage: object) -> None:
    truth = scan_out(out, "sha1")
    scan_out(out, "sha1", memo=memo)
    age(memo)
    body = _read_body(memo)
    rel = "out/certs/leaf0.pem"
    lie, original = truth["out/certs/leaf1.pem"][1], body["files"][rel]
    if damage == "not hex":
        _set_blob(body, rel, "zz" * 20)
    elif damage == "short":
        _set_blob(body, rel, lie[:-1])
    elif damage == "long":
        _set_blob(body, rel, lie + "0")
    elif damage == "spaced":
        _set_blob(body, rel, lie[:-2] + " 0")
    elif damage == "upper":
        _set_blob(body, rel, lie.upper())
    elif damage == "device":  # every entry is of out/'s device: another one is a miss
        _set_blob(body, rel, lie)
        body["device"] += 1
    else:
        body["files"][rel] = damage
    _write_body(memo, body)
    assert scan_out(out, "sha1", memo=memo) == truth
    body = _read_body(memo)  # as the scan above renewed it
    body["files"][rel] = original
    _set_blob(body, rel, lie)
    _write_body(memo, body)
    age(memo)
    assert scan_out(out, "sha1", memo=memo)[rel] == truth["out/certs/leaf1.pem"], "the same record, undamaged, is read"


def test_an_edit_is_seen_even_with_its_size_and_times_restored(out: Path, memo: BlobMemo) -> None:
    before = scan_out(out, "sha1", memo=memo)
    age(memo)
    f = out / "out" / "certs" / "leaf3.pem"
    st = os.stat(f)
    f.write_bytes(b"CERTIFICATE 3\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time; the change time moves
    after = scan_out(out, "sha1", memo=memo)
    assert after["out/certs/leaf3.pem"] != before["out/certs/leaf3.pem"]
    assert tree_id(after, "sha1") != tree_id(before, "sha1")
    assert after == scan_out(out, "sha1")


def test_a_replaced_or_removed_file_is_seen(out: Path, memo: BlobMemo) -> None:
    scan_out(out, "sha1", memo=memo)
    age(memo)
    (out / "out" / "certs" / "leaf1.pem").unlink()
    (out / "out" / "certs" / "leaf2.pem").rename(out / "out" / "certs" / "leaf1.pem")
    (out / "out" / "certs" / "new.pem").write_bytes(b"new\n")
    assert scan_out(out, "sha1", memo=memo) == scan_out(out, "sha1")


def test_a_record_others_could_write_is_not_read(out: Path, memo: BlobMemo, monkeypatch: pytest.MonkeyPatch) -> None:
    scan_out(out, "sha1", memo=memo)
    age(memo)
    os.chmod(_memo_file(out, memo).parent, 0o777)
    calls = counting(monkeypatch)
    scan_out(out, "sha1", memo=memo)
    assert calls[0] == 20


# --------------------------------------------------------------------------- apply's record


@pytest.mark.parametrize("kind", ["apply"])
@pytest.mark.parametrize("forgery", ["plan's record", "edited, mac kept", "another key", "mac removed"])
def test_apply_takes_no_record_it_did_not_authenticate(out: Path, memo: BlobMemo, monkeypatch: pytest.MonkeyPatch, forgery: str) -> None:
    """A record that lies (leaf0's blob id is leaf1's), made by a plan, or edited behind
    apply's back, or authenticated with another key: apply reads every file. The same
    lie authenticated with apply's key is taken, which shows that the cases above do
    not pass vacuously (and why the key is the seal key's)."""
    truth = scan_out(out, "sha1")
    plan = BlobMemo(out)
    for m in (plan, memo):
        scan_out(out, "sha1", memo=m)
        age(m)
        body = _read_body(m)
        _set_blob(body, "out/certs/leaf0.pem", truth["out/certs/leaf1.pem"][1])
        _write_body(m, body)
    if forgery == "plan's record":
        memo._file("sha1").unlink()
    elif forgery == "edited, mac kept":
        mac = memo._file("sha1").read_bytes().partition(b"\n")[0]
        body = _read_body(memo)
        _set_blob(body, "out/certs/leaf0.pem", truth["out/certs/leaf2.pem"][1])
        memo._file("sha1").write_bytes(mac + b"\n" + json.dumps(body).encode())
    elif forgery == "another key":
        _write_body(BlobMemo(out, bytes(32)), _read_body(memo))
    else:
        memo._file("sha1").write_bytes(memo._file("sha1").read_bytes().partition(b"\n")[2])
    assert scan_out(out, "sha1", memo=BlobMemo(out, APPLY_KEY)) == truth
    assert scan_out(out, "sha1", memo=plan)["out/certs/leaf0.pem"] != truth["out/certs/leaf0.pem"], "plan's record is read"
    scan_out(out, "sha1", memo=memo)  # apply's record renewed, and aged
    age(memo)
    body = _read_body(memo)
    _set_blob(body, "out/certs/leaf0.pem", truth["out/certs/leaf1.pem"][1])
    _write_body(memo, body)
    assert scan_out(out, "sha1", memo=BlobMemo(out, APPLY_KEY))["out/certs/leaf0.pem"] != truth["out/certs/leaf0.pem"], "apply's own"


# --------------------------------------------------------------------------- end to end


def _apply_memo(pkic: object, repo: Path) -> BlobMemo:
    from compiler.state.sealkey import cache_mac_key, parse_key

    env = pkic.env  # type: ignore[attr-defined]
    key = cache_mac_key(parse_key(Path(env["PKIC_SEAL_KEY_FILE"]).read_text(), "seal key"))
    memo = BlobMemo(repo.resolve(), key)
    memo._file = lambda algo: next((pkic.home / ".cache").rglob(f"{algo}-apply-{outtree.BLOB_MEMO}"))  # type: ignore[attr-defined,method-assign]
    return memo


@pytest.mark.slow  # (whole applies: over 0.8 s)
@pytest.mark.parametrize("case", ["untouched", "edited, size and mtime kept", "a lie in apply's own record"])
def test_apply_with_its_record_still_refuses_a_hand_edit(tmp_path: Path, case: str) -> None:
    """A real apply whose record is warm (and old enough to be trusted): a hand edit to a
    certificate that keeps its size and modification time is still refused by the seal
    gate (its change time moved); a lie written into apply's own record is taken, and
    the gate refuses the tree it computes, which shows the record is read at all."""
    from conftest import NOW, make_pkic

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)  # nothing to do: the gate records every file
    memo = _apply_memo(pkic, repo)
    age(memo)
    target = next((repo / "out" / "certs").glob("*.pem"))
    rel = str(target.relative_to(repo))
    if case == "edited, size and mtime kept":
        st = os.stat(target)
        data = target.read_bytes()
        target.write_bytes(data[:-8] + b"AAAAAAA\n")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(target).st_size == st.st_size and os.stat(target).st_mtime_ns == st.st_mtime_ns
    elif case == "a lie in apply's own record":
        body = _read_body(memo)
        other = next(p for p in body["files"] if p != rel and p.startswith("out/certs/"))
        _set_blob(body, rel, body["files"][other].rpartition(" ")[2])
        _write_body(memo, body)
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo)
    if case == "untouched":
        assert p.returncode == 0, p.stdout + p.stderr
    else:
        assert p.returncode == 1, p.stdout + p.stderr
        assert "not what the seal covers" in p.stdout + p.stderr, p.stdout + p.stderr


def test_a_few_changed_files_are_hashed_again_without_rewriting_the_record(out: Path, memo: BlobMemo, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record is written anew only when that saves reading (more than MEMO_SLACK files
    hashed): a one-leaf change's few files are read again on every scan until then, and
    their old entries never stand for their new content."""
    scan_out(out, "sha1", memo=memo)
    age(memo)
    before = memo._file("sha1").read_bytes()
    (out / "out" / "certs" / "leaf5.pem").write_bytes(b"renewed 5\n")
    calls = counting(monkeypatch)
    for _ in range(2):
        assert scan_out(out, "sha1", memo=memo) == scan_out(out, "sha1")
    assert memo._file("sha1").read_bytes() == before, "not rewritten for one file"
    assert calls[0] == 2 * (1 + 20), "the changed file, each time (and the full scans beside)"
    monkeypatch.setattr(outtree, "MEMO_SLACK", 0)
    scan_out(out, "sha1", memo=memo)
    assert memo._file("sha1").read_bytes() != before
