"""`pkic graph`: the hierarchy as Mermaid or Graphviz dot, for docs and PR comments."""

from __future__ import annotations

from .spec import EffectiveSpec


def _id(name: str) -> str:
    """A Mermaid node id, one-to-one with names (web-v2, web.v2 and web_v2 stay apart)."""
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in name)


def mermaid(spec: EffectiveSpec, revoked: set[str] = frozenset()) -> str:
    lines = ["graph TD"]
    for name, e in spec.entries.items():
        label = f"{name}<br/>{e.kind}, {e.key_type}"
        shape = f'(["{label}"])' if e.kind == "authority" else f'["{label}"]'
        lines.append(f"  {_id(name)}{shape}")
    for name, e in spec.entries.items():
        if e.issuer:
            lines.append(f"  {_id(e.issuer)} --> {_id(name)}")
    for name in sorted(revoked):
        if name in spec.entries:
            lines.append(f"  style {_id(name)} stroke-dasharray: 5 5")
    return "\n".join(lines) + "\n"


def dot(spec: EffectiveSpec, revoked: set[str] = frozenset()) -> str:
    lines = ["digraph pki {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for name, e in spec.entries.items():
        shape = "box3d" if e.kind == "authority" else "box"
        style = ', style="dashed"' if name in revoked else ""
        label = f"{name}\\n{e.kind}, {e.key_type}"
        lines.append(f'  "{name}" [shape={shape}, label="{label}"{style}];')
    for name, e in spec.entries.items():
        if e.issuer:
            lines.append(f'  "{e.issuer}" -> "{name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
