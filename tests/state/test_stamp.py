"""Times in the state are parsed once (compiler/model/stamp.py, state/records.py): a
record read from the state or a journal step holds stamps, which compare with any aware
datetime and print, in messages and reports, as the text the state file holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.model.stamp import Stamp, stamp_json
from compiler.state import load_state, parse_op
from compiler.state.records import CERT_STAMPS, as_json, cert_record

GOLDEN = Path(__file__).parent.parent / "golden" / "redesign" / "expected"


def test_a_stamp_prints_as_the_state_writes_it_and_compares_as_a_time():
    s = Stamp.parse("2026-11-27T12:00:00Z")
    assert str(s) == f"{s}" == "2026-11-27T12:00:00Z" and f"{s:%Y}" == "2026"
    assert s == datetime(2026, 11, 27, 12, tzinfo=UTC) and s < datetime(2026, 11, 27, 12, 0, 1, tzinfo=UTC)
    assert s - datetime(2026, 11, 26, 12, tzinfo=UTC) == timedelta(days=1)
    assert str(s - timedelta(hours=1)) == "2026-11-27T11:00:00Z"
    assert str(Stamp.of(datetime(2026, 11, 27, 13, 0, 0, 999_999, tzinfo=UTC))) == "2026-11-27T13:00:00Z"
    assert json.dumps({"at": s}, default=stamp_json) == '{"at": "2026-11-27T12:00:00Z"}'


@pytest.mark.parametrize("text", ["2026-11-27T12:00:00", "2026-11-27 12:00:00Z", "2026-13-27T12:00:00Z", "soon", "", "2026-11-27T12:00:00+00:00"])
def test_only_the_state_s_own_form_is_a_stamp(text):
    with pytest.raises(ValueError):
        Stamp.parse(text)


def test_a_record_is_not_json_until_its_stamps_are_text():
    with pytest.raises(TypeError):
        json.dumps({"at": Stamp.parse("2026-11-27T12:00:00Z")})


@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_text_and_stamp_round_trip(dt):
    s = Stamp.of(dt)
    assert Stamp.parse(str(s)) == s and s <= dt < s + timedelta(seconds=1)


def test_a_loaded_state_holds_stamps_and_writes_the_same_bytes(tmp_path):
    text = (GOLDEN / "a3" / "out" / "state.json").read_text()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state.json").write_text(text)
    state = load_state(tmp_path)
    recs = [r for rs in state.certificates.values() for r in rs]
    assert all(isinstance(r[k], Stamp) for r in recs for k in CERT_STAMPS if k in r)  # type: ignore[literal-required]
    assert all(isinstance(r["ocsp"]["next_update"], Stamp) for r in recs if "ocsp" in r)
    assert all(isinstance(c["this_update"], Stamp) for c in state.crls.values())
    assert state.to_json() == text


def test_a_journal_step_parses_a_copy_and_gives_back_its_line():
    text, decoder, at, steps = (GOLDEN / "a2" / "journal.jsonl").read_text(), json.JSONDecoder(), 0, []
    while text[at:].strip():  # (the golden journal is pretty-printed: one object after another)
        d, at = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        steps.append(d)
    line = next(d for d in steps if d["op"] == "issued")
    before = json.dumps(line, sort_keys=True)
    op = parse_op(line)
    assert isinstance(op.record["not_after"], Stamp)  # type: ignore[attr-defined]
    assert json.dumps(line, sort_keys=True) == before  # the line as read is left alone
    assert op.to_json() == line and as_json(cert_record(dict(line["record"]))) == line["record"]
