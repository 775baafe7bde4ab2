"""The resolved-spec cache: a spec that resolved once loads again without parsing.

At 10,000 entries, parsing, validating and resolving pki.yaml takes seconds; the cache
(keyed by the SHA-256 of pki.yaml, the pkic version and the resolving code, checked
against every CSR it read) makes that a fraction. It lives in the user's cache
directory, private to the user, never in the repository; apply does not use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from compiler import __version__, layout
from compiler.model.bounded import Locator
from compiler.model.errors import PkicError
from compiler.spec.effective import CaSettings, EffectiveSpec, Entry, PublishSettings
from compiler.spec.models import SPEC_FILE


def cache_dir(repo: Path) -> Path:
    """Where resolved specs of ``repo`` are cached: in the user's cache directory, never
    in the repository. A cache file committed in a pull request would otherwise stand in
    for pki.yaml: the plan and the apply would follow it, not the reviewed spec."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = hashlib.sha256(os.fsencode(os.path.realpath(repo))).hexdigest()[:32]
    return Path(base) / "pkic" / "spec" / where


CACHE_FORMAT = 2
_CODE_DIGEST: str | None = None
# the libraries whose versions can change what a spec resolves to (YAML typing,
# validation, IDNA, CSRs): a cache never outlives an upgrade of one of them
_LIBRARIES = ("pydantic", "pydantic_core", "ruamel.yaml", "yaml", "idna", "cryptography")


def code_digest() -> str:
    """The digest of the code that resolves a spec: every module of pkic (what resolution
    imports reaches far: names, layout, key types, bounds) and the versions of the
    libraries above, so that a cache never outlives a change to any of them."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        import importlib

        h = hashlib.sha256(__version__.encode())
        root = Path(__file__).parent.parent  # compiler/
        for path in sorted(root.rglob("*.py")):  # each module by its size and time: any edit or install moves them
            try:
                st = path.stat()
                h.update(f"{path.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"{path.relative_to(root).as_posix()}:unreadable\0".encode())
        for lib in _LIBRARIES:  # (resolution imports them all: asking costs nothing)
            try:
                module = importlib.import_module(lib)
                version = getattr(module, "__version__", None) or getattr(module, "VERSION", None)
            except ImportError:
                version = None
            h.update(f"{lib}={version}\0".encode())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def private_dir(path: Path) -> None:
    """Make ``path`` and its cache parents, mode 0700; refuse one that is not ours alone."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")


def write_private(path: Path, chunks: Iterable[str | bytes]) -> bool:
    """Write the cache file ``path`` from ``chunks`` (never held whole): its directory
    made private (see private_dir), the file staged beside it and renamed into place, so
    that a reader never sees half of it. False (nothing in place) when it cannot be."""
    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        private_dir(path.parent)
        with open(staging, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk.encode() if isinstance(chunk, str) else chunk)
        os.replace(staging, path)
        return True
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            staging.unlink()
        return False


