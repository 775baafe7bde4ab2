"""A state file's names kept as spans of the file, not as text (see :class:`FileSpans`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from compiler.layout import STATE_PATH
from compiler.model.errors import fail


class FileSpans:
    """Each name's records as out/state.json held them, kept as spans of the file read
    (character offsets, which are byte offsets: it is ASCII) instead of as 100 MB of
    text, and read back when the state is written, in one pass over the whole file
    that hashes it: :meth:`finish` refuses a file that is not the one read (``sha256``).
    Only for a file this code wrote itself (see store.load_state): its spans are then
    exactly what the state's records serialise to."""

    def __init__(self, read: Callable[[], Iterator[bytes]], spans: dict[str, tuple[int, int]], sha256: bytes) -> None:
        self._read, self.spans, self.sha256 = read, spans, sha256
        self._restart()

    def _restart(self) -> None:
        self._chunks: Iterator[bytes] | None = None
        self._buf = bytearray()
        self._base = 0  # the file offset of _buf[0]
        self._last = 0
        self._hash = hashlib.sha256()

    def _more(self) -> bool:
        if self._chunks is None:
            self._chunks = self._read()
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._hash.update(chunk)
        self._buf += chunk
        return True

    def __contains__(self, name: object) -> bool:
        return name in self.spans

    def get(self, name: str) -> str | None:
        span = self.spans.get(name)
        if span is None:
            return None
        start, end = span
        if start < self._last:  # a second pass (names are asked for in file order)
            self._restart()
        self._last = end
        while self._base + len(self._buf) < end:
            if not self._more():
                raise fail(STATE_PATH, "changed while apply ran (it is shorter than when read)", "restore it from git and apply again")
        text = self._buf[start - self._base : end - self._base].decode("ascii")
        if end - self._base > 1 << 22:  # let go of what was read (now and then: a cut moves the rest)
            del self._buf[: end - self._base]
            self._base = end
        return text

    def finish(self) -> None:
        """After the last name of a pass: the rest of the file read and hashed; the file
        must be the one read."""
        while self._more():
            self._buf.clear()
        if self._hash.digest() != self.sha256:
            raise fail(STATE_PATH, "changed while apply ran (it is not the file read)", "restore it from git and apply again")
        self._restart()
