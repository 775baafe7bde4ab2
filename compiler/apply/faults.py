"""Test-only fault injection: ``PKIC_FAULT=<point>:<n>`` kills (or interrupts) an apply
at the n-th time it passes ``point``, as the crash-safety tests need.

The points, each after an ``issued`` step or in a signing worker:

- ``journal``: right after the step's journal line, before its files (exit 137, as SIGKILL);
- ``interrupt``: there too, but Ctrl-C as a terminal sends it (SIGINT to the process group);
- ``files``: after the step's files are on disk (exit 137);
- ``worker``: in a forked signing worker, at its n-th leaf (exit 137).

The variable is read once per process; unset, each check is one call and one comparison.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from functools import cache
from typing import Literal

from compiler import settings

Point = Literal["journal", "interrupt", "files", "worker"]

_counts: dict[str, int] = {}


@cache
def _armed() -> tuple[str, str] | None:
    """(point, n) from PKIC_FAULT, or None (the production case)."""
    spec = settings.fault()
    if not spec:
        return None
    where, _, n = spec.partition(":")
    return where, n


def _hit(point: Point) -> bool:
    armed = _armed()
    if armed is None or armed[0] != point:
        return False
    _counts[point] = _counts.get(point, 0) + 1
    return _counts[point] == int(armed[1] or 1)


def _die() -> None:
    os._exit(137)  # no cleanup, as SIGKILL would leave it


def journaled() -> None:
    """An ``issued`` step is in the journal, its files not yet written."""
    if _armed() is None:
        return
    if _hit("journal"):
        _die()
    if _hit("interrupt"):  # Ctrl-C, as a terminal sends it: to the whole process group
        os.killpg(0, signal.SIGINT)


def written(flush: Callable[[], object]) -> None:
    """An ``issued`` step's files were handed to the writer: ``files`` kills once they are on disk."""
    armed = _armed()
    if armed is None or armed[0] != "files":
        return
    flush()
    if _hit("files"):
        _die()


def in_worker() -> None:
    """A signing worker is about to sign a leaf."""
    if _armed() is not None and _hit("worker"):
        _die()
