"""Attacks a hostile review of the incremental load, the journal's tree id and the scan of
out/ found (2026-12-02), each stopped:

* a pki.yaml the fast parser refuses whole (an anchor named `?`, which the round-trip
  parser takes) was loaded by the round-trip parser and its entries kept; an entry added
  next, parsed alone by the fast parser, then read as something the full load refuses
  (`lifetime: !, key`: a tag to one parser, two nulls to the other): a fresh plan said
  the spec was wrong while apply, from its own records, signed it. Entries are now kept
  only from a file the fast parser read whole;
* a .pkic/sealed-listing committed in a pull request was taken as this machine's (a
  dirty tree after apply --commit, a misleading error at recovery): anything tracked
  under .pkic/ is refused by plan and apply, naming it;
* a pull request adding a thousand directories under out/ made the scan hold a
  descriptor each and crash (EMFILE); it now walks depth first, one descriptor a level,
  and refuses nesting deeper than pkic writes.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from compiler.model.errors import PkicError
from compiler.spec import loading
from compiler.state.outtree import MAX_OUT_DEPTH, scan_out

DEFAULTS = (
    "defaults:\n  key: ecdsa-p256                 # ecdsa-p256 | ecdsa-p384 | ecdsa-p521 | ed25519 | rsa-2048 | rsa-3072 | rsa-4096\n"
    "  subject: {O: Example Corp, C: US}\n"
)
NOTES = "  notes:\n    issuer: services-ca\n    dns: [notes.example.com]\n    description: &? ok\n  tail: {issuer: services-ca, dns: [tail.example.com]}\n"
EVIL = "  evil: {issuer: services-ca, dns: [evil.example.com], lifetime: !, key}\n"


def test_apply_and_a_fresh_plan_read_the_same_pki_yaml(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "apply-cache"))
    key = b"k" * 32
    spec = repo / "pki.yaml"
    assert DEFAULTS in spec.read_text()
    spec.write_text(spec.read_text().replace(DEFAULTS, "") + NOTES)
    loading.load(repo, caches=key)  # apply's full load (the round-trip parser): nothing kept
    loading.load(repo)  # nor by a plan's
    spec.write_text(spec.read_text() + EVIL)
    with pytest.raises(PkicError):
        loading.load(repo, caches=None)
    with pytest.raises(PkicError):
        loading.load(repo, caches=key)
    with pytest.raises(PkicError):
        loading.load(repo)


@pytest.mark.slow  # (whole applies: over 0.8 s)
def test_a_tracked_file_under_pkic_is_refused(tmp_path: Path) -> None:
    from conftest import NOW, make_pkic

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    assert (repo / ".pkic" / "sealed-listing").is_file()
    subprocess.run(["git", "-C", str(repo), "add", "-f", ".pkic/sealed-listing"], check=True, capture_output=True)
    for args in (["plan"], ["apply", "--yes"]):
        p = pkic(*args, "--now", NOW, cwd=repo)
        assert p.returncode == 1, p.stdout + p.stderr
        assert ".pkic/sealed-listing: is committed to git" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


def test_a_thousand_directories_in_out_are_scanned_with_a_few_descriptors(tmp_path: Path) -> None:
    for i in range(1100):
        d = tmp_path / "out" / "x" / str(i)
        d.mkdir(parents=True)
        (d / "f").write_text("x\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        listing = scan_out(tmp_path, "sha1")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(listing) == 1100


def test_out_nested_deeper_than_pkic_writes_is_one_error(tmp_path: Path) -> None:
    deep = tmp_path / "out" / os.path.join(*["d"] * (MAX_OUT_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep / "f").write_text("x\n")
    with pytest.raises(PkicError, match="nested deeper than pkic writes"):
        scan_out(tmp_path, "sha1")
    shallow = tmp_path / "ok" / "out" / os.path.join(*["d"] * (MAX_OUT_DEPTH - 1))
    shallow.mkdir(parents=True)
    (shallow / "f").write_text("x\n")
    assert len(scan_out(tmp_path / "ok", "sha1")) == 1
