"""What git knows of the seal: HEAD, the object format, every version of ``out.seal``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler.layout import OUT_DIR, SEAL_PATH
from compiler.model.errors import fail
from compiler.state.outtree import EMPTY_TREE, Listing


def run_git(repo: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """git, reading its objects as they are: replace refs (refs/replace/*, which anyone who
    can push a ref could add) would let another object stand in for a seal or a tree."""
    env = {**os.environ, "GIT_NO_REPLACE_OBJECTS": "1", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, env=env)
    except FileNotFoundError:
        raise fail("git", "git is not installed", "install git") from None


@dataclass
class GitView:
    """What git knows of the seal: no HEAD outside a repository with commits."""

    head: str | None = None
    object_format: str = "sha1"
    error: str | None = None  # git could not read the repository (e.g. dubious ownership)
    shallow: bool = False  # a shallow clone: the seal's history cannot be checked

    @classmethod
    def of(cls, repo: Path) -> GitView:
        fmt = run_git(repo, "rev-parse", "--show-object-format", "--is-shallow-repository")
        if fmt.returncode != 0:
            stderr = fmt.stderr.decode(errors="replace").strip()
            if "not a git repository" in stderr:
                return cls()
            return cls(error=(stderr.splitlines() or ["git failed"])[0][:300])
        lines = fmt.stdout.decode().split()
        algo = lines[0] if lines else "sha1"
        head = run_git(repo, "rev-parse", "--verify", "-q", "HEAD")
        return cls(head.stdout.decode().strip() if head.returncode == 0 else None, algo, shallow=lines[1:2] == ["true"])

    def blob(self, repo: Path, rev_path: str) -> bytes | None:
        if self.head is None:
            return None
        proc = run_git(repo, "cat-file", "blob", rev_path)
        return proc.stdout if proc.returncode == 0 else None

    def out_tree(self, repo: Path, rev: str = "HEAD") -> str:
        proc = run_git(repo, "rev-parse", "--verify", "-q", f"{rev}:{OUT_DIR}")
        return proc.stdout.decode().strip() if proc.returncode == 0 else EMPTY_TREE[self.object_format]

    def history(
        self, repo: Path, since: str | None = None, first_parent: bool = False, tip: str = "HEAD"
    ) -> list[tuple[str, bytes | None]]:
        """Each version of out.seal in any commit reachable from HEAD that changed it,
        parents before children (topological order: commit dates are the author's to
        choose): (commit, bytes, or None if it is not a file there). All of HEAD's
        history, not only first parents: a crafted merge whose first parent is an old
        commit, fast-forwarded onto the branch, would otherwise hide the newer seals."""
        if self.head is None:
            return []
        walk = ["--first-parent"] if first_parent else ["--full-history"]
        log = run_git(
            repo, "log", *walk, "--topo-order", "--reverse", "--format=%H", tip, *([f"^{since}"] if since else []), "--", SEAL_PATH
        )
        commits = log.stdout.decode().split()
        if not commits:
            return []
        batch = run_git(repo, "cat-file", "--batch", input="".join(f"{c}:{SEAL_PATH}\n" for c in commits).encode())
        out, data, pos = [], batch.stdout, 0
        for c in commits:
            nl = data.find(b"\n", pos)
            if nl < 0:
                raise fail("git", "cat-file gave a short answer", "run again; if it persists, check the repository (`git fsck`)")
            header = data[pos:nl].split()
            pos = nl + 1
            if len(header) == 3:  # "<oid> <type> <size>", then the object, whatever its type (a tree too)
                size = int(header[2])
                content = data[pos : pos + size]
                pos += size + 1
                out.append((c, content if header[1] == b"blob" and len(content) == size else None))
            else:  # "<name> missing" and the like: no object
                out.append((c, None))
        return out

    def has_tree(self, repo: Path, tree: str) -> bool:
        """Whether git has the tree object ``tree`` (committed, or written by git)."""
        return tree == EMPTY_TREE.get(self.object_format) or run_git(repo, "cat-file", "-e", f"{tree}^{{tree}}").returncode == 0

    def listing(self, repo: Path, tree: str) -> Listing | None:
        """The files of a tree object that git has (None if it has not)."""
        if tree == EMPTY_TREE.get(self.object_format):
            return {}
        proc = run_git(repo, "ls-tree", "-r", "-z", "--full-tree", tree)
        if proc.returncode != 0:
            return None
        out: Listing = {}
        for item in proc.stdout.split(b"\0"):
            if item:
                meta, path = item.split(b"\t", 1)
                mode, _kind, oid = meta.split()
                out[f"{OUT_DIR}/{os.fsdecode(path)}"] = (mode.decode(), oid.decode())
        return out
