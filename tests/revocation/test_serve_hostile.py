"""`pkic serve` against hostile clients (issue 12, item 5), on real sockets on loopback.

* 150 idle connections (silent, half a request line, a body that never comes) hold no
  thread, and a CRL GET, an OCSP POST and an OCSP GET are still answered at once;
* past ``max_connections``, the oldest connections still sending a request are closed,
  and new requests are answered;
* a silent or trickling client is closed after the timeout (total, not per byte);
* bounds: a POST body over 10 KiB is 413 (and the client reads that answer, not a
  reset), no Content-Length is 411, a bad one 400, a URL over 8 KiB 414, too many or too
  large header fields 431; a body at the bound that is no OCSP request is malformedRequest;
* control characters of a request never reach the log: escaped, and lines are bounded;
* the CLI takes ``--timeout``, ``--threads`` and ``--max-connections``.

The server runs in-process (make_server in a thread), so its thread count is visible.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import NOW, make_pkic
from cryptography import x509
from cryptography.x509 import ocsp
from helpers import ocsp_request

from compiler import serve as responder
from compiler import serve_http

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """One applied init example for the whole module (serving never changes it)."""
    base = tmp_path_factory.mktemp("serve")
    pkic = make_pkic(base)
    pkic.ok("init", str(base / "pki"))
    pkic.ok("apply", "--yes", "--now", NOW, cwd=base / "pki")
    return base / "pki"


def test_the_code_under_test_is_this_worktree():
    assert Path(responder.__file__).resolve().is_relative_to(REPO_ROOT), responder.__file__


class Running:
    """make_server on 127.0.0.1, an ephemeral port, serve_forever in a thread; the log
    callback's lines collected."""

    def __init__(self, repo: Path, **limits):
        self.lines: list[str] = []
        self.server = responder.make_server(repo, "127.0.0.1", 0, self.lines.append, **limits)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
        """Send ``request`` as is; the status and body of the answer, read to the close."""
        with self.connect(timeout) as s:
            s.sendall(request)
            data = read_to_close(s)
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def http(self, path: str, data: bytes | None = None) -> tuple[int, bytes, float]:
        """urllib, as a client would: status, body, seconds taken."""
        start = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"Content-Type": "application/ocsp-request"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read(), time.monotonic() - start
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), time.monotonic() - start


