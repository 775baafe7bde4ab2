"""The command line's shared parts: the typer app, the two consoles, the repository
given by ``-C``, and the helpers every command prints and writes with.

Only cli/ prints. Every string that comes from an input is escaped here before rich
sees it (``escape``); ``--out`` files are never written through a symlink.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console, RenderableType

from compiler import __version__
from compiler.model.durations import parse_duration
from compiler.model.errors import PkicError, fail
from compiler.model.stamp import FIRST_YEAR
from compiler.plan.limits import LAST_X509_TIME

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="pkic: a GitOps PKI compiler. Declare the PKI in pki.yaml; plan; apply.",
    pretty_exceptions_enable=False,
    # plain help, as click prints it: flags as flags (rich's layout shows each as <bool>),
    # choices as [a|b|c], and it reads well in a CI log
    rich_markup_mode=None,
)


def _width(stream: TextIO) -> int | None:
    if stream.isatty():
        return None
    try:
        return int(os.environ.get("COLUMNS", "120"))
    except ValueError:
        return 120


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


class _Options:
    """What the top-level options set for the command that runs (``-C``)."""

    repo: Path = Path(".")


opts = _Options()


def _version(value: bool) -> None:
    if value:
        out.print(f"pkic {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    directory: Path | None = typer.Option(
        None, "-C", metavar="DIR", help="run as if pkic was started in this directory (like git -C); before or after the command"
    ),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="print the version and exit"),
) -> None:
    if directory is not None:
        if not directory.is_dir():
            raise PkicError(f"-C {directory}: no such directory")
        opts.repo = directory
    else:
        opts.repo = Path(".")


NOW_HELP = "pretend it is this time: RFC 3339 (2027-01-01T00:00:00Z) or an offset from the clock (+65d, -12h); for previewing renewals"


# The times X.509 can carry (UTCTime begins in 1950, as the state's times do; GeneralizedTime
# ends in 9999): no certificate is dated outside them, and datetime arithmetic near its own
# ends overflows
FIRST_NOW = datetime(int(FIRST_YEAR), 1, 1, tzinfo=UTC)


def parse_now(value: str | None) -> datetime:
    clock = datetime.now(UTC).replace(microsecond=0)
    if value is None:
        return clock
    if value[:1] in ("+", "-"):
        try:
            delta = parse_duration(value[1:])
            dt = clock + delta if value[0] == "+" else clock - delta
        except (ValueError, OverflowError):
            raise fail("--now", f"'{value}' is not an offset", "use +65d, -12h, +1y (a duration after + or -)") from None
    else:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            dt = dt.astimezone(UTC).replace(microsecond=0)
        except ValueError:
            raise fail(
                "--now", f"'{value}' is not a time", "use RFC 3339 (2027-01-01T00:00:00Z) or an offset from the clock (+65d)"
            ) from None
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0
            dt = datetime.min.replace(tzinfo=UTC)
    if not FIRST_NOW <= dt <= LAST_X509_TIME:
        raise fail(
            "--now", f"'{value}' is not between 1950 and 9999, the years X.509 dates can carry", "use a time from 1950-01-01 to 9999-12-31"
        )
    return dt


def ts_text(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def repo_relative(path: Path) -> str | None:
    """``path`` as a path inside the repository (which a pull request writes), or None when
    it is outside. A relative path is inside; an absolute one is inside when it starts
    with the repository's path as given or as resolved (through a symlinked parent)."""
    if not path.is_absolute():
        return path.as_posix()
    for base in (os.path.abspath(opts.repo), os.path.realpath(opts.repo)):
        if os.path.abspath(path).startswith(base.rstrip("/") + "/"):
            return os.path.relpath(os.path.abspath(path), base)
    # a path outside on its face that a symlink on the way leads back into the repo: never
    # written through (inside, every component is checked; this route would skip that)
    repo_real = os.path.realpath(opts.repo).rstrip("/")
    for ancestor in Path(os.path.abspath(path)).parents:
        real = os.path.realpath(ancestor)
        if real == repo_real or real.startswith(repo_real + "/"):
            raise fail(
                str(path),
                "leads into the repository through a symlink",
                "pass the path inside the repository itself (e.g. csrs/web.csr.pem)",
            )
    return None


def write_out_file(path: Path, data: bytes, what: str) -> None:
    """``--out FILE``: never written through a symlink. A relative path is inside the repo
    (which a pull request writes): no component of it may be a symlink, and no '..'."""
    from compiler import layout

    try:
        inside = repo_relative(path)
        if inside is not None:
            path = Path(inside)
        if not path.is_absolute():
            rel = path.as_posix()
            if ".." in path.parts or not rel or rel == ".":
                raise fail(str(path), "is not a file path inside the repository", "pass a path like plan.json, or an absolute one")
            if not (opts.repo / path).parent.is_dir():
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
            layout.write_input(opts.repo, rel, data)
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise fail(str(path), f"is a symlink: pkic never writes {what} through one", "remove it, or pick another path") from None
            raise
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise fail(str(path), f"cannot write {what}: {exc.strerror}", "pass a file path in an existing directory") from None


def output_format(as_json: bool, fmt: str) -> None:
    """``--json`` is ``--format json``: with any other format asked for, the two conflict."""
    if as_json and fmt not in ("text", "json"):
        raise fail("--json", f"conflicts with --format {fmt}", "pass one of them")


def write_json(body: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def show(renderable: RenderableType) -> None:
    """Print a rendering. Rich lays out about 20,000 lines a second, so a 10,000-change
    plan in a CI log (no terminal, so no colour) is written as its plain text instead."""
    from rich.console import Group
    from rich.text import Text

    if out.color_system is None and isinstance(renderable, Group) and all(isinstance(r, Text) for r in renderable.renderables):
        sys.stdout.write("".join(t.plain + "\n" for t in renderable.renderables if isinstance(t, Text)))
        sys.stdout.flush()
    else:
        out.print(renderable)


def escape(text: object) -> str:
    """A value for rich's markup, on one line: shown as the text it is (``[bold]`` with its
    brackets, never interpreted), control characters as their escapes (``\\n``, ``\\x1b``)."""
    from rich.markup import escape

    from compiler.model.errors import printable

    return escape(printable(str(text)))


def escape_lines(text: str) -> str:
    """Like escape, for text whose lines are its own (a diff, a diagnostic and its hint)."""
    return "\n".join(escape(line) for line in text.split("\n"))
