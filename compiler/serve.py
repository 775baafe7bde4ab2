"""`pkic serve`: a read-only HTTP publisher for out/, holding no key.

* ``GET /crl/<authority>.crl`` (DER) and ``.crl.pem``
* ``GET /certs/<name>.pem`` and, for authorities, ``/certs/<name>.der`` (AIA caIssuers)
* OCSP (RFC 6960 appendix A): ``POST /`` or ``POST /ocsp`` with an
  ``application/ocsp-request`` body, or ``GET /ocsp/<base64 request>`` (``GET /<b64>``
  too), answered with the pre-signed response for that issuer key hash and serial. It
  has no key, so a request it has no signed response for (another issuer, an unknown
  serial, a SHA-256 CertID: responses are pre-signed for SHA-1 CertIDs) gets the
  unsigned ``unauthorized`` status (RFC 5019 §2.2.3). A request it cannot use (not an
  OCSP request, or one with more than the single CertID RFC 5019 §2.1.1 allows) gets
  the unsigned ``malformedRequest`` status, with HTTP 200 like every OCSP answer
  (RFC 6960 §2.3); HTTP errors are kept for HTTP-level problems (411, 413, 414, 431, a
  bad Content-Length).

The index is rebuilt whenever ``out/state.json`` changes, so an apply is picked up
without a restart.

Hostile clients (issue 12): one thread (the selector loop of :class:`Server`) accepts
connections and reads requests without blocking; only a complete request (head, and a
body of at most ``MAX_BODY`` bytes) goes to one of a fixed number of worker threads. So
an idle or trickling connection costs a file descriptor, never a thread, and a
connection that has not sent a whole request within ``timeout`` seconds is closed.
Past ``max_connections`` open connections, the oldest one still sending its request is
closed. One request per connection (HTTP/1.0). Log lines escape every non-printable
character and are bounded.
"""

from __future__ import annotations

import base64
import collections
import errno
import io
import json
import os
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from compiler import layout
from compiler.layout import STATE_PATH
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import PkicError
from compiler.state.store import MAX_STATE

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


