"""An apply writes back the records of names it did not touch as it read them
(State.texts), and re-serialises the rest. Every mutation of the state must mark the
names it changes: here each one runs on a state read with its texts kept, and the state
written so must be the state written whole. A new mutation method fails the first test
until it has a case here."""

from __future__ import annotations

import inspect
from collections.abc import Callable

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
