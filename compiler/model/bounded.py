"""Bounded parsing: every file pkic reads can come from a pull request.

One place holds the limits that keep a hostile input an ordinary error (file:line:col,
exit 1, well under a second) rather than a minute of CPU, gigabytes of memory or a
crashed interpreter:

* size: :data:`MAX_BYTES` for any one input (the caller's read refuses more);
* nesting: at most :data:`MAX_DEPTH` levels, measured on the parser's event stream
  *before* anything is composed (libyaml's composer recurses in C: a deep document
  crashed the interpreter);
* aliases: anchors stay allowed (real ``.sops.yaml`` files use them), but the
  document's node count with every alias expanded (memoised per anchor) may not
  exceed ``max(10,000, 10 x its own node count)`` -- go-yaml's rule. Composing is
  linear (an alias is a shared node); whatever walks the composed document after it
  (conversion, pydantic, digests) is not, and a 500-byte "billion laughs" took
  minutes and gigabytes. A recursive alias (an anchor used inside itself) is refused;
* numbers: a plain scalar of more than :data:`MAX_NUMBER_CHARS` characters that reads
  as a number is refused where it stands (Python refuses to convert such an int
  anyway, without a position);
* JSON (the state, saved plans, CI records): the same depth limit, checked on the
  bytes before decoding;
* :func:`quote` shows at most ~80 characters of a value in a message, control
  characters escaped.

Nothing here knows what the documents mean; the callers (spec, policy, sops_config,
state) do.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from compiler.model.errors import Diagnostic, PkicError

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MIN_EXPANDED = 10_000
EXPANSION_RATIO = 10
MAX_NUMBER_CHARS = 64
QUOTE_CHARS = 80

_NUMBER_TAG = re.compile(r"[:!](?:int|float)$")  # !!int "0xfff..." is built as a number though quoted
_EXP = r"(?:[eE][-+]?[0-9]+)?"
_NUMBERISH = re.compile(
    rf"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*(?:\.[0-9_]*)?{_EXP}|\.[0-9_]+{_EXP}|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)"
)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """A value for a message: its repr, at most ``limit`` characters, control characters
    escaped (repr escapes them; a str subclass or an object's own repr might not)."""
    text = repr(value) if not isinstance(value, str) else repr(str(value))
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Limit(Exception):
    def __init__(self, line: int | None, column: int | None, message: str, hint: str):
        self.line, self.column, self.message, self.hint = line, column, message, hint


def _pos(mark: Any) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def _walk(events: Any, classes: tuple[Any, ...]) -> tuple[int, int]:
    """Check one event stream; raise _Limit at the first thing over a limit. Returns the
    number of nodes written (aliases not expanded) and of nodes once aliases are expanded."""
    scalar, alias, map_start, seq_start, map_end, seq_end = classes
    starts, ends = (map_start, seq_start), (map_end, seq_end)
    stack: list[list[Any]] = [[0, None]]  # per open collection: expanded node count, anchor
    open_anchors: set[str] = set()
    sizes: dict[str, int] = {}
    own = 0
    largest: tuple[int, Any] = (0, None)  # the alias that expands the most, for the position
    for ev in events:
        cls = ev.__class__
        if cls is scalar:
            own += 1
            stack[-1][0] += 1
            if ev.anchor:
                sizes[ev.anchor] = 1
            value = ev.value
            if len(value) > MAX_NUMBER_CHARS and ((not ev.style and _NUMBERISH.fullmatch(value)) or _NUMBER_TAG.search(ev.tag or "")):
                line, col = _pos(ev.start_mark)
                raise _Limit(
                    line,
                    col,
                    f"a number of {len(value)} characters: larger than any value pkic reads",
                    "numbers in pkic's files are small (path lengths, versions); quote it if it is text",
                )
        elif cls in starts:
            own += 1
            stack.append([1, ev.anchor])
            if ev.anchor:
                open_anchors.add(ev.anchor)
            if len(stack) - 1 > MAX_DEPTH:
                line, col = _pos(ev.start_mark)
                raise _Limit(
                    line,
                    col,
                    f"nested more than {MAX_DEPTH} levels deep",
                    "pkic's files are a few levels deep: this is not a file pkic can read",
                )
        elif cls in ends:
            count, anchor = stack.pop()
            if anchor:
                sizes[anchor] = count
                open_anchors.discard(anchor)
            stack[-1][0] += count
        elif cls is alias:
            own += 1
            name = ev.anchor
            if name in open_anchors:
                line, col = _pos(ev.start_mark)
                raise _Limit(
                    line,
                    col,
                    f"the alias *{quote(name, 40)[1:-1]} is used inside its own anchor (a recursive document)",
                    "an alias may only repeat a value defined before it",
                )
            n = sizes.get(name, 1)  # an unknown anchor: the parser reports it
            stack[-1][0] += n
            if n > largest[0]:
                largest = (n, ev.start_mark)
    expanded = stack[0][0]
    limit = max(MIN_EXPANDED, EXPANSION_RATIO * own)
    if expanded > limit:
        line, col = _pos(largest[1])
        shown = f"{expanded:,}" if expanded < 10**15 else f"more than {10**15:,}"
        raise _Limit(
            line,
            col,
            f"aliases expand this document to {shown} values ({own:,} written; pkic reads at most {limit:,})",
            "an anchor repeated inside repeated anchors multiplies; write the values out, or use fewer levels of aliases",
        )
    return own, expanded


def _pyyaml_events(text: str) -> tuple[Any, tuple[Any, ...]] | None:
    try:
        import yaml
    except ImportError:
        return None
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    from yaml import events as ev

    classes = (ev.ScalarEvent, ev.AliasEvent, ev.MappingStartEvent, ev.SequenceStartEvent, ev.MappingEndEvent, ev.SequenceEndEvent)
    return yaml.parse(text, Loader=yaml.CSafeLoader), classes


def _ruamel_classes() -> tuple[Any, ...]:
    from ruamel.yaml import events as ev

    return (ev.ScalarEvent, ev.AliasEvent, ev.MappingStartEvent, ev.SequenceStartEvent, ev.MappingEndEvent, ev.SequenceEndEvent)


def _ruamel_c_events(text: str) -> tuple[Any, tuple[Any, ...]] | None:
    try:
        from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]  # re-exported from _ruamel_yaml, untyped
    except ImportError:
        return None

    def events() -> Any:
        parser = CParser(text)
        try:
            while parser.check_event():
                yield parser.get_event()
        finally:
            parser.dispose()

    return events(), _ruamel_classes()


