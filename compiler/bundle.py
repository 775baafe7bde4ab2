"""The public bundle and every write into out/: atomic, and only when content changes.

Layout (stable, sorted, diff-friendly):

* ``out/certs/<name>.pem``        the certificate
* ``out/certs/<name>.chain.pem``  the certificate followed by its intermediates (not the root)
* ``out/trust/bundle.pem``        the roots (trust anchors), sorted by name
* ``out/certs/<name>.der``        authorities: the DER certificate (AIA caIssuers)
* ``out/keys/<name>.sops.yaml``   the SOPS-encrypted private key
* ``out/crl/<authority>.crl``     the authority's CRL, DER (``.crl.pem``: PEM)
* ``out/ocsp/<name>.der``         the pre-signed OCSP response to staple
* ``out/certs/ocsp-responders/<authority>.pem`` and ``out/keys/ocsp-responders/``:
  the delegated OCSP responder of each authority
* ``out/state.json``              the recorded state
"""

from __future__ import annotations

import os
from pathlib import Path

CERTS_DIR = "out/certs"
TRUST_BUNDLE = "out/trust/bundle.pem"
CRL_DIR = "out/crl"


def cert_path(name: str) -> str:
    return f"{CERTS_DIR}/{name}.pem"


def der_path(name: str) -> str:
    """Authorities only: the DER certificate an AIA caIssuers URL points at."""
    return f"{CERTS_DIR}/{name}.der"


def responder_cert_path(authority: str) -> str:
    return f"{CERTS_DIR}/ocsp-responders/{authority}.pem"


def crl_path(authority: str, pem: bool = False) -> str:
    return f"{CRL_DIR}/{authority}.crl" + (".pem" if pem else "")


def ocsp_path(ocsp_dir: str, name: str, serial: str | None = None) -> str:
    """``<name>.der`` for a name's latest certificate (what a server staples);
    ``<name>.<serial>.der`` for its older, still unexpired ones."""
    return f"{ocsp_dir}/{name}.der" if serial is None else f"{ocsp_dir}/{name}.{serial}.der"


def chain_path(name: str) -> str:
    return f"{CERTS_DIR}/{name}.chain.pem"


def write_atomic(repo: Path, rel: str, data: bytes, *, new_in_place: bool = False) -> bool:
    """Write ``data`` to ``repo/rel`` through a staging file and os.replace.

    Returns False (and touches nothing) when the file already holds exactly ``data``.
    With ``new_in_place``, a file that does not exist yet is created where it belongs,
    without staging: a third of the cost on this disk. Only journaled writes may ask
    for it: a killed apply can leave such a file short, and finishing the apply from
    the journal rewrites it (through staging, as it then exists).
    """
    path = os.path.join(repo, rel)
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return False
        exists = True
    except FileNotFoundError:
        exists = False
    if not exists and new_in_place:
        try:
            fd = _create(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:  # appeared meanwhile: replace it the staged way
            pass
        else:
            _write_fd(fd, data)
            return True
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    _write_fd(_create(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), data)
    os.replace(staging, path)
    return True


def _create(path: str, flags: int) -> int:
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # its directory is missing
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o666)


def _write_fd(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def remove(repo: Path, rel: str) -> bool:
    try:
        (repo / rel).unlink()
        return True
    except FileNotFoundError:
        return False


def rename(repo: Path, old: str, new: str) -> None:
    src, dst = repo / old, repo / new
    if src.exists() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def read_text(repo: Path, rel: str) -> str | None:
    try:
        return (repo / rel).read_text(encoding="ascii")
    except FileNotFoundError:
        return None


def clean_staging(repo: Path) -> None:
    """Remove staging files left by a killed write (they were never renamed into place)."""
    out = repo / "out"
    if not out.is_dir():
        return
    for dirpath, _dirs, files in os.walk(out):
        for f in files:
            if f.startswith(".") and ".tmp-" in f:
                os.unlink(os.path.join(dirpath, f))


class Writer:
    """Atomic writes, synchronous by default or on background threads
    (PKIC_WRITE_THREADS=N). Measured here, threads made a cold apply slower (creating
    files in one directory serialises in the kernel, and the threads contend with
    signing on 2 cores), so the default is 0.

    A path always goes to the same worker, so writes to one path keep their order;
    ``rename`` and ``remove`` first wait for everything pending. ``flush`` waits for all
    and raises the first error."""

    def __init__(self, repo: Path, workers: int = 4, new_in_place: bool = False):
        from concurrent.futures import ThreadPoolExecutor

        self.repo = repo
        self.new_in_place = new_in_place  # see write_atomic: for journaled writes only
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pkic-write-{i}") for i in range(workers)]
        self._pending: list = []
        self.written = 0
        self.touched: set[str] = set()  # every path written, removed or renamed

    def write(self, rel: str, data: bytes, *, staged: bool = False) -> None:
        in_place = self.new_in_place and not staged
        if not self._pools:  # no threads: write now
            if write_atomic(self.repo, rel, data, new_in_place=in_place):
                self.written += 1
                self.touched.add(rel)
            return
        pool = self._pools[hash(rel) % len(self._pools)]
        self._pending.append((rel, pool.submit(write_atomic, self.repo, rel, data, new_in_place=in_place)))

    def flush(self) -> int:
        pending, self._pending = self._pending, []
        for rel, fut in pending:
            if fut.result():
                self.written += 1
                self.touched.add(rel)
        return self.written

    def rename(self, old: str, new: str) -> None:
        self.flush()
        if (self.repo / old).exists():
            self.touched.update((old, new))
        rename(self.repo, old, new)

    def remove(self, rel: str) -> bool:
        self.flush()
        gone = remove(self.repo, rel)
        if gone:
            self.touched.add(rel)
        return gone

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for pool in self._pools:
                pool.shutdown(wait=True)
