"""Each verifier of the matrix, driven for real: one function per verifier returns its
observations, row by row (a list of :class:`matrix.Obs`, one per probe).

Offline verifiers check every probe's certificate for its purpose (TLS server: with
the name it carries). TLS stacks check it in a handshake on loopback: as a client, the
certificate is presented by nginx's zoo (one port per certificate); as a server, by a
client of the same stack (mTLS). CRL-checking verifiers load every current CRL of the
hierarchy, plus the crafted sub-authority's, so that only its path length can refuse it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification as xv
from helpers import tls_exchange
from interoplib import HERE, World, free_port, need, pem_blocks, run, stop, wait_for_port
from matrix import ROWS, VERIFIER, Obs, Row
from servers import Netns, Nginx

SERVER_AUTH, CLIENT_AUTH = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
REQUEST = "GET / HTTP/1.0\r\n\r\n"


def probes(verifier: str, *, ocsp: bool | None = False):
    """(row, subject id, purpose) for every probe of the verifier's rows and roles."""
    v = VERIFIER[verifier]
    for row in ROWS:
        if row.id not in v.rows or (ocsp is not None and row.ocsp != ocsp):
            continue
        for sid, purpose in row.probes:
            if purpose in v.roles:
                yield row, sid, purpose


class Lab:
    """The world, the CRL files each kind of verifier loads, and the shared servers."""

    def __init__(self, w: World, base: Path):
        self.w = w
        self.base = base
        self.nginx: Nginx | None = None
        d = base / "crl-files"
        d.mkdir()
        roots = w.root.read_bytes()
        anchors = [x509.load_pem_x509_certificate(b) for b in pem_blocks(roots)]

        def by_anchor(crls: bytes) -> bytes:
            """The CRLs signed by a trust anchor: all that GnuTLS's TLS credentials load."""
            out = []
            for b in pem_blocks(crls):
                crl = x509.load_pem_x509_crl(b)
                if any(a.subject == crl.issuer and crl.is_signature_valid(a.public_key()) for a in anchors):
                    out.append(b)
            return b"".join(out)

        self.crl = {"set": w.crl_set, "expired": w.crls_expired}
        # OpenSSL's s_client / s_server -CRL reads one CRL: they get the CRLs in -CAfile
        self.ca_with_crls = {}
        self.anchor_crls = {}
        for kind, path in self.crl.items():
            self.ca_with_crls[kind] = d / f"roots+{kind}.pem"
            self.ca_with_crls[kind].write_bytes(roots + path.read_bytes())
            self.anchor_crls[kind] = d / f"anchor-{kind}.pem"
            self.anchor_crls[kind].write_bytes(by_anchor(path.read_bytes()))

    def subject(self, sid: str):
        return self.w.subjects[sid]

    def start_nginx(self) -> Nginx:
        if self.nginx is None:
            from servers import start_zoo

            shown = sorted({sid for r in ROWS for sid, p in r.probes if p == "server" and sid and not r.ocsp})
            staples = {f"staple-{sid}": sid for r in ROWS if r.ocsp for sid, _ in r.probes}
            d = self.base / "nginx"
            d.mkdir()
            self.nginx = start_zoo(self.w, d, shown, staples)
        return self.nginx

    def zoo_port(self, sid: str, *, staple: bool = False) -> int:
        return self.start_nginx().blocks[f"staple-{sid}" if staple else sid].port

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()


NO_RESPONSE = "pkic published no OCSP response for it"


def _result(ok: bool, reason: str, row: Row, sid, purpose) -> tuple[str, Obs]:
    return row.id, Obs(sid, purpose, ok, reason.strip()[-600:])


def _collect(pairs) -> dict[str, list[Obs]]:
    out: dict[str, list[Obs]] = {}
    for row_id, obs in pairs:
        out.setdefault(row_id, []).append(obs)
    return out


# --------------------------------------------------------------------------- OpenSSL verify / ocsp


