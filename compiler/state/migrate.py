"""Bringing a state written by an older pkic up to this pkic's format, in memory.

``out/state.json`` names its format in two fields: ``"format": "pkic-state"`` (this is a
pkic state at all) and ``"version"`` (which shape its records have). Every release so
far has written version 1, which is :data:`STATE_VERSION`, so nothing needs migrating
today and the state file stays byte for byte what the previous release wrote.

When the meaning of the state changes, :data:`STATE_VERSION` grows by one and a step is
added to :data:`STEPS`: ``migrate_1_to_2(body) -> body``, a pure function of the parsed
JSON of a version-1 state that returns it as version 2 would have written it. Loading
runs every step from the file's version up to this one; the next apply writes the
state in the current version (the seal covers it like any other change of out/).
Nothing is written on load: a plan or verify against an old state changes no file.

A state of a version this pkic does not know is refused, never guessed at: a newer one
was written by a newer pkic (its records may mean something this one would undo), an
older one or a damaged "version" is not a state any pkic wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from compiler.layout import STATE_PATH
from compiler.model.bounded import quote
from compiler.model.errors import fail
from compiler.state.records import STATE_VERSION

# The body of out/state.json as parsed JSON, before it is checked: open on purpose.
Body = dict[str, Any]
Step = Callable[[Body], Body]

# version N -> the step that turns a version-N body into a version-N+1 body
STEPS: Mapping[int, Step] = {}


def upgrade(body: Body, *, current: int = STATE_VERSION, steps: Mapping[int, Step] = STEPS) -> Body:
    """``body`` (a parsed state whose "format" is pkic-state) in version ``current``.

    ``current`` and ``steps`` are this pkic's; tests pass their own to exercise the walk."""
    version = body.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > current:
        raise fail(
            STATE_PATH,
            f"state version {quote(version)} is not supported by this pkic (it reads version {current}): "
            'its "version" field says a newer pkic wrote it',
            "upgrade pkic",
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1 or any(v not in steps for v in range(version, current)):
        raise fail(
            STATE_PATH,
            f"state version {quote(version)} is not supported by this pkic (it reads version {current})",
            "upgrade pkic, or restore out/state.json from git (`git checkout -- out/state.json`); never edit it by hand",
        )
    while version < current:
        body = steps[version](body)
        version += 1
        body["version"] = version
    return body
