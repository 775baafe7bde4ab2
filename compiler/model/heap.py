"""The cyclic garbage collector, kept off what a command loads to keep.

A plan at 100,000 certificates holds millions of containers for its whole run: the
spec's entries, the state's records, the caches' records. None of them is part of a
cycle that needs collecting, yet every full pass of the cyclic collector walks them
all, and the passes come more often the more is loaded: about a second of a W100k plan.
What :func:`long_lived` loads is made with the collector paused and then frozen
(``gc.freeze``: moved out of every later pass); reference counting still frees it.

Only inside a command (:func:`command`, which the CLI wraps around each run): a library
caller or a test process keeps the collector as it was, and the command unfreezes what
it froze when it ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_in_command = False


@contextmanager
def command() -> Iterator[None]:
    """One command's run: what it loads with :func:`long_lived` is frozen until it ends."""
    global _in_command
    outer = _in_command
    _in_command = True
    try:
        yield
    finally:
        _in_command = outer
        if not outer:
            gc.unfreeze()


@contextmanager
def long_lived() -> Iterator[None]:
    """Objects made inside live until the command ends (a spec, a state): made with the
    cyclic collector paused, then frozen out of its passes. Outside a command, nothing."""
    if not _in_command:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