def read_to_close(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``s`` within ``seconds`` (anything it sends is read)."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""  # data: open; b"": closed
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(5)


def web_ocsp_request(repo: Path) -> bytes:
    certs = repo / "out" / "certs"
    web = x509.load_pem_x509_certificate((certs / "web.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((certs / "services-ca.pem").read_bytes())
    return ocsp_request(web, ca)


def assert_answers_promptly(srv: Running, repo: Path) -> None:
    """An OCSP POST, an OCSP GET and a CRL GET, each answered correctly within 2 s."""
    req, web_der, crl = web_ocsp_request(repo), (repo / "out" / "ocsp" / "web.der").read_bytes(), (repo / "out" / "crl" / "services-ca.crl").read_bytes()
    status, body, took = srv.http("/ocsp", data=req)
    assert (status, body) == (200, web_der) and took < 2, (status, took)
    assert ocsp.load_der_ocsp_response(body).certificate_status == ocsp.OCSPCertStatus.GOOD
    status, body, took = srv.http("/ocsp/" + urllib.request.quote(base64.b64encode(req).decode(), safe=""))
    assert (status, body) == (200, web_der) and took < 2, (status, took)
    status, body, took = srv.http("/crl/services-ca.crl")
    assert (status, body) == (200, crl) and took < 2, (status, took)


def hold_idle(srv: Running, count: int) -> list[socket.socket]:
    """``count`` connections sending nothing, half a request line, or a head whose body
    never comes."""
    held = []
    for i in range(count):
        s = srv.connect()
        if i % 3 == 1:
            s.sendall(b"GET /crl/serv")
        elif i % 3 == 2:
            s.sendall(b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\nContent-Length: 100\r\n\r\n0123")
        held.append(s)
    return held


# ---------------------------------------------------------------------------- idle connections


def test_idle_connections_hold_no_thread_and_block_no_answer(served):
    before = threading.active_count()
    with Running(served) as srv:
        held = hold_idle(srv, 150)
        try:
            time.sleep(0.3)
            assert_answers_promptly(srv, served)
            # bounded: the serving thread and its workers, not a thread per connection
            assert threading.active_count() <= before + 1 + getattr(responder, "THREADS", 64), threading.active_count()
            # and the idle ones are held (not dropped to make room): they wait for their timeout
            assert all(still_open(s) for s in held)
        finally:
            for s in held:
                s.close()


def test_connections_past_the_cap_close_the_oldest_still_sending(served):
    with Running(served, max_connections=20, threads=2) as srv:
        held = hold_idle(srv, 60)
        try:
            time.sleep(0.3)
            assert_answers_promptly(srv, served)
            assert closed_within(held[0], 2) and closed_within(held[30], 2)
            assert still_open(held[-1])
            assert any("20 connections open" in line for line in srv.lines), srv.lines
        finally:
            for s in held:
                s.close()


# ---------------------------------------------------------------------------- timeouts


@pytest.mark.slow
def test_a_silent_or_slow_client_is_closed_after_the_timeout(served):
    with Running(served, timeout=1.0) as srv:
        silent = srv.connect()
        partial = srv.connect()
        partial.sendall(b"GET /crl/services-ca.crl HTTP/1.0\r\nUser-Agent: x")
        no_body = srv.connect()
        no_body.sendall(b"POST / HTTP/1.0\r\nContent-Length: 100\r\n\r\n0123456789")
        trickle = srv.connect()
        stop = threading.Event()

        def drip() -> None:  # one byte every 50 ms: the timeout is for the whole request
            try:
                trickle.sendall(b"GET / HTTP/1.0\r\n")
                while not stop.wait(0.05):
                    trickle.sendall(b"X")
            except OSError:
                pass

        dripper = threading.Thread(target=drip, daemon=True)
        start = time.monotonic()
        dripper.start()
        try:
            for s in (silent, partial, no_body, trickle):
                assert closed_within(s, max(0.1, start + 3.5 - time.monotonic()))
            took = time.monotonic() - start
            assert 0.9 <= took < 3.5, took
            assert_answers_promptly(srv, served)
        finally:
            stop.set()
            dripper.join(5)
            for s in (silent, partial, no_body, trickle):
                s.close()
        assert sum("no complete request within 1s" in line for line in srv.lines) == 4, srv.lines


def test_a_request_sent_in_pieces_within_the_timeout_is_answered(served):
    req = web_ocsp_request(served)
    whole = b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % len(req) + req
    with Running(served, timeout=2.0) as srv, srv.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(whole), 40):
            s.sendall(whole[i:i + 40])
            time.sleep(0.02)
        head, _, body = read_to_close(s).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and body == (served / "out" / "ocsp" / "web.der").read_bytes()


@pytest.mark.parametrize("request_bytes", [
    b"GET /crl/services-ca.crl HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: y\r\n\r\n",
    b"GET /x HTTP/1.0\n\n",
    b"POST / HTTP/1.0\r\nContent-Length: 5\r\nHost: x\r\n\r\nab\r\n\n",
    b"POST / HTTP/1.0\r\ncontent-length :3\r\n\r\n\r\n\r",
])
def test_a_request_is_complete_exactly_at_its_last_byte_however_it_arrives(request_bytes):
    """The selector loop's reading (searching only new bytes each time): fed one byte at
    a time or all at once, a request is handed to a worker at its last byte, not before."""
    one = serve_http.Pending(None, None, 0.0)
    for i, byte in enumerate(request_bytes):
        one.data += bytes([byte])
        assert serve_http._complete(one) == (i == len(request_bytes) - 1), (i, request_bytes[: i + 1])
    whole = serve_http.Pending(None, None, 0.0)
    whole.data += request_bytes
    assert serve_http._complete(whole)


def test_the_default_timeout_is_ten_seconds():
    assert responder.TIMEOUT == 10
    assert responder.make_handler(Path("."), print).timeout == 10


# ---------------------------------------------------------------------------- bounds


def test_oversize_and_malformed_requests_are_refused(served):
    req = web_ocsp_request(served)
    with Running(served) as srv:
        head = b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\n"
        assert srv.raw(head + b"Content-Length: 10241\r\n\r\n")[0] == 413
        # a body sent anyway: the client reads the 413, not a connection reset
        assert srv.raw(head + b"Content-Length: 102400\r\n\r\n" + b"\x30" * 102400)[0] == 413
        # at the bound: read and parsed (garbage: malformedRequest, an OCSP answer)
        status, body = srv.raw(head + b"Content-Length: 10240\r\n\r\n" + b"\x30" * 10240)
        assert status == 200 and ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        assert srv.raw(head + b"\r\n" + req)[0] == 411
        assert srv.raw(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(req) + req + b"\r\n0\r\n\r\n")[0] == 411
        assert srv.raw(head + b"Content-Length: 12abc\r\n\r\n" + req)[0] == 400
        assert srv.raw(head + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(req), len(req)) + req)[0] == 400
        assert srv.raw(head + b"Content-Length: %d\r\n\r\n" % len(req) + req)[0] == 200  # the same, well formed

        assert srv.raw(b"GET /ocsp/" + b"A" * 8200 + b" HTTP/1.0\r\n\r\n")[0] == 414
        assert srv.raw(b"GET /crl/" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n")[0] == 414
        assert srv.raw(b"GET /x." + b"a" * 8100 + b" HTTP/1.0\r\n\r\n")[0] == 404  # under the bound
        assert srv.raw(b"GET /crl/services-ca.crl HTTP/1.0\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(70)) + b"\r\n")[0] == 431
        assert srv.raw(b"GET /crl/services-ca.crl HTTP/1.0\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")[0] == 431
        assert srv.raw(b"GET /crl/services-ca.crl HTTP/1.0\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 900) for i in range(30)) + b"\r\n")[0] == 431
        # ordinary requests with a few headers still pass
        status, body = srv.raw(b"GET /crl/services-ca.crl HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
        assert (status, body) == (200, (served / "out" / "crl" / "services-ca.crl").read_bytes())
        assert srv.raw(b"HEAD /crl/services-ca.crl HTTP/1.0\r\n\r\n") == (200, b"")


# ---------------------------------------------------------------------------- the log


def test_control_characters_of_a_request_are_escaped_in_the_log(served):
    with Running(served) as srv:
        assert srv.raw(b"GET /crl/\x1b[2J\x07evil\x9b\x7f.crl HTTP/1.0\r\nUser-Agent: \x1b]0;owned\x07\r\n\r\n")[0] == 404
        assert srv.raw(b"GET /crl/a\x85\rb\x1c.crl HTTP/1.0\r\n\r\n")[0] == 400  # separators: bad syntax, logged too
        assert srv.raw(b"G\x1b[31mT / HTTP/1.0\r\n\r\n")[0] == 501
        srv.raw(b"GET /\x1b[31m" + b"a" * 9000 + b" HTTP/1.0\r\n\r\n")  # 414, logged at a bounded length
        assert srv.raw(b"GET /x\\x1b HTTP/1.0\r\n\r\n")[0] == 404
        lines = list(srv.lines)
    assert lines
    for line in lines:
        assert line.isprintable(), repr(line)  # no control, no line break, no terminal escape
        assert len(line) <= 600, len(line)
    text = "\n".join(lines)
    assert "/crl/\\x1b[2J\\x07evil\\x9b\\x7f.crl" in text, text
    assert "G\\x1b[31mT" in text, text
    assert "/x\\\\x1b" in text, text  # a backslash sent is doubled: no forged escape


def test_clean_escapes_every_non_printable_and_bounds_the_length():
    assert responder.clean("a\x1b[0m\n\t\x7f\u2028\u202e\U000e0001\\z") == "a\\x1b[0m\\x0a\\x09\\x7f\\u2028\\u202e\\U000e0001\\\\z"
    assert responder.clean("\x00" * 1000, limit=40) == "\\x00" * 10 + "..."


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_serve_cli_takes_the_limits(served, tmp_path):
    pkic = make_pkic(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--timeout", "1", "--threads", "2", "--max-connections", "8"],
                            cwd=served, env=pkic.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            try:
                silent = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with silent:
            start = time.monotonic()
            assert closed_within(silent, 4)
            assert 0.9 <= time.monotonic() - start < 4
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /crl/\x1b[2Jservices-ca.crl HTTP/1.0\r\n\r\n")
            assert read_to_close(s).startswith(b"HTTP/1.0 404")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/crl/services-ca.crl", timeout=5) as resp:
            assert resp.read() == (served / "out" / "crl" / "services-ca.crl").read_bytes()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    text = (tmp_path / "serve.log").read_text(errors="replace")
    assert "no complete request within 1s" in text and "/crl/\\x1b[2Jservices-ca.crl" in text, text
    assert "\x1b" not in text
    bad = pkic("serve", "--threads", "0", cwd=served)
    assert bad.returncode != 0 and "--threads" in bad.stderr, bad.stderr
