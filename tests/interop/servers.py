"""The servers of the interop suite, all on loopback with ephemeral ports, in temp dirs.

* :class:`Nginx`: one foreground nginx. Its *zoo* has one server block per certificate
  that clients are shown (one port each, some stapling their OCSP response); its
  *gates* verify client certificates (``ssl_verify_client on``, ``ssl_crl``,
  ``ssl_verify_depth``), one with the current CRLs and one with the expired ones, and
  answer ``accepted`` or ``refused: $ssl_client_verify``.
* :class:`Netns`: a network namespace of our own, for gnutls-serv (which cannot bind to
  loopback only): it listens on every interface of a namespace that has only ``lo``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from interoplib import World, free_port, need, stop, wait_for_port


@dataclass
class Block:
    name: str
    port: int
    chain: Path
    key: Path
    host: str
    staple: Path | None = None
    gate_crl: Path | None = None  # a gate: verifies client certificates against this CRL file


@dataclass
class Nginx:
    dir: Path
    blocks: dict[str, Block] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def add(self, name: str, chain: Path, key: Path, host: str, *, staple: Path | None = None, gate_crl: Path | None = None) -> Block:
        b = Block(name, free_port(), chain, key, host, staple, gate_crl)
        self.blocks[name] = b
        return b

    def config(self, root: Path) -> str:
        d = self.dir
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dir's keys
        servers = []
        for b in self.blocks.values():
            s = [f"  server {{ # {b.name}",
                 f"    listen 127.0.0.1:{b.port} ssl;",
                 f"    server_name {b.host};",
                 f"    ssl_certificate {b.chain};",
                 f"    ssl_certificate_key {b.key};",
                 "    ssl_protocols TLSv1.2 TLSv1.3;"]
            if b.staple:
                s += ["    ssl_stapling on;", f"    ssl_stapling_file {b.staple};"]
            if b.gate_crl:
                s += [f"    ssl_client_certificate {root};",
                      "    ssl_verify_client on;",
                      "    ssl_verify_depth 5;",
                      f"    ssl_crl {b.gate_crl};",
                      "    error_page 495 496 = @refused;",
                      '    location @refused { return 403 "refused: $ssl_client_verify\\n"; }',
                      '    location / { return 200 "accepted: $ssl_client_verify\\n"; }']
            else:
                s += ['    location / { return 200 "ok\\n"; }']
            servers.append("\n".join(s) + "\n  }")
        return (f"{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
                "events { worker_connections 256; }\n"
                "http {\n  access_log off;\n  default_type text/plain;\n"
                + "".join(f"  {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                + "\n".join(servers) + "\n}\n")

    def start(self, root: Path) -> None:
        nginx = need("nginx")
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config(root), encoding="utf-8")
        test = subprocess.run([nginx, "-t", "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)],
                              capture_output=True, text=True, timeout=20)
        assert test.returncode == 0, f"nginx -t:\n{test.stderr}"
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for b in self.blocks.values():
                wait_for_port(b.port, self.proc)
        except AssertionError as e:
            stop(self.proc)
            raise AssertionError(f"{e}\n{(self.dir / 'error.log').read_text(errors='replace')[-3000:]}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


class Netns:
    """A network namespace with only ``lo``, held open by a ``sleep`` this suite started."""

    def __init__(self) -> None:
        unshare, self.nsenter = need("unshare"), need("nsenter")
        ip = need("ip")
        root = os.geteuid() == 0
        self.holder = subprocess.Popen([unshare, "-n" if root else "-rn", "sleep", "600"], stdin=subprocess.DEVNULL)
        self.prefix = [self.nsenter, "-t", str(self.holder.pid), "-n"] + ([] if root else ["-U", "--preserve-credentials"])
        # wait until the namespace exists (the sleep runs in it), then bring lo up
        for _ in range(200):
            if os.path.exists(f"/proc/{self.holder.pid}/ns/net") and self._ns() != self._ns(os.getpid()):
                break
            if self.holder.poll() is not None:
                raise AssertionError(f"unshare could not make a network namespace (exit {self.holder.returncode}): "
                                     "the gnutls-serv checks need it (run as root, or allow user namespaces)")
            subprocess.run(["sleep", "0.01"])
        up = subprocess.run(self.prefix + [ip, "link", "set", "lo", "up"], capture_output=True, text=True, timeout=10)
        assert up.returncode == 0, f"ip link set lo up in the namespace: {up.stderr}"

    def _ns(self, pid: int | None = None) -> str:
        try:
            return os.readlink(f"/proc/{pid or self.holder.pid}/ns/net")
        except OSError:
            return ""

    def cmd(self, argv: list[str]) -> list[str]:
        return self.prefix + argv

    def close(self) -> None:
        stop(self.holder)


def start_zoo(w: World, base: Path, server_subjects: list[str], staples: dict[str, str]) -> Nginx:
    """nginx with a block per server certificate shown to clients, stapling blocks
    (name -> subject) and the two gates (current CRLs, expired CRLs)."""
    n = Nginx(base)
    for sid in server_subjects:
        s = w.subjects[sid]
        n.add(sid, s.chain, s.key, s.host)
    for name, sid in staples.items():
        s = w.subjects[sid]
        if s.ocsp is not None:  # none published: the OCSP rows say so (verifiers.NO_RESPONSE)
            n.add(name, s.chain, s.key, s.host, staple=s.ocsp)
    g = w.subjects["srv-p256"]
    n.add("gate", g.chain, g.key, g.host, gate_crl=w.crl_set)
    n.add("gate-expired", g.chain, g.key, g.host, gate_crl=w.crls_expired)
    n.start(w.root)
    return n
