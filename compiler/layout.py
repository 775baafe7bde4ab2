"""Every path pkic reads or writes in a repository, and the one safe way to touch them.

Paths are computed here from names that match :data:`NAME` (letters, digits, ``.``,
``_``, ``-``; at most 128 characters; never ``.`` or ``..``), never taken from a file:
a name in the state that does not match is refused where the state is loaded.

Every file is opened relative to a directory descriptor, walking from the repository
root one component at a time with ``O_NOFOLLOW`` (Python's ``O_NOFOLLOW`` guards only
the last component of a path; this guards each). A symlink anywhere inside the
repository, or something that is not a regular file where a file is expected, is an
error naming the path, never followed: a pull request can commit symlinks, and
``pki.yaml -> /proc/self/environ`` must not put CI's environment into a parse error.

Layout of ``out/`` (stable, sorted, diff-friendly):

* ``out/certs/<name>.pem``        the certificate
* ``out/certs/<name>.chain.pem``  the certificate followed by its intermediates (not the root)
* ``out/certs/<name>.der``        authorities: the DER certificate (AIA caIssuers)
* ``out/trust/bundle.pem``        the roots (trust anchors), sorted by name
* ``out/trust/crls.pem``          every current CRL of the hierarchy (PEM), by authority name
* ``out/keys/<name>.sops.yaml``   the SOPS-encrypted private key
* ``out/crl/<authority>.crl``     the authority's CRL, DER (``.crl.pem``: PEM)
* ``out/ocsp/<name>.der``         the pre-signed OCSP response to staple
* ``out/certs/ocsp-responders/<authority>.pem``, ``out/keys/ocsp-responders/``: delegated responders
* ``out/state.json``              the recorded state
* ``out.seal``                    the seal over all of ``out/`` (beside it, see seal.py)

Longer than 400 lines: the paths and every primitive that opens, writes, renames or
removes a file under them walk the same directory descriptors (``_Dir``); split apart,
each would need that walk from the other, which is the one thing that must not be copied.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compiler.model.errors import fail

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SERIAL = re.compile(r"[0-9a-f]{1,64}")

SPEC_FILE = "pki.yaml"
SOPS_CONFIG = ".sops.yaml"
POLICY_DIR = "policies"
OUT_DIR = "out"
CERTS_DIR = "out/certs"
KEYS_DIR = "out/keys"
CRL_DIR = "out/crl"
TRUST_BUNDLE = "out/trust/bundle.pem"
# every current CRL in one PEM file, for servers that check the CRL of every CA in the
# chain from one file (nginx ssl_crl, HAProxy crl-file, Node's crl); in trust/, where
# no authority's name can collide with it
CRL_BUNDLE = "out/trust/crls.pem"
STATE_PATH = "out/state.json"
SEAL_PATH = "out.seal"
WORK_DIR = ".pkic"
JOURNAL_PATH = f"{WORK_DIR}/journal.jsonl"
LOCK_PATH = f"{WORK_DIR}/lock"

MAX_INPUT = 10 * 1024 * 1024  # any one input file (pki.yaml, a policy, a CSR, .sops.yaml, the state)
# directories of out/ that an OCSP directory may not be (or be inside of)
_RESERVED_OUT = ("out/certs", "out/keys", "out/crl", "out/trust")


# A name whose file names could be another name's: `web.chain` would be written at
# out/certs/web.chain.pem (web's chain file), `web.<serial>` at out/ocsp/web.<serial>.der
# (the response of an older certificate of web).
_COLLIDES = re.compile(r".*\.(chain|[0-9a-fA-F]{16,})")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a certificate or authority (None: it can)."""
    if not isinstance(name, str) or NAME.fullmatch(name) is None or name in (".", "..") or ".." in name:
        return "use letters, digits, '.', '_' and '-', at most 128 (it becomes a file name)"
    if _COLLIDES.fullmatch(name):
        return (
            "a name may not end in '.chain' or in '.' and 16 or more hex digits: pkic's own file names for chains and older OCSP responses"
        )
    return None


def is_name(name: object) -> bool:
    return name_problem(name) is None