class Index:
    """(issuer key hash, serial) -> response file, from the state; reloaded on change."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._map: dict[tuple[bytes, int], str] = {}

    def _current_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.repo / STATE_PATH)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    def lookup(self, key_hash: bytes, serial: int) -> str | None:
        with self._lock:
            stamp = self._current_stamp()
            if stamp != self._stamp:
                self._map = self._load()
                self._stamp = stamp
            return self._map.get((key_hash, serial))

    def _load(self) -> dict[tuple[bytes, int], str]:
        """Only responses at the paths pkic computes from valid names (never a path the
        state merely says), so a forged state cannot point the server elsewhere."""
        try:
            raw = layout.read_file(self.repo, STATE_PATH, max_size=MAX_STATE) or b"{}"
            body = json.loads(raw) if json_depth_ok(raw) else {}
        except (OSError, ValueError, RecursionError, PkicError):
            return {}
        out = {}
        certs = body.get("certificates") if isinstance(body, dict) else None
        for name, recs in (certs if isinstance(certs, dict) else {}).items():
            if not layout.is_name(name) or not isinstance(recs, list):
                continue
            for r in recs:
                if not isinstance(r, dict):
                    continue
                info = r.get("ocsp") or {}
                serial, f = r.get("serial"), info.get("file") if isinstance(info, dict) else None
                try:
                    if isinstance(f, str) and isinstance(serial, str) and layout.is_ocsp_file(f, name, serial) and r.get("issuer_key_id"):
                        out[(bytes.fromhex(r["issuer_key_id"]), int(serial, 16))] = f
                except (ValueError, TypeError):
                    continue
        return out


def make_handler(repo: Path, log: Callable[[str], None], timeout: float = TIMEOUT) -> type[BaseHTTPRequestHandler]:
    index = Index(repo)
    read_timeout = timeout
    unauthorized = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(Encoding.DER)
    malformed = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(Encoding.DER)

    class Handler(BaseHTTPRequestHandler):
        server_version = "pkic"
        sys_version = ""
        protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive to hold
        # on a plain socket (StreamRequestHandler.setup), each read and write; under Server,
        # the request is already read and this bounds each write of the answer
        timeout = read_timeout

        def setup(self) -> None:
            c = self.request
            if isinstance(c, Pending):  # under Server: the request is read already
                self.connection = c.sock
                self.connection.settimeout(self.timeout)
                self.rfile = io.BytesIO(bytes(c.data))
                self.wfile = _Writer(self.connection)
            else:
                super().setup()

        def log_message(self, format: str, *args) -> None:
            log(f"{self.client_address[0]} {clean(format % args)}")

        def parse_request(self) -> bool:
            """The base parser, within this server's bounds: the request line and its target
            (414), the number and size of header fields (431)."""
            raw = self.raw_requestline
            if len(raw) > MAX_LINE:
                self.requestline, self.request_version, self.command = str(raw[:256], "iso-8859-1"), "", ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return False
            if not super().parse_request():
                return False
            if len(self.path) > MAX_TARGET:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return False
            size = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
            if getattr(self.request, "truncated", False) or len(self.headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return False
            return True

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _file(self, rel: str, ctype: str) -> None:
            """A regular file inside out/, reached without following any symlink."""
            try:
                data = layout.read_file(repo, rel, max_size=16 * 1024 * 1024) if rel.startswith("out/") else None
            except (OSError, PkicError):
                data = None
            if data is None:
                self._send(404, b"not found\n", "text/plain")
                return
            self._send(200, data, ctype)

        def _ocsp(self, der: bytes) -> None:
            try:
                # cryptography refuses a request with more than one CertID (NotImplementedError):
                # RFC 5019 §2.1.1 allows exactly one, so that is malformed here too
                req = ocsp.load_der_ocsp_request(der)
                key_hash, serial, algorithm = req.issuer_key_hash, req.serial_number, req.hash_algorithm
            except Exception:  # anything unusable: an OCSP answer, never a crash
                self._send(200, malformed, "application/ocsp-response")
                return
            rel = index.lookup(key_hash, serial) if isinstance(algorithm, hashes.SHA1) else None
            if rel is None:
                self._send(200, unauthorized, "application/ocsp-response")
                return
            self._file(rel, "application/ocsp-response")

        def do_GET(self) -> None:
            try:
                path = self.path.split("?", 1)[0]
                m = re.fullmatch(rf"/crl/({NAME})\.crl(\.pem)?", path)
                if m and ".." not in m.group(1):
                    pem = bool(m.group(2))
                    self._file(layout.crl_path(m.group(1), pem), "application/x-pem-file" if pem else "application/pkix-crl")
                    return
                m = re.fullmatch(rf"/certs/({NAME})\.(pem|der)", path)
                if m and ".." not in m.group(1):
                    name, ext = m.groups()
                    rel = layout.cert_path(name) if ext == "pem" else layout.der_path(name)
                    self._file(rel, "application/x-pem-file" if ext == "pem" else "application/pkix-cert")
                    return
                m = re.fullmatch(r"/(?:ocsp/)?([A-Za-z0-9+/=%_-]{8,})", path)
                if m:
                    text = unquote(m.group(1))
                    try:
                        der = base64.b64decode(
                            text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True
                        )
                    except ValueError:  # not base64: not an OCSP request either
                        self._send(200, malformed, "application/ocsp-response")
                        return
                    self._ocsp(der)
                    return
                self._send(404, b"not found\n", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_POST(self) -> None:
            try:
                if self.path.split("?", 1)[0] not in ("/", "/ocsp", "/ocsp/"):
                    self._send(404, b"not found\n", "text/plain")
                    return
                lengths = self.headers.get_all("Content-Length") or []
                if not lengths:  # chunked or unsaid: a body of unknown size is not read
                    self.send_error(HTTPStatus.LENGTH_REQUIRED)
                    return
                if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,12}", lengths[0].strip()):
                    self._send(400, malformed, "application/ocsp-response")
                    return
                length = int(lengths[0])
                if length > MAX_BODY:
                    self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                    return
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the body ended early: an HTTP problem
                    self._send(400, malformed, "application/ocsp-response")
                    return
                self._ocsp(body)  # an empty one included: malformedRequest
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class Pending:
    """A connection the selector loop is reading a request from (or, after the answer,
    draining until the client closes)."""

    __slots__ = ("addr", "data", "deadline", "drained", "line_end", "lingering", "need", "scanned", "sock", "truncated")

    def __init__(self, sock: socket.socket, addr, deadline: float):
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

    def write(self, b) -> int:
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
        address,
        handler,
        log: Callable[[str], None],
        *,
        timeout: float = TIMEOUT,
        threads: int = THREADS,
        max_connections: int = MAX_CONNECTIONS,
    ):
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

    def _drop(self, sel: selectors.BaseSelector, conns: dict, c: Pending) -> None:
        conns.pop(c.sock, None)
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _accept(self, sel: selectors.BaseSelector, conns: dict) -> None:
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
    def _oldest(conns: dict) -> Pending | None:
        """A lingering connection first (its answer is sent), else the longest waiting."""
        return next((c for c in conns.values() if c.lingering), None) or next(iter(conns.values()), None)

    def _receive(self, sel: selectors.BaseSelector, conns: dict, c: Pending) -> None:
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

    def _take_returned(self, sel: selectors.BaseSelector, conns: dict) -> None:
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
                self.finish_request(c, c.addr)  # the handler reads c.data, writes to c.sock
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


def make_server(
    repo: Path,
    host: str,
    port: int,
    log: Callable[[str], None],
    *,
    timeout: float = TIMEOUT,
    threads: int = THREADS,
    max_connections: int = MAX_CONNECTIONS,
) -> Server:
    """``timeout``: seconds a connection has to send a whole request (and each write of the
    answer); ``threads``: workers answering; ``max_connections``: open connections."""
    return Server((host, port), make_handler(repo, log, timeout), log, timeout=timeout, threads=threads, max_connections=max_connections)
