"""Positions for problems in pki.yaml: field paths turned into file:line:col diagnostics.

pydantic's validation errors are mapped through the loaded document's positions
(:class:`~compiler.model.bounded.Locator`) into messages a user can act on (did-you-mean
for an unknown field, the offending value shown); a duplicate key libyaml reports by
line only gets its field path; a normalised name is found again in the list as written.
Nothing here reads a file: :func:`compiler.spec.loading.locate` does, when it must.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from compiler.model import names
from compiler.model.bounded import QUOTE_CHARS, Locator, quote, yaml_nodes
from compiler.model.bounded import dotted as _dotted
from compiler.model.errors import Diagnostic, PkicError

FieldPath = tuple[str | int, ...]  # a path through the document: mapping keys and list indexes

_NORMALISERS: dict[str, Callable[[str], str]] = {"dns": names.dns_name, "ip": names.ip_address, "uri": names.uri, "email": names.email}


def sorted_diagnostics(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Each problem once, in file order: how every spec error is reported."""
    return sorted(set(diags), key=lambda d: (d.line or 0, d.column or 0, d.path))


def raw_index(loc: Locator, section: str, name: str, field_name: str, value: str, fallback: int | None = None) -> int | None:
    """The index of a normalised ``value`` in the list as written in pki.yaml."""
    raw = ((loc.doc or {}).get(section) or {}).get(name) or {}
    items = raw.get(field_name) if isinstance(raw, dict) else None
    if isinstance(items, list):
        norm = _NORMALISERS.get(field_name)
        for i, item in enumerate(items):
            try:
                if (norm(item) if norm else item) == value:
                    return i
            except ValueError:
                continue
    return fallback


def locate_duplicate(text: str, exc: PkicError) -> PkicError:
    """Give a duplicate-key error its field path: libyaml's composer keeps duplicates, so
    find the mapping that holds the key twice, the second time at the reported line."""
    import yaml

    d = exc.diagnostics[0]
    m = re.match(r"duplicate key (['\"])(.*)\1:", d.message)
    nodes = yaml_nodes(text) if m and d.line is not None else None
    if nodes is None or m is None:
        return exc
    key = m.group(2)

    def holder(node: Any, path: FieldPath, seen: set[int]) -> FieldPath | None:
        if id(node) in seen:  # an alias: already walked
            return None
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
            if len(keys) > 1 and any(k.start_mark.line + 1 == d.line for k in keys[1:]):
                return path
            for k, v in node.value:
                sub = holder(v, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",), seen)
                if sub is not None:
                    return sub
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = holder(item, path + (i,), seen)
                if sub is not None:
                    return sub
        return None

    where = holder(nodes, (), set())
    if where is None:
        return exc
    return PkicError([Diagnostic(d.file, d.line, d.column, _dotted(where + (key,)), d.message, d.hint)])


def pydantic_diags(exc: ValidationError, loc: Locator, model: type[BaseModel]) -> list[Diagnostic]:
    """Every validation error of ``exc`` as a positioned diagnostic, worded for a user
    (``model`` is what was validated: it names the fields a did-you-mean can offer)."""
    diags = []
    for err in exc.errors(include_url=False):
        path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("function-before", "function-after")))
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        hint = None
        if kind == "extra_forbidden":
            field_name = path[-1]
            known = _known_fields(model, path[:-1])
            close = difflib.get_close_matches(str(field_name), known, n=1)
            msg = f"unknown field {quote(str(field_name))}"
            hint = f"did you mean '{close[0]}'?" if close else (f"known fields: {', '.join(known)}" if known else None)
            diags.append(loc.diag(path, msg, hint, key=True))
            continue
        if kind == "missing":
            msg = f"required field '{path[-1]}' is missing"
            diags.append(loc.diag(path[:-1], msg))
            continue
        if kind == "literal_error":
            msg = f"{_show(err['input'])} is not allowed: {msg[0].lower()}{msg[1:]}"
        elif kind.endswith(("_type", "_parsing")) or kind in ("model_type", "dict_type", "list_type"):
            msg = f"{msg[0].lower()}{msg[1:]} (got {_kind_of(err['input'])} {_show(err['input'])})"
        elif kind in ("string_pattern_mismatch", "greater_than_equal", "less_than_equal", "string_too_long", "string_too_short"):
            msg = f"{_show(err['input'])}: {msg[0].lower()}{msg[1:]}"
        diags.append(loc.diag(path, msg, hint))
    return sorted(diags, key=lambda d: (d.line or 0, d.column or 0, d.path))


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "nothing (null)"
    return "a string" if isinstance(value, str) else type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, dict):
        value = dict(value)
    elif isinstance(value, list):
        value = list(value)
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def _known_fields(model: type[BaseModel], path: FieldPath) -> list[str]:
    """The field names allowed at ``path`` (for did-you-mean hints)."""
    current: Any = model
    parts = list(path)
    while parts:
        part = parts.pop(0)
        if isinstance(current, tuple):  # dict[str, X] / list[X]: this part is the key or index
            current = current[1]
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(str(part))  # an index (int) names no field either way
            if f is None:
                return []
            current = _unwrap(f.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return []


def _unwrap(annotation: Any) -> Any:
    """What a field's annotation holds, for :func:`_known_fields`: a model, or
    ``(container, inner)`` for dict and list."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict,):
        return ("dict", _unwrap(args[1]))
    if origin in (list,):
        return ("list", _unwrap(args[0]))
    if args and origin is not Literal:
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
    return annotation
