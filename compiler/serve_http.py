"""The HTTP side of `pkic serve`, bounded against hostile clients (issue 12).

One thread (the selector loop of :class:`Server`) accepts connections and reads
requests without blocking; only a complete request (head, and a body of at most
``MAX_BODY`` bytes) goes to one of a fixed number of worker threads. So an idle or
trickling connection costs a file descriptor, never a thread, and a connection that
has not sent a whole request within ``timeout`` seconds is closed. Past
``max_connections`` open connections, the oldest one still sending its request is
closed. One request per connection (HTTP/1.0). What is answered is compiler/serve.py's.
"""

from __future__ import annotations

import collections
import errno
import io
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
MAX_BODY = 10 * 1024  # an OCSP request is ~100 bytes; a POST body above this is 413
MAX_TARGET = 8 * 1024  # the request target (URL); above is 414
MAX_LINE = MAX_TARGET + 64  # the request line: method, target, version
MAX_HEADER_BYTES = 16 * 1024  # the header block after the request line; above is 431
MAX_HEADERS = 64  # header fields; above is 431
MAX_LOG = 512  # characters of a log message, after escaping
TIMEOUT = 10.0  # seconds to send a whole request; also the bound of each write of the answer
THREADS = 32  # worker threads answering complete requests
MAX_CONNECTIONS = 512  # open connections; past it the oldest one still sending a request is closed
LINGER = 2.0  # seconds to drain what a client still sends after its answer (so it reads the answer, not a reset)


def clean(text: str, limit: int = MAX_LOG) -> str:
    """``text`` for a log line: backslash and every non-printable character escaped
    (control characters, terminal escapes, line breaks), cut to ``limit`` characters."""
    out = []
    size = 0
    for ch in text:
        if ch == "\\":
            piece = "\\\\"
        elif ch.isprintable():
            piece = ch
        else:
            code = ord(ch)
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        size += len(piece)
        if size > limit:
            out.append("...")
            break
        out.append(piece)
    return "".join(out)


class Pending:
    """A connection the selector loop is reading a request from (or, after the answer,
    draining until the client closes)."""

    __slots__ = ("addr", "data", "deadline", "drained", "line_end", "lingering", "need", "scanned", "sock", "truncated")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float):
        self.sock, self.addr, self.deadline = sock, addr, deadline
        self.data = bytearray()
        self.lingering = self.truncated = False
        self.drained = self.scanned = 0
        self.line_end = self.need = -1