def check_name(name: object, where: str) -> str:
    if not is_name(name):
        shown = repr(name)[:60]
        raise fail(
            where,
            f"{shown} is not a valid name ({name_problem(name)})",
            "out/ and the state are written by pkic only: restore them from git",
        )
    return name  # type: ignore[return-value]


def cert_path(name: str) -> str:
    return f"{CERTS_DIR}/{name}.pem"


def chain_path(name: str) -> str:
    return f"{CERTS_DIR}/{name}.chain.pem"


def der_path(name: str) -> str:
    """Authorities only: the DER certificate an AIA caIssuers URL points at."""
    return f"{CERTS_DIR}/{name}.der"


def key_path(name: str) -> str:
    return f"{KEYS_DIR}/{name}.sops.yaml"


def responder_cert_path(authority: str) -> str:
    return f"{CERTS_DIR}/ocsp-responders/{authority}.pem"


def responder_key_path(authority: str) -> str:
    return f"{KEYS_DIR}/ocsp-responders/{authority}.sops.yaml"


def crl_path(authority: str, pem: bool = False) -> str:
    return f"{CRL_DIR}/{authority}.crl" + (".pem" if pem else "")


def ocsp_path(ocsp_dir: str, name: str, serial: str | None = None) -> str:
    """``<name>.der`` for a name's latest certificate (what a server staples);
    ``<name>.<serial>.der`` for its older, still unexpired ones."""
    return f"{ocsp_dir}/{name}.der" if serial is None else f"{ocsp_dir}/{name}.{serial}.der"


def ocsp_dir_problem(value: str) -> str | None:
    """Why ``value`` cannot be an OCSP directory (None: it can). It must lie inside out/
    (so the seal covers it), in a directory of its own."""
    parts = value.split("/")
    if parts[0] != OUT_DIR or len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", p) for p in parts[1:]):
        # no '.': so it can never be the name of a file pkic writes (out/state.json)
        return "must be a directory inside out/ (e.g. out/ocsp), named with letters, digits, '_' and '-'"
    if any(value == r or value.startswith(r + "/") for r in _RESERVED_OUT):
        return f"must not be inside {', '.join(_RESERVED_OUT)} (pkic's own directories)"
    return None


def is_ocsp_file(rel: str, name: str, serial: str) -> bool:
    """Is ``rel`` (from the state) where pkic puts an OCSP response of this name and serial?"""
    d, _, base = rel.rpartition("/")
    return ocsp_dir_problem(d) is None and base in (f"{name}.der", f"{name}.{serial}.der")


# --------------------------------------------------------------------------- safe file access


def _refuse(rel: str, what: str) -> Exception:
    return fail(
        rel,
        f"{what}: pkic never follows a symlink or reads a special file inside the repository",
        "replace it with a regular file (`git rm` the link), and find out who added it",
    )


