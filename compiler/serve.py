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
import io
import json
import os
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from compiler import layout
from compiler.layout import STATE_PATH
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import PkicError
from compiler.serve_http import (
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    MAX_TARGET,
    THREADS,
    TIMEOUT,
    Pending,
    Server,
    _Writer,
    clean,
)
from compiler.state import MAX_STATE

NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class Index:
    """(issuer key hash, serial) -> response file, from the state; reloaded on change."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._map: dict[tuple[bytes, int], str] = {}

    def _current_stamp(self) -> tuple[int, int, int] | None:
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

        def log_message(self, format: str, *args: Any) -> None:
            log(f"{self.client_address[0]} {clean(format % args)}")

        def parse_request(self) -> bool:
            """The base parser, within this server's bounds: the request line and its target
            (414), the number and size of header fields (431)."""
            raw: bytes = self.raw_requestline  # type: ignore[attr-defined]  # set by handle_one_request; typeshed does not declare it
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
