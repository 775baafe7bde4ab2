"""The command line: parse arguments, call one function, print, return an exit code.

The commands live in cmd_plan (init, plan, apply), cmd_inspect (status, verify, check,
history, graph, report, schema, validate) and cmd_other (serve, seal, csr); the shared
consoles and helpers in app. User mistakes (PkicError) become one clear report and exit
code 1; Ctrl-C exits 130; anything unexpected exits 3 with a short message.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from pathlib import Path

import typer

try:  # typer >= 0.20 vendors its own click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer uses click itself
    import click  # type: ignore[no-redef, import-not-found, unused-ignore]

from compiler.cli import cmd_inspect, cmd_other, cmd_plan  # noqa: F401  (registers the commands)
from compiler.cli.app import app, err, escape, escape_lines, opts
from compiler.cli.ci import ci_app
from compiler.model import heap
from compiler.model.errors import PkicError

app.add_typer(ci_app, name="ci")


def directory_first(argv: list[str]) -> list[str]:
    """``-C DIR`` where the user put it, before or after the command (``pkic plan -C
    DIR``): moved to the front, where the app reads it. Nothing after ``--`` moves."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        if a == "-C" and i + 1 < len(argv):
            moved += argv[i : i + 2]
            i += 2
            continue
        if a.startswith("-C") and not a.startswith("--") and len(a) > 2:
            moved.append(a)
        else:
            rest.append(a)
        i += 1
    return moved + rest


def main(argv: list[str] | None = None) -> int:
    # A run builds large trees of short-lived, acyclic objects (a 10,000-leaf spec is
    # ~300,000 containers). With the default thresholds the cyclic collector ran
    # hundreds of times over them and took a third of a no-op plan; reference counting
    # frees them anyway. A high first threshold keeps the collector for real cycles
    # (and for the long-running `pkic serve`) at a fraction of the cost.
    gc.set_threshold(100_000, 50, 100)
    try:
        # "pkic" in usage lines however it was started (`python -m compiler.cli` included);
        # what the command loads to keep is frozen out of the collector's passes (model.heap)
        with heap.command():
            rc = app(args=directory_first(sys.argv[1:] if argv is None else argv), prog_name="pkic", standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into this return value
            err.print("Interrupted. Steps already done are recorded; `pkic plan` shows what is left.")
        return rc if isinstance(rc, int) else 0
    except PkicError as exc:
        from compiler.spec import locate

        for d in locate(opts.repo, exc.diagnostics):
            err.print(f"[bold red]error:[/] {escape_lines(d.render())}")
        if len(exc.diagnostics) > 1:
            err.print(f"{len(exc.diagnostics)} problems found; nothing was changed.")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Interrupted. Steps already done are recorded; `pkic plan` shows what is left.")
        return 130
    except Exception as exc:  # usage errors and crashes
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 1
        exit_type = getattr(click.exceptions, "Exit", None)
        if exit_type is not None and isinstance(exc, exit_type):
            return int(exc.exit_code)
        # a fresh file: O_EXCL (never through a planted symlink), mode 0600, a name nobody can guess
        import tempfile

        try:
            fd, name = tempfile.mkstemp(prefix="pkic-crash-", suffix=".log")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            log: Path | str = name
        except OSError:
            log = "(no log: the temporary directory is not writable)"
        err.print(f"[bold red]pkic crashed:[/] {type(exc).__name__}. This is a bug in pkic, not in your input; details in {escape(log)}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
