"""Attack: a verdict that a damaged state passed its checks.

The names, serials and fields of out/state.json are checked on every load (names become
paths). A load remembers, in the user's cache, the digest of the bytes that passed
(compiler/spec/cache.py: Verdicts), so that the same bytes are not checked again by the
same code: plan keeps its own verdict; apply keeps one authenticated with a key derived
from the seal key, and takes no other. A verdict never covers other bytes, other code,
or (apply) a token it did not make.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compiler.model.errors import PkicError
from compiler.spec import cache
from compiler.spec.cache import Verdicts
from compiler.state.store import load_state

KEY = bytes(range(32))  # what sealkey.cache_mac_key derives from a seal key


def _state(repo: Path, name: str) -> bytes:
    record = {
        "status": "active",
        "serial": "1c970bfbb74966557853b72a308e14d952cba770",
        "kind": "certificate",
        "not_before": "2026-11-27T11:59:00Z",
        "not_after": "2026-12-27T12:00:00Z",
        "spec": {"issuer": "ca", "dns": ["a.example.com"]},
        "issuer": "ca",
    }
    body = {"format": "pkic-state", "version": 1, "serial": 1, "lineage": None, "certificates": {name: [record]}}
    data = json.dumps(body).encode()
    (repo / "out").mkdir(parents=True, exist_ok=True)
    (repo / "out" / "state.json").write_bytes(data)
    return data


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "repo"


def test_a_good_state_is_checked_once_then_remembered(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compiler.state import store

    _state(repo, "web")
    calls = [0]
    real = store._check_names

    def count(*args: object) -> None:
        calls[0] += 1
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_check_names", count)
    for verdicts in (Verdicts(repo), Verdicts(repo, KEY)):
        load_state(repo, verdicts=verdicts)
        load_state(repo, verdicts=verdicts)
    assert calls[0] == 2, "each of plan and apply checks the bytes once"
    load_state(repo)  # the read-only commands: always checked
    assert calls[0] == 3


@pytest.mark.parametrize("who", ["plan", "apply"])
def test_a_verdict_covers_only_the_bytes_and_code_it_was_made_for(repo: Path, monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """A verdict for a good state does not carry over to a damaged one written in its
    place (a name that would be a path outside out/), nor to the same bytes under other
    code."""
    verdicts = Verdicts(repo, KEY if who == "apply" else None)
    _state(repo, "web")
    load_state(repo, verdicts=verdicts)
    _state(repo, "../../etc/x")
    with pytest.raises(PkicError, match="not a valid name"):
        load_state(repo, verdicts=verdicts)
    data = _state(repo, "../../etc/x")
    verdicts.note("state", hashlib.sha256(data).digest())  # (as if the damaged bytes had passed under other code)
    monkeypatch.setattr(cache, "_CODE_DIGEST", "other code")
    with pytest.raises(PkicError, match="not a valid name"):
        load_state(repo, verdicts=verdicts)


@pytest.mark.parametrize("forgery", ["plan's verdict under apply's name", "another key", "none: the control"])
def test_apply_takes_only_a_verdict_it_made(repo: Path, forgery: str) -> None:
    """A damaged state with a verdict planted for it: made by a plan (no secret), or
    under another key, is checked and refused. The control, a verdict apply's key made,
    is taken (the damaged name gets through), which shows that the refusals above are
    the verdict's doing, not a check that runs regardless."""
    data = _state(repo, "../../etc/x")
    apply = Verdicts(repo, KEY)
    if forgery == "plan's verdict under apply's name":
        apply._file("state").parent.mkdir(parents=True, mode=0o700)
        apply._file("state").write_text(Verdicts(repo)._token("state", hashlib.sha256(data).digest()))
    elif forgery == "another key":
        Verdicts(repo, bytes(32)).note("state", hashlib.sha256(data).digest())
    else:
        apply.note("state", hashlib.sha256(data).digest())
    if forgery.startswith("none"):
        assert "../../etc/x" in load_state(repo, verdicts=apply).certificates
    else:
        with pytest.raises(PkicError, match="not a valid name"):
            load_state(repo, verdicts=apply)


def test_a_verdict_in_a_directory_others_can_write_is_not_read(repo: Path) -> None:
    import os

    data = _state(repo, "../../etc/x")
    plan = Verdicts(repo)
    plan.note("state", hashlib.sha256(data).digest())
    os.chmod(plan._file("state").parent, 0o777)
    with pytest.raises(PkicError, match="not a valid name"):
        load_state(repo, verdicts=plan)


def test_apply_loads_only_the_state_the_seal_gate_found(repo: Path) -> None:
    """apply names the blob id the seal gate's scan found for out/state.json (which the
    scan may take from its record, by file times that a write through a shared memory
    map can leave as they were): other bytes are refused, not loaded."""
    from compiler.state.outtree import blob_id

    data = _state(repo, "web")
    assert "web" in load_state(repo, blob=("sha1", blob_id("sha1", data))).certificates
    _state(repo, "api")
    with pytest.raises(PkicError, match="not the file the seal gate found"):
        load_state(repo, blob=("sha1", blob_id("sha1", data)))


@pytest.mark.slow  # (whole applies: over 0.8 s)
def test_apply_keeps_no_checked_verdict_for_a_state_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state an apply writes was never put through the checks as read: apply keeps
    only the verdict that this code laid it out (so the next apply checks it)."""
    from conftest import NOW, make_pkic

    from compiler.state.sealkey import cache_mac_key, parse_key
    from compiler.state.store import WRITTEN

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    key = cache_mac_key(parse_key(Path(pkic.env["PKIC_SEAL_KEY_FILE"]).read_text(), "seal key"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(pkic.home / ".cache"))
    apply = Verdicts(repo, key)
    digest = hashlib.sha256((repo / "out" / "state.json").read_bytes()).digest()
    assert apply.passed(WRITTEN, digest)
    assert not apply.passed("state", digest)
