"""The incremental load (compiler/spec/incremental.py) must give exactly what a full load
gives, or step aside. Random specs in random styles are loaded once (the entry cache is
filled), edited at random (in the model, and as text: lines deleted, doubled, indented,
characters inserted), and loaded again with the cache and without it: the same
effective spec, or the same error."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compiler.model.errors import PkicError
from compiler.spec import incremental, loading
from compiler.spec.cache import dump_entry
from compiler.spec.effective import EffectiveSpec

ROOT = "root-ca"


def canon(eff: EffectiveSpec) -> str:
    return json.dumps(
        {
            "entries": [dump_entry(e) for e in eff.entries.values()],
            "moved": eff.moved,
            "children": eff.children,
            "publish": [eff.publish.ocsp, eff.publish.ocsp_dir],
        },
        sort_keys=True,
    )


def outcome(repo: Path, *, use_cache: bool) -> str:
    try:
        return canon(loading.load(repo, caches=loading.PLAN_CACHES if use_cache else None))
    except PkicError as exc:
        return "error: " + "\n".join(d.render() if hasattr(d, "render") else str(d) for d in exc.diagnostics)


# --------------------------------------------------------------------------- random specs

names = st.sampled_from(["web", "db", "api", "svc-1", "svc.2", "svc_3", "mail", "x9", "web", "db", "api"] * 3 + ["true"])
hosts = st.lists(st.sampled_from(["a.example.com", "b.example.com", "c.svc.internal", "*.example.com", "d.example.org"]), max_size=3)
lifetimes = st.sampled_from([None, "30d", "90d", "1y"])


@st.composite
def spec_model(draw: st.DrawFn) -> dict:
    inter = draw(st.lists(st.sampled_from(["ca-a", "ca-b", "ca-c"]), unique=True, max_size=3))
    auths: dict[str, dict] = {ROOT: {"subject": {"CN": "Root"}, "lifetime": "10y"}}
    for i, n in enumerate(inter):
        parent = draw(st.sampled_from([ROOT] + inter[:i]))
        body: dict = {"issuer": parent, "subject": {"CN": n}, "lifetime": "3y"}
        if draw(st.booleans()):
            body["name_constraints"] = {"permitted_dns": ["example.com", "svc.internal", "example.org"]}
        auths[n] = body
    certs: dict[str, dict] = {}
    for n in draw(st.lists(names, unique=True, min_size=1, max_size=6)):
        body = {"issuer": draw(st.sampled_from(list(auths))), "dns": draw(hosts) or ["a.example.com"]}
        lt = draw(lifetimes)
        if lt:
            body["lifetime"] = lt
        if draw(st.booleans()):
            body["profile"] = draw(st.sampled_from(["server", "client", "peer"]))
        if draw(st.integers(0, 5)) == 0:
            body["revoke"] = "superseded"
        certs[n] = body
    doc = {"version": 1, "defaults": {"key": draw(st.sampled_from(["ecdsa-p256", "ed25519"])), "subject": {"O": "Example"}}}
    doc["authorities"] = auths
    doc["certificates"] = certs
    if draw(st.booleans()):
        doc["moved"] = [{"from": "old-name", "to": next(iter(certs))}]
    return doc


def scalar(v: object) -> str:
    if isinstance(v, str) and (v.startswith("*") or v in ("true", "null")):
        return json.dumps(v)
    return str(v)


def flow(v: object) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def block(v: dict, indent: int, step: int) -> list[str]:
    lines = []
    for k, x in v.items():
        pad = " " * indent
        if isinstance(x, dict) and x:
            lines.append(f"{pad}{k}:")
            lines += block(x, indent + step, step)
        else:
            lines.append(f"{pad}{k}: {flow(x)}")
    return lines


@st.composite
def rendered(draw: st.DrawFn, doc: dict) -> str:
    step = draw(st.sampled_from([2, 4]))
    lines = ["# pki.yaml"]
    for key, value in doc.items():
        if key in ("authorities", "certificates"):
            lines.append(f"{key}:" + draw(st.sampled_from(["", "  # the entries"])))
            for name, body in value.items():
                key_text = draw(st.sampled_from([name] * 12 + [f'"{name}"', f"'{name}'", f'"{name}\\x41"']))
                if draw(st.booleans()):
                    lines.append(f"{' ' * step}{key_text}: {flow(body)}")
                else:
                    lines.append(f"{' ' * step}{key_text}:")
                    lines += block(body, 2 * step, step)
                if draw(st.integers(0, 3)) == 0:
                    lines.append(draw(st.sampled_from(["", "# between", "   # indented comment"])))
        elif key == "moved":
            lines.append("moved:")
            lines += [f"{' ' * step}- {flow(m)}" for m in value]
        else:
            lines.append(f"{key}: {flow(value)}" if not isinstance(value, dict) else f"{key}:")
            if isinstance(value, dict):
                lines += block(value, step, step)
    return "\n".join(lines) + "\n"


# the attacks of tests/security/test_attack_incremental_split.py, in pieces: quoted scalars
# left open across lines and sections, decoy sections, anchors and aliases across entries
TRICKY = [
    '# "',
    '  # "',
    "  # '",
    '    L: "Springfield',
    '  subject: {L: "x',
    "  note: 'x",
    "certificates: {web: {issuer: root-ca, dns: [evil.example.com]}}",
    "authorities: {evil-ca: {subject: {CN: Evil}}}",
    "  evil: {issuer: root-ca, dns: [evil.example.com]}",
    "    dns: &names [a.example.com, evil.example.com]",
    "    dns: *names",
    "  web: {issuer: root-ca, dns: *names}",
    "defaults: &d {key: ed25519}",
    "certificates:",
    '"',
    "  x: |",
    "  x: >2",
    "      # inside a block scalar",
    "certificates:#x:",  # a key, not a header: YAML starts a comment after a space only
    "authorities:#a:",
    "# \x01",  # characters YAML refuses, where the split hands lines to no parser
    "  # \x1b",
    "certificates: # \x7f",
]


PAIRS = [
    ('    L: "Springfield', '# "'),
    ('    L: "Springfield', '  # "'),
    ('    L: "Springfield', '    # "'),
    ("  note: 'x", "  # '"),
    ('  subject: {L: "x', '  # "}'),
    ("  sans: [a.example.com,", "  ]"),
    ("moved: [", "]"),
]


@st.composite
def text_edit(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        kind = draw(st.sampled_from(["delete", "double", "indent", "dedent", "char", "swap", "insert", "move", "pair", "pair", "alias"]))
        if kind == "delete":
            del lines[i]
        elif kind == "double":
            lines.insert(i, lines[i])
        elif kind == "indent":
            lines[i] = "  " + lines[i]
        elif kind == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
        elif kind == "char":
            j = draw(st.integers(0, len(lines[i])))
            c = draw(st.sampled_from(list("\"'[]{}:#&*!|>-,?%@ \t") + ["\r", "\u2028", "x"]))
            lines[i] = lines[i][:j] + c + lines[i][j:]
        elif kind == "insert":  # lines that open or close what spans lines, or stand in for a section
            lines.insert(i, draw(st.sampled_from(TRICKY)))
        elif kind == "pair":  # something opened on one line and closed on a later one
            opener, closer = draw(st.sampled_from(PAIRS))
            heads = [k for k, ln in enumerate(lines) if ln.startswith(("authorities:", "certificates:"))] or [i]
            if draw(st.booleans()):  # mostly across a section's header: where the line split cuts
                h = draw(st.sampled_from(heads))
                i, j = draw(st.integers(max(0, h - 3), h)), draw(st.integers(h + 1, len(lines)))
            else:
                j = draw(st.integers(i, len(lines)))
            lines.insert(j, closer)
            lines.insert(i, opener)
            if draw(st.booleans()):  # and a decoy section in between, or after
                lines.insert(draw(st.integers(i + 1, j + 2)), "certificates: {web: {issuer: root-ca, dns: [evil.example.com]}}")
        elif kind == "alias":  # an anchor in one entry, an alias to it in another
            dns = [k for k, ln in enumerate(lines) if "dns: [" in ln]
            if len(dns) >= 2:
                a, b = sorted(draw(st.lists(st.sampled_from(dns), min_size=2, max_size=2, unique=True)))
                lines[a] = lines[a].replace("dns: [", "dns: &names [", 1)
                lines[b] = re.sub(r"dns: \[[^\]]*\]", "dns: *names", lines[b], count=1)
        elif kind == "move":
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(i))
        elif i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        if not lines:
            lines = [""]
    return "\n".join(lines)


@st.composite
def model_edit(draw: st.DrawFn, doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    certs, auths = doc["certificates"], doc["authorities"]
    kind = draw(st.sampled_from(["san", "issuer", "defaults", "authority", "add", "remove", "lifetime"]))
    name = draw(st.sampled_from(sorted(certs)))
    if kind == "san":
        certs[name]["dns"] = list(certs[name]["dns"]) + ["new.example.com"]
    elif kind == "issuer":
        certs[name]["issuer"] = draw(st.sampled_from(sorted(auths) + ["nobody"]))
    elif kind == "defaults":
        doc["defaults"]["key"] = "ecdsa-p384"
    elif kind == "authority":
        a = draw(st.sampled_from(sorted(auths)))
        auths[a]["lifetime"] = draw(st.sampled_from(["1y", "2y", "15y"]))
    elif kind == "add":
        certs["added"] = {"issuer": ROOT, "dns": ["added.example.com"]}
    elif kind == "remove" and len(certs) > 1:
        del certs[name]
    elif kind == "lifetime":
        certs[name]["lifetime"] = draw(st.sampled_from(["2d", "20y"]))
    return doc


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_incremental_load_is_a_full_load(data: st.DataObject, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = data.draw(spec_model())
    first = data.draw(rendered(doc))
    how = data.draw(st.sampled_from(["model", "text", "text", "primed-odd"]))
    if how == "model":
        second = data.draw(rendered(data.draw(model_edit(doc))))
    elif how == "text":
        second = data.draw(text_edit(first))
    else:  # the cache filled from an odd file (a throwaway commit), then an ordinary one
        first, second = data.draw(text_edit(first)), data.draw(rendered(data.draw(model_edit(doc))))
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        monkeypatch.setenv("XDG_CACHE_HOME", str(Path(tmp) / "cache"))
        (repo / "pki.yaml").write_text(first)
        outcome(repo, use_cache=True)  # fills the caches, when it loads
        (repo / "pki.yaml").write_text(second)
        used = incremental.load(repo, second.encode()) is not None
        event(f"incremental path taken: {used}")
        assert outcome(repo, use_cache=True) == outcome(repo, use_cache=False)


def test_a_one_line_change_is_loaded_incrementally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The property above holds trivially if the incremental path is never taken: here it
    must be, and it must resolve the changed entry afresh (a new SAN shows)."""
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from workload import workload

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    text = workload(300)
    (repo / "pki.yaml").write_text(text)
    before = loading.load(repo)
    edited = text.replace("svc-00007.example.com]", "svc-00007.example.com, extra.example.com]")
    (repo / "pki.yaml").write_text(edited)
    inc = incremental.load(repo, edited.encode())
    assert inc is not None
    assert "extra.example.com" in inc.entries["svc-00007"].spec["dns"]
    assert canon(inc) == canon(loading.load(repo, caches=None)) != canon(before)
    # and a change to an authority re-resolves what it issued: its CRL URL, say
    changed = edited.replace("ca-03: {issuer: root-ca,", "ca-03: {issuer: root-ca, crl_url: http://crl.example.com/ca-03.crl,")
    (repo / "pki.yaml").write_text(changed)
    inc = incremental.load(repo, changed.encode())
    assert inc is not None
    assert inc.entries["svc-00003"].spec["crl_url"] == "http://crl.example.com/ca-03.crl"
    assert canon(inc) == canon(loading.load(repo, caches=None))


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\ncertificates:\n  a: {}\n  b: {}\n",
        "version: 1\ncertificates:\n  a: {}\n\tb: {}\n",
        "version: 1\ncertificates:\n  a: {}\r\n  b: {}\n",
        "version: 1\ncertificates:\n  a: {}\n  'b': {}\n",
        "version: 1\ncertificates:\n  a: {}\n  'b''': {}\n",
        'version: 1\ncertificates:\n  a: {}\n  "b\\x41": {}\n',
        "version: 1\ncertificates:\n  a: {}\n  1e3: {}\n",
        "version: 1\ncertificates:\n  a: {}\n  true: {}\n",
        "version: 1\ncertificates:\n  a: {}\n  a: {}\n",
        "version: 1\ncertificates:\n  a: {}\n certs: {}\n",
        "version: 1\ncertificates:\n  a: {}\n---\n",
        "%YAML 1.2\n---\nversion: 1\ncertificates:\n  a: {}\n",
        "version: 1\ncertificates:\ncertificates:\n  a: {}\n",
        "version: 1\ncertificates:\nauthorities:\n  a: {}\n",
        "  version: 1\ncertificates:\n  a: {}\n",
        "version: 1\ncertificates:\n  a: {}\n  ? b\n  : {}\n",
    ],
)
def test_the_split_steps_aside_when_unsure(text: str) -> None:
    expected_ok = text in ("version: 1\ncertificates:\n  a: {}\n  b: {}\n", "version: 1\ncertificates:\n  a: {}\n  'b': {}\n")
    assert (incremental.split(text) is not None) == expected_ok


