"""An apply writes back the records of names it did not touch as it read them
(State.texts), and re-serialises the rest. Every mutation of the state must mark the
names it changes: here each one runs on a state read with its texts kept, and the state
written so must be the state written whole. A new mutation method fails the first test
until it has a case here."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from compiler.model.stamp import Stamp
from compiler.state import State
from compiler.state.store import state_from_json

T0, T1, T2 = Stamp.parse("2026-01-01T00:00:00Z"), Stamp.parse("2026-06-01T00:00:00Z"), Stamp.parse("2027-01-01T00:00:00Z")


def record(name: str, serial: str, issuer: str | None, kind: str = "certificate", **more: object) -> dict:
    return {
        "name": name,
        "serial": serial,
        "status": "active",
        "kind": kind,
        "issuer": issuer,
        "spec": {"issuer": issuer, "dns": [f"{name}.example.com"]},
        "not_before": T0,
        "not_after": T1 if kind == "certificate" else T2,
        "key_id": "ab" * 20,
        "issuer_key_id": "cd" * 20,
        "public_key_sha256": "ef" * 32,
        **more,
    }


def base() -> bytes:
    s = State(lineage="l", serial=1)
    s.record_issued("ca", record("ca", "0a" * 10, None, "authority"), T0)
    for i in range(4):
        s.record_issued(f"leaf{i}", record(f"leaf{i}", f"{i + 1:02x}" * 10, "ca"), T0)
    s.record_responder("ca", record("ca OCSP responder", "99" * 10, "ca"), T0)
    return s.to_json().encode()


CASES: dict[str, Callable[[State], None]] = {
    "record_issued": lambda s: s.record_issued("leaf1", record("leaf1", "77" * 10, "ca"), T1),
    "record_revoked": lambda s: s.record_revoked("leaf2", "03" * 10, "keyCompromise", T1, T0),
    "record_crl": lambda s: s.record_crl(
        "ca",
        {
            "number": 2,
            "key_id": "ab" * 20,
            "serials": ["04" * 10],
            "names": ["leaf3"],
            "sha256": "00" * 32,
            "this_update": T2,
            "next_update": T2,
        },
    ),
    "record_ocsp": lambda s: s.record_ocsp(
        "leaf0",
        "01" * 10,
        {"status": "good", "signer": "self", "file": "out/ocsp/leaf0.der", "sha256": "11" * 32, "this_update": T1, "next_update": T2},
    ),
    "record_responder": lambda s: s.record_responder("ca", record("ca OCSP responder", "98" * 10, "ca"), T1),
    "record_responder_retired": lambda s: s.record_responder_retired("ca", T1),
    "record_compromised": lambda s: s.record_compromised(
        {"name": "leaf1", "at": "2026-05-01T00:00:00Z", "public_key_sha256": None, "applied_at": "2026-06-01T00:00:00Z"}
    ),
    "record_moved": lambda s: s.record_moved("ca", "new-ca"),
    "record_reencrypted": lambda s: s.record_reencrypted("leaf3", None, "d1" * 32, "ef" * 32, "f1" * 32),
}


def test_every_mutation_has_a_case() -> None:
    methods = {n for n, _ in inspect.getmembers(State, inspect.isfunction) if n.startswith("record_")}
    assert methods == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mutation_is_written_as_a_whole_write_would(name: str) -> None:
    kept = state_from_json(base(), keep_text=True)
    whole = state_from_json(base())
    CASES[name](kept)
    CASES[name](whole)
    assert "".join(kept._chunks(kept.texts)) == whole.to_json()
    assert kept.to_json() == whole.to_json()  # (and the check of small states agrees)


def test_an_unmarked_change_is_caught() -> None:
    """The check that runs on small states (so in every test's apply) catches a change
    made behind the mutation methods' back: the kept text would hide it."""
    kept = state_from_json(base(), keep_text=True)
    kept.certificates["leaf0"][0]["status"] = "revoked"
    with pytest.raises(AssertionError, match="not marked dirty"):
        kept.to_json()


def test_untouched_names_are_not_serialised_again() -> None:
    """The kept text is what is written: a name's records are not serialised again."""
    kept = state_from_json(base(), keep_text=True)
    assert kept.texts is not None
    kept.texts["leaf0"] = kept.texts["leaf0"].replace("leaf0.example.com", "kept.example.com")
    assert "kept.example.com" in "".join(kept._chunks(kept.texts))
    kept.record_issued("leaf1", record("leaf1", "77" * 10, "ca"), T1)
    assert kept.dirty == {"leaf1"}


# --------------------------------------------------------------------------- spans of the file
# A state this code wrote itself (apply keeps a verdict on it, authenticated) is kept as
# spans of the file rather than as text, and read back in one hashed pass when written.

KEY = bytes(range(32))  # what sealkey.cache_mac_key derives from a seal key


def _written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes | None = None, key: bytes = KEY) -> tuple[Path, bytes]:
    from compiler.spec.cache import Verdicts
    from compiler.state.store import WRITTEN

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    (repo / "out").mkdir(parents=True)
    data = base() if data is None else data
    (repo / "out" / "state.json").write_bytes(data)
    Verdicts(repo, key).note(WRITTEN, hashlib.sha256(data).digest())
    return repo, data


def _load(repo: Path) -> State:
    from compiler.spec.cache import Verdicts
    from compiler.state.store import load_state

    return load_state(repo, keep_text=True, verdicts=Verdicts(repo, KEY))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mutation_on_spans_is_written_as_a_whole_write_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from compiler.state.spans import FileSpans

    repo, _ = _written(tmp_path, monkeypatch)
    kept = _load(repo)
    assert isinstance(kept.texts, FileSpans)
    whole = state_from_json(base())
    CASES[name](kept)
    CASES[name](whole)
    assert "".join(kept._chunks(kept.texts)) == whole.to_json()
    assert kept.to_json() == whole.to_json()  # a second pass, and the check of small states
    assert kept.to_json() == whole.to_json()


@pytest.mark.parametrize("why", ["no verdict", "another key's verdict", "not ASCII", "laid out otherwise"])
def test_spans_only_for_a_file_this_code_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    import json

    data = base()
    if why == "not ASCII":
        data = data.replace(b"leaf0.example.com", "leaf0.\u00e9xample.com".encode())
    elif why == "laid out otherwise":
        data = json.dumps(json.loads(data), indent=2, sort_keys=True).encode()
    repo, data = _written(tmp_path, monkeypatch, data, bytes(32) if why == "another key's verdict" else KEY)
    if why == "no verdict":
        for f in (tmp_path / "cache").rglob("checked-*"):
            f.unlink()
    kept = _load(repo)
    assert isinstance(kept.texts, dict)
    assert kept.to_json() == state_from_json(data).to_json()


@pytest.mark.parametrize("where", ["a kept name", "a name the apply changed", "after the certificates"])
def test_a_state_changed_after_it_was_read_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Kept names are read back from the file when the state is written: a file changed
    in between (in place, its length kept) is refused, wherever the change is."""
    from compiler.model.errors import PkicError

    repo, data = _written(tmp_path, monkeypatch)
    kept = _load(repo)
    CASES["record_issued"](kept)  # leaf1 changes
    old = {
        "a kept name": b"leaf0.example.com",
        "a name the apply changed": b"leaf1.example.com",
        "after the certificates": b'"lineage": "l"',
    }[where]
    new = old[:-2] + b"xx" if where != "after the certificates" else b'"lineage": "m"'
    assert data.count(old) == 1
    (repo / "out" / "state.json").write_bytes(data.replace(old, new))
    with pytest.raises(PkicError, match="changed while apply ran"):
        kept.to_json()