def _ruamel_events(text: str) -> tuple[Any, tuple[Any, ...]]:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).parse(text), _ruamel_classes()


def check_yaml(text: str, filename: str) -> int | None:
    """The number of nodes ``text`` writes, or None when no parser reads it; see :func:`yaml_counts`."""
    counts = yaml_counts(text, filename)
    return None if counts is None else counts[0]


def yaml_counts(text: str, filename: str) -> tuple[int, int] | None:
    """Refuse a YAML document over the limits, before anything composes it. libyaml's
    event parser (C, fast) checks it; should it refuse the text (a YAML 1.2 nicety),
    ruamel's parsers (its libyaml fork, then its pure-Python one) check it instead, and a text neither parses is left to the
    loader, which reports the syntax error with its position. Returns the nodes written
    and the nodes once aliases are expanded (equal: the text has no alias)."""
    if len(text) > MAX_BYTES:
        raise PkicError(
            [
                Diagnostic(
                    filename,
                    None,
                    None,
                    "",
                    f"is {len(text):,} characters: larger than pkic reads ({MAX_BYTES:,})",
                    "pkic's inputs are small text files; is this the right file?",
                )
            ]
        )
    attempts = [_pyyaml_events, _ruamel_c_events, _ruamel_events]
    for attempt in attempts:
        source = attempt(text)
        if source is None:
            continue
        events, classes = source
        try:
            return _walk(events, classes)
        except _Limit as exc:
            raise PkicError([Diagnostic(filename, exc.line, exc.column, "", exc.message, exc.hint)]) from None
        except RecursionError:
            raise PkicError(
                [Diagnostic(filename, None, None, "", f"nested more than {MAX_DEPTH} levels deep", "this is not a file pkic can read")]
            ) from None
        except Exception:  # a syntax error (or a construct libyaml refuses): try the next parser
            continue
    # neither parser reads it: the loader reports the syntax error with its position
    return None


def load_yaml(text: str, filename: str) -> Any:
    """A small YAML file (``.sops.yaml``, a key file's metadata) checked, then loaded as
    plain data (positions: ``Locator(filename, doc, yaml_nodes(text))``)."""
    from ruamel.yaml import YAML

    check_yaml(text, filename)
    yaml = YAML(typ="safe")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise PkicError([yaml_error(filename, exc)]) from None
    except RecursionError:
        raise PkicError([Diagnostic(filename, None, None, "", "nested too deeply", "this is not a file pkic can read")]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad unicode)
        raise PkicError(
            [Diagnostic(filename, None, None, "", f"cannot parse YAML: {quote(str(exc) or type(exc).__name__, 200)}")]
        ) from None


# --------------------------------------------------------------------------- positions


class Locator:
    """Maps a field path to a 1-based (line, column) in the loaded YAML."""

    def __init__(self, filename: str, doc: Any, nodes: Any = None):
        self.filename = filename
        self.doc = doc
        self.nodes = nodes  # libyaml's node tree (yaml_nodes): positions without ruamel's slow loader

    @property
    def positioned(self) -> bool:
        return self.nodes is not None or isinstance(self.doc, (CommentedMap, CommentedSeq))

    def at(self, path: tuple[Any, ...], *, key: bool = False) -> tuple[int | None, int | None]:
        if self.nodes is not None:
            return _node_at(self.nodes, path, key)
        node, pos = self.doc, (1, 1)
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, CommentedMap) and part in node:
                use_key = (key and last) or node[part] is None or node.lc.value(part) is None
                line, col = node.lc.key(part) if use_key else node.lc.value(part)
                pos, node = (line + 1, col + 1), node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
                pos, node = (line + 1, col + 1), node[part]
            else:
                break
        return pos

    def diag(self, path: tuple[Any, ...], message: str, hint: str | None = None, *, key: bool = False) -> Diagnostic:
        line, col = self.at(path, key=key)
        return Diagnostic(self.filename, line, col, dotted(path), message, hint)


