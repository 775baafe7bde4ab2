"""The public bundle and every write into out/: atomic, and only when content changes.
Paths, the layout of out/ and the safe (no-follow) file access live in layout.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from compiler import layout
from compiler.layout import (  # noqa: F401 - the layout lives in layout.py; re-exported for callers
    CERTS_DIR,
    CRL_BUNDLE,
    CRL_DIR,
    TRUST_BUNDLE,
    cert_path,
    chain_path,
    crl_path,
    der_path,
    ocsp_path,
    responder_cert_path,
)

write_atomic = layout.write_atomic
remove = layout.remove


def rename(repo: Path, old: str, new: str) -> None:
    layout.rename(repo, old, new)


def read_text(repo: Path, rel: str) -> str | None:
    data = layout.read_file(repo, rel, max_size=None)
    return None if data is None else data.decode("ascii")


def read_bytes(repo: Path, rel: str) -> bytes | None:
    return layout.read_file(repo, rel, max_size=None)


def pem_of(der: bytes, label: str = "CERTIFICATE") -> str:
    """The PEM text cryptography writes for ``der`` (64-character lines)."""
    import base64

    b64 = base64.b64encode(der).decode("ascii")
    return f"-----BEGIN {label}-----\n" + "".join(b64[i : i + 64] + "\n" for i in range(0, len(b64), 64)) + f"-----END {label}-----\n"


def crl_bundle_authorities(state) -> list[str]:
    """The authorities whose CRLs out/trust/crls.pem holds, in its order: every one that
    still signs its CRL (active, or revoked and signing on for what it issued; one
    removed from the spec takes its CRL files along)."""
    return [a for a in sorted(state.crls) if state.signer_record(a) is not None]


def crl_bundle(repo: Path, state) -> bytes:
    """out/trust/crls.pem: the PEM of every current CRL (read from out/crl/<authority>.crl),
    one after another, by authority name. Empty: there is none (the file is removed)."""
    parts = []
    for a in crl_bundle_authorities(state):
        der = read_bytes(repo, crl_path(a))
        if der is not None:
            parts.append(pem_of(der, "X509 CRL"))
    return "".join(parts).encode("ascii")


def clean_staging(repo: Path) -> None:
    """Remove staging files left by a killed write (they were never renamed into place)."""
    out = repo / "out"
    if not layout.exists(repo, "out") or out.is_symlink():
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
            if write_atomic(self.repo, rel, data, new_in_place=in_place):
                self.written += 1
                self.touched.add(rel)
                self._blob(rel, data)
            return
        self._blob(rel, data)
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
        if layout.rename(self.repo, old, new):
            self.touched.update((old, new))
            self.blobs.pop(old, None)
            self.blobs.pop(new, None)

    def remove(self, rel: str) -> bool:
        self.flush()
        gone = remove(self.repo, rel)
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