def test_the_cache_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory another user could write is not read (as the spec cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    text = "version: 1\nauthorities:\n  r: {subject: {CN: R}}\ncertificates:\n  a: {issuer: r, dns: [a.example.com]}\n"
    (repo / "pki.yaml").write_text(text)
    loading.load(repo)
    folder = next((tmp_path / "cache").rglob(incremental.ENTRY_CACHE)).parent
    assert incremental.load(repo, text.encode()) is not None
    os.chmod(folder, 0o777)
    assert incremental.load(repo, text.encode()) is None


@pytest.mark.parametrize(
    ("texts", "want"),
    [
        (['{"a":1}', '{"b":[2]}'], [{"a": 1}, {"b": [2]}]),
        (['{"a":1}', "not json", '{"c":3}'], [{"a": 1}, None, {"c": 3}]),  # one damaged record: a miss
        (['"a', 'b"'], [None, None]),  # a quote that runs into the next record: two values become one
        (['{"a":1}', "1,2"], [{"a": 1}, None]),  # one text that is two values
        (["[" * 5000 + "]" * 5000, '{"a":1}'], [None, {"a": 1}]),  # nested past the recursion limit
    ],
)
def test_records_are_parsed_in_one_call_or_one_by_one(texts: list[str], want: list[object]) -> None:
    """The cached records are parsed in one call (their keys shared); where that fails or
    does not give one value a record, each is parsed alone and a damaged one is a miss.
    (A record that shifts the rest yet keeps the count, like '"a', 'b"', '1,2', gives
    values that are not records of the names they meet: each is checked as one, and an
    apply takes only texts it authenticated.)"""
    assert incremental._parsed(texts) == want


def test_the_record_file_reads_back_what_was_written_and_skips_damage() -> None:
    """A line a record: a damaged line is a miss, a foreign head is no cache at all."""
    mac = "ab" * 32
    records = {"0" * 64: ('{"name":"a"}', None), "1" * 64: ('{"name":"b\\n"}', mac)}
    text = "".join(incremental.encode_records(records))
    assert text.count("\n") == 3  # the head and one line a record, whatever a record holds
    assert incremental.decode_records(text) == records
    damaged = text.replace("1" * 64 + " " + mac, "1" * 63 + " " + mac)
    assert incremental.decode_records(damaged) == {"0" * 64: ('{"name":"a"}', None)}
    assert incremental.decode_records(text + "junk\n" + "2" * 64 + " XX {}\n") == records
    assert incremental.decode_records(text.replace('"format":3', '"format":2')) is None
    assert incremental.decode_records("") is None


def test_the_spec_digest_hashed_an_entry_at_a_time_is_the_canonical_one(tmp_path: Path) -> None:
    """EffectiveSpec.digest streams the canonical JSON of its entries and moves: the same
    bytes json.dumps(sort_keys) lays out whole (the digest a saved plan is checked by)."""
    from compiler.spec.effective import spec_digest

    (tmp_path / "pki.yaml").write_text(
        "version: 1\nauthorities:\n  root-ca: {subject: {CN: Rööt}, lifetime: 10y}\ncertificates:\n"
        "  zeta: {issuer: root-ca, dns: [z.example.com]}\n  Alpha: {issuer: root-ca, dns: [a.example.com], lifetime: 30d}\n"
        "  alpha_2: {issuer: root-ca, dns: [b.example.com], email: [ops@example.com]}\nmoved:\n  - {from: old-name, to: zeta}\n"
    )
    eff = loading.load(tmp_path, caches=None)
    assert eff.moved, "the example has a move"
    whole = spec_digest({"entries": {n: e.spec for n, e in eff.entries.items()}, "moved": sorted(eff.moved.items())})
    assert eff.digest == whole