def _node_at(node: Any, path: tuple[Any, ...], key: bool) -> tuple[int | None, int | None]:
    import yaml

    pos: tuple[int | None, int | None] = (1, 1)
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if hit is None:
                break
            k, v = hit
            empty = isinstance(v, yaml.ScalarNode) and v.value == "" and not v.style
            mark = k.start_mark if (key and last) or empty else v.start_mark
            pos, node = (mark.line + 1, mark.column + 1), v
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            pos = (node.start_mark.line + 1, node.start_mark.column + 1)
        else:
            break
    return pos


def yaml_nodes(text: str) -> Any:
    """The node tree of a document :func:`check_yaml` passed, composed by libyaml (C,
    about a microsecond a node): line and column of every value, for error messages.
    ruamel's round-trip loader gives the same at ~100 us a node in pure Python (a
    7 MB flow list took it ten minutes). None if libyaml cannot compose the text."""
    try:
        import yaml
    except ImportError:
        return None
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    loader = yaml.CSafeLoader(text)
    try:
        return loader.get_single_node()
    except Exception:
        return None
    finally:
        loader.dispose()


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def yaml_error(filename: str, exc: MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    problem = (exc.problem or str(exc)).strip()
    dup = re.match(r'found duplicate key "([^"]*)"', problem)
    if dup:
        return Diagnostic(
            filename,
            line,
            col,
            "",
            f"duplicate key {quote(dup.group(1))}: it is already defined in this mapping",
            "names and fields must be unique; rename or merge the two",
        )
    if len(problem) > 200:
        problem = problem[:197] + "..."
    return Diagnostic(filename, line, col, "", f"YAML syntax error: {problem}", "check indentation, quoting and colons")


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")


def json_depth_ok(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether no array or object in ``data`` nests deeper than ``max_depth``, in a few
    passes of C (a 100,000-certificate state is tens of megabytes): escapes removed (a
    backslash pairs with the next byte, left to right), then everything but quotes and
    brackets, then the strings; innermost pairs are then removed once per level.
    Meaningful for valid JSON only (the decoder judges the rest); False for anything but
    UTF-8 (json.loads also reads UTF-16 and UTF-32, whose NUL bytes hide the escapes from
    a byte-level scan; any JSON text in them has a NUL byte)."""
    if b"\x00" in data:
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    reduced = data.translate(_SQUARE, _NOT_STRUCTURE)
    # a string holding no bracket is now '""': removing those pairs leaves no quote at
    # all unless some string holds a bracket (its opening quote ends an odd run of
    # quotes); then split the strings out exactly
    brackets = reduced.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(reduced.split(b'"')[::2])
    for _ in range(max_depth):
        if not brackets:
            return True
        shorter = brackets.replace(b"[]", b"")  # one level per pass
        if len(shorter) == len(brackets):
            return True  # unbalanced: not JSON, the decoder says so
        brackets = shorter
    return not brackets


def loads_json(data: bytes | str, filename: str, hint: str, max_depth: int = MAX_DEPTH, what: str = "it") -> Any:
    """Decode JSON read from an untrusted file: depth checked first, any failure one
    diagnostic (with the line and column the decoder gives)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return parse_json_text(json_text(raw, filename, hint, max_depth, what), filename, hint, what)


def json_text(raw: bytes, filename: str, hint: str, max_depth: int = MAX_DEPTH, what: str = "it") -> str:
    """The first half of :func:`loads_json`: the bytes checked (no NUL, depth) and decoded.
    A caller holding a large file drops its bytes before :func:`parse_json_text`, so
    that the bytes, their text and the parsed objects are never all alive at once."""
    if b"\x00" in raw:
        raise PkicError([Diagnostic(filename, None, None, "", f"{what} is not UTF-8 JSON (a NUL byte: UTF-16 or UTF-32?)", hint)])
    if not json_depth_ok(raw, max_depth):
        raise PkicError([Diagnostic(filename, None, None, "", f"nested more than {max_depth} levels deep: not a file pkic wrote", hint)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PkicError([Diagnostic(filename, None, None, "", f"{what} is not valid JSON ({type(exc).__name__})", hint)]) from None


def parse_json_text(text: str, filename: str, hint: str, what: str = "it") -> Any:
    """The second half of :func:`loads_json`."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PkicError([Diagnostic(filename, exc.lineno, exc.colno, "", f"{what} is not valid JSON ({exc.msg})", hint)]) from None
    except (RecursionError, ValueError) as exc:
        raise PkicError([Diagnostic(filename, None, None, "", f"{what} is not valid JSON ({type(exc).__name__})", hint)]) from None
