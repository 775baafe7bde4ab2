"""Signing long runs of new-key leaves in forked worker processes.

A cold apply spends most of its time per leaf on key generation, signing and sealing
the key (SOPS). Long runs of new-key leaves are handed to forked worker processes:
each worker inherits the issuers' signing handles (in memory, never through a pipe
or a file), generates the leaf key, signs, seals it, and sends back only the public
certificate and the encrypted key document. The parent journals and writes them in
plan order, exactly as the serial path does. Key generation, serial numbers and the
SOPS data keys come from the OS's random source (OpenSSL reseeds after a fork; age
and os.urandom read the OS), so forked workers never share randomness; a test checks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from compiler import settings
from compiler.apply import faults
from compiler.apply.context import Context
from compiler.apply.signers import authority_signer
from compiler.keys import keystore
from compiler.keys.keystore import KeyHandle, Keystore
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.plan import Action, Change, KeyDisposition
from compiler.spec import EffectiveSpec
from compiler.x509.build import IssuerRef, build

Issuers = dict[str, tuple[KeyHandle, IssuerRef]]  # issuer -> its signing handle and reference


@dataclass
class _Work:
    """What a forked worker inherits; set in the parent just before the fork."""

    spec: EffectiveSpec
    store: Keystore
    refs: Issuers
    now: datetime


_work: _Work | None = None


def jobs() -> int:
    """Worker processes for signing: PKIC_JOBS, or one fewer than the available cores
    (the main process is busy too: it journals and writes every file). 0: none."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return settings.jobs(cores - 1 if _can_fork() else 0)


def _can_fork() -> bool:
    import multiprocessing  # here: a plan, or an apply with nothing to sign in workers, never needs it

    return "fork" in multiprocessing.get_all_start_methods()


def parallel_min() -> int:
    """The shortest run of leaves worth a pool (starting workers costs ~20 ms)."""
    return settings.parallel_min()


def parallel_run(changes: Sequence[Change], i: int, spec: EffectiveSpec) -> int:
    """How many changes from ``i`` on are leaves with a new key (signed by an issuer
    that no change inside the run touches: only leaves are in it)."""
    n = 0
    for c in changes[i:]:
        if c.action == Action.REVOKE or c.key != KeyDisposition.NEW or c.kind == "authority" or spec.entries[c.name].issuer is None:
            break
        n += 1
    return n


def issuer_refs(ctx: Context, batch: Sequence[Change]) -> Issuers:
    """Signing handle and issuer reference of every issuer in ``batch``, loaded once in
    the parent (so each key is decrypted once, not once per worker)."""
    refs: Issuers = {}
    spec = ctx.spec
    for c in batch:
        issuer = spec.entries[c.name].issuer
        assert issuer is not None  # parallel_run: leaves only
        if issuer not in refs:
            signer = authority_signer(issuer, ctx.store, ctx.handles)
            refs[issuer] = (signer, IssuerRef.from_certificate(ctx.certs.get(issuer), spec.entries[issuer].key_type))
    return refs


def _leaf_work(name: str) -> tuple[bytes | None, str | None, list[Diagnostic] | None]:
    """In a worker: generate, sign, seal one leaf. Returns public and encrypted bytes only."""
    assert _work is not None  # set before the fork
    entry = _work.spec.entries[name]
    faults.in_worker()  # tests: PKIC_FAULT=worker:N kills a worker at its Nth leaf
    try:
        handle = keystore.generate(entry.key_type)
        assert entry.issuer is not None
        signer, issuer_ref = _work.refs[entry.issuer]
        cert = keystore.sign(build(entry, handle.public_key(), issuer_ref, x509.random_serial_number(), _work.now), signer)
        return cert.public_bytes(serialization.Encoding.DER), _work.store.seal(name, handle), None
    except PkicError as exc:  # e.g. sops refusing the key: reported by the parent, in order
        return None, None, exc.diagnostics


def _worker_init(parent: int) -> None:
    """In each worker: die with the parent, leave Ctrl-C to it, hold no lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles it, and stops us
    try:  # Linux: a SIGKILLed parent takes its workers along at once
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    from compiler.state import RepoLock

    for fd in RepoLock.held:  # a killed parent's lock must not outlive it in us
        try:
            os.close(fd)
        except OSError:
            pass


def sign_in_workers(ctx: Context, batch: Sequence[Change], refs: Issuers, jobs: int) -> Iterator[tuple[bytes, str]]:
    """Yield (certificate DER, sealed key document) for each change of ``batch``, in order."""
    import gc
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _work
    _work = _Work(ctx.spec, ctx.store, refs, ctx.now)
    sys.stdout.flush()  # a forked child flushes its copy of unwritten output on exit
    sys.stderr.flush()
    gc.freeze()  # keep the collector in the workers off the parent's pages (copy-on-write)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init, initargs=(os.getpid(),))
    try:
        # a worker that dies (OOM killer, kill -9) breaks the pool: map raises, no hang
        for der, key_doc, diags in pool.map(_leaf_work, [c.name for c in batch], chunksize=16):
            if diags:
                raise PkicError(diags)
            assert der is not None and key_doc is not None
            yield der, key_doc
    except BrokenProcessPool:
        raise fail(
            "apply",
            "a signing worker process died (killed?); the certificates signed before it are recorded",
            "run `pkic apply` again; set PKIC_JOBS=0 to sign in the main process (e.g. when memory is short)",
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        gc.unfreeze()
        _work = None
