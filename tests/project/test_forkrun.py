"""The fork runner (tests/forkrun.py) gives each pkic command what a new process gives
it: its own environment, directory, stdin, stdout, stderr and exit code, and nothing
left over from the test process or from an earlier command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import forkrun
import pytest


def _report() -> int:
    print("cwd", os.getcwd())
    print("env", sorted(os.environ.items()))
    print("stdin", repr(sys.stdin.read()))
    print("to stderr", file=sys.stderr)
    os.environ["LEAK_FROM_CHILD"] = "1"
    os.chdir("/")
    return 7


def test_child_has_exactly_its_env_cwd_and_stdin(tmp_path: Path) -> None:
    before = (dict(os.environ), os.getcwd())
    code, out, err = forkrun.in_child(_report, tmp_path, {"ONLY": "this"}, "hello\r\nworld")
    assert code == 7
    assert f"cwd {tmp_path}\n" in out
    assert "env [('ONLY', 'this')]\n" in out
    assert "stdin 'hello\\r\\nworld'\n" in out  # stdin as given, as a new interpreter reads it
    assert err == "to stderr\n"
    # the parent is untouched by what the child changed
    assert (dict(os.environ), os.getcwd()) == before


def test_exit_codes_as_an_interpreter_gives_them(tmp_path: Path) -> None:
    def raises() -> int:
        raise ValueError("boom")

    def exits_with_text() -> int:
        sys.exit("bye")

    def exits_none() -> int:
        sys.exit()

    def killed() -> int:
        os.kill(os.getpid(), 9)
        return 0

    code, _, err = forkrun.in_child(raises, tmp_path, {}, None)
    assert code == 1 and "ValueError: boom" in err
    assert forkrun.in_child(exits_with_text, tmp_path, {}, None) == (1, "", "bye\n")
    assert forkrun.in_child(exits_none, tmp_path, {}, None)[0] == 0
    assert forkrun.in_child(killed, tmp_path, {}, None)[0] == -9


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan", "--bogus"], [], ["plan", "--help"], ["validate"]])
def test_fork_and_new_interpreter_agree(tmp_path: Path, args: list[str]) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "100"}
    forked = forkrun.run(args, tmp_path, env, None)
    real = subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)


def test_a_fault_armed_in_one_command_is_not_inherited(tmp_path: Path) -> None:
    """The test process's memo of PKIC_FAULT (read once per process) is forgotten in
    each child, as a new interpreter would."""
    from compiler.apply import faults

    os.environ["PKIC_FAULT"] = "files:1"
    try:
        assert faults._armed() == ("files", "1")
        _, out, _ = forkrun.in_child(lambda: print(faults._armed()) or 0, tmp_path, {}, None)
        assert out == "('files', '1')\n"  # in_child alone keeps it (what run() is for)
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

        def cli_like() -> int:
            forkrun._forget_process_state()
            print(faults._armed())
            return 0

        assert forkrun.in_child(cli_like, tmp_path, env, None)[1] == "None\n"
    finally:
        del os.environ["PKIC_FAULT"]
        faults._armed.cache_clear()


def test_interpreter_settings_fall_back_to_a_new_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(os.environ)
    assert not forkrun._needs_interpreter(env)
    assert forkrun._needs_interpreter({**env, "PYTHONHASHSEED": "123"})
    assert not forkrun._needs_interpreter({**env, "PYTHONPATH": "/elsewhere"})
    monkeypatch.setenv("PKIC_TEST_SUBPROCESS", "1")
    assert forkrun._needs_interpreter(env)


def test_only_a_tests_own_named_servers_may_run_beside_a_fork() -> None:
    import threading

    env = dict(os.environ)
    for name, falls_back in [(f"{forkrun.FORK_SAFE}a loopback server", False), ("some library's worker", True)]:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, name=name, daemon=True)
        thread.start()
        try:
            assert forkrun._needs_interpreter(env) is falls_back
        finally:
            stop.set()
            thread.join()
    assert not forkrun._needs_interpreter(env)


def test_a_warning_in_the_child_goes_to_its_stderr(tmp_path: Path) -> None:
    """Not into the warnings capture of the test that forked it (pytest records them)."""

    def warns() -> int:
        import warnings

        warnings.warn("from the child", UserWarning, stacklevel=1)
        return 0

    code, _, err = forkrun.in_child(warns, tmp_path, {}, None)
    assert code == 0 and "UserWarning: from the child" in err


def test_directories_the_test_process_checked_are_walked_again(tmp_path: Path) -> None:
    """layout caches descriptors of directories it walked: a child must not act on a
    directory that was moved away and replaced by a symlink after the test process
    checked it."""
    from compiler import layout

    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    (repo / "pki.yaml").write_text("old\n")
    assert layout.read_file(repo, "pki.yaml") == b"old\n"
    repo.rename(tmp_path / "moved")
    elsewhere.mkdir()
    (elsewhere / "pki.yaml").write_text("new\n")
    repo.symlink_to(elsewhere)

    def read() -> int:
        forkrun._forget_process_state()
        try:
            print(layout.read_file(repo, "pki.yaml"))
        except Exception as exc:  # noqa: BLE001 - what the child saw
            print(type(exc).__name__)
        return 0

    out = forkrun.in_child(read, tmp_path, {}, None)[1]
    assert "old" not in out, out
