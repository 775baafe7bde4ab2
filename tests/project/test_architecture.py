"""The package layout is the architecture: these tests keep it true.

Every module of compiler/ is parsed with ``ast`` and every import it makes, at module
level or inside a function (a deferred import is still a dependency), becomes an edge
of the import graph. Two rules hold on that graph:

* no cycle between modules (an import cycle is what once tied spec, x509/csr,
  keys/keystore and x509/build together for one type and two helpers);
* dependencies point one way, down this order::

      model  <-  layout  <-  spec, policy, x509  <-  keys  <-  state  <-  plan
             <-  apply  <-  commands (check, verify, report, graph, serve, init, gitops, ci)
             <-  cli

  with four sharper rules: model imports nothing internal; x509 imports only model
  and layout; plan is pure (no keys, no apply, no cli); nothing below cli imports cli.

An edge that breaks a rule today and is being reworked elsewhere is listed in an
allowlist below with its reason. The lists can only shrink: an entry that no longer
matches an import fails the test, so it is removed when the import goes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "compiler"

# the order of the layers, lowest first; a module may import its own layer and below
LAYERS = ["model", "layout", "inputs", "keys", "state", "plan", "apply", "commands", "cli"]
_LAYER_OF_PACKAGE = {
    "model": "model",
    "spec": "inputs",
    "policy": "inputs",
    "x509": "inputs",
    "keys": "keys",
    "state": "state",
    "plan": "plan",
    "apply": "apply",
    "ci": "commands",  # pkic ci: GitHub provenance, a command module grown into a package
    "cli": "cli",
}
_LAYER_OF_MODULE = {
    "compiler": "model",  # the package itself: only __version__
    "compiler.layout": "layout",
    "compiler.settings": "layout",  # every PKIC_* variable, read and parsed
    **{f"compiler.{m}": "commands" for m in ("check", "verify", "report", "graph", "serve", "serve_http", "init", "gitops", "ci")},
}

# Edges that close a cycle today, each owned by a rework in progress: (importer, imported).
CYCLE_ALLOWLIST: dict[tuple[str, str], str] = {
}

# Edges that point up the layer order today, each owned by a rework in progress.
LAYER_ALLOWLIST: dict[tuple[str, str], str] = {
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module an imported name lives in (``compiler.keys.keystore.Keystore`` ->
    ``compiler.keys.keystore``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every compiler module ``module`` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "compiler")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "compiler":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else _resolve(base))
    found.discard(None)
    found.discard(module)
    return {m for m in found if m is not None}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    if module in _LAYER_OF_MODULE:
        return _LAYER_OF_MODULE[module]
    package = module.split(".")[1]
    assert package in _LAYER_OF_PACKAGE, f"{module}: give its package a layer in tests/project/test_architecture.py"
    return _LAYER_OF_PACKAGE[package]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_deferred_imports():
    """The graph is only as good as its parser: an import inside a function counts."""
    assert "compiler.x509.csr" in GRAPH["compiler.spec.entries"]  # imported inside a function
    assert "compiler.keys.keystore" in GRAPH["compiler.cli.cmd_other"]  # inside the commands


def test_no_import_cycle():
    graph = {m: {t for t in targets if (m, t) not in CYCLE_ALLOWLIST} for m, targets in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c) for c in cycles
    )
    stale = [edge for edge in CYCLE_ALLOWLIST if edge[1] not in GRAPH.get(edge[0], set())]
    assert not stale, f"no longer imported: remove from CYCLE_ALLOWLIST: {stale}"


def _breaks(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None: it may)."""
    low, high = _layer(importer), _layer(imported)
    if low == "model" and high != "model":
        return "the model layer imports nothing internal"
    if importer.startswith("compiler.x509.") and high not in ("model", "layout") and not imported.startswith("compiler.x509."):
        return "x509 imports only model and layout"
    if low == "plan" and high in ("keys", "apply", "commands", "cli"):
        return "plan is pure: no keys, no signing, no apply, no cli"
    if high == "cli" and low != "cli":
        return "nothing below cli imports cli"
    if LAYERS.index(high) > LAYERS.index(low):
        return f"{low} may not import {high} (dependencies point down: {' <- '.join(LAYERS)})"
    return None


def test_dependencies_point_down():
    broken = [
        f"{a} -> {b}: {why}"
        for a, targets in sorted(GRAPH.items())
        for b in sorted(targets)
        if (why := _breaks(a, b)) is not None and (a, b) not in LAYER_ALLOWLIST
    ]
    assert not broken, "imports against the layer order:\n" + "\n".join(broken)
    stale = [edge for edge in LAYER_ALLOWLIST if edge[1] not in GRAPH.get(edge[0], set()) or _breaks(*edge) is None]
    assert not stale, f"no longer needed: remove from LAYER_ALLOWLIST: {stale}"


def test_keys_import_spec_for_sops_rules_only():
    """keys/ needs .sops.yaml's rules (spec/sops_*), never the spec model itself: what it
    reads of an entry is x509's SpecEntry protocol."""
    wrong = sorted(
        f"{a} -> {b}" for a, targets in GRAPH.items() if a.startswith("compiler.keys.") for b in targets if b.startswith("compiler.spec") and not b.startswith("compiler.spec.sops_")
    )
    assert not wrong, wrong


def test_modules_stay_small_or_say_why():
    """One job per module: about 400 lines at most (450 with slack); a longer one says why
    in its docstring, on a line starting 'Longer than 400 lines:'."""
    long = []
    for name, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > 450 and "Longer than 400 lines:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert not long, long
