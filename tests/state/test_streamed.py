"""out/state.json parsed as it is read (compiler/state/streamed.py) must give what one
json.loads of the file gives, or step aside (None) and let the whole parse judge: never
a third reading. States pkic writes are streamed; files edited at random, and the
attacks a hostile author of out/state.json would try, are either read exactly as
json.loads reads them or handed to the whole parse."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.model.bounded import MAX_DEPTH
from compiler.state import State
from compiler.state import streamed as streamed_mod
from compiler.state.outtree import blob_id
from compiler.state.store import load_state
from compiler.state.streamed import parse_streamed
from test_kept_texts import T0, record


_CERTS_OPEN = '{\n "certificates": {\n'


def _spans(text: str) -> dict[str, tuple[int, int]] | None:
    """The oracle (the spans as pkic found them in the whole text before the streamed
    reading). Where each name's records are in a state file as State.json_chunks lays it out
    (``  "name": [`` a line, the records a line each, ``  ]``), or None if it is not so."""
    if not text.startswith(_CERTS_OPEN):
        return None
    spans: dict[str, tuple[int, int]] = {}
    pos = len(_CERTS_OPEN)
    while text.startswith('  "', pos):
        quote = text.find('": [\n', pos + 3)
        if quote < 0:
            return None
        start = quote + 5
        end = text.find("\n  ]", start)
        if end < 0:
            return None
        spans[text[pos + 3 : quote]] = (start, end)
        if text.startswith(",\n", end + 4):
            pos = end + 6
        elif text.startswith("\n },", end + 4):
            return spans
        else:
            return None
    return None


def state_text(names: int, extra: str = "") -> str:
    s = State(lineage="l", serial=1)
    s.record_issued("ca", record("ca", "0a" * 10, None, "authority"), T0)
    for i in range(names):
        s.record_issued(f"leaf{i}{extra}", record(f"leaf{i}{extra}", f"{i + 1:04x}" * 5, "ca"), T0)
    return s.to_json()


def stream(text: str | bytes, piece: int = 7, algo: str | None = "sha1"):
    data = text.encode() if isinstance(text, str) else text
    return parse_streamed(len(data), [data[i : i + piece] for i in range(0, len(data), piece)], algo, MAX_DEPTH)


@pytest.mark.parametrize("names", [0, 1, 5, 9])
@pytest.mark.parametrize("piece", [1, 13, 1 << 20])
def test_a_state_pkic_writes_is_streamed_as_one_parse_reads_it(names: int, piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamed_mod, "GROUP", 2)  # several groups, and a last one short
    text = state_text(names)
    got = stream(text, piece)
    assert got is not None
    assert got.body == json.loads(text) and list(got.body) == list(json.loads(text))
    assert list(got.body["certificates"]) == list(json.loads(text)["certificates"])
    assert got.digest == hashlib.sha256(text.encode()).digest()
    assert got.blob == blob_id("sha1", text.encode())
    assert got.spans == _spans(text)


def test_a_name_beyond_ascii_keeps_no_spans() -> None:
    text = state_text(2).replace('"l"', '"lé"')
    got = stream(text)
    assert got is not None and got.spans is None and got.body == json.loads(text)


ATTACKS = {
    # a record line that closes its array and opens another name's: json.loads takes it
    "a name hidden in a record line": lambda t: t.replace('"leaf1", "not_after"', '"leaf1"}], "sneaky": [{"x": 1, "not_after"', 1),
    "a name twice, in two groups": lambda t: t.replace('"leaf3": [', '"leaf0": [', 1),
    "a name twice, in one group": lambda t: t.replace('"leaf1": [', '"leaf0": [', 1),
    "certificates again after the others": lambda t: t.replace('\n "version"', '\n "certificates": {},\n "version"', 1),
    "a NUL in a record": lambda t: t.replace('"leaf2.example.com"', '"leaf2\x00.example.com"', 1),
    "an escaped name": lambda t: t.replace('"leaf2": [', '"leaf\\u0032x": [', 1),
    "no final line break": lambda t: t.rstrip("\n"),
    "deep nesting in a record": lambda t: t.replace('"dns": [', '"dns": ' + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + ', "x": [', 1),
    "a trailing comma": lambda t: t.replace("\n  ]\n },", "\n  ],\n },", 1),
    "the records on the header line": lambda t: t.replace('"leaf2": [\n', '"leaf2": [', 1),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_layouts_are_read_as_one_parse_reads_them_or_handed_over(attack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamed_mod, "GROUP", 2)
    text = ATTACKS[attack](state_text(6))
    assert text != state_text(6), "the attack must change the file"
    got = stream(text)
    try:
        whole = json.loads(text)
    except ValueError:
        assert got is None
        return
    assert got is None or (got.body == whole and list(got.body["certificates"]) == list(whole["certificates"])), attack


def test_bytes_that_are_not_utf8_are_handed_over() -> None:
    data = state_text(3).encode().replace(b"leaf1.example", b"leaf1\xff.example", 1)
    assert stream(data) is None


def test_a_file_that_grew_while_read_is_handed_over() -> None:
    data = state_text(3).encode()
    assert parse_streamed(len(data) - 1, [data], "sha1", MAX_DEPTH) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_edits_are_read_as_one_parse_reads_them_or_handed_over(data: st.DataObject) -> None:
    streamed_mod.GROUP = 2
    try:
        lines = state_text(5).split("\n")
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(lines) - 1))
            op = data.draw(st.sampled_from(["drop", "dup", "swap", "edit", "insert"]))
            if op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[i])
            elif op == "swap":
                j = data.draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "edit" and lines[i]:
                k = data.draw(st.integers(0, len(lines[i]) - 1))
                lines[i] = lines[i][:k] + data.draw(st.sampled_from(['"', ",", "]", "[", "}", "{", " ", "x", "\\", ""])) + lines[i][k + 1 :]
            else:
                lines.insert(i, data.draw(st.sampled_from(['  "leaf9": [', "  ],", "  ]", " },", '   {"a": 1}', "{", "}"])))
        text = "\n".join(lines)
        got = stream(text, piece=data.draw(st.integers(1, 64)))
        try:
            whole = json.loads(text)
        except ValueError:
            assert got is None
            return
        if got is not None:
            assert got.body == whole and list(got.body) == list(whole)
            assert list(got.body["certificates"]) == list(whole["certificates"])
    finally:
        streamed_mod.GROUP = 2048


def test_apply_refuses_a_state_that_is_not_the_one_the_gate_hashed(tmp_path: Path) -> None:
    """Streamed or whole, the state read must have the blob id the seal gate found."""
    from compiler.model.errors import PkicError

    (tmp_path / "out").mkdir()
    text = state_text(2)
    (tmp_path / "out" / "state.json").write_text(text)
    assert load_state(tmp_path, blob=("sha1", blob_id("sha1", text.encode()))).certificates
    with pytest.raises(PkicError, match="not the file the seal gate found"):
        load_state(tmp_path, blob=("sha1", blob_id("sha1", b"something else")))
    (tmp_path / "out" / "state.json").write_text(text.replace("{\n", "{", 1))  # another layout: parsed whole
    with pytest.raises(PkicError, match="not the file the seal gate found"):
        load_state(tmp_path, blob=("sha1", blob_id("sha1", text.encode())))


def test_the_texts_records_share_are_one_string_each() -> None:
    """Fields most records share (issuer, kind, status, the spec's values) are made one
    string as the groups are parsed (at W100k each record's own copies were 120 MB)."""
    text = state_text(4)
    got = stream(text)
    assert got is not None and got.body == json.loads(text)
    a, b = got.body["certificates"]["leaf0"][0], got.body["certificates"]["leaf3"][0]
    assert a["issuer"] == "ca" and a["issuer"] is b["issuer"] and a["status"] is b["status"]
    assert a["spec"]["issuer"] is b["spec"]["issuer"]
    assert a["serial"] != b["serial"]


def test_a_block_is_whole_records_a_line_or_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A span is copied verbatim when apply rewrites the state (only for a file apply
    wrote itself): each line of a block must be one record as records_text writes it,
    so that a span can never be text that parses as something else in its context. A
    value that is not a record, and a record whose array closes on a '  ],' line so
    that the next header falls inside it, are valid JSON and handed to the whole parse."""
    monkeypatch.setattr(streamed_mod, "GROUP", 2)
    text = state_text(3)
    not_a_record = text.replace('  "leaf1": [\n', '  "leaf1": [\n   1,\n', 1)
    head = text.index('  "leaf1": [\n')
    # (leaf2 is the last block: the shifted one ends where the certificates do)
    shifted = text[:head] + '  "leaf1": [\n   {"x": [\n  ],\n  "leaf2": [\n   {"y": 1}\n  ]}\n  ]\n },' + text[text.index("\n },") + 4 :]
    for bad in (not_a_record, shifted):
        json.loads(bad)  # valid JSON, which one parse reads
        assert stream(bad) is None
