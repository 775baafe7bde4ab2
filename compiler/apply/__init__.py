"""apply: carry out a plan (sign, journal, write, seal), finish an interrupted one, and
the `pkic apply` command's sequence of checks around it.

Modules: command (the command), run (the Apply object: each step journaled, written,
folded), signers (keys decrypted and checked first), issue (certificates), workers
(forked signing of long runs of leaves), publish (CRLs, OCSP, delegated responders),
replay (a journaled step's files; recovery), writer (writing out/), bundle (chains and
trust bundles), paths (what an apply may write), faults (test-only fault injection).
"""

from compiler.apply.command import Applied, ApplyOptions, Commit, Console, check_saved, read_saved_plan, reviewed_inputs, run_apply
from compiler.apply.context import ApplyResult
from compiler.apply.paths import planned_paths
from compiler.apply.replay import Recovery, finish_interrupted
from compiler.apply.run import execute

__all__ = [
    "Applied",
    "ApplyOptions",
    "ApplyResult",
    "Commit",
    "Console",
    "Recovery",
    "check_saved",
    "execute",
    "finish_interrupted",
    "planned_paths",
    "read_saved_plan",
    "reviewed_inputs",
    "run_apply",
]
