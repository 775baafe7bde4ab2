"""Run the CLI in a forked child of the test process instead of a new interpreter.

Every test drives pkic as a user does: a separate process with its own arguments,
environment, working directory, stdin, stdout, stderr and exit code. Starting a new
interpreter for each command spent ~0.35 s importing the same modules (cryptography,
pydantic, typer, rich and pkic itself), about half of the suite's time. Here the test
process imports them once; each command then runs in a child made by ``os.fork()``:

* the child's fds 0, 1 and 2 are fresh files (stdin holds ``input``), its environment
  is exactly ``env``, its directory ``cwd``, and it ends with ``os._exit`` (no pytest
  teardown, no atexit hooks of the parent);
* ``compiler.cli`` is imported again in the child, so its consoles see the child's
  stdout, stderr and ``COLUMNS``, and no command-line state is inherited; every other
  module is shared as imported (pkic reads the environment when asked, never at import:
  compiler/settings.py).

What a fork cannot give falls back to a real ``python -m compiler.cli``: an environment
that changes how the interpreter itself starts (``PYTHONHASHSEED`` for the determinism
tests, any other ``PYTHON*`` variable than PYTHONPATH), a test process running threads
other than its own loopback servers named ``FORK_SAFE`` (a fork copies their locks, not
the threads), or ``PKIC_TEST_SUBPROCESS=1`` in the
environment of pytest (the whole suite as before, to rule the fork out).
"""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable

import compiler

_warm = False


def _warm_up() -> None:
    """Import every pkic module once in the test process (what each child would import)."""
    global _warm
    if _warm:
        return
    for mod in pkgutil.walk_packages(compiler.__path__, "compiler."):
        if mod.name.endswith("__main__"):
            continue
        importlib.import_module(mod.name)
    _warm = True


def _forget_process_state() -> None:
    """In the child: drop what an in-process test may have left in pkic's modules and a
    new interpreter would not have (memoised reads of the environment, fault counters)."""
    for name, mod in list(sys.modules.items()):
        if name != "compiler" and not name.startswith("compiler."):
            continue
        for value in list(vars(mod).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()
    from compiler import layout
    from compiler.apply import faults
    from compiler.spec import sops_config
    from compiler.state.lock import RepoLock

    faults._counts.clear()
    sops_config._rules_cache.clear()
    RepoLock.held.clear()  # the parent's lock fds are not this process's locks
    for fd in layout._DIR_FDS.values():  # directories the parent checked: walk them again
        try:
            os.close(fd)
        except OSError:
            pass
    layout._DIR_FDS.clear()


def _show_on_stderr(msg: warnings.WarningMessage) -> None:
    """What the warnings module does with a warning in a new interpreter."""
    try:
        sys.stderr.write(warnings._formatwarnmsg_impl(msg))  # type: ignore[attr-defined]
    except OSError:
        pass


def _interpreter_warnings() -> None:
    """In the child: warnings go to stderr under a new interpreter's default filters (no
    -W, no PYTHONWARNINGS: such a variable falls back to a real interpreter), not into
    the record list of the test that forked it."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__", append=True)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category, append=True)
    warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
    warnings._showwarnmsg_impl = _show_on_stderr  # type: ignore[attr-defined]


# A thread whose name starts with this is a test's own server on loopback (tests/
# fakegithub.py, a stand-in Vault...): it holds no lock the child needs, and the child
# never touches it (the parent's thread answers the child over the socket while the
# parent waits), so forking beside it is safe. Any other thread makes the fork fall back.
FORK_SAFE = "forkrun-safe: "


def _unsafe_threads() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.name.startswith(FORK_SAFE) for t in threading.enumerate())


def _needs_interpreter(env: dict[str, str]) -> bool:
    if os.environ.get("PKIC_TEST_SUBPROCESS") == "1" or _unsafe_threads():
        return True
    for k, v in env.items():
        if k.startswith("PYTHON") and k != "PYTHONPATH" and os.environ.get(k) != v:
            return True
    return any(k.startswith("PYTHON") and k != "PYTHONPATH" and k not in env for k in os.environ)


def run(args: list[str], cwd: str | os.PathLike[str] | None, env: dict[str, str], input: str | None) -> subprocess.CompletedProcess[str]:
    """``pkic ARGS`` as a process of its own, as ``subprocess.run(..., text=True)`` gives it."""
    argv = [sys.executable, "-m", "compiler.cli", *args]
    if _needs_interpreter(env):
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, input=input)
    _warm_up()

    def cli() -> int:
        sys.argv = [os.path.join(os.path.dirname(compiler.__file__), "cli", "__main__.py"), *args]
        for name in [m for m in sys.modules if m == "compiler.cli" or m.startswith("compiler.cli.")]:
            del sys.modules[name]
        _forget_process_state()
        main: Callable[[], int] = importlib.import_module("compiler.cli.main").main
        return main()

    code, out, err = in_child(cli, cwd, env, input)
    return subprocess.CompletedProcess(argv, code, out, err)


def in_child(target: Callable[[], int | None], cwd: str | os.PathLike[str] | None, env: dict[str, str], input: str | None) -> tuple[int, str, str]:
    """Run ``target`` in a forked child with exactly ``env``, ``cwd`` and ``input`` as
    stdin; its exit code (as ``subprocess`` reports it), stdout and stderr."""
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        if input is not None:
            fin.write(input.encode())
            fin.seek(0)
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():  # Python 3.12+ warns of any thread; _unsafe_threads judged them
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(fin.fileno(), 0)
                os.dup2(fout.fileno(), 1)
                os.dup2(ferr.fileno(), 2)
                os.environ.clear()
                os.environ.update(env)
                if cwd is not None:
                    os.chdir(cwd)
                tempfile.tempdir = None  # TMPDIR as env says, not as the parent cached it
                # as the interpreter makes them on POSIX: no newline translation, and
                # stderr escapes what it cannot encode
                sys.stdin = io.TextIOWrapper(io.FileIO(0, "rb", closefd=False), encoding="utf-8", newline="\n")
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8", newline="\n", write_through=True)
                sys.stderr = io.TextIOWrapper(
                    io.FileIO(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True
                )
                _interpreter_warnings()
                try:
                    result = target()
                    code = 0 if result is None else result
                except SystemExit as exc:  # as the interpreter ends on one
                    if exc.code is None or isinstance(exc.code, int):
                        code = exc.code or 0
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
            except BaseException:
                code = 1  # as the interpreter ends on an uncaught exception
                try:
                    traceback.print_exc()
                except BaseException:
                    pass
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code & 0xFF)
        _, status = os.waitpid(pid, 0)
        fout.seek(0)
        ferr.seek(0)
        # as subprocess.run(text=True) reads them: universal newlines
        out = fout.read().decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        err = ferr.read().decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return os.waitstatus_to_exitcode(status), out, err
