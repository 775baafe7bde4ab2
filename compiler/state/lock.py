"""The repo lock (``.pkic/lock``): one apply at a time on a repository."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from compiler.layout import LOCK_PATH
from compiler.model.errors import fail
from compiler.state.journal import check_work_dir


class RepoLock:
    """An exclusive, non-blocking lock on the repo; released by the OS if we are killed."""

    def __init__(self, repo: Path) -> None:
        self.path = repo / LOCK_PATH
        self._fd: int | None = None

    held: set[int] = set()  # lock fds of this process: forked workers close their copies

    def __enter__(self) -> RepoLock:
        check_work_dir(self.path.parent.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = ""
                try:
                    holder = self.path.read_text().strip()
                except OSError:
                    pass
                raise fail(
                    LOCK_PATH,
                    f"another pkic apply is running on this repo{f' ({holder})' if holder else ''}",
                    "wait for it to finish; the lock is released when it exits",
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        RepoLock.held.add(fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            RepoLock.held.discard(self._fd)
            self._fd = None
