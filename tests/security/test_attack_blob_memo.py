"""The seal's scan of out/ remembers the blob id of each file it hashed, by inode, size,
modification and change time (compiler/state/outtree.py, BLOB_MEMO): a file untouched
since is not read again, by plan and the read-only commands (never by apply or seal,
which act on what the scan proves). Any write changes a file's change time, which only
the kernel sets, so an edit is always seen; times too close to the record's own are not
trusted; a damaged record is a miss."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from compiler.state import outtree
from compiler.state.outtree import scan_out, tree_id


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    for i in range(20):
        f = repo / "out" / "certs" / f"leaf{i}.pem"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"certificate %d\n" % i)
    return repo


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = outtree._hash

    def count(algo: str, kind: bytes, data: bytes) -> bytes:
        calls[0] += 1
        return real(algo, kind, data)

    monkeypatch.setattr(outtree, "_hash", count)
    return calls


def age(repo: Path, seconds: int = 60) -> None:
    """Make the files (and so their change times) look older than the racy window by
    moving the record's time forward instead: rewrite its saved_ns."""
    import json

    memo = next((repo.parent / "cache").rglob(f"*{outtree.BLOB_MEMO}"))
    body = json.loads(memo.read_text())
    body["saved_ns"] = time.time_ns() + seconds * 10**9
    memo.write_text(json.dumps(body))


def test_an_unchanged_file_is_not_read_again(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    first = scan_out(out, "sha1", remember=True)
    assert calls[0] == 20
    second = scan_out(out, "sha1", remember=True)
    assert calls[0] == 40, "files written within the racy window are hashed again"
    age(out)
    third = scan_out(out, "sha1", remember=True)
    assert calls[0] == 40
    assert first == second == third
    scan_out(out, "sha1")  # apply and seal: never from the record
    assert calls[0] == 60


@pytest.mark.parametrize("damage", [{"k": 1}, 5, [1, 2, 3, 4], "x" * 40, ["a"] * 6, "not hex"])
def test_a_damaged_record_is_a_miss_not_a_crash(out: Path, monkeypatch: pytest.MonkeyPatch, damage: object) -> None:
    import json

    truth = scan_out(out, "sha1")
    scan_out(out, "sha1", remember=True)
    age(out)
    memo = next((out.parent / "cache").rglob(f"*{outtree.BLOB_MEMO}"))
    body = json.loads(memo.read_text())
    known = body["files"]["out/certs/leaf0.pem"]
    if damage == "not hex":
        body["files"]["out/certs/leaf0.pem"] = [*known[:5], "zz" * 20]
    elif damage == "x" * 40:
        body["files"]["out/certs/leaf0.pem"] = [*known[:5], 40]
    else:
        body["files"]["out/certs/leaf0.pem"] = damage
    memo.write_text(json.dumps(body))
    assert scan_out(out, "sha1", remember=True) == truth


def test_an_edit_is_seen_even_with_its_size_and_times_restored(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = scan_out(out, "sha1", remember=True)
    age(out)
    f = out / "out" / "certs" / "leaf3.pem"
    st = os.stat(f)
    f.write_bytes(b"CERTIFICATE 3\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time; the change time moves
    after = scan_out(out, "sha1", remember=True)
    assert after["out/certs/leaf3.pem"] != before["out/certs/leaf3.pem"]
    assert tree_id(after, "sha1") != tree_id(before, "sha1")
    assert after == scan_out(out, "sha1", remember=False)


def test_a_replaced_or_removed_file_is_seen(out: Path) -> None:
    scan_out(out, "sha1", remember=True)
    age(out)
    (out / "out" / "certs" / "leaf1.pem").unlink()
    (out / "out" / "certs" / "leaf2.pem").rename(out / "out" / "certs" / "leaf1.pem")
    (out / "out" / "certs" / "new.pem").write_bytes(b"new\n")
    assert scan_out(out, "sha1", remember=True) == scan_out(out, "sha1")


def test_a_record_others_could_write_is_not_read(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan_out(out, "sha1", remember=True)
    age(out)
    memo = next((out.parent / "cache").rglob(f"*{outtree.BLOB_MEMO}"))
    os.chmod(memo.parent, 0o777)
    calls = counting(monkeypatch)
    scan_out(out, "sha1", remember=True)
    assert calls[0] == 20
