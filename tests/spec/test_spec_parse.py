"""The quick composer (PyYAML's libyaml composer, scalars typed by ruamel) must give
exactly what ruamel's C safe loader gives, or step aside (None) so that ruamel does.
It must never accept a document ruamel refuses."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.cyaml import CSafeLoader

from compiler.spec.parse import _quick_compose
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from workload import workload  # noqa: E402


def ruamel(text: str):
    """What pkic's spec loading gives without the quick composer: ruamel's C safe
    loader, and where that refuses valid YAML 1.2 (a URI such as spiffe://x in a flow
    list: its libyaml is older than PyYAML's), ruamel's round-trip loader."""
    loader = CSafeLoader(text)
    loader.allow_duplicate_keys = False
    try:
        return loader.get_single_data(), True
    except Exception:
        pass
    finally:
        loader.dispose()
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return plain(yaml.load(text)), False


def plain(value):
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def same_or_steps_aside(text: str) -> None:
    quick = _quick_compose(text)
    try:
        expected, exact = ruamel(text)
    except Exception:
        assert quick is None, f"quick accepted what ruamel refuses: {text!r} -> {quick!r}"
        return
    if quick is not None:
        assert quick == expected, (text, quick, expected)
        if exact:  # the round-trip loader's scalars are subclasses: equal, not the same repr
            assert repr(quick) == repr(expected), (text, quick, expected)


def test_the_workload_and_the_example_parse_the_same_and_quickly():
    for text in (workload(300), (REPO_ROOT / "pki.yaml").read_text()):
        assert _quick_compose(text) is not None  # the common case does take the quick path
        same_or_steps_aside(text)


# plain scalars that YAML 1.2 (ruamel) and YAML 1.1 (PyYAML's own resolver) read apart,
# and other edge cases: they all must come out as ruamel types them
TRICKY = [
    "1", "-1", "+1", "0", "007", "0o17", "0x1F", "0b101", "1_000", "1.5", ".5", "1e3", "-.inf", ".NaN", "1:30", "190:20:30",
    "true", "True", "TRUE", "false", "yes", "no", "NO", "on", "off", "y", "n", "~", "null", "Null", "NULL", "",
    "2026-01-01", "2026-1-1", "2026-01-01T12:00:00Z", "2026-13-45", "<<", "=", "-", ".", "..", "+", "0.", "1.2.3",
    "svc-00007.example.com", "10.0.0.0/8", "spiffe://example.com/x", "ecdsa-p256", "90d", "a b", "'q'", '"d"', "C",
]

scalars = st.sampled_from(TRICKY)
keys = st.sampled_from(["a", "b", "C", "1", "true", "~", "dns", "<<", "2026-01-01", "x"])


docs = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(st.tuples(keys, inner), max_size=4).map(lambda kv: {"__pairs__": kv})),
    max_leaves=12,
)


def render(value, indent: int = 0) -> str:
    if isinstance(value, dict):
        pairs = value["__pairs__"]
        if not pairs:
            return "{}"
        pad = " " * indent
        return "\n" + "\n".join(f"{pad}{k}: {render(v, indent + 2)}" for k, v in pairs)
    if isinstance(value, list):
        return "[" + ", ".join(render(v, indent) if not isinstance(v, dict) else "{}" for v in value) + "]"
    return value


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(keys, docs), min_size=1, max_size=5))
def test_quick_composer_equals_ruamel(pairs):
    text = "\n".join(f"{k}: {render(v, 2)}" for k, v in pairs) + "\n"
    same_or_steps_aside(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(scalars, min_size=1, max_size=8), st.sampled_from(["flow", "block", "quoted"]))
def test_scalars_in_every_style(values, style):
    if style == "flow":
        text = "v: [" + ", ".join(values) + "]\n"
    elif style == "block":
        text = "v:\n" + "".join(f"  - {v}\n" for v in values)
    else:
        text = "v: [" + ", ".join('"' + v.replace('"', "") + '"' for v in values) + "]\n"
    same_or_steps_aside(text)


def test_what_it_leaves_to_ruamel():
    for text in ("a: 1\na: 2\n", "<<: {a: 1}\nb: 2\n", "a: !!str 1\n", "%YAML 1.1\n---\na: yes\n", "a: &x [1]\nb: *x\n"):
        same_or_steps_aside(text)
    assert _quick_compose("a: 1\na: 2\n") is None  # duplicates: ruamel names them
    assert _quick_compose("a: !!str 1\n") is None  # explicit tags
