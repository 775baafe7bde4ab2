"""Writing out/: the interface replaying a journal step needs, and its three implementations.

- :class:`AtomicWriter`: an apply's writes, atomic, only when content changes, optionally
  on background threads; it records git blob ids for the seal.
- :class:`DirectWriter`: recovery of an interrupted apply, synchronously.
- :class:`PathRecorder`: writes nothing, records what replaying a journal would touch (the
  seal's check before recovery writes anything).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from compiler import layout
from compiler.state import FileSink


class Writer(FileSink, Protocol):
    """Where a journal step's files go (:meth:`JournalOp.files`); ``touched``: every path
    written, removed or renamed."""

    touched: set[str]

    def remove(self, rel: str) -> bool: ...


class AtomicWriter:
    """Atomic writes, synchronous by default or on background threads
    (PKIC_WRITE_THREADS=N). Measured here, threads made a cold apply slower (creating
    files in one directory serialises in the kernel, and the threads contend with
    signing on 2 cores), so the default is 0.

    A path always goes to the same worker, so writes to one path keep their order;
    ``rename`` and ``remove`` first wait for everything pending. ``flush`` waits for all
    and raises the first error."""

    def __init__(self, repo: Path, workers: int = 4, new_in_place: bool = False):
        self.repo = repo
        self.new_in_place = new_in_place  # see write_atomic: for journaled writes only
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pkic-write-{i}") for i in range(workers)]
        self._pending: list[tuple[str, Future[bool]]] = []
        self.written = 0
        self.touched: set[str] = set()  # every path written, removed or renamed
        # git's blob id of each file written, when a seal will cover them (blob_algo set):
        # sealing then needs no second read of the files
        self.blob_algo: str | None = None
        self.blobs: dict[str, str] = {}

    def _blob(self, rel: str, data: bytes) -> None:
        if self.blob_algo is not None:
            h = hashlib.new(self.blob_algo, b"blob %d\0" % len(data))
            h.update(data)
            self.blobs[rel] = h.hexdigest()

    def write(self, rel: str, data: bytes, *, staged: bool = False) -> None:
        in_place = self.new_in_place and not staged
        if not self._pools:  # no threads: write now
            if layout.write_atomic(self.repo, rel, data, new_in_place=in_place):
                self.written += 1
                self.touched.add(rel)
                self._blob(rel, data)
            return
        self._blob(rel, data)
        pool = self._pools[hash(rel) % len(self._pools)]
        self._pending.append((rel, pool.submit(layout.write_atomic, self.repo, rel, data, new_in_place=in_place)))

    def write_chunks(self, rel: str, chunks: Iterable[bytes]) -> None:
        """A large file made in pieces (the state), staged and written now."""
        self.flush()
        changed, blob = layout.write_atomic_chunks(self.repo, rel, chunks, self.blob_algo)
        if changed:
            self.written += 1
            self.touched.add(rel)
        if blob is not None:
            self.blobs[rel] = blob

    def flush(self) -> int:
        pending, self._pending = self._pending, []
        for rel, fut in pending:
            if fut.result():
                self.written += 1
                self.touched.add(rel)
        return self.written

    def rename(self, old: str, new: str) -> None:
        self.flush()
        if layout.rename(self.repo, old, new):
            self.touched.update((old, new))
            self.blobs.pop(old, None)
            self.blobs.pop(new, None)

    def remove(self, rel: str) -> bool:
        self.flush()
        gone = layout.remove(self.repo, rel)
        if gone:
            self.touched.add(rel)
            self.blobs.pop(rel, None)
        return gone

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for pool in self._pools:
                pool.shutdown(wait=True)


class DirectWriter:
    """The Writer interface, synchronously (recovery)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.touched: set[str] = set()

    # every path of a replayed step counts as touched, even when the killed apply had
    # already written it: it changed in this apply, and belongs in its commit
    def write(self, rel: str, data: bytes) -> None:
        layout.write_atomic(self.repo, rel, data)
        self.touched.add(rel)

    def rename(self, old: str, new: str) -> None:
        self.touched.update((old, new))
        layout.rename(self.repo, old, new)

    def remove(self, rel: str) -> bool:
        self.touched.add(rel)
        return layout.remove(self.repo, rel)


class PathRecorder:
    """The Writer interface, recording paths only: what replaying a journal would touch."""

    def __init__(self) -> None:
        self.touched: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        self.touched.add(rel)

    def rename(self, old: str, new: str) -> None:
        self.touched.update((old, new))

    def remove(self, rel: str) -> bool:
        self.touched.add(rel)
        return True
