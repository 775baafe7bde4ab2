"""The docs hold together (issue 15): README.md stays a short guide, every relative link
in it and in docs/ reaches a file and, for ``#anchor`` links, a heading there (GitHub's
slugs), and docs/commands.md carries a command reference generated from the typer app,
so a command or option added, renamed or redescribed shows up there.
``PKIC_UPDATE_GOLDEN=1`` rewrites the generated reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from helpers import assert_generated

from compiler.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
COMMANDS = DOCS / "commands.md"
START, END = "<!-- generated: commands -->\n", "<!-- end generated -->\n"

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a YAML block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markdown links' targets, lower-cased,
    punctuation other than hyphens and underscores dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text()):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    out = []
    for line in _prose(page.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is no link
        out += [m.group(1) for m in LINK.finditer(line)]
    return [t for t in out if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_docs_relative_links_reach_a_file_and_a_heading(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_slugs_follow_github():
    assert slug("What `out/` holds") == "what-out-holds"
    assert slug("Reviewed = signed") == "reviewed--signed"
    assert slug("The spec: `pki.yaml`") == "the-spec-pkiyaml"
    assert slug("`.sops.yaml` as planned intent") == "sopsyaml-as-planned-intent"
    assert slug("Certificates (leaves)") == "certificates-leaves"


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move reference text into docs/"
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in (ROOT / "README.md").read_text(), f"README.md does not link docs/{page.name}"


def _usage(cmd: Any, words: str) -> str:
    parts = [words]
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            name = p.name.upper()
            parts.append(name if p.required else f"[{name}]")
        else:
            opt = "/".join(p.opts + p.secondary_opts)
            if not p.is_flag:  # the value's name: its metavar, else the long option's, else the parameter's
                long = max(p.opts, key=len).lstrip("-")
                opt += " " + (p.metavar or (long if len(long) > 1 else p.name).upper().replace("-", "_"))
            parts.append(opt if p.required else f"[{opt}]")
    return " ".join(parts)


def _first_line(cmd: Any) -> str:
    return (cmd.help or cmd.short_help or "").strip().splitlines()[0].strip()


def command_reference() -> str:
    """Every registered command, in the order the app lists them: its usage (arguments and
    options) and the first line of its help; a group's subcommands under it."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    out = [f"Global options, before the command: `{_usage(root, 'pkic')}`.\n"]

    def walk(group: Any, words: str) -> None:
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if cmd is None or getattr(cmd, "hidden", False):
                continue
            if hasattr(cmd, "list_commands"):
                walk(cmd, f"{words} {name}")
            else:
                out.append(f"- `{_usage(cmd, f'{words} {name}')}`: {_first_line(cmd)}")

    walk(root, "pkic")
    return "\n".join(out) + "\n"


def test_docs_commands_reference_is_generated_from_the_app():
    assert_generated(COMMANDS, START, END, command_reference(), "the typer app")
