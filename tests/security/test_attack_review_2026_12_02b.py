"""Review of the performance commits c2fdf1b..HEAD (streamed state reading, entry
cache format 3, UTF-8 path_regex, frozen heap, scan walk, streamed digest).

Each test here fails against the code as reviewed and says what it proves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "state"))

from compiler.model.bounded import MAX_DEPTH  # noqa: E402
from compiler.model.errors import PkicError  # noqa: E402
from compiler.state.store import load_state  # noqa: E402
from compiler.state.streamed import parse_streamed  # noqa: E402
from test_streamed import state_text  # noqa: E402


def _stream(data: bytes, piece: int = 1 << 20):
    return parse_streamed(len(data), [data[i : i + piece] for i in range(0, len(data), piece)], "sha1", MAX_DEPTH)


def test_streamed_reading_accepts_a_trailing_comma_after_certificates_that_json_refuses() -> None:
    """The claim of compiler/state/streamed.py is "identical to json.loads of the whole
    file, or None". The sections after ``certificates`` are parsed as ``{\\n`` + the rest,
    so an empty rest (`` },`` then ``}``) parses to ``{}``, while the whole file,
    ``{"certificates": {...},}``, is not JSON at all: the streamed reading returns a body
    for a file json.loads refuses (a third reading). Harmless today only because
    _state_of then misses "format"; the error shown differs from the whole parse's."""
    text = state_text(3)
    cut = text.index("\n },\n") + len("\n },\n")
    bad = (text[:cut] + "}\n").encode()
    with pytest.raises(ValueError):
        json.loads(bad)
    got = _stream(bad)
    assert got is None, f"streamed reading gave {list(got.body)} for a file json.loads refuses"


def test_a_state_on_one_long_line_is_handed_over_at_once() -> None:
    """parse_streamed kept an unfinished line as ``rest`` and did ``rest + piece`` then
    ``.split(b"\\n")`` for every 1 MiB piece: a file with no line break cost O(size^2 /
    piece). A state json.loads accepts -- pkic's own, minified and padded to 224 MB (it
    compresses to almost nothing in git) -- took ~20 s of `pkic plan` before the whole
    parse even started (1 GiB: minutes). Now a line kept in pieces is joined once, and
    a line pkic writes short (the first ones) that runs on hands the file over after
    the first piece: counted here, not timed."""
    body = json.loads(state_text(2))
    compact = json.dumps(body, separators=(",", ":")).encode()
    piece = b" " * (1 << 20)
    taken = 0

    def pieces():
        nonlocal taken
        yield compact[:-1]
        for _ in range(224):
            taken += 1
            yield piece
        yield b"}"

    size = len(compact) + 224 * len(piece)
    assert parse_streamed(size, pieces(), "sha1", MAX_DEPTH) is None
    assert taken <= 1, f"{taken} pieces of a minified state read before handing it over"


def test_a_long_record_line_is_joined_once(tmp_path: Path) -> None:
    """A record line of many pieces (a certificate with thousands of names) is still
    streamed, and read as the whole parse reads it."""
    text = state_text(3).replace('"dns": ["leaf1.example.com"]', '"dns": [' + ", ".join(f'"n{i}.example.com"' for i in range(3000)) + "]", 1)
    data = text.encode()
    got = parse_streamed(len(data), [data[i : i + 97] for i in range(0, len(data), 97)], "sha1", MAX_DEPTH)
    assert got is not None and got.body == json.loads(text)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state.json").write_bytes(data)
    assert len(load_state(tmp_path).certificates["leaf1"][0]["spec"]["dns"]) == 3000