def run_openssl(lab: Lab) -> dict[str, list[Obs]]:
    openssl = need("openssl")
    results = []
    for row, sid, purpose in probes("openssl", ocsp=None):
        s = lab.subject(sid)
        if row.ocsp and s.ocsp is None:
            results.append(_result(False, NO_RESPONSE, row, sid, purpose))
            continue
        if row.ocsp:
            p = run([openssl, "ocsp", "-respin", str(s.ocsp), "-issuer", str(s.issuer), "-cert", str(s.cert),
                     "-CAfile", str(lab.w.root), "-verify_other", str(s.inter)])
            text = p.stdout + p.stderr
            status = re.search(rf"{re.escape(str(s.cert))}: (\w+)", text)
            ok = p.returncode == 0 and "Response verify OK" in text and status is not None and status.group(1) == "good" and "times invalid" not in text
            results.append(_result(ok, text, row, sid, purpose))
            continue
        cmd = [openssl, "verify", "-CAfile", str(lab.w.root), "-untrusted", str(s.inter),
               "-purpose", "sslserver" if purpose == "server" else "sslclient"]
        if purpose == "server":
            cmd += ["-verify_hostname", s.host]
        if row.crl != "none":
            cmd += ["-crl_check" if row.leaf_only else "-crl_check_all", "-CRLfile", str(lab.crl[row.crl])]
        p = run(cmd + [str(s.cert)])
        results.append(_result(p.returncode == 0 and p.stdout.strip().endswith(": OK"), p.stdout + p.stderr, row, sid, purpose))
    return _collect(results)


# --------------------------------------------------------------------------- OpenSSL s_client / s_server


