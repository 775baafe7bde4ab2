"""The apply journal (``.pkic/journal.jsonl``) and pkic's working directory ``.pkic/``.

An apply never rewrites the whole state per certificate: it appends one line per
completed step to the journal and folds the journal into ``out/state.json`` (written
atomically) at the end. A journal left by a killed apply is folded by the next apply
(and reported by the next plan); folding is idempotent.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.layout import JOURNAL_PATH, LOCK_PATH, WORK_DIR, read_file
from compiler.model.bounded import MAX_DEPTH, json_depth_ok
from compiler.model.errors import PkicError, fail
from compiler.state.ops import KINDS, JournalOp, Op, parse_op, unknown_step
from compiler.state.records import State
from compiler.state.store import MAX_STATE, load_state, state_from_json

if TYPE_CHECKING:
    from compiler.spec.cache import Verdicts


def read_journal(repo: Path) -> list[Op]:
    """Every complete line of the journal as JSON (a torn last line from a kill is ignored),
    each of a kind this pkic knows; :func:`load_with_journal` reads them into their steps."""
    check_work_dir(repo)
    data = read_file(repo, JOURNAL_PATH, max_size=MAX_STATE)  # bounded, never through a symlink
    _check_not_committed(repo, journal=data is not None)  # before anything is said of .pkic/ from git
    if data is None:
        return []
    ops: list[Op] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        if not json_depth_ok(line):
            raise fail(
                JOURNAL_PATH,
                f"a step is nested more than {MAX_DEPTH} levels deep: not a journal pkic wrote",
                "delete the .pkic/ directory (it is never committed) and plan again",
            )
        try:
            op = json.loads(line)
        except (ValueError, RecursionError):
            break  # the torn tail of a killed write: that step never completed
        kind = op.get("op") if isinstance(op, dict) else None
        if not isinstance(kind, str) or kind not in KINDS:  # (a list or a mapping is no kind either)
            raise unknown_step(kind if isinstance(kind, str) else None, len(ops) + 1)
        ops.append(op)
    return ops


def load_with_journal(repo: Path, verdicts: Verdicts | None = None) -> tuple[State, list[JournalOp]]:
    """The state as the last (possibly interrupted) apply left it, and that apply's steps
    (the first a :class:`~compiler.state.ops.BeginOp`). ``verdicts``: see load_state."""
    state = load_state(repo, verdicts=verdicts)
    lines = read_journal(repo)
    if not lines:
        return state, []
    if lines[0].get("op") != "begin" or (state.lineage and lines[0].get("lineage") != state.lineage):
        raise fail(JOURNAL_PATH, "the journal does not belong to this state", f"remove {JOURNAL_PATH} if out/ was restored from git")
    ops = [parse_op(line, i + 1) for i, line in enumerate(lines)]
    hint = f"delete {WORK_DIR}/ (it is never committed) and plan again; if an apply was interrupted here, restore out/ from git first"
    try:  # a journal is untrusted input like the state: what its steps leave is checked as the state is
        for op in ops:
            op.fold(state)
        pending = sum(1 for op in ops if op.changes)
        state = state_from_json(state.to_json().encode())
    except PkicError as exc:
        raise fail(JOURNAL_PATH, f"its steps leave a damaged state ({exc.diagnostics[0].message[:200]})", hint) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise fail(JOURNAL_PATH, "holds a step pkic did not write (a record of the wrong shape)", hint) from None
    state.pending = pending
    return state, ops


def check_work_dir(repo: Path) -> None:
    """.pkic/ is this machine's own working directory: a plain directory, never a link
    (a symlink committed in a pull request would point the journal somewhere else)."""
    for rel in (WORK_DIR, JOURNAL_PATH, LOCK_PATH):
        try:
            st = os.lstat(repo / rel)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or (rel == WORK_DIR) != stat.S_ISDIR(st.st_mode):
            raise fail(
                rel,
                "is not a plain "
                + ("directory" if rel == WORK_DIR else "file")
                + " (a symlink?): .pkic/ is pkic's own working directory on this machine",
                f"remove it (`rm {rel}`; if git tracks it, `git rm --cached {rel}` too), and find out who added it",
            )


def _check_not_committed(repo: Path, *, journal: bool) -> None:
    """Refuse a .pkic/ that came from git: it is this machine's own (the journal, the lock,
    the listing of the sealed tree), and nothing under it may be tracked. With a
    ``journal``, a git that cannot answer is refused too."""
    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--", WORK_DIR], cwd=repo, capture_output=True)
    except OSError:  # no git on this machine: the journal cannot have come from git
        return
    why = None
    if proc.returncode == 0 and proc.stdout:
        tracked = proc.stdout.decode(errors="replace").strip("\0").split("\0")
        why = f"is committed to git ({', '.join(tracked[:3])})"
    elif journal and proc.returncode != 0 and b"not a git repository" not in proc.stderr:
        why = "cannot be checked against git (" + proc.stderr.decode(errors="replace").strip().splitlines()[0] + ")"
    if why and proc.returncode == 0 and JOURNAL_PATH not in tracked:
        raise fail(
            tracked[0],
            f"{why}: .pkic/ is this machine's own record (the journal, the lock, the listing of the sealed tree); "
            "one from git would stand in for it",
            f"never commit .pkic/ (`git rm -r --cached {WORK_DIR}`), and find out who added it",
        )
    if why:
        raise fail(
            JOURNAL_PATH,
            f"{why}: a journal is this machine's record of an interrupted apply, and finishing it "
            "writes its certificates into out/ unsigned by anyone here",
            f"never commit .pkic/ (`git rm -r --cached {WORK_DIR}`), and find out who added it; fix what git says, if it says something",
        )


class Journal:
    """Append-only, one JSON line per completed step; flushed (not fsynced) per line."""

    def __init__(self, repo: Path) -> None:
        check_work_dir(repo)
        self.path = repo / JOURNAL_PATH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def append(self, op: JournalOp) -> None:
        self._fh.write(json.dumps(op.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def new_lineage() -> str:
    return str(uuid.uuid4())
