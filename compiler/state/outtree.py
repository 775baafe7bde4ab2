"""``out/`` as git sees it: every file, mode and blob id, and git's tree id of the whole.

The tree id of ``out/`` on disk is computed here from the bytes on disk (no git filters,
no ``.gitattributes`` conversions), in git's own object format, so that it can be
compared with git's objects (``HEAD:out``) where ``out/`` is committed: the tests hold
it equal to what ``git write-tree`` computes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from compiler import layout
from compiler.layout import OUT_DIR
from compiler.model.errors import PkicError, fail

# the state's bound (store.MAX_STATE: 100,000 certificates renewed twice are 280 MB); a
# CRL of a million entries is ~40 MiB
MAX_OUT_FILE = 1 << 30
EMPTY_TREE = {
    "sha1": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "sha256": "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}

# path below the repo ("out/...") -> (mode, blob id), as git records a file
Listing = dict[str, tuple[str, str]]


def _hash(algo: str, kind: bytes, data: bytes) -> bytes:
    h = hashlib.new(algo)
    h.update(kind + b" " + str(len(data)).encode() + b"\0")
    h.update(data)
    return h.digest()


# This machine's record of the blob id of each file below out/ it hashed, by the file's
# inode, size, modification and change times: a file not touched since is not read
# again. It lives in the user's cache directory, beside the spec caches, and says
# nothing a reader of the same file system could not check: a write(2) or truncate
# changes a file's change time, which no process but the kernel sets (writes through a
# shared memory map may not, until the page is written back: git's index has the same
# limit; apply checks the state it loads against the scan, and a process that writes
# out/ while apply runs is beyond what the seal defends). A time within RACY_NS of the
# record's own is not trusted (file times are coarser than the writes that set them).
# Plan keeps its record unauthenticated (it signs nothing); apply keeps its own, whole
# file authenticated with a key derived from the seal key, and takes no other.
BLOB_MEMO = "out-blobs.json"
RACY_NS = 2_000_000_000
MEMO_SLACK = 64  # files a scan may hash again before the record is written anew
MAX_OUT_DEPTH = 16  # levels below out/ (pkic writes three: out/certs/ocsp-responders/x.pem)
# path -> "inode size mtime_ns ctime_ns blob-id" (strings: a record of 300,000 files
# reads in a fifth of the time lists of numbers take), all on the device of out/
_Memo = dict[str, str]
_MEMO_DOMAIN = b"pkic out blobs\0"  # (the entry cache's MACs, under the same key, start with a hex digest)


class BlobMemo:
    """The record a scan of out/ trusts and renews: plan's (``mac_key`` None), or apply's,
    authenticated with ``mac_key`` (see sealkey.cache_mac_key)."""

    def __init__(self, repo: Path, mac_key: bytes | None = None) -> None:
        self.repo, self.mac_key = repo, mac_key

    def _file(self, algo: str) -> Path:
        from compiler.spec.cache import cache_dir

        return cache_dir(self.repo) / f"{algo}-{'apply-' if self.mac_key is not None else ''}{BLOB_MEMO}"

    def _mac(self, body: bytes) -> bytes:
        assert self.mac_key is not None
        return hmac.digest(self.mac_key, _MEMO_DOMAIN + body, "sha256").hex().encode()

    def read(self, algo: str) -> tuple[_Memo, int, int]:
        """The record (path -> entry), its time and its device; empty when there is none,
        or it is damaged, or (apply's) its authentication fails."""
        from compiler.spec.cache import read_private

        try:
            raw = read_private(self._file(algo))
            if self.mac_key is not None:
                mac, _, raw = raw.partition(b"\n")
                if not hmac.compare_digest(mac, self._mac(raw)):
                    return {}, 0, 0
            body = json.loads(raw)
            files, saved, device = body["files"], body["saved_ns"], body["device"]
            if isinstance(files, dict) and type(saved) is int and type(device) is int:
                return files, saved, device
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass
        return {}, 0, 0

    def save(self, algo: str, memo: _Memo, started: int, device: int) -> None:
        from compiler.spec.cache import write_private

        body = json.dumps({"saved_ns": started, "device": device, "files": memo}, separators=(",", ":")).encode()
        write_private(self._file(algo), [self._mac(body), b"\n", body] if self.mac_key is not None else [body])


_HEX = re.compile(r"[0-9a-f]+\Z")
_BLOB_HEX = {"sha1": 40, "sha256": 64}


def scan_out(repo: Path, algo: str, *, memo: BlobMemo | None = None) -> Listing:
    """Every file below out/ as git would record it, from the bytes on disk. A symlink, a
    device or a FIFO anywhere in out/ is refused: pkic never writes one. Each directory
    is read through a descriptor opened with O_NOFOLLOW, each file relative to it.

    With ``memo``, a file unchanged since this machine last hashed it (BLOB_MEMO) is not
    read again: at 30,000 files, one stat each instead of open, read, hash and close.
    Plan's record is a file in the user's cache, which nothing that signs may take as
    proof; apply takes only its own, authenticated with a key derived from the seal key."""
    started = time.time_ns()  # the record's time: any write after the scan began is after it
    known_files, saved, device = memo.read(algo) if memo is not None else ({}, 0, 0)
    trusted_before = saved - RACY_NS
    blob_len = _BLOB_HEX[algo]
    seen: _Memo = {}
    hashed = 0
    listing: Listing = {}
    try:
        root = os.open(repo, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return listing
    try:
        try:
            top = os.open(OUT_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
        except FileNotFoundError:
            return listing
        except OSError:
            raise fail(OUT_DIR, "is not a plain directory (a symlink?)", "out/ is pkic's output: restore it from git") from None
    finally:
        os.close(root)
    top_device = os.fstat(top).st_dev
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

    stat_at, is_reg, x_bit = os.stat, stat.S_ISREG, stat.S_IXUSR
    known_of = known_files.get if known_files else None

    def walk(rel_dir: str, dfd: int, depth: int) -> None:
        nonlocal hashed
        files: list[str] = []
        subdirs: list[str] = []
        with os.scandir(dfd) as it:
            for e in it:  # (the type from the directory itself: no call per file)
                if e.is_file(follow_symlinks=False):
                    files.append(e.name)
                    continue
                rel = f"{rel_dir}/{e.name}"
                if e.is_symlink():
                    raise fail(
                        rel,
                        "is a symlink inside out/: pkic never writes one, and never follows one",
                        "remove it (`git rm`), and find out who added it",
                    )
                if not e.is_dir(follow_symlinks=False):
                    raise fail(rel, "is not a regular file (a device or FIFO?) inside out/", "remove it, and find out who added it")
                if depth >= MAX_OUT_DEPTH:
                    raise fail(
                        rel,
                        f"is nested deeper than pkic writes ({MAX_OUT_DEPTH} levels)",
                        "remove it (`git rm -r`), and find out who added it",
                    )
                subdirs.append(e.name)
        for name in subdirs:  # (once the listing is closed: one descriptor open a level)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:  # depth first, however many directories
                walk(f"{rel_dir}/{name}", sub, depth + 1)
            finally:
                os.close(sub)
        prefix = rel_dir + "/"
        for name in files:
            rel = prefix + name
            known = known_of(rel) if known_of is not None else None
            if type(known) is str:
                st = stat_at(name, dir_fd=dfd, follow_symlinks=False)
                # a hit: the same inode, size and times, all older than the record
                # by more than the racy window, and a blob id of this format
                if st.st_mtime_ns < trusted_before and st.st_ctime_ns < trusted_before and st.st_dev == device and is_reg(st.st_mode):
                    head = f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} "
                    if len(known) == len(head) + blob_len and known.startswith(head) and _HEX.match(known, len(head)):
                        seen[rel] = known
                        listing[rel] = ("100755" if st.st_mode & x_bit else "100644", known[len(head) :])
                        continue
            hashed += 1
            fd = os.open(name, flags, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                if not is_reg(st.st_mode):
                    raise fail(rel, "is not a regular file inside out/", "remove it, and find out who added it")
                if st.st_size > MAX_OUT_FILE:
                    raise fail(
                        rel,
                        f"is {st.st_size} bytes: no file pkic writes is this large",
                        "remove it (`git rm`), and find out who added it",
                    )
                blob = _blob_of(fd, st.st_size, algo, rel)
            finally:
                os.close(fd)
            listing[rel] = ("100755" if st.st_mode & x_bit else "100644", blob)
            if st.st_dev == top_device:
                seen[rel] = f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {blob}"

    try:
        walk(OUT_DIR, top, 1)
    finally:
        os.close(top)
    # renewed when it saves reading: not for a few files (a one-leaf change touches four;
    # rewriting 300,000 entries for them cost more than hashing them again next time)
    if memo is not None and (not known_files or device != top_device or hashed > max(MEMO_SLACK, len(listing) // 100)):
        memo.save(algo, seen, started, top_device)
    return listing


STREAM = 1 << 20  # a file larger than this is hashed as it is read, not held whole


def _blob_of(fd: int, size: int, algo: str, rel: str) -> str:
    """git's blob id of the file open as ``fd``, of ``size`` bytes when it was opened."""
    if size <= STREAM:
        data = os.read(fd, size + 1)  # (+1: a file that grew is seen)
        while len(data) < size:  # a short read: read on
            more = os.read(fd, STREAM)
            if not more:
                break
            data += more
        if len(data) != size:
            raise _changed(rel)
        return _hash(algo, b"blob", data).hex()
    h = hashlib.new(algo)
    h.update(b"blob %d\0" % size)
    total = 0
    while total <= size and (chunk := os.read(fd, STREAM)):
        total += len(chunk)
        h.update(chunk)
    if total != size:
        raise _changed(rel)
    return h.hexdigest()


def _changed(rel: str) -> PkicError:
    return fail(rel, "changed while pkic read it", "run again once nothing else is writing out/")


def blob_id(algo: str, data: bytes) -> str:
    return _hash(algo, b"blob", data).hex()


def tree_id(listing: Listing, algo: str, prefix: str = OUT_DIR + "/") -> str:
    """git's tree id of the directory holding ``listing`` (paths below ``prefix``).

    One pass over the paths sorted, which is git's order of a tree's entries (a
    directory's name compared as if it ended in '/': all that a directory holds sorts
    together, right where its name with a '/' would): each directory's entries are
    gathered while the paths are in it, and its tree object hashed, and its id added to
    its parent, when they leave it. Only the open directories' entries are held (all of
    them, as a tree of 300,000 nodes, was 100 MB at W100k). A listing no file system
    holds (a file where a directory is) gives an id no tree has."""
    if not listing:
        return EMPTY_TREE[algo]
    cut = len(prefix)
    paths = list(listing)
    plain = all(p.isascii() for p in paths)
    paths.sort(key=None if plain else os.fsencode)  # git compares bytes
    raw: Callable[[str], bytes] = str.encode if plain else os.fsencode

    def tree(entries: list[bytes]) -> bytes:
        body = b"".join(entries)
        return _hash(algo, b"tree", body)

    stack: list[tuple[str, list[bytes]]] = [("", [])]  # open directories, innermost last

    def close() -> None:
        d, entries = stack.pop()
        stack[-1][1].append(b"40000 " + raw(d.rpartition("/")[2]) + b"\0" + tree(entries))

    heads = {m: m.encode() + b" " for m in ("100644", "100755")}
    for path in paths:
        parent, _, name = path[cut:].rpartition("/")
        if parent != stack[-1][0]:
            while stack[-1][0] and parent != stack[-1][0] and not parent.startswith(stack[-1][0] + "/"):
                close()
            while stack[-1][0] != parent:
                top = stack[-1][0]
                below = (parent[len(top) + 1 :] if top else parent).split("/", 1)[0]
                stack.append((f"{top}/{below}" if top else below, []))
        mode, blob = listing[path]
        stack[-1][1].append((heads.get(mode) or mode.encode() + b" ") + raw(name) + b"\0" + bytes.fromhex(blob))
    while len(stack) > 1:
        close()
    return tree(stack[0][1]).hex()


def update_listing(repo: Path, listing: Listing, touched: set[str], algo: str, known: dict[str, str] | None = None) -> Listing:
    """``listing`` after the writes, removals and renames of ``touched`` (inside out/);
    ``known``: blob ids of files the writer hashed as it wrote them (not read again)."""
    new = dict(listing)
    for rel in touched:
        if not rel.startswith(OUT_DIR + "/"):
            continue
        if known is not None and rel in known:
            new[rel] = ("100644", known[rel])
            continue
        data = layout.read_file(repo, rel, max_size=None)
        if data is None:
            new.pop(rel, None)
        else:
            new[rel] = ("100644", blob_id(algo, data))
    return new


def listing_json(listing: Listing) -> dict[str, str]:
    """A listing as JSON (path -> "mode blob"): the journal's begin step and this
    machine's copy of the sealed listing hold it so."""
    return {p: f"{m} {b}" for p, (m, b) in sorted(listing.items())}


def listing_from_json(files: Mapping[str, object]) -> Listing:
    """:func:`listing_json` read back (an entry that is not a string is left out)."""
    out: Listing = {}
    for p, v in files.items():
        if isinstance(v, str):
            mode, _, blob = v.partition(" ")
            out[p] = (mode, blob)
    return out


LOCAL_LISTING = ".pkic/sealed-listing"
_LISTING_HEAD = "pkic sealed listing 1"


def save_listing(repo: Path, tree: str, listing: Listing, algo: str) -> bool:
    """This machine's copy of the files of the tree it just sealed, for when git does not
    have the tree (nothing committed yet): to finish an apply killed before the next
    seal (recovery tells its own writes from anyone else's against it), and to name, in
    an error, the files that differ. A line a file, unsorted: at 300,000 files a tenth
    of a second (as JSON, sorted, it was most of three). Not trusted as it stands: read
    back only if the tree id it hashes to is the one asked for."""
    if any("\n" in p for p in listing):
        return False  # (no name pkic writes has one)

    def chunks() -> Iterator[bytes]:  # (in pieces: whole, with its lines, it was 75 MB at W100k)
        yield f"{_LISTING_HEAD} {algo} {tree}\n".encode()
        lines = [f"{m} {b} {p}\n" for p, (m, b) in itertools.islice(items, 4096)]
        while lines:
            yield "".join(lines).encode("utf-8", "surrogateescape")
            lines = [f"{m} {b} {p}\n" for p, (m, b) in itertools.islice(items, 4096)]

    items = iter(listing.items())
    try:
        layout.write_atomic_chunks(repo, LOCAL_LISTING, chunks())
        return True
    except (OSError, PkicError):
        return False


def has_local_listing(repo: Path, tree: str, algo: str) -> bool:
    """Whether :func:`save_listing` kept a listing for ``tree`` (its first line only:
    :func:`local_listing` checks the rest when it is needed)."""
    try:
        for chunk in layout.read_chunks(repo, LOCAL_LISTING, 4096):
            return chunk.split(b"\n", 1)[0] == f"{_LISTING_HEAD} {algo} {tree}".encode()
    except (OSError, PkicError):
        pass
    return False


def local_listing(repo: Path, tree: str, algo: str) -> Listing | None:
    """The listing :func:`save_listing` kept for ``tree``, if it is that tree's (its tree
    id recomputed): None if there is none, or it is another tree's, or damaged."""
    try:
        raw = layout.read_file(repo, LOCAL_LISTING, max_size=256 * 1024 * 1024)
        if raw is None:
            return None
        head, _, body = raw.decode("utf-8", "surrogateescape").partition("\n")
        if head != f"{_LISTING_HEAD} {algo} {tree}":
            return None
        out: Listing = {}
        hex_len = _BLOB_HEX[algo]
        lines = body.split("\n")
        if lines.pop() != "":
            return None  # cut short
        for line in lines:
            mode, blob, path = line.split(" ", 2)
            parts = path.split("/")
            if (
                mode not in ("100644", "100755")
                or len(blob) != hex_len
                or not _HEX.match(blob)
                or parts[0] != OUT_DIR
                or not 1 < len(parts) <= 16
                or any(p in ("", ".", "..") for p in parts)
                or path in out
            ):
                return None  # not what save_listing writes
            out[path] = (mode, blob)
        return out if tree_id(out, algo) == tree else None
    except (OSError, ValueError, KeyError, PkicError):
        return None
