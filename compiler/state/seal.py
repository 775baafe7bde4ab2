"""The seal: proof that ``out/`` is exactly what this PKI's apply identity last wrote.

Anyone who can open a pull request can write any file in ``out/``; CI holds the
identity that decrypts the CA keys. So apply acts on ``out/`` only after proving, from
a signature a pull request cannot make, that ``out/`` is the newest output the apply
identity wrote.

* The **seal key** is an Ed25519 key that never lives in the repository, not even
  SOPS-encrypted (anyone can encrypt to a public recipient: decrypting proves nothing
  about who wrote a file). CI gets it as the secret ``PKIC_SEAL_KEY``; on a laptop
  ``pkic init`` writes it beside the age identity (``PKIC_SEAL_KEY_FILE``). Apply
  derives the public key from the secret; it never trusts the recorded one.
* The **seal file** ``out.seal`` (beside ``out/``, so not inside what it covers) holds
  the lineage, a serial, the SHA-256 of the previous seal, the git tree id of ``out/``
  (every file, mode and path in one id), the digest of ``.sops.yaml``'s creation
  rules, the public key and the signature.
* **Freshness**: among the versions of ``out.seal`` in all of HEAD's history (not
  only first parents: a crafted merge can put newer seals behind its second parent),
  the valid one with the highest serial must be HEAD's, and the ``prev`` links of the
  valid versions must form one chain. A restored older ``out/`` or a seal
  replayed from another branch is refused, naming the newer commit.

The tree id of ``out/`` on disk is computed here from the bytes on disk (no git
filters, no ``.gitattributes`` conversions), in git's own object format, and compared
with git's objects (``HEAD:out``) where ``out/`` is committed: the tests hold it equal to
what ``git write-tree`` computes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from compiler import layout
from compiler.layout import OUT_DIR, SEAL_PATH, STATE_PATH
from compiler.model.bounded import json_depth_ok, quote
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state.store import MAX_STATE

SEAL_FORMAT = "pkic-seal"
SEAL_VERSION = 1
KEY_PREFIX = "PKIC-SEAL-KEY-1:"
PUB_PREFIX = "ed25519:"
MAX_SEAL = 64 * 1024
MAX_OUT_FILE = 256 * 1024 * 1024  # a CRL of a million entries is ~40 MiB
FIELDS = (
    "format",
    "version",
    "lineage",
    "serial",
    "prev",
    "out_tree",
    "object_format",
    "state_serial",
    "sops_rules",
    "public_key",
    "sealed_at",
)
EMPTY_TREE = {
    "sha1": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "sha256": "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}
REVERT_HINT = "revert the merge that changed out/ or out.seal (`git revert -m 1 <merge>`), so the newest sealed out/ is back; then apply"


# --------------------------------------------------------------------------- the key


def key_file() -> Path:
    """Where this machine keeps its seal key: $PKIC_SEAL_KEY_FILE, else beside the age
    identity (``pkic-seal.key`` in the directory of the age key file)."""
    from compiler.keys.sops_age import age_key_file

    explicit = os.environ.get("PKIC_SEAL_KEY_FILE")
    if explicit:
        return Path(explicit).expanduser()
    return age_key_file().parent / "pkic-seal.key"


def _parse_key(text: str, where: str) -> Ed25519PrivateKey:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(KEY_PREFIX):
            try:
                raw = base64.b64decode(line[len(KEY_PREFIX) :], validate=True)
                return Ed25519PrivateKey.from_private_bytes(raw)
            except (ValueError, binascii.Error):
                break
    raise fail(where, "holds no pkic seal key", "it is the file `pkic init` wrote (one line starting with PKIC-SEAL-KEY-1:)")


def load_key() -> Ed25519PrivateKey | None:
    """The seal key from $PKIC_SEAL_KEY (CI), else from the key file; None if neither."""
    text = os.environ.get("PKIC_SEAL_KEY")
    if text:
        return _parse_key(text, "PKIC_SEAL_KEY")
    path = key_file()
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(str(path), f"cannot read the seal key: {exc}", "fix its permissions, or set PKIC_SEAL_KEY") from None
    return _parse_key(text, str(path))


def new_key_file(path: Path, label: str) -> tuple[Ed25519PrivateKey, bool]:
    """The seal key in ``path``, made (mode 0600) if there is none: (key, created)."""
    try:
        return _parse_key(path.read_text(encoding="ascii"), str(path)), False
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        text = (
            f"# pkic seal key: signs out.seal for {label}. Keep it secret; CI gets it as PKIC_SEAL_KEY.\n"
            f"# public key: {public_text(key.public_key())}\n{KEY_PREFIX}{base64.b64encode(raw).decode()}\n"
        )
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return key, True


def public_text(public: Ed25519PublicKey) -> str:
    return PUB_PREFIX + base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def _public_from_text(text: str) -> Ed25519PublicKey | None:
    if not text.startswith(PUB_PREFIX):
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[len(PUB_PREFIX) :], validate=True))
    except (ValueError, binascii.Error):
        return None


# --------------------------------------------------------------------------- the seal file


@dataclass(frozen=True)
class Seal:
    lineage: str | None
    serial: int
    prev: str | None
    out_tree: str
    object_format: str
    state_serial: int
    sops_rules: str
    public_key: str
    sealed_at: str
    signature: str
    raw: bytes = field(repr=False)
    rotation: dict | None = None  # {"from": the previous public key, "signature": its endorsement of this key}

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def body(self) -> dict:
        body = {
            "format": SEAL_FORMAT,
            "version": SEAL_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "prev": self.prev,
            "out_tree": self.out_tree,
            "object_format": self.object_format,
            "state_serial": self.state_serial,
            "sops_rules": self.sops_rules,
            "public_key": self.public_key,
            "sealed_at": self.sealed_at,
        }
        if self.rotation is not None:
            body["rotation"] = self.rotation
        return body

    def self_signed(self) -> bool:
        """Signed by the key it names (says nothing about whose key that is)."""
        return self.valid_under(self.public_key)

    def endorsed_by(self, previous_key: str) -> bool:
        """A rotation: the previous seal key signed its consent to this seal's key."""
        rot = self.rotation
        if not isinstance(rot, dict) or rot.get("from") != previous_key:
            return False
        pub = _public_from_text(previous_key)
        try:
            return pub is not None and (
                pub.verify(base64.b64decode(str(rot.get("signature")), validate=True), _rotation_bytes(self.public_key, self.prev)) is None
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return False

    def valid_under(self, public_key: str) -> bool:
        """Signed by the seal key whose public key is ``public_key``."""
        if self.public_key != public_key:
            return False
        pub = _public_from_text(public_key)
        if pub is None:
            return False
        try:
            pub.verify(base64.b64decode(self.signature, validate=True), _signed_bytes(self.body()))
            return True
        except (InvalidSignature, ValueError, binascii.Error):
            return False


def _rotation_bytes(new_public_key: str, prev: str | None) -> bytes:
    return b"pkic-seal-rotation-v1\n" + new_public_key.encode() + b"\n" + (prev or "").encode()


def _signed_bytes(body: dict) -> bytes:
    return b"pkic-seal-v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse(raw: bytes, where: str = SEAL_PATH) -> Seal:
    """A seal file, strictly: a JSON object with exactly the known fields, typed."""

    def bad(why: str) -> PkicError:
        return fail(where, f"not a pkic seal: {why}", "restore it from git; never edit it by hand")

    if len(raw) > MAX_SEAL:
        raise bad("too large")
    if not json_depth_ok(raw):
        raise bad("nested too deeply")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: '[' * 30000
        raise bad("not JSON") from None
    if not isinstance(body, dict) or not set(FIELDS) | {"signature"} <= set(body) <= set(FIELDS) | {"signature", "rotation"}:
        raise bad("unexpected fields")
    rotation = body.get("rotation")
    if "rotation" in body and not (
        isinstance(rotation, dict) and set(rotation) == {"from", "signature"} and all(isinstance(v, str) for v in rotation.values())
    ):
        raise bad("rotation has the wrong form")
    if body["format"] != SEAL_FORMAT or body["version"] != SEAL_VERSION:
        raise bad(f"format {quote(body.get('format'))} version {quote(body.get('version'))}")
    types = {
        "lineage": (str, type(None)),
        "serial": int,
        "prev": (str, type(None)),
        "out_tree": str,
        "object_format": str,
        "state_serial": int,
        "sops_rules": str,
        "public_key": str,
        "sealed_at": str,
        "signature": str,
    }
    for k, t in types.items():
        if not isinstance(body[k], t) or isinstance(body[k], bool):
            raise bad(f"{k} has the wrong type")
    return Seal(
        body["lineage"],
        body["serial"],
        body["prev"],
        body["out_tree"],
        body["object_format"],
        body["state_serial"],
        body["sops_rules"],
        body["public_key"],
        body["sealed_at"],
        body["signature"],
        raw,
        rotation,
    )


def render(key: Ed25519PrivateKey, body: dict) -> bytes:
    body = {**body, "format": SEAL_FORMAT, "version": SEAL_VERSION, "public_key": public_text(key.public_key())}
    signature = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    return (json.dumps({**body, "signature": signature}, sort_keys=True, indent=1) + "\n").encode()


# --------------------------------------------------------------------------- git's tree id of out/

Listing = dict  # path below the repo ("out/...") -> (mode, blob id)


def _hash(algo: str, kind: bytes, data: bytes) -> bytes:
    h = hashlib.new(algo)
    h.update(kind + b" " + str(len(data)).encode() + b"\0")
    h.update(data)
    return h.digest()


def scan_out(repo: Path, algo: str) -> Listing:
    """Every file below out/ as git would record it, from the bytes on disk. A symlink, a
    device or a FIFO anywhere in out/ is refused: pkic never writes one. Each directory
    is read through a descriptor opened with O_NOFOLLOW, each file relative to it.
    (A stat cache was measured: 70 ms saved of 250 at 10,000 certificates; not kept.)"""
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
                    listing[rel] = ("100755" if st.st_mode & stat.S_IXUSR else "100644", _hash(algo, b"blob", data).hex())
            finally:
                os.close(dfd)
    finally:
        for _, dfd in stack:
            os.close(dfd)
    return listing


def blob_id(algo: str, data: bytes) -> str:
    return _hash(algo, b"blob", data).hex()


def tree_id(listing: Listing, algo: str, prefix: str = OUT_DIR + "/") -> str:
    """git's tree id of the directory holding ``listing`` (paths below ``prefix``)."""
    root: dict = {}
    for path, (mode, blob) in listing.items():
        parts = path[len(prefix) :].split("/")
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = (mode, blob)

    def build(node: dict) -> bytes:
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


# --------------------------------------------------------------------------- git


def _git(repo: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
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
        fmt = _git(repo, "rev-parse", "--show-object-format", "--is-shallow-repository")
        if fmt.returncode != 0:
            stderr = fmt.stderr.decode(errors="replace").strip()
            if "not a git repository" in stderr:
                return cls()
            return cls(error=(stderr.splitlines() or ["git failed"])[0][:300])
        lines = fmt.stdout.decode().split()
        algo = lines[0] if lines else "sha1"
        head = _git(repo, "rev-parse", "--verify", "-q", "HEAD")
        return cls(head.stdout.decode().strip() if head.returncode == 0 else None, algo, shallow=lines[1:2] == ["true"])

    def blob(self, repo: Path, rev_path: str) -> bytes | None:
        if self.head is None:
            return None
        proc = _git(repo, "cat-file", "blob", rev_path)
        return proc.stdout if proc.returncode == 0 else None

    def out_tree(self, repo: Path, rev: str = "HEAD") -> str:
        proc = _git(repo, "rev-parse", "--verify", "-q", f"{rev}:{OUT_DIR}")
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
        log = _git(repo, "log", *walk, "--topo-order", "--reverse", "--format=%H", tip, *([f"^{since}"] if since else []), "--", SEAL_PATH)
        commits = log.stdout.decode().split()
        if not commits:
            return []
        batch = _git(repo, "cat-file", "--batch", input="".join(f"{c}:{SEAL_PATH}\n" for c in commits).encode())
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

    def listing(self, repo: Path, tree: str) -> Listing | None:
        """The files of a tree object that git has (None if it has not)."""
        if tree == EMPTY_TREE.get(self.object_format):
            return {}
        proc = _git(repo, "ls-tree", "-r", "-z", "--full-tree", tree)
        if proc.returncode != 0:
            return None
        out: Listing = {}
        for item in proc.stdout.split(b"\0"):
            if item:
                meta, path = item.split(b"\t", 1)
                mode, _kind, oid = meta.split()
                out[f"{OUT_DIR}/{os.fsdecode(path)}"] = (mode.decode(), oid.decode())
        return out


def sops_rule_summary(repo: Path) -> str:
    """Who can decrypt keys pkic writes now: every creation rule of .sops.yaml, one after
    the other (path_regex included: a rule may aim at some key files only)."""
    from compiler.spec.sops_config import creation_rules

    rules = creation_rules(repo)
    if rules is None:
        return "no .sops.yaml"
    shown = [json.dumps(rule, sort_keys=True, default=str) for rule in rules]
    text = " | ".join(f"rule {i + 1}: {r}" for i, r in enumerate(shown)) or "no creation rules"
    return text if len(text) <= 8000 else text[:8000] + " …"


def sops_rules_digest(repo: Path) -> str:
    """SHA-256 of .sops.yaml's creation rules as data: comments, anchors and layout don't count."""
    from compiler.spec.sops_config import creation_rules

    rules = creation_rules(repo)
    if rules is None:
        return "none"
    return hashlib.sha256(json.dumps(rules, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- the check


@dataclass
class Report:
    """What the seal says of out/. ``problems`` empty: out/ is the newest sealed output."""

    mode: str = "unsealed"  # unsealed | new | sealed
    public_key: str | None = None
    seal: Seal | None = None
    head_seal: Seal | None = None
    git: GitView = field(default_factory=GitView)
    listing: Listing | None = None  # out/ on disk, when scanned
    recovering: bool = False  # out/ differs, but only by an interrupted apply of ours
    problems: list[Diagnostic] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (path, added|changed|removed) vs the sealed tree
    newest_valid: Seal | None = None  # the newest seal known good: on disk, or in history
    key_source: str = "the seal key"  # where public_key came from
    sops_change: str | None = None  # .sops.yaml's creation rules differ from the sealed ones: the rule now

    def summary(self) -> str:
        if self.mode == "unsealed":
            return "unsealed: no out.seal and no seal key; nothing proves who wrote out/"
        if self.mode == "new":
            return "sealed from the next apply on (no seal yet)"
        if self.problems:
            return f"NOT the sealed out/: {len(self.problems)} problem(s)"
        s = self.seal
        extra = " (finishing an interrupted apply)" if self.recovering else ""
        return f"sealed: seal serial {s.serial}, state serial {s.state_serial}, key {s.public_key[:20]}…{extra}" if s else "sealed"

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "ok": not self.problems,
            "summary": self.summary(),
            "public_key": self.public_key,
            "sops_rules": {"file": ".sops.yaml", "changed": self.sops_change is not None, "now": self.sops_change},
            "serial": self.seal.serial if self.seal else None,
            "digest": self.seal.digest if self.seal else None,
            "problems": [{"path": d.path or d.file, "message": d.message} for d in self.problems],
        }

    def problem(self, where: str, message: str, hint: str = REVERT_HINT) -> None:
        self.problems.append(Diagnostic(where, None, None, "", message, hint))  # render() escapes odd names

    @property
    def prev_for_next(self) -> str | None:
        """What the next seal's ``prev`` is: HEAD's seal where there is one (a run of
        local, uncommitted applies all point at the last committed seal), else ours."""
        if self.head_seal is not None:
            return self.head_seal.digest
        return self.seal.digest if self.seal else None

    @property
    def next_serial(self) -> int:
        return max([s.serial for s in (self.seal, self.head_seal) if s is not None], default=0) + 1


def examine(repo: Path, public_key: str | None, *, journal_seal: str | None = None, scan: bool = True) -> Report:
    """Check out/ and out.seal against ``public_key`` (apply: derived from the secret;
    plan and verify: the recorded one). Collects every problem; raises only for files
    it refuses to read (symlinks)."""
    r = Report(public_key=public_key, git=GitView.of(repo))
    disk_raw = layout.read_file(repo, SEAL_PATH, MAX_SEAL + 1)
    if r.git.error is not None:
        if public_key is None and disk_raw is None:
            return r  # unsealed, and git has nothing to say about it
        r.mode = "sealed"
        r.problem(
            "git",
            f"cannot check the seal against git's history: {r.git.error}",
            "fix what git says (e.g. `git config --global --add safe.directory DIR` for a repository owned by another user)",
        )
        return r
    if r.git.shallow and (public_key is not None or disk_raw is not None):
        r.mode = "sealed"
        r.problem(
            "git",
            "this is a shallow clone: the seal's history (is out.seal the newest?) cannot be checked",
            "fetch the whole history (`git fetch --unshallow`; actions/checkout: fetch-depth: 0)",
        )
        return r
    history = r.git.history(repo)
    sealed_before = [(c, raw) for c, raw in history if raw is not None]
    if public_key is None:
        if disk_raw is None and not sealed_before:
            return r
        r.mode = "sealed"
        r.problem(
            SEAL_PATH,
            "this repository is sealed, and no seal key is set",
            "apply needs the seal key: set PKIC_SEAL_KEY (CI) or PKIC_SEAL_KEY_FILE (see docs/security.md)",
        )
        return r
    head_raw = r.git.blob(repo, f"HEAD:{SEAL_PATH}")
    if disk_raw is None:
        _check_history(r, public_key, history, head_raw)
        if sealed_before:
            r.mode = "sealed"
            r.problem(SEAL_PATH, f"is missing, but commit {sealed_before[-1][0][:12]} has one: out/ was replaced or its seal removed")
        elif layout.exists(repo, STATE_PATH) or layout.exists(repo, "out/keys"):
            r.problem(
                OUT_DIR,
                "is not sealed: nothing proves that the apply identity wrote it",
                "adopt it once: `pkic verify --keys`, then `pkic seal init` (see docs/security.md)",
            )
        else:
            r.mode = "new"
        return r
    r.mode = "sealed"
    seal = parse(disk_raw)
    if not seal.valid_under(public_key):
        _check_history(r, public_key, history, head_raw)
        why = "signed by another key" if seal.public_key != public_key else "its signature is not valid"
        r.problem(
            SEAL_PATH,
            f"is not sealed by the seal key {public_key[:24]}…: {why} (it names {seal.public_key[:24]}…)",
            "a seal is made only by pkic apply with the seal key; " + REVERT_HINT,
        )
        return r
    r.seal = r.newest_valid = seal
    if seal.object_format != r.git.object_format:
        r.problem(SEAL_PATH, f"was made for {seal.object_format} object ids; this repository uses {r.git.object_format}")
        return r
    _check_history(r, public_key, history, head_raw)
    try:
        head = parse(head_raw, f"HEAD:{SEAL_PATH}") if head_raw is not None else None
    except PkicError:
        head = None
    if head is not None and head.valid_under(public_key):
        r.head_seal = head
        if disk_raw == head_raw:
            committed = r.git.out_tree(repo)
            if committed != seal.out_tree:
                r.problem("HEAD:out", "the committed out/ is not the sealed tree (checked against git's objects)")
                _name_changes(r, repo, r.git.listing(repo, committed), seal.out_tree)
        elif seal.prev != head.digest or seal.serial <= head.serial or seal.lineage != head.lineage:
            r.problem(
                SEAL_PATH,
                f"is neither HEAD's seal (serial {head.serial}) nor a later apply of it (serial {seal.serial})",
                "restore it and out/ from git (`git checkout -- out.seal out/`)",
            )
    if seal.sops_rules != sops_rules_digest(repo):
        r.sops_change = sops_rule_summary(repo)
    if not scan:
        return r
    r.listing = scan_out(repo, r.git.object_format)
    if tree_id(r.listing, r.git.object_format) != seal.out_tree:
        if journal_seal is not None and journal_seal == seal.digest:
            r.recovering = True
        else:
            _name_changes(r, repo, r.listing, seal.out_tree)
            if not r.changed:
                r.problem(OUT_DIR, "is not what the seal covers", "restore it from git (`git checkout -- out/`); change pki.yaml instead")
    return r


def parsed(versions: list[tuple[str, bytes | None]]) -> list[tuple[str, Seal]]:
    """The versions of out.seal that are seals at all (a removed file, a tree or a
    damaged document in history is simply not one), in the order given."""
    out = []
    for commit, raw in versions:
        if raw is None:
            continue
        try:
            out.append((commit, parse(raw, f"{commit[:12]}:{SEAL_PATH}")))
        except PkicError:
            continue
    return out


def _check_history(r: Report, public_key: str, history: list[tuple[str, bytes | None]], head_raw: bytes | None) -> None:
    """Freshness: every seal made with the key that HEAD can reach, however it got into
    history. HEAD's seal must be the newest of them, and they must form one chain."""
    valid = [(commit, s) for commit, s in parsed(history) if s.valid_under(public_key)]
    if not valid:
        return
    top_commit, top = max(valid, key=lambda cs: cs[1].serial)  # max() keeps the first (oldest) of equals
    if r.newest_valid is None or top.serial > r.newest_valid.serial:
        r.newest_valid = top
    head = None
    if head_raw is not None:
        try:
            head = parse(head_raw, f"HEAD:{SEAL_PATH}")
        except PkicError:
            head = None
    if head_raw is None:
        r.problem(
            SEAL_PATH,
            f"is not in HEAD, but commit {top_commit[:12]} has a seal (serial {top.serial}): out/ was replaced or its seal removed",
        )
    elif head is None or not head.valid_under(public_key):
        r.problem(SEAL_PATH, f"HEAD's seal is not made with the seal key; commit {top_commit[:12]} has seal serial {top.serial}")
    elif head.serial < top.serial:
        r.problem(
            SEAL_PATH,
            f"restores an older out/: its seal has serial {head.serial}, but commit {top_commit[:12]} already has serial {top.serial}",
        )
    elif head.serial == top.serial and head.raw != top.raw:
        r.problem(SEAL_PATH, f"two different seals have serial {top.serial} (HEAD's and commit {top_commit[:12]}'s): out/ was forked")
    chain: dict[str, tuple[str, Seal]] = {}
    for commit, s in valid:
        chain.setdefault(s.digest, (commit, s))
    ordered = sorted(chain.values(), key=lambda cs: cs[1].serial)
    for (ca, a), (cb, b) in itertools.pairwise(ordered):
        if b.prev != a.digest or b.lineage != a.lineage and a.lineage is not None:
            r.problem(
                SEAL_PATH,
                f"the seal of commit {cb[:12]} (serial {b.serial}) does not follow the one of commit {ca[:12]} (serial {a.serial}): replayed from another branch or PKI?",
            )
            break


LOCAL_LISTING = ".pkic/sealed-listing.json"


def _save_listing(repo: Path, tree: str, listing: Listing) -> None:
    """This machine's copy of the files of the tree it just sealed: only to name, in an
    error, the files that differ when git does not have the tree (nothing committed)."""
    try:
        body = json.dumps({"tree": tree, "files": {p: f"{m} {b}" for p, (m, b) in sorted(listing.items())}}, separators=(",", ":"))
        layout.write_atomic(repo, LOCAL_LISTING, body.encode())
    except (OSError, PkicError):
        pass


def _local_listing(repo: Path, tree: str) -> Listing | None:
    try:
        raw = layout.read_file(repo, LOCAL_LISTING, max_size=256 * 1024 * 1024) or b"{}"
        if not json_depth_ok(raw):
            return None
        body = json.loads(raw)
        if body.get("tree") != tree:
            return None
        return {p: tuple(v.split(" ", 1)) for p, v in body["files"].items()}
    except (OSError, ValueError, KeyError, AttributeError, RecursionError, PkicError):
        return None


def _name_changes(r: Report, repo: Path, have: Listing | None, sealed_tree: str) -> None:
    """Name each file of ``have`` that is not what the seal covers (once, however often asked)."""
    sealed = r.git.listing(repo, sealed_tree) or _local_listing(repo, sealed_tree)
    if have is None or sealed is None:
        return
    known = {p for p, _ in r.changed}
    fresh = []
    for path in sorted(set(have) | set(sealed)):
        a, b = sealed.get(path), have.get(path)
        if a != b and path not in known:
            fresh.append((path, "added" if a is None else "removed" if b is None else "changed"))
    shown = len(r.changed)
    r.changed += fresh
    for path, what in fresh[: max(0, 20 - shown)]:
        r.problem(
            path,
            f"edited by hand ({what}): not what the seal covers",
            "restore it from git (`git checkout -- out/`); change pki.yaml instead",
        )
    if len(r.changed) > 20 and shown <= 20:
        r.problem(OUT_DIR, "more files are not what the seal covers", "restore out/ from git (`git checkout -- out/`)")


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


def write(
    repo: Path,
    key: Ed25519PrivateKey,
    report: Report,
    listing: Listing,
    *,
    lineage: str | None,
    state_serial: int,
    at: str,
    endorse_with: Ed25519PrivateKey | None = None,
) -> Seal:
    """Seal ``listing`` (out/ as it now is) as the next seal after ``report``'s. A
    rotation is endorsed by the previous seal key (``endorse_with``) where it is at hand."""
    algo = report.git.object_format
    body: dict = {
        "lineage": lineage,
        "serial": report.next_serial,
        "prev": report.prev_for_next,
        "out_tree": tree_id(listing, algo),
        "object_format": algo,
        "state_serial": state_serial,
        "sops_rules": sops_rules_digest(repo),
        "sealed_at": at,
    }
    if endorse_with is not None:
        new_public = public_text(key.public_key())
        body["rotation"] = {
            "from": public_text(endorse_with.public_key()),
            "signature": base64.b64encode(endorse_with.sign(_rotation_bytes(new_public, body["prev"]))).decode(),
        }
    raw = render(key, body)
    layout.write_atomic(repo, SEAL_PATH, raw)
    return parse(raw)


# --------------------------------------------------------------------------- invariants


@dataclass(frozen=True)
class Invariants:
    """What only grows (or stays) from one seal to the next."""

    lineage: str | None
    serial: int
    revoked: frozenset[str]
    compromised: frozenset[str]
    crl_numbers: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, state) -> Invariants:
        revoked = frozenset(
            f"{r.get('issuer_key_id')}:{r['serial']}" for recs in state.certificates.values() for r in recs if r["status"] == "revoked"
        )
        compromised = frozenset(json.dumps({k: v for k, v in c.items() if k != "name"}, sort_keys=True) for c in state.compromised)
        numbers: dict[str, int] = {}
        for a, i in state.crls.items():
            recs = state.certificates.get(a) or [{}]
            for name in (a, *recs[0].get("moved_from", [])):  # a moved authority's CRL keeps its number
                numbers[name] = max(numbers.get(name, 0), int(i.get("number", 0)))
        return cls(state.lineage, state.serial, revoked, compromised, tuple(sorted(numbers.items())))

    def broken_by(self, new: Invariants, growth: bool = True) -> list[str]:
        out = []
        if self.lineage is not None and new.lineage != self.lineage:
            out.append(f"the lineage changed ({self.lineage} -> {new.lineage})")
        if growth and new.serial <= self.serial:
            out.append(f"the state serial did not grow ({self.serial} -> {new.serial})")
        if not self.revoked <= new.revoked:
            out.append(f"{len(self.revoked - new.revoked)} revoked certificate(s) are no longer revoked")
        if not self.compromised <= new.compromised:
            out.append("a recorded key compromise disappeared")
        numbers = dict(new.crl_numbers)
        for a, n in self.crl_numbers:
            if numbers.get(a, -1) < n:
                out.append(f"the CRL number of {a} went back ({n} -> {numbers.get(a)})")
        return out


# --------------------------------------------------------------------------- apply's side


@dataclass
class Sealing:
    """An apply's hold on the seal: the key, what :func:`examine` found, and the
    invariants of the state it started from."""

    key: Ed25519PrivateKey
    report: Report
    invariants: Invariants | None = None

    @property
    def algo(self) -> str:
        return self.report.git.object_format

    def listing(self, repo: Path) -> Listing:
        if self.report.listing is None:
            self.report.listing = scan_out(repo, self.algo)
        return self.report.listing

    def seal_now(self, repo: Path, touched: set[str], state, at: str, known: dict[str, str] | None = None) -> Seal:
        """Seal out/ after an apply that wrote, removed or renamed ``touched``."""
        listing = update_listing(repo, self.listing(repo), touched, self.algo, known)
        return self._write(repo, listing, state, at)

    def _write(self, repo: Path, listing: Listing, state, at: str) -> Seal:
        new = write(repo, self.key, self.report, listing, lineage=state.lineage, state_serial=state.serial, at=at)
        _save_listing(repo, new.out_tree, listing)
        self.report.seal, self.report.listing, self.report.recovering = new, listing, False
        return new

    def check_recovery(self, begin: dict, touched: set[str]) -> None:
        """Before a killed apply's journal is replayed: out/ may differ from the seal only
        in files that apply was writing (``touched``) and its staging files."""
        if not self.report.recovering:
            return
        sealed = begin.get("listing")
        if begin.get("seal") != (self.report.seal.digest if self.report.seal else None) or not isinstance(sealed, dict):
            raise fail(
                OUT_DIR,
                "is not what the seal covers, and the interrupted apply's journal does not say why",
                "restore out/ from git (`git checkout -- out/ out.seal`), remove .pkic/journal.jsonl, and apply again",
            )
        was = {p: tuple(v.split(" ", 1)) for p, v in sealed.items() if isinstance(v, str)}
        now = self.report.listing or {}

        def staging(p: str) -> bool:
            base = p.rpartition("/")[2]
            return base.startswith(".") and ".tmp-" in base

        strange = sorted(p for p in set(was) | set(now) if was.get(p) != now.get(p) and p not in touched and not staging(p))
        if strange:
            raise PkicError(
                [
                    Diagnostic(
                        p,
                        None,
                        None,
                        "",
                        "changed since the interrupted apply began, and not by it: not what the seal covers",
                        "restore it from git (`git checkout -- out/`); then apply again",
                    )
                    for p in strange[:20]
                ]
            )

    def recover(self, repo: Path, before: Invariants, state, at: str) -> None:
        """After a killed apply's journal was replayed (check_recovery passed): seal it."""
        listing = scan_out(repo, self.algo)
        if self.report.seal is not None and tree_id(listing, self.algo) == self.report.seal.out_tree:
            self.report.listing = listing  # killed after its seal was written: nothing to seal
            return
        broken = before.broken_by(Invariants.of(state), growth=False)
        if broken:
            raise fail(STATE_PATH, "refusing to seal a state that " + "; ".join(broken), "this is a bug in pkic: report it")
        self._write(repo, listing, state, at)


# --------------------------------------------------------------------------- no secret: plan and verify


def _follow(versions: list[tuple[str, bytes | None]], current: str | None) -> tuple[str | None, str | None]:
    """Walk ``versions`` (parents first): the first self-signed seal anchors the key
    (when ``current`` is None), and a key change is followed only when the previous key
    endorsed it. Returns (key, the commit of the last rotation followed)."""
    rotated = None
    for commit, s in parsed(versions):
        if not s.self_signed():
            continue
        if current is None:
            current = s.public_key
        elif s.public_key != current and s.endorsed_by(current):
            current, rotated = s.public_key, commit
    return current, rotated


def recorded_public_key(repo: Path, base: str | None = None) -> tuple[str | None, str]:
    """The public key plan and verify check against, and where it came from. No secret
    is used. The key is taken from a line of history that a pull request cannot write:
    the first seal along the first parents of ``base`` (a pull request's target branch,
    which the shipped plan workflow passes), or of HEAD without it (trust on first use:
    a fast-forward of crafted commits can change HEAD's line, which is why pull request
    checks pass --base), followed along that line through rotations that the previous
    key endorsed; then through endorsed rotations in the pull request's own commits. A
    seal found at the merge base is never trusted for what it names: the merge base can
    be any commit of the target branch's history, an attacker's intermediate commit
    from an earlier, net-harmless pull request included."""
    git = GitView.of(repo)
    usable = git.head is not None and not git.shallow
    current: str | None = None
    source = "the first seal along HEAD's first parents"
    if base is not None:
        tip = _git(repo, "rev-parse", "--verify", "-q", f"{base}^{{commit}}")
        if tip.returncode != 0:
            raise fail(
                "--base",
                f"{base[:80]!r} is not a commit here",
                "pass the pull request's target branch, e.g. --base origin/main (with fetch-depth: 0)",
            )
        base_tip = tip.stdout.decode().strip()
        if usable:
            current, rotated = _follow(git.history(repo, first_parent=True, tip=base_tip), None)
            source = f"{base}'s history" + (f" (rotated at {rotated[:12]})" if rotated else "")
            if current is not None:
                current, rotated = _follow(git.history(repo, first_parent=True, since=base_tip), current)
                if rotated:
                    source += f", then a rotation endorsed by it ({rotated[:12]})"
        return current, source
    if usable:
        current, rotated = _follow(git.history(repo, first_parent=True), None)
        if rotated:
            source += f" (rotated at {rotated[:12]})"
    disk = layout.read_file(repo, SEAL_PATH, MAX_SEAL + 1)
    if disk is not None:  # a rotation made here and not yet committed; or no history at all
        current, rotated = _follow([("out.seal", disk)], current)
        if current is not None and not usable:
            source = "out.seal itself (no sealed commit yet)"
    if current is None:
        return None, "nowhere"
    return current, source


def sealed_findings(repo: Path, report: Report) -> list[Diagnostic]:
    """What a reviewer should know when out/ is not the sealed one, from the newest good
    seal's state (git's objects): a trust bundle that is not the sealed roots, and
    certificates that were revoked and no longer are."""
    good = report.newest_valid
    if good is None or not report.problems:
        return []
    raw = report.git.blob(repo, f"{good.out_tree}:state.json") if report.git.head else None
    if raw is None:
        return []
    try:
        now_raw = layout.read_file(repo, STATE_PATH, max_size=MAX_STATE) or b"{}"
        if not (json_depth_ok(raw) and json_depth_ok(now_raw)):
            return []
        sealed = json.loads(raw)
        current = json.loads(now_raw)
    except (ValueError, RecursionError, PkicError):
        return []
    out: list[Diagnostic] = []

    def records(body: dict) -> dict[str, dict]:
        return {
            r.get("serial"): r
            for recs in (body.get("certificates") or {}).values()
            if isinstance(recs, list)
            for r in recs
            if isinstance(r, dict)
        }

    was, now = records(sealed), records(current if isinstance(current, dict) else {})
    for serial, r in sorted(was.items(), key=lambda kv: str(kv[0])):
        if r.get("status") == "revoked" and (now.get(serial) or {}).get("status") != "revoked":
            out.append(
                Diagnostic(
                    STATE_PATH,
                    None,
                    None,
                    "",
                    f"{r.get('name')} serial {serial} was revoked in the sealed state and is not any more",
                    REVERT_HINT,
                )
            )
    roots = {
        r.get("sha256") for r in was.values() if r.get("status") == "active" and r.get("kind") == "authority" and r.get("issuer") is None
    }
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        data = layout.read_file(repo, "out/trust/bundle.pem") or b""
        have = {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(data)} if data.strip() else set()
    except (ValueError, PkicError):
        have = None
    if have is not None and have != roots:
        extra, missing = len(have - roots), len(roots - have)
        out.append(
            Diagnostic(
                "out/trust/bundle.pem",
                None,
                None,
                "",
                f"is not the sealed roots: {extra} certificate(s) added, {missing} missing",
                REVERT_HINT,
            )
        )
    return out
