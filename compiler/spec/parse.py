"""YAML text to data, fast when the text is fine and exact when it is not.

Three parsers, fastest first: :func:`_quick_compose` (PyYAML's libyaml composer, scalars
typed by ruamel), ruamel's C safe loader, and ruamel's round-trip loader, pure Python,
which keeps positions and words errors best. Every one runs only on text
:func:`~compiler.model.bounded.check_yaml` passed (size, depth, aliases, numbers).
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from compiler.model.bounded import check_yaml, quote
from compiler.model.bounded import yaml_error as _yaml_error
from compiler.model.errors import Diagnostic, PkicError

_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null", "timestamp")}


class _Fallback(Exception):
    """The quick composer met something it leaves to ruamel."""


def _quick_compose(text: str) -> Any:
    """The parsed document, or None to leave it to ruamel.

    ruamel's C loader calls a Python resolver while composing each of a large spec's
    ~100,000 scalars. PyYAML's libyaml composer (the same C scanner) does the structure
    about three times faster; every plain scalar that could be something other than a
    string is still typed by ruamel's own YAML 1.2 resolver and constructor, so the
    result is what ruamel gives (tests/spec/test_spec_parse.py holds the two equal). Tags,
    merge keys, duplicate keys, YAML directives and any error go to ruamel."""
    if "%YAML" in text:
        return None
    try:
        import yaml
        from ruamel.yaml.cyaml import CSafeLoader as RuamelLoader
        from ruamel.yaml.nodes import ScalarNode as RuamelScalar
    except ImportError:
        return None
    if not hasattr(yaml, "CSafeLoader"):  # PyYAML built without libyaml
        return None

    class Composer(yaml.CSafeLoader):
        def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:  # typing is decided below, by ruamel
            return ""

    ruamel = RuamelLoader("")
    first = {k for k in ruamel.yaml_implicit_resolvers if k}
    scalar, mapping = yaml.nodes.ScalarNode, yaml.nodes.MappingNode

    def convert(node: Any) -> Any:
        if node.tag != "":
            raise _Fallback  # an explicit tag
        if isinstance(node, scalar):
            v = node.value
            if node.style or (v and v[0] not in first):
                return v  # quoted, block, or a plain scalar no implicit type can match
            tag = ruamel.resolve(RuamelScalar, v, (True, False))
            name = str(tag)
            if name == "tag:yaml.org,2002:str":
                return v
            if name not in _SCALAR_TAGS:
                raise _Fallback  # a merge key, '=' ...
            return ruamel.construct_object(RuamelScalar(tag, v), deep=True)
        if isinstance(node, mapping):
            out = {convert(k): convert(v) for k, v in node.value}
            if len(out) != len(node.value):
                raise _Fallback  # duplicate keys: ruamel reports them
            return out
        return [convert(x) for x in node.value]

    loader = Composer(text)
    try:
        node = loader.get_single_node()
        return None if node is None else convert(node)
    except Exception:  # _Fallback, a YAML error, a value ruamel would refuse or warn on...
        return None
    finally:
        loader.dispose()
        ruamel.dispose()


def _c_safe_loader() -> type[Any] | None:
    """ruamel's C parser with the safe constructor; None without ruamel.yaml.clib (then
    the pure-Python safe loader reads it)."""
    try:
        from ruamel.yaml.cyaml import CSafeLoader
    except ImportError:
        return None
    return CSafeLoader


def parse_yaml(text: str, filename: str, *, fast: bool = False, checked: bool = False) -> Any:
    """Parse YAML. ``fast`` uses ruamel's C safe loader (plain dicts, no line numbers,
    about 5x faster), or quicker still _quick_compose; the round-trip loader keeps
    positions for error messages. ``checked``: the caller ran check_yaml on this very
    text already (it walks every event: once is enough)."""
    if not checked:
        check_yaml(text, filename)  # size, depth, aliases, numbers: before anything composes it
    try:
        if fast:
            doc = _quick_compose(text)
            if doc is not None:
                return doc
            safe_loader = _c_safe_loader()
            if safe_loader is not None:
                loader = safe_loader(text)
                loader.allow_duplicate_keys = False
                try:
                    return loader.get_single_data()
                finally:
                    loader.dispose()
        yaml = YAML(typ="safe" if fast else "rt")
        yaml.allow_duplicate_keys = False
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise PkicError([_yaml_error(filename, exc)]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad unicode)
        raise PkicError([Diagnostic(filename, None, None, "", f"cannot parse YAML: {quote(str(exc), 200)}")]) from None
