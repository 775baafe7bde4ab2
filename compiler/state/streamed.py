"""``out/state.json`` parsed as it is read, a few thousand names at a time.

A state of 100,000 certificates is 123 MB of text; parsed whole, its text and its
records were alive together, the highest point of a W100k plan's memory. The state as
pkic writes it (State.json_chunks) has one line a record, each name's records between
a ``  "name": [`` line and a ``  ],`` line, and the other sections after a `` },``
line. JSON strings hold no raw line break, so a cut at a line break never falls inside
a token: the names' blocks are parsed in groups, and the sections after them as one
object, and together they are what one parse of the file gives. A group must parse to
exactly the names its lines open, each once in the whole file; anything else (another
layout, a name pkic could not have written, a duplicate, an error) gives None and the
caller parses the file whole, which reports any problem as it always did. A line
that runs over many pieces is joined once; one of the first lines (short, as pkic
writes them) that runs on hands the file over at once (a minified state). The texts
most records share are made one string each as each group is parsed (share_texts).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compiler.model.bounded import json_depth_ok

GROUP = 2048  # names parsed in one call
_HEADER = re.compile(rb'  "([A-Za-z0-9][A-Za-z0-9._-]{0,127})": \[\Z')
_OPEN, _CERTS, _EMPTY, _CLOSE = b"{", b' "certificates": {', b' "certificates": {},', b" },"
_END, _END_LAST = b"  ],", b"  ]"


# fields whose text most records share (an issuer, its key id, a key type, a rule's digest):
# one string for all (at 100,000 certificates, each record's own copies were 100 MB)
_SHARED = ("action", "issuer", "issuer_key_id", "issuer_serial", "key_source", "key_type", "kind", "status")
_SHARED_LISTS = ("key_rules", "reasons")


def share_texts(d: dict[str, Any], shared: dict[str, str]) -> None:
    """A record read as JSON, in place: the text of each field most records share
    (_SHARED) made one string, the one in ``shared``. Done as records are parsed, so
    that the copies freed make room for the next (done after, the memory stays taken)."""
    if type(d) is not dict:
        return
    one = shared.setdefault
    for k in _SHARED:
        v = d.get(k)
        if type(v) is str:
            d[k] = one(v, v)
    for k in _SHARED_LISTS:
        v = d.get(k)
        if type(v) is list:
            d[k] = [one(x, x) if type(x) is str else x for x in v]
    spec = d.get("spec")
    if type(spec) is dict:
        for k, v in spec.items():  # (values replaced, keys unchanged)
            if type(v) is str:
                spec[k] = one(v, v)
            elif k == "subject" and type(v) is list:
                spec[k] = [[one(x, x) if type(x) is str else x for x in pair] if type(pair) is list else pair for pair in v]


@dataclass
class Streamed:
    body: dict[str, Any]  # what json.loads of the whole file gives
    digest: bytes  # the file's SHA-256
    blob: str | None  # its git blob id (when asked for)
    spans: dict[str, tuple[int, int]] | None  # each name's records in the file (an ASCII file)


class _Off(Exception):
    """Not the layout pkic writes: parse the file whole."""


def parse_streamed(size: int, pieces: Iterable[bytes], blob_algo: str | None, max_depth: int) -> Streamed | None:
    """The state file of ``size`` bytes (when opened) read from ``pieces``; None when it
    is not laid out as pkic writes it, or its size changed while it was read."""
    sha = hashlib.sha256()
    git = hashlib.new(blob_algo) if blob_algo else None
    if git is not None:
        git.update(b"blob %d\0" % size)
    certs: dict[str, Any] = {}
    shared: dict[str, str] = {}  # (see share_texts)
    spans: dict[str, tuple[int, int]] = {}
    group: list[bytes] = []  # the lines of whole blocks not parsed yet
    names: list[str] = []  # the names those blocks open, in order
    tail: list[bytes] = []
    step = 0  # 0: "{"; 1: the certificates' line; 2: a block or the end; 3: in a block; 4: " },"; 5: the rest
    name, start, offset, total, ascii_ = "", 0, 0, 0, True
    partial: list[bytes] = []  # the line being read, in pieces (never joined again and again)
    held = 0

    def flush() -> None:
        if group[-1] == _END:
            group[-1] = _END_LAST
        text = b"{\n" + b"\n".join(group) + b"\n}"
        # (depth: the group sits one level below the file's top)
        if b"\x00" in text or not json_depth_ok(text, max_depth - 1):
            raise _Off
        part = json.loads(text.decode("utf-8"))
        if not isinstance(part, dict) or list(part) != names or any(n in certs for n in names):
            raise _Off
        for recs in part.values():
            if type(recs) is list:
                for r in recs:
                    share_texts(r, shared)
        certs.update(part)
        group.clear()
        names.clear()

    try:
        for piece in pieces:
            total += len(piece)
            sha.update(piece)
            if git is not None:
                git.update(piece)
            if b"\n" not in piece:  # a line goes on: kept in pieces, joined once it ends
                partial.append(piece)
                held += len(piece)
                if step in (0, 1, 4) and held > 64:
                    raise _Off  # a line pkic writes short (a minified state): parsed whole
                continue
            lines = piece.split(b"\n")
            if partial:
                partial.append(lines[0])
                lines[0] = b"".join(partial)
            last = lines.pop()  # (unfinished: the next piece goes on with it)
            partial, held = [last], len(last)
            for line in lines:
                ascii_ = ascii_ and line.isascii()
                if step == 3:
                    group.append(line)
                    if line == _END or line == _END_LAST:
                        spans[name] = (start, offset - 1)
                        step = 2 if line == _END else 4
                        if len(names) >= GROUP:
                            flush()
                    elif not (line.startswith(b"   {") and line.endswith((b"}", b"},"))):
                        raise _Off  # a record a line, as records_text writes them: a span is whole records
                elif step == 5:
                    tail.append(line)
                elif step == 2:
                    m = _HEADER.fullmatch(line)
                    if m is None:
                        raise _Off
                    name = m.group(1).decode()
                    names.append(name)
                    group.append(line)
                    start, step = offset + len(line) + 1, 3
                elif step == 4:
                    if line != _CLOSE:
                        raise _Off
                    step = 5
                elif step == 0:
                    if line != _OPEN:
                        raise _Off
                    step = 1
                else:  # step 1
                    if line not in (_CERTS, _EMPTY):
                        raise _Off
                    step = 2 if line == _CERTS else 5
                offset += len(line) + 1
        if total != size or step != 5:
            raise _Off
        if names:
            flush()
        rest = b"".join(partial)
        tail.append(rest)
        text = b"{\n" + b"\n".join(tail)
        if b"\x00" in text or not json_depth_ok(text, max_depth):
            raise _Off
        others = json.loads(text.decode("utf-8"))
        # (empty, the comma of " }," closed nothing: {"certificates": {...},} is no JSON)
        if not isinstance(others, dict) or not others or "certificates" in others:
            raise _Off
    except (_Off, ValueError, RecursionError):
        return None
    return Streamed(
        {"certificates": certs, **others},
        sha.digest(),
        git.hexdigest() if git is not None else None,
        spans if ascii_ and rest.isascii() else None,
    )