def read_private(cache: Path) -> bytes:
    """A cache file, only from a private directory of ours (another user could plant one):
    the directory opened once, without following a symlink, and checked through that
    descriptor; the file opened relative to it, a regular file of ours."""
    dfd = os.open(cache.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise OSError("not a private cache directory")
        fd = os.open(cache.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise OSError("not a cache file of ours")
        return fh.read()


class Verdicts:
    """What this machine checked before and found good: the digest of an input (say
    out/state.json) that passed a costly check, so that the same bytes are not checked
    again by the same code. Plan's (``mac_key`` None) in the user's cache as it is; apply's
    authenticated with ``mac_key`` (derived from the seal key), so that apply takes only
    what it checked itself. One verdict a kind of input: the last one."""

    def __init__(self, repo: Path, mac_key: bytes | None = None) -> None:
        self.repo, self.mac_key = repo, mac_key

    def _token(self, what: str, digest: bytes) -> str:
        fact = b"\0".join([b"pkic checked", code_digest().encode(), what.encode(), digest])
        if self.mac_key is None:
            return hashlib.sha256(fact).hexdigest()
        return hmac.digest(self.mac_key, fact, "sha256").hex()

    def _file(self, what: str) -> Path:
        return cache_dir(self.repo) / f"checked-{what}{'-apply' if self.mac_key is not None else ''}"

    def passed(self, what: str, digest: bytes) -> bool:
        """Whether the input whose SHA-256 is ``digest`` passed the check ``what`` before."""
        try:
            return hmac.compare_digest(read_private(self._file(what)), self._token(what, digest).encode())
        except OSError:
            return False

    def note(self, what: str, digest: bytes) -> None:
        write_private(self._file(what), [self._token(what, digest)])


def _cache_path(path: Path, data: bytes) -> Path:
    """The cache file of ``path`` (pki.yaml) with these bytes."""
    return cache_dir(path.parent) / f"{path.name}.{hashlib.sha256(data).hexdigest()}.json"


def _td(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def dump_entry(e: Entry) -> dict[str, Any]:
    """One resolved entry as JSON (durations in seconds): what :func:`load_entry` reads."""
    return {
        "name": e.name,
        "kind": e.kind,
        "issuer": e.issuer,
        "spec": e.spec,
        "lifetime": e.lifetime.total_seconds(),
        "renew_before": e.renew_before.total_seconds(),
        "reuse_key": e.reuse_key,
        "depth": e.depth,
        "revoke": e.revoke,
        "key_compromised": e.key_compromised,
        "ca": None if e.ca is None else {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in e.ca.__dict__.items()},
        "policies": list(e.policies),
        "csr_path": e.csr_path,
        "csr_extra_names": e.csr_extra_names,
    }


def load_entry(d: dict[str, Any]) -> Entry:
    """:func:`dump_entry` read back. A document that is not what it wrote raises
    ValueError, KeyError or TypeError (callers treat that as a miss)."""
    if d["kind"] not in ("authority", "certificate"):
        raise ValueError("not an entry kind")
    return Entry.make(
        name=d["name"],
        kind=d["kind"],
        issuer=d["issuer"],
        spec=d["spec"],
        lifetime=_td(d["lifetime"]),
        renew_before=_td(d["renew_before"]),
        reuse_key=d["reuse_key"],
        depth=d["depth"],
        revoke=d["revoke"],
        key_compromised=d["key_compromised"],
        ca=None if d["ca"] is None else _load_ca(d["ca"]),
        policies=tuple(d["policies"]),
        csr_path=d["csr_path"],
        csr_extra_names=d["csr_extra_names"],
    )


def _dump_effective(eff: EffectiveSpec, csrs: dict[str, str]) -> str:
    """The cache file's text: ``csrs`` maps each CSR read to its SHA-256."""
    return json.dumps(
        {
            "format": CACHE_FORMAT,
            "pkic": __version__,
            "code": code_digest(),
            "csrs": csrs,
            "entries": [dump_entry(e) for e in eff.entries.values()],
            "moved": eff.moved,
            "children": eff.children,
            "publish": {"ocsp": eff.publish.ocsp, "ocsp_dir": eff.publish.ocsp_dir},
        }
    )


def _load_effective(text: bytes, repo: Path) -> EffectiveSpec | None:
    """The cached spec, or None when it was made by other code or a CSR changed since.
    A file that is not what :func:`_dump_effective` wrote raises ValueError, KeyError or
    TypeError (the caller treats that as a miss)."""
    body = json.loads(text)  # callers catch ValueError and RecursionError
    if body.get("format") != CACHE_FORMAT or body.get("pkic") != __version__ or body.get("code") != code_digest():
        return None
    for rel, digest in body["csrs"].items():  # a CSR changed: resolve again
        try:
            if hashlib.sha256(layout.read_input(repo, rel)).hexdigest() != digest:
                return None
        except (OSError, PkicError):
            return None
    entries = {}
    for d in body["entries"]:
        entries[d["name"]] = load_entry(d)
    publish = PublishSettings(body["publish"]["ocsp"], body["publish"]["ocsp_dir"])
    return EffectiveSpec(entries, body["moved"], body["children"], publish, Locator(SPEC_FILE, {}))


def _load_ca(ca: dict[str, Any]) -> CaSettings:
    """An authority's CaSettings as _dump_effective wrote them (durations in seconds)."""
    if set(ca) != set(CaSettings.__dataclass_fields__) or ca["ocsp_signer"] not in ("delegated", "self"):
        raise ValueError("not the CaSettings this code writes")
    return CaSettings(
        crl_lifetime=_td(ca["crl_lifetime"]),
        crl_renew_before=_td(ca["crl_renew_before"]),
        ocsp_signer=ca["ocsp_signer"],
        ocsp_lifetime=_td(ca["ocsp_lifetime"]),
        ocsp_renew_before=_td(ca["ocsp_renew_before"]),
        responder_lifetime=_td(ca["responder_lifetime"]),
        revoke_superseded=ca["revoke_superseded"],
    )


def read_cached(path: Path, data: bytes, repo: Path) -> EffectiveSpec | None:
    """The resolved spec kept for pki.yaml (``path``) with these bytes, or None: none
    kept, made by other code, a CSR changed, or a file that is not ours to trust."""
    try:
        return _load_effective(read_private(_cache_path(path, data)), repo)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def store(path: Path, data: bytes, eff: EffectiveSpec, repo: Path) -> None:
    """Keep the resolved spec, keyed by the bytes of pki.yaml (and of its CSRs inside)."""
    cache = _cache_path(path, data)
    try:
        csrs = {e.csr_path: hashlib.sha256(layout.read_input(repo, e.csr_path)).hexdigest() for e in eff.entries.values() if e.csr_path}
        private_dir(cache.parent)
        for old in cache.parent.glob(f"{path.name}.*.json"):
            old.unlink()
        write_private(cache, [_dump_effective(eff, csrs)])
    except (OSError, TypeError, ValueError, PkicError):
        pass
