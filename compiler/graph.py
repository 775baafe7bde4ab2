"""`pkic graph`: the hierarchy as Mermaid or Graphviz dot, for docs and PR comments.

Labels show names (validated: letters, digits, '.', '_', '-'), kinds and key types; each
is still escaped for its syntax (Mermaid entity codes, dot's quoted strings), so that a
label can never close its node or carry markup, whatever validation lets through."""

from __future__ import annotations

from collections.abc import Set

from compiler.model.errors import printable
from compiler.spec import EffectiveSpec


def _id(name: str) -> str:
    """A Mermaid node id, one-to-one with names (web-v2, web.v2 and web_v2 stay apart)."""
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in name)


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: anything but letters, digits, space and
    ``.,_-:/`` as an entity code (``#34;``), so no quote, bracket or HTML survives."""
    return "".join(c if c.isascii() and (c.isalnum() or c in " .,_-:/") else f"#{ord(c)};" for c in str(text))


def _dot_text(text: str) -> str:
    """Text inside a dot quoted string: control characters shown as their escapes (a
    newline as the text ``\\n``, not a line break), then backslash and quote escaped."""
    return printable(str(text)).replace("\\", "\\\\").replace('"', '\\"')


def mermaid(spec: EffectiveSpec, revoked: Set[str] = frozenset()) -> str:
    lines = ["graph TD"]
    for name, e in spec.entries.items():
        label = f"{_mermaid_text(name)}<br/>{_mermaid_text(e.kind)}, {_mermaid_text(e.key_type)}"
        shape = f'(["{label}"])' if e.kind == "authority" else f'["{label}"]'
        lines.append(f"  {_id(name)}{shape}")
    for name, e in spec.entries.items():
        if e.issuer:
            lines.append(f"  {_id(e.issuer)} --> {_id(name)}")
    for name in sorted(revoked):
        if name in spec.entries:
            lines.append(f"  style {_id(name)} stroke-dasharray: 5 5")
    return "\n".join(lines) + "\n"


def dot(spec: EffectiveSpec, revoked: Set[str] = frozenset()) -> str:
    lines = ["digraph pki {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for name, e in spec.entries.items():
        shape = "box3d" if e.kind == "authority" else "box"
        style = ', style="dashed"' if name in revoked else ""
        label = f"{_dot_text(name)}\\n{_dot_text(e.kind)}, {_dot_text(e.key_type)}"
        lines.append(f'  "{_dot_text(name)}" [shape={shape}, label="{label}"{style}];')
    for name, e in spec.entries.items():
        if e.issuer:
            lines.append(f'  "{_dot_text(e.issuer)}" -> "{_dot_text(name)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