def run_openssl_tls(lab: Lab) -> dict[str, list[Obs]]:
    openssl = need("openssl")
    results = []
    # as a client: s_client checks the zoo's certificates
    for row, sid, purpose in probes("openssl-tls"):
        if purpose != "server":
            continue
        s = lab.subject(sid)
        cmd = [openssl, "s_client", "-connect", f"127.0.0.1:{lab.zoo_port(sid)}", "-servername", s.host, "-verify_hostname", s.host,
               "-verify_return_error", "-brief"]
        if row.crl == "none":
            cmd += ["-CAfile", str(lab.w.root)]
        else:
            cmd += ["-CAfile", str(lab.ca_with_crls[row.crl]), "-crl_check" if row.leaf_only else "-crl_check_all"]
        p = run(cmd, input="")
        text = p.stdout + p.stderr
        results.append(_result(p.returncode == 0 and "Verification: OK" in text, text, row, sid, purpose))

    # as a server: s_server -Verify checks s_client's certificate; one server per CRL mode
    gate = lab.subject("srv-p256")
    servers: dict[tuple, tuple] = {}
    try:
        for row, sid, purpose in probes("openssl-tls"):
            if purpose != "client":
                continue
            mode = (row.crl, row.leaf_only)
            if mode not in servers:
                port = free_port()
                log = lab.base / f"s_server-{row.crl}-{'leaf' if row.leaf_only else 'chain'}.log"
                fh = open(log, "wb")
                proc = subprocess.Popen(
                    [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(gate.cert), "-cert_chain", str(gate.inter),
                     "-key", str(gate.key), "-CAfile", str(lab.ca_with_crls[row.crl]), "-Verify", "5", "-verify_return_error",
                     "-crl_check" if row.leaf_only else "-crl_check_all", "-www"],
                    stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                fh.close()
                servers[mode] = (proc, port, log)
                wait_for_port(port, proc)
            proc, port, log = servers[mode]
            seen = log.stat().st_size
            cmd = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", gate.host, "-CAfile", str(lab.w.root), "-quiet"]
            if sid is not None:
                s = lab.subject(sid)
                cmd += ["-cert", str(s.cert), "-cert_chain", str(s.inter), "-key", str(s.key)]
            p = run(cmd, input=REQUEST)
            server_said = log.read_bytes()[seen:].decode(errors="replace")
            errors = " ".join(re.findall(r"verify error:num=\d+:[^\n]*", server_said))
            ok = p.stdout.startswith("HTTP/1.0 200")
            results.append(_result(ok, errors or p.stderr, row, sid, purpose))
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
    return _collect(results)


# --------------------------------------------------------------------------- GnuTLS certtool


def run_certtool(lab: Lab) -> dict[str, list[Obs]]:
    certtool = need("certtool")
    results = []
    for row, sid, purpose in probes("certtool"):
        s = lab.subject(sid)
        cmd = [certtool, "--verify", "--load-ca-certificate", str(lab.w.root), "--infile", str(s.chain),
               "--verify-purpose", SERVER_AUTH if purpose == "server" else CLIENT_AUTH]
        if purpose == "server":
            cmd += ["--verify-hostname", s.host]
        if row.crl != "none":
            cmd += ["--load-crl", str(lab.crl[row.crl])]
        p = run(cmd)
        text = p.stdout + p.stderr
        line = next((ln for ln in text.splitlines() if "Chain verification output" in ln), text)
        results.append(_result(p.returncode == 0 and "Verified. The certificate is trusted" in line, line, row, sid, purpose))
    return _collect(results)


# --------------------------------------------------------------------------- gnutls-cli / gnutls-serv


def _gnutls_cli(lab: Lab, port: int, host: str, crl: str | None, *, cert=None, prefix=(), input: str = "") -> subprocess.CompletedProcess:
    cmd = [*prefix, need("gnutls-cli"), "--x509cafile", str(lab.w.root), "--verify-hostname", host, "--sni-hostname", host, "-p", str(port)]
    if crl is not None:
        cmd += ["--x509crlfile", str(lab.anchor_crls[crl])]
    if cert is not None:
        cmd += ["--x509certfile", str(cert.chain), "--x509keyfile", str(cert.key)]
    return run([*cmd, "127.0.0.1"], input=input)


def _gnutls_reason(text: str, crl: str | None) -> str:
    if "Error setting the x509 CRL file" in text and crl == "expired":
        # the same file of current CRLs loads (the good rows pass): only the expiry differs
        return "CRL has expired: gnutls refuses to load it (" + text.strip().splitlines()[0] + ")"
    status = [ln.strip() for ln in text.splitlines() if "Status:" in ln or "revoked" in ln.lower() or "Error" in ln]
    return " ".join(status) or text


def run_gnutls_tls(lab: Lab) -> dict[str, list[Obs]]:
    need("gnutls-cli")
    results = []
    # as a client: gnutls-cli checks the zoo's certificates, with the CRLs it can load
    for row, sid, purpose in probes("gnutls-tls", ocsp=None):
        if purpose != "server":
            continue
        s = lab.subject(sid)
        if row.ocsp and s.ocsp is None:
            results.append(_result(False, NO_RESPONSE, row, sid, purpose))
            continue
        crl = None if row.crl == "none" else row.crl
        p = _gnutls_cli(lab, lab.zoo_port(sid, staple=row.ocsp), s.host, crl)
        text = p.stdout + p.stderr
        results.append(_result(p.returncode == 0 and "The certificate is trusted" in text, _gnutls_reason(text, crl), row, sid, purpose))

    # as a server: gnutls-serv in a namespace of its own, gnutls-cli as its client
    serv, stdbuf = need("gnutls-serv"), need("stdbuf")
    gate = lab.subject("srv-p256")
    ns = Netns()
    servers: dict[str, tuple] = {}
    try:
        for row, sid, purpose in probes("gnutls-tls"):
            if purpose != "client":
                continue
            if row.crl not in servers:
                port = 4433 + len(servers)  # the namespace is ours alone: every port is free
                log = lab.base / f"gnutls-serv-{row.crl}.log"
                fh = open(log, "wb")
                proc = subprocess.Popen(ns.cmd([stdbuf, "-oL", "-eL", serv, "--http", "-p", str(port), "--x509certfile", str(gate.chain),
                                                "--x509keyfile", str(gate.key), "--x509cafile", str(lab.w.root),
                                                "--x509crlfile", str(lab.anchor_crls[row.crl]), "--require-client-cert", "--verify-client-cert"]),
                                        stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                fh.close()
                servers[row.crl] = (proc, port, log)
                try:  # gnutls-serv does not start on an expired CRL; otherwise wait until it listens
                    wait_for_port(port, proc, connect=lambda prt: run(ns.cmd(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{prt}"]), timeout=5).returncode == 0)
                except AssertionError:
                    if proc.poll() is None:
                        raise
            proc, port, log = servers[row.crl]
            if proc.poll() is not None:
                said = log.read_text(errors="replace")
                results.append(_result(False, _gnutls_reason(said, row.crl), row, sid, purpose))
                continue
            seen = log.stat().st_size
            p = _gnutls_cli(lab, port, gate.host, None, cert=lab.subject(sid) if sid else None, prefix=ns.cmd([]), input=REQUEST)
            ok = "HTTP/1.0 200 OK" in p.stdout
            said = ""
            if not ok:  # the server's own words ("Status: ... revoked"), line-buffered: poll briefly
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    said = log.read_bytes()[seen:].decode(errors="replace")
                    if "Status:" in said or "Error in handshake" in said:
                        break
                    time.sleep(0.05)
            results.append(_result(ok, _gnutls_reason(said, row.crl) if said else p.stdout + p.stderr, row, sid, purpose))
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        ns.close()
    return _collect(results)


# --------------------------------------------------------------------------- nginx (curl as its client)


def _curl(lab: Lab, port: int, host: str, *, ca=None, crl: str | None = None, cert=None, status: bool = False) -> subprocess.CompletedProcess:
    cmd = [need("curl"), "-sS", "--max-time", "10", "--cacert", str(ca or lab.w.root), "--resolve", f"{host}:{port}:127.0.0.1"]
    if crl is not None:
        cmd += ["--crlfile", str(lab.crl[crl])]
    if status:
        cmd += ["--cert-status"]
    if cert is not None:
        cmd += ["--cert", str(cert.chain), "--key", str(cert.key)]
    return run(cmd + [f"https://{host}:{port}/"])


def run_nginx(lab: Lab) -> dict[str, list[Obs]]:
    n = lab.start_nginx()
    results = []
    for row in ROWS:
        if row.id not in VERIFIER["nginx"].rows:
            continue
        for sid, purpose in row.probes:
            if row.ocsp or purpose == "client":
                results.append(_nginx_probe(lab, n, row, sid, purpose))
    return _collect(results)


def _nginx_probe(lab: Lab, n: Nginx, row: Row, sid, purpose):
    gate = lab.subject("srv-p256")
    if row.ocsp:  # what nginx staples, read with openssl s_client -status
        s = lab.subject(sid)
        if s.ocsp is None:
            return _result(False, NO_RESPONSE, row, sid, "server")
        p = run([need("openssl"), "s_client", "-connect", f"127.0.0.1:{lab.zoo_port(sid, staple=True)}", "-servername", s.host, "-status",
                 "-CAfile", str(lab.w.root)], input="")
        m = re.search(r"Cert Status: (\w+)", p.stdout)
        ok = "OCSP Response Status: successful" in p.stdout and m is not None
        return _result(ok, f"stapled ({m.group(1)})" if ok else "no stapled response", row, sid, "server")
    block = n.blocks["gate-expired" if row.crl == "expired" else "gate"]
    p = _curl(lab, block.port, gate.host, cert=lab.subject(sid) if sid else None)
    ok = p.returncode == 0 and p.stdout.startswith("accepted")
    return _result(ok, p.stdout + p.stderr, row, sid, purpose)


def run_curl(lab: Lab) -> dict[str, list[Obs]]:
    results = []
    for row, sid, purpose in probes("curl", ocsp=None):
        s = lab.subject(sid)
        if row.ocsp and s.ocsp is None:
            results.append(_result(False, NO_RESPONSE, row, sid, purpose))
            continue
        p = _curl(lab, lab.zoo_port(sid, staple=row.ocsp), s.host, crl=None if row.crl == "none" else row.crl, status=row.ocsp)
        results.append(_result(p.returncode == 0 and p.stdout.startswith("ok"), p.stderr, row, sid, purpose))
    return _collect(results)


# --------------------------------------------------------------------------- Node


def run_node(lab: Lab) -> dict[str, list[Obs]]:
    node = need("node")
    req = {"ca": str(lab.w.root), "crls": {k: str(v) for k, v in lab.crl.items()}, "client": [], "server": []}
    gate = lab.subject("srv-p256")
    req["gate"] = {"chain": str(gate.chain), "key": str(gate.key), "host": gate.host}
    index = {}
    for i, (row, sid, purpose) in enumerate(probes("node")):
        key = f"{i}"
        index[key] = (row, sid, purpose)
        if purpose == "server":
            req["client"].append({"id": key, "port": lab.zoo_port(sid), "host": lab.subject(sid).host, "crl": row.crl})
        else:
            s = lab.subject(sid) if sid else None
            req["server"].append({"id": key, "chain": str(s.chain) if s else None, "key": str(s.key) if s else None, "crl": row.crl})
    lab.start_nginx()
    p = run([node, str(HERE / "tlscheck.js")], input=json.dumps(req), timeout=120)
    assert p.returncode == 0, f"tlscheck.js failed ({p.returncode}): {p.stderr}"
    out = json.loads(p.stdout)
    results = []
    for side in ("client", "server"):
        for key, r in out[side].items():
            row, sid, purpose = index[key]
            results.append(_result(r["ok"], r["reason"], row, sid, purpose))
    return _collect(results)


def node_single_buffer(lab: Lab, sid: str) -> dict:
    """Node as an mTLS server given crls.pem as one buffer (not split): what happens."""
    s, gate = lab.subject(sid), lab.subject("srv-p256")
    req = {"ca": str(lab.w.root), "crls": {"set": str(lab.w.crls)}, "client": [],
           "gate": {"chain": str(gate.chain), "key": str(gate.key), "host": gate.host},
           "server": [{"id": "single", "chain": str(s.chain), "key": str(s.key), "crl": "single"},
                      {"id": "split", "chain": str(s.chain), "key": str(s.key), "crl": "set"}]}
    p = run([need("node"), str(HERE / "tlscheck.js")], input=json.dumps(req), timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["server"]


# --------------------------------------------------------------------------- Go


def run_go(lab: Lab) -> dict[str, list[Obs]]:
    go = need("go")
    cases, index = [], {}
    for i, (row, sid, purpose) in enumerate(probes("go")):
        s = lab.subject(sid)
        index[str(i)] = (row, sid, purpose)
        cases.append({"id": str(i), "chain": str(s.chain), "usage": purpose, "dns": s.host})
    # the standard library only: no module, no download, this toolchain
    env = {**os.environ, "GO111MODULE": "off", "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "", "GOWORK": "off",
           "CGO_ENABLED": "0"}
    if not (os.environ.get("GOCACHE") or os.environ.get("XDG_CACHE_HOME") or os.environ.get("HOME")):
        env["GOCACHE"] = str(lab.base / "go-cache")
    p = run([go, "run", str(HERE / "x509check.go")], input=json.dumps({"roots": str(lab.w.root), "cases": cases}), env=env, timeout=180)
    assert p.returncode == 0, f"go run x509check.go failed ({p.returncode}): {p.stderr}"
    out = json.loads(p.stdout)
    return _collect(_result(out[k]["ok"], out[k].get("error", ""), *index[k]) for k in index)


# --------------------------------------------------------------------------- cryptography


def run_cryptography(lab: Lab) -> dict[str, list[Obs]]:
    store = xv.Store(x509.load_pem_x509_certificates(lab.w.root.read_bytes()))
    now = datetime.now(timezone.utc)
    results = []
    for row, sid, purpose in probes("cryptography"):
        s = lab.subject(sid)
        chain = x509.load_pem_x509_certificates(s.chain.read_bytes())
        builder = xv.PolicyBuilder().store(store).time(now)
        try:
            if purpose == "server":
                builder.build_server_verifier(xv.DNSName(s.host)).verify(chain[0], chain[1:])
            else:
                builder.build_client_verifier().verify(chain[0], chain[1:])
            results.append(_result(True, "", row, sid, purpose))
        except xv.VerificationError as e:
            results.append(_result(False, str(e), row, sid, purpose))
    return _collect(results)


# --------------------------------------------------------------------------- Python ssl


def _py_context(lab: Lab, side, row: Row) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.load_verify_locations(cafile=str(lab.w.root))
    if row.crl != "none":
        ctx.load_verify_locations(cafile=str(lab.crl[row.crl]))  # loads the CRLs of the file
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF if row.leaf_only else ssl.VERIFY_CRL_CHECK_CHAIN
    return ctx


def run_python_ssl(lab: Lab) -> dict[str, list[Obs]]:
    results = []
    gate = lab.subject("srv-p256")
    for row, sid, purpose in probes("python-ssl"):
        if purpose == "server":  # as a client, against the zoo
            s = lab.subject(sid)
            ctx = _py_context(lab, ssl.PROTOCOL_TLS_CLIENT, row)
            try:
                with socket.create_connection(("127.0.0.1", lab.zoo_port(sid)), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=s.host):
                    results.append(_result(True, "", row, sid, purpose))
            except ssl.SSLCertVerificationError as e:
                results.append(_result(False, e.verify_message or str(e), row, sid, purpose))
            except (ssl.SSLError, OSError) as e:
                results.append(_result(False, str(e), row, sid, purpose))
        else:  # as an mTLS server, a Python client
            server = _py_context(lab, ssl.PROTOCOL_TLS_SERVER, row)
            server.load_cert_chain(str(gate.chain), str(gate.key))
            server.verify_mode = ssl.CERT_REQUIRED
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.load_verify_locations(cafile=str(lab.w.root))
            if sid is not None:
                s = lab.subject(sid)
                client.load_cert_chain(str(s.chain), str(s.key))
            seen = tls_exchange(server, client, gate.host)
            err = seen.get("server_error")
            ok = seen.get("reply") == b"pong:ping" and err is None
            reason = getattr(err, "verify_message", None) or str(err or seen.get("client_error") or "")
            results.append(_result(ok, reason, row, sid, purpose))
    return _collect(results)


RUNNERS = {
    "openssl": run_openssl,
    "openssl-tls": run_openssl_tls,
    "certtool": run_certtool,
    "gnutls-tls": run_gnutls_tls,
    "nginx": run_nginx,
    "curl": run_curl,
    "node": run_node,
    "go": run_go,
    "cryptography": run_cryptography,
    "python-ssl": run_python_ssl,
}