def _open_dir(repo: Path, parts: list[str], rel: str, create: bool) -> int | None:
    """A descriptor of ``repo/parts...``, each component opened with O_NOFOLLOW. None if
    missing (and not ``create``)."""
    fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise _refuse(rel, "not a plain relative path")
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse("/".join(parts[: parts.index(part) + 1]), "is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


# Descriptors of directories already walked (no symlink on the way), by repo and path:
# an apply writes tens of thousands of files into a handful of directories. A cached
# descriptor is used only while its directory still exists (st_nlink > 0).
_DIR_FDS: dict[tuple[str, str], int] = {}


class _Dir:
    """The descriptor of the directory holding ``rel`` (None if it does not exist)."""

    def __init__(self, repo: Path, rel: str, create: bool = False):
        self.rel = rel
        parts = rel.split("/")
        self.base = parts[-1]
        key = (str(repo), "/".join(parts[:-1]))
        fd = _DIR_FDS.get(key)
        if fd is not None:
            try:
                if os.fstat(fd).st_nlink > 0:
                    self.fd: int | None = fd
                    return
            except OSError:
                pass
            _DIR_FDS.pop(key, None)
        self.fd = _open_dir(repo, parts[:-1], rel, create)
        if self.fd is not None:
            _DIR_FDS[key] = self.fd

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # kept in _DIR_FDS for the next file in the same directory


def read_chunks(repo: Path, rel: str, size: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of the regular file ``repo/rel`` in pieces of ``size``, as read_file
    opens it (a symlink in any component, or anything but a regular file, is refused;
    a missing file yields nothing)."""
    with open_chunks(repo, rel, None, size) as pieces:
        if pieces is not None:
            yield from pieces


def _open_regular(repo: Path, rel: str, max_size: int | None) -> tuple[int, int] | None:
    """(descriptor, size) of the regular file ``repo/rel`` opened for reading, None if it
    does not exist; a symlink in any component, anything but a regular file, or a file
    over ``max_size`` is refused. The caller closes the descriptor."""
    with _Dir(repo, rel) as d:
        if d.fd is None:
            return None
        try:
            fd = os.open(d.base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(rel, "is a symlink") from None
            if exc.errno == errno.EISDIR:
                raise _refuse(rel, "is a directory") from None
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(rel, "is not a regular file")
        if max_size is not None and st.st_size > max_size:
            raise fail(
                rel,
                f"is {st.st_size} bytes: larger than pkic reads ({max_size})",
                "pkic's inputs are small text files; is this the right file?",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_file(repo: Path, rel: str, max_size: int | None = MAX_INPUT) -> bytes | None:
    """The bytes of the regular file ``repo/rel`` (None if it does not exist). A symlink
    in any component, or anything but a regular file, is refused."""
    with open_chunks(repo, rel, max_size) as pieces:
        return None if pieces is None else b"".join(pieces)


class FileChunks:
    """A regular file's bytes in pieces, as :func:`open_chunks` opened it; ``size``: its
    size then (a file that changes while it is read is the reader's to notice)."""

    def __init__(self, fd: int, size: int, piece: int) -> None:
        self.fd, self.size, self.piece = fd, size, piece

    def __iter__(self) -> Iterator[bytes]:
        while chunk := os.read(self.fd, self.piece):
            yield chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@contextmanager
def open_chunks(repo: Path, rel: str, max_size: int | None = MAX_INPUT, piece: int = 1 << 20) -> Iterator[FileChunks | None]:
    """The regular file ``repo/rel`` to read in pieces of ``piece`` bytes (None if it does
    not exist), opened as :func:`read_file` opens it, closed when the block ends."""
    opened = _open_regular(repo, rel, max_size)
    if opened is None:
        yield None
        return
    pieces = FileChunks(opened[0], opened[1], piece)
    try:
        yield pieces
    finally:
        pieces.close()


def read_input(repo: Path, rel: str, max_size: int = MAX_INPUT) -> bytes:
    """An input file that must exist (pki.yaml, a policy, a CSR, .sops.yaml)."""
    data = read_file(repo, rel, max_size)
    if data is None:
        raise FileNotFoundError(rel)
    return data


def check_dir(repo: Path, rel: str) -> None:
    """Refuse if any existing component of ``repo/rel`` is a symlink or not a directory
    (checked before apply signs anything: a write there would fail after signing)."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        with _Dir(repo, "/".join(parts[:i])) as d:
            if d.fd is None:
                return
            try:
                st = os.stat(d.base, dir_fd=d.fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if not stat.S_ISDIR(st.st_mode):
                raise _refuse("/".join(parts[:i]), "is not a directory (pkic writes files below it)")


def is_regular(repo: Path, rel: str) -> bool:
    """True if ``repo/rel`` is a regular file reached without any symlink."""
    try:
        with _Dir(repo, rel) as d:
            if d.fd is None:
                return False
            st = os.stat(d.base, dir_fd=d.fd, follow_symlinks=False)
            return stat.S_ISREG(st.st_mode)
    except (OSError, Exception):
        return False


def write_atomic(repo: Path, rel: str, data: bytes, *, new_in_place: bool = False) -> bool:
    """Write ``data`` to ``repo/rel`` through a staging file and a rename, within one
    directory descriptor; no component is followed if it is a symlink.

    Returns False (and touches nothing) when the file already holds exactly ``data``.
    With ``new_in_place``, a file that does not exist yet is created where it belongs,
    without staging (a third of the cost on this disk). Only journaled writes may ask
    for it: a killed apply can leave such a file short, and finishing the apply from
    the journal rewrites it (through staging, as it then exists).
    """
    with _Dir(repo, rel, create=True) as d:
        assert d.fd is not None
        try:
            fd = os.open(d.base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d.fd)
        except FileNotFoundError:
            exists = False
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise
            exists = True  # a symlink (or worse) where our file goes: replaced by the rename below
        else:
            try:
                st = os.fstat(fd)
                same = stat.S_ISREG(st.st_mode) and st.st_size == len(data) and _read_all(fd) == data
            finally:
                os.close(fd)
            if same:
                return False
            exists = True
        if not exists and new_in_place:
            try:
                fd = os.open(d.base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=d.fd)
            except FileExistsError:
                pass  # appeared meanwhile: replace it the staged way
            else:
                _write_fd(fd, data)
                return True
        staging = f".{d.base}.tmp-{os.getpid()}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=d.fd)
        _write_fd(fd, data)
        os.replace(staging, d.base, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        return True


def write_atomic_chunks(repo: Path, rel: str, chunks: Iterable[bytes], blob_algo: str | None = None) -> tuple[bool, str | None]:
    """:func:`write_atomic` for a large file made in pieces (the state of 100,000
    certificates is over 100 MB): written to a staging file as they come, never held
    whole, and compared with the file in place by digest. Returns whether it wrote, and
    with ``blob_algo`` git's blob id of the content (read back from the staging file)."""
    with _Dir(repo, rel, create=True) as d:
        assert d.fd is not None
        staging = f".{d.base}.tmp-{os.getpid()}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=d.fd)
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                digest.update(chunk)
                size += len(chunk)
        except BaseException:
            os.close(fd)
            os.unlink(staging, dir_fd=d.fd)
            raise
        os.close(fd)
        blob = None
        if blob_algo is not None:
            blob = _file_digest(d.fd, staging, hashlib.new(blob_algo, b"blob %d\0" % size))
        try:
            st = os.stat(d.base, dir_fd=d.fd, follow_symlinks=False)
            same = stat.S_ISREG(st.st_mode) and st.st_size == size and _file_digest(d.fd, d.base, hashlib.sha256()) == digest.hexdigest()
        except FileNotFoundError:
            same = False
        if same:
            os.unlink(staging, dir_fd=d.fd)
            return False, blob
        os.replace(staging, d.base, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        return True, blob


def _file_digest(dir_fd: int, name: str, h: Any) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return str(h.hexdigest())


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_fd(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_input(repo: Path, rel: str, data: bytes, *, replace: bool = True) -> bool:
    """Write a file people edit (`pkic init`'s files, `pkic csr`'s CSR): a symlink at any
    component, or at the file itself, is refused rather than followed or replaced; with
    ``replace`` False an existing file is kept as it is. Returns whether it wrote."""
    if check_input_target(repo, rel) and not replace:
        return False
    write_atomic(repo, rel, data)
    return True


def check_input_target(repo: Path, rel: str) -> bool:
    """Refuse a symlink (or a special file) at ``repo/rel`` or any directory above it;
    return whether a regular file is there."""
    with _Dir(repo, rel) as d:
        if d.fd is None:
            return False
        try:
            st = os.stat(d.base, dir_fd=d.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(
                rel,
                "is a symlink" if stat.S_ISLNK(st.st_mode) else "is a directory" if stat.S_ISDIR(st.st_mode) else "is not a regular file",
            )
        return True


def remove(repo: Path, rel: str) -> bool:
    """Remove the file (or symlink) ``repo/rel``; never follows a link on the way."""
    with _Dir(repo, rel) as d:
        if d.fd is None:
            return False
        try:
            os.unlink(d.base, dir_fd=d.fd)
            return True
        except FileNotFoundError:
            return False


def exists(repo: Path, rel: str) -> bool:
    with _Dir(repo, rel) as d:
        if d.fd is None:
            return False
        try:
            os.stat(d.base, dir_fd=d.fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False


def rename(repo: Path, old: str, new: str) -> bool:
    """Move ``old`` to ``new`` if ``old`` exists and ``new`` does not."""
    if not exists(repo, old) or exists(repo, new):
        return False
    with _Dir(repo, old) as src, _Dir(repo, new, create=True) as dst:
        assert src.fd is not None and dst.fd is not None
        os.replace(src.base, dst.base, src_dir_fd=src.fd, dst_dir_fd=dst.fd)
    return True