class _Writer(io.BufferedIOBase):
    """wfile on a socket with a timeout: sendall bounds each write by it."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes


def _complete(c: Pending) -> bool:
    """Whether the request in ``c.data`` is ready for a worker: head and announced body
    (up to MAX_BODY) are in, or it is already past a bound, for the handler to refuse.
    Each call searches only the bytes received since the last one."""
    data = c.data
    if c.need >= 0:
        return len(data) >= c.need
    start, c.scanned = c.scanned, len(data)
    if c.line_end < 0:
        c.line_end = data.find(b"\n", start)
        if c.line_end < 0:
            return len(data) > MAX_LINE
    if c.line_end > MAX_LINE:
        return True
    since = max(c.line_end, start - 2)  # an empty line: "\n\r\n" or "\n\n", ending in the new bytes
    ends = [i + n for i, n in ((data.find(b"\n\r\n", since), 3), (data.find(b"\n\n", since), 2)) if i >= 0]
    if not ends:
        c.truncated = len(data) - c.line_end > MAX_HEADER_BYTES
        return c.truncated
    head_end = min(ends)
    if head_end - c.line_end > MAX_HEADER_BYTES:
        c.truncated = True
        return True
    lengths = re.findall(rb"(?im)^content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", bytes(data[c.line_end : head_end]))
    if len(lengths) == 1 and re.fullmatch(rb"[0-9]{1,12}", lengths[0]) and int(lengths[0]) <= MAX_BODY:
        c.need = head_end + int(lengths[0])
        return len(data) >= c.need
    return True  # no body to wait for, or one the handler refuses


class Server(HTTPServer):
    """The HTTP server of `pkic serve`: a selector loop reads requests, a fixed pool of
    ``threads`` workers answers complete ones (see the module's docstring)."""

    request_queue_size = 1024  # listen backlog: a burst of connections is accepted, not dropped

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        log: Callable[[str], None],
        *,
        timeout: float = TIMEOUT,
        threads: int = THREADS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.request_timeout = timeout
        self.threads = max(1, threads)
        self.max_connections = max(1, max_connections)
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft != resource.RLIM_INFINITY:  # leave descriptors for the files it serves
                self.max_connections = max(1, min(self.max_connections, soft - 64))
        except (ImportError, OSError, ValueError):
            pass
        self._log = log
        self._jobs: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._returned: collections.deque[Pending] = collections.deque()  # answered, back from the workers
        self._lock = threading.Lock()
        self._busy = 0  # connections with the workers (queued, answering, or returned)
        self._stop = threading.Event()
        self._done = threading.Event()
        super().__init__(address, handler)

    def _note(self, c: Pending, message: str) -> None:
        self._log(f"{c.addr[0] if c.addr else '-'} {clean(message)}")

    # ---------------------------------------------------------------- the selector loop

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stop.clear()
        self._done.clear()
        workers = [threading.Thread(target=self._work, name=f"pkic-serve-{i}", daemon=True) for i in range(self.threads)]
        for w in workers:
            w.start()
        sel = selectors.DefaultSelector()
        conns: dict[socket.socket, Pending] = {}
        try:
            self.socket.setblocking(False)
            sel.register(self.socket, selectors.EVENT_READ, None)
            while not self._stop.is_set():
                self._take_returned(sel, conns)
                wait = poll_interval
                if conns:
                    wait = max(0.0, min(wait, min(c.deadline for c in conns.values()) - time.monotonic()))
                for key, _ in sel.select(wait):
                    if key.data is None:
                        self._accept(sel, conns)
                    elif key.data.sock in conns:
                        self._receive(sel, conns, key.data)
                now = time.monotonic()
                for c in [c for c in conns.values() if c.deadline <= now]:
                    if not c.lingering:
                        self._note(c, f"closed: no complete request within {self.request_timeout:g}s")
                    self._drop(sel, conns, c)
        finally:
            for c in list(conns.values()):
                self._drop(sel, conns, c)
            sel.close()
            for _ in workers:
                self._jobs.put(None)
            end = time.monotonic() + 1.0
            for w in workers:
                w.join(max(0.0, end - time.monotonic()))
            while self._returned:
                self._returned.popleft().sock.close()
            self._done.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._done.wait()

    def _drop(self, sel: selectors.BaseSelector, conns: dict[socket.socket, Pending], c: Pending) -> None:
        conns.pop(c.sock, None)
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _accept(self, sel: selectors.BaseSelector, conns: dict[socket.socket, Pending]) -> None:
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    victim = self._oldest(conns)  # free a descriptor, or wait for one
                    if victim is not None:
                        self._drop(sel, conns, victim)
                    else:
                        time.sleep(0.05)
                return
            if len(conns) + self._busy >= self.max_connections:
                victim = self._oldest(conns)
                if victim is None:
                    self._log(f"{addr[0] if addr else '-'} refused: {self.max_connections} connections open, all being answered")
                    sock.close()
                    continue
                if not victim.lingering:
                    self._note(victim, f"closed: {self.max_connections} connections open, this the oldest without a complete request")
                self._drop(sel, conns, victim)
            sock.setblocking(False)
            c = Pending(sock, addr, time.monotonic() + self.request_timeout)
            conns[sock] = c
            sel.register(sock, selectors.EVENT_READ, c)

    @staticmethod
    def _oldest(conns: dict[socket.socket, Pending]) -> Pending | None:
        """A lingering connection first (its answer is sent), else the longest waiting."""
        return next((c for c in conns.values() if c.lingering), None) or next(iter(conns.values()), None)

    def _receive(self, sel: selectors.BaseSelector, conns: dict[socket.socket, Pending], c: Pending) -> None:
        try:
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conns, c)
            return
        if c.lingering:
            c.drained += len(chunk)
            if not chunk or c.drained > 1024 * 1024:
                self._drop(sel, conns, c)
            return
        if not chunk:  # the client gave up before a whole request
            self._drop(sel, conns, c)
            return
        c.data += chunk
        if _complete(c):
            conns.pop(c.sock)
            sel.unregister(c.sock)
            with self._lock:
                self._busy += 1
            self._jobs.put(c)

    def _take_returned(self, sel: selectors.BaseSelector, conns: dict[socket.socket, Pending]) -> None:
        while self._returned:
            c = self._returned.popleft()
            with self._lock:
                self._busy -= 1
            conns[c.sock] = c
            sel.register(c.sock, selectors.EVENT_READ, c)

    # ---------------------------------------------------------------- the workers

    def _work(self) -> None:
        while (c := self._jobs.get()) is not None:
            try:
                self.finish_request(c, c.addr)  # type: ignore[arg-type]  # a Pending, not a socket: the handler reads c.data, writes to c.sock
            except Exception as exc:  # a write timed out, the client reset: never the server's end
                self._note(c, f"answer not sent: {exc!r}")
            try:  # the answer is sent: FIN, then drain what the client still sends (no reset)
                c.sock.shutdown(socket.SHUT_WR)
                c.sock.setblocking(False)
            except OSError:
                c.sock.close()
                with self._lock:
                    self._busy -= 1
                continue
            c.lingering, c.data = True, bytearray()
            c.deadline = time.monotonic() + min(LINGER, self.request_timeout)
            self._returned.append(c)
