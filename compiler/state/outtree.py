"""``out/`` as git sees it: every file, mode and blob id, and git's tree id of the whole.

The tree id of ``out/`` on disk is computed here from the bytes on disk (no git filters,
no ``.gitattributes`` conversions), in git's own object format, so that it can be
compared with git's objects (``HEAD:out``) where ``out/`` is committed: the tests hold
it equal to what ``git write-tree`` computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from compiler import layout
from compiler.layout import OUT_DIR
from compiler.model.bounded import json_depth_ok
from compiler.model.errors import PkicError, fail

MAX_OUT_FILE = 256 * 1024 * 1024  # a CRL of a million entries is ~40 MiB
EMPTY_TREE = {
    "sha1": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "sha256": "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}

# path below the repo ("out/...") -> (mode, blob id), as git records a file
Listing = dict[str, tuple[str, str]]
# a directory of a tree being built: name -> a subdirectory, or a file's (mode, blob id)
_Node = dict[str, "_Node | tuple[str, str]"]


def _hash(algo: str, kind: bytes, data: bytes) -> bytes:
    h = hashlib.new(algo)
    h.update(kind + b" " + str(len(data)).encode() + b"\0")
    h.update(data)
    return h.digest()


# This machine's record of the blob id of each file below out/ it hashed, by the file's
# inode, size, modification and change times: a file not touched since is not read
# again. It lives in the user's cache directory, beside the spec caches, and says
# nothing a reader of the same file system could not check: any write to a file changes
# its change time, which no process but the kernel sets. A time within RACY_NS of the
# record's own is not trusted (file times are coarser than the writes that set them).
BLOB_MEMO = "out-blobs.json"
RACY_NS = 2_000_000_000
_Memo = dict[str, list[Any]]  # path -> [device, inode, size, mtime_ns, ctime_ns, blob id]


def _memo_file(repo: Path, algo: str) -> Path:
    from compiler.spec.cache import cache_dir

    return cache_dir(repo) / f"{algo}-{BLOB_MEMO}"


def _read_memo(repo: Path, algo: str) -> tuple[_Memo, int]:
    from compiler.spec.cache import read_private

    try:
        body = json.loads(read_private(_memo_file(repo, algo)))
        files, saved = body["files"], body["saved_ns"]
        if isinstance(files, dict) and isinstance(saved, int):
            return files, saved
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass
    return {}, 0


_HEX = re.compile(r"[0-9a-f]+\Z")


def _well_formed(known: Any, algo: str) -> TypeGuard[list[Any]]:
    """A record entry as _save_memo writes it: five ints (device, inode, size, times) and
    a blob id of this object format (a damaged record is a miss, never a crash)."""
    return (
        isinstance(known, list)
        and len(known) == 6
        and all(type(v) is int for v in known[:5])
        and isinstance(known[5], str)
        and len(known[5]) == (40 if algo == "sha1" else 64)
        and _HEX.match(known[5]) is not None
    )


def _save_memo(repo: Path, algo: str, memo: _Memo, started: int) -> None:
    from compiler.spec.cache import private_dir

    path = _memo_file(repo, algo)
    try:
        private_dir(path.parent)
        staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        staging.write_text(json.dumps({"saved_ns": started, "files": memo}, separators=(",", ":")), encoding="utf-8")
        os.replace(staging, path)
    except (OSError, TypeError, ValueError):
        pass


def scan_out(repo: Path, algo: str, *, remember: bool = False) -> Listing:
    """Every file below out/ as git would record it, from the bytes on disk. A symlink, a
    device or a FIFO anywhere in out/ is refused: pkic never writes one. Each directory
    is read through a descriptor opened with O_NOFOLLOW, each file relative to it.

    With ``remember`` (plan and the read-only commands only: never apply or seal, which
    act on what the scan proves), a file unchanged since this machine last hashed it
    (BLOB_MEMO) is not read again: at 30,000 files, one stat each instead of open, read,
    hash and close. The record is a file in the user's cache, which nothing that signs
    may take as proof."""
    started = time.time_ns()  # the record's time: any write after the scan began is after it
    memo, saved = _read_memo(repo, algo) if remember else ({}, 0)
    trusted_before = saved - RACY_NS
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
    stack = [(OUT_DIR, top)]
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        while stack:
            rel_dir, dfd = stack.pop()
            try:
                with os.scandir(dfd) as it:
                    entries = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]
                for name, link, is_dir, is_file in entries:
                    rel = f"{rel_dir}/{name}"
                    if link:
                        raise fail(
                            rel,
                            "is a symlink inside out/: pkic never writes one, and never follows one",
                            "remove it (`git rm`), and find out who added it",
                        )
                    if is_dir:
                        stack.append((rel, os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)))
                        continue
                    if not is_file:
                        raise fail(rel, "is not a regular file (a device or FIFO?) inside out/", "remove it, and find out who added it")
                    if memo:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        known = memo.get(rel)
                        if (
                            _well_formed(known, algo)
                            and stat.S_ISREG(st.st_mode)
                            and known[:5] == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                            and max(st.st_mtime_ns, st.st_ctime_ns) < trusted_before
                        ):
                            seen[rel] = known
                            listing[rel] = ("100755" if st.st_mode & stat.S_IXUSR else "100644", known[5])
                            continue
                    hashed += 1
                    fd = os.open(name, flags, dir_fd=dfd)
                    try:
                        st = os.fstat(fd)
                        if not stat.S_ISREG(st.st_mode):
                            raise fail(rel, "is not a regular file inside out/", "remove it, and find out who added it")
                        if st.st_size > MAX_OUT_FILE:
                            raise fail(
                                rel,
                                f"is {st.st_size} bytes: no file pkic writes is this large",
                                "remove it (`git rm`), and find out who added it",
                            )
                        data = os.read(fd, st.st_size + 1)
                        while len(data) < st.st_size:  # a short read (large file): read on
                            more = os.read(fd, 1 << 20)
                            if not more:
                                break
                            data += more
                    finally:
                        os.close(fd)
                    blob = _hash(algo, b"blob", data).hex()
                    listing[rel] = ("100755" if st.st_mode & stat.S_IXUSR else "100644", blob)
                    seen[rel] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, blob]
            finally:
                os.close(dfd)
    finally:
        for _, dfd in stack:
            os.close(dfd)
    if remember and (hashed or len(seen) != len(memo)):
        _save_memo(repo, algo, seen, started)
    return listing


def blob_id(algo: str, data: bytes) -> str:
    return _hash(algo, b"blob", data).hex()


def tree_id(listing: Listing, algo: str, prefix: str = OUT_DIR + "/") -> str:
    """git's tree id of the directory holding ``listing`` (paths below ``prefix``)."""
    root: _Node = {}
    for path, (mode, blob) in listing.items():
        parts = path[len(prefix) :].split("/")
        node = root
        for p in parts[:-1]:
            sub = node.setdefault(p, {})
            assert isinstance(sub, dict)  # a path is never both a file and a directory
            node = sub
        node[parts[-1]] = (mode, blob)

    def build(node: _Node) -> bytes:
        entries = []
        for name, value in node.items():
            if isinstance(value, dict):
                raw = os.fsencode(name)
                entries.append((raw + b"/", b"40000 " + raw + b"\0" + build(value)))
            else:
                mode, blob = value
                raw = os.fsencode(name)
                entries.append((raw, mode.encode() + b" " + raw + b"\0" + bytes.fromhex(blob)))
        entries.sort(key=lambda e: e[0])  # git sorts a directory as if its name ended in '/'
        return _hash(algo, b"tree", b"".join(e[1] for e in entries))

    if not root:
        return EMPTY_TREE[algo]
    return build(root).hex()


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


LOCAL_LISTING = ".pkic/sealed-listing.json"


def save_listing(repo: Path, tree: str, listing: Listing) -> None:
    """This machine's copy of the files of the tree it just sealed: only to name, in an
    error, the files that differ when git does not have the tree (nothing committed)."""
    try:
        body = json.dumps({"tree": tree, "files": listing_json(listing)}, separators=(",", ":"))
        layout.write_atomic(repo, LOCAL_LISTING, body.encode())
    except (OSError, PkicError):
        pass


def local_listing(repo: Path, tree: str) -> Listing | None:
    try:
        raw = layout.read_file(repo, LOCAL_LISTING, max_size=256 * 1024 * 1024) or b"{}"
        if not json_depth_ok(raw):
            return None
        body = json.loads(raw)
        if body.get("tree") != tree:
            return None
        return listing_from_json(body["files"])
    except (OSError, ValueError, KeyError, AttributeError, RecursionError, PkicError):
        return None
