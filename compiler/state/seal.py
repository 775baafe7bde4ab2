"""The seal file ``out.seal`` and its signature.

``out.seal`` (beside ``out/``, so not inside what it covers) holds the lineage, a
serial, the SHA-256 of the previous seal, the git tree id of ``out/`` (every file, mode
and path in one id), the digest of ``.sops.yaml``'s creation rules, the public key and
the signature. A rotation to a new seal key carries the previous key's endorsement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compiler.layout import SEAL_PATH
from compiler.model.bounded import json_depth_ok, quote
from compiler.model.errors import PkicError, fail
from compiler.state.sealkey import public_from_text, public_text

SEAL_FORMAT = "pkic-seal"
SEAL_VERSION = 1
MAX_SEAL = 64 * 1024
# a seal as JSON, before it is signed (the fields of FIELDS, and "rotation")
SealBody = dict[str, Any]
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
    rotation: dict[str, str] | None = None  # {"from": the previous public key, "signature": its endorsement of this key}

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def body(self) -> SealBody:
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
        pub = public_from_text(previous_key)
        try:
            return pub is not None and (
                pub.verify(base64.b64decode(str(rot.get("signature")), validate=True), rotation_bytes(self.public_key, self.prev)) is None
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return False

    def valid_under(self, public_key: str) -> bool:
        """Signed by the seal key whose public key is ``public_key``."""
        if self.public_key != public_key:
            return False
        pub = public_from_text(public_key)
        if pub is None:
            return False
        try:
            pub.verify(base64.b64decode(self.signature, validate=True), _signed_bytes(self.body()))
            return True
        except (InvalidSignature, ValueError, binascii.Error):
            return False


def rotation_bytes(new_public_key: str, prev: str | None) -> bytes:
    return b"pkic-seal-rotation-v1\n" + new_public_key.encode() + b"\n" + (prev or "").encode()


def _signed_bytes(body: SealBody) -> bytes:
    return b"pkic-seal-v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse_seal(raw: bytes, where: str = SEAL_PATH) -> Seal:
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
    types: dict[str, type | tuple[type, ...]] = {
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


def render_seal(key: Ed25519PrivateKey, body: SealBody) -> bytes:
    body = {**body, "format": SEAL_FORMAT, "version": SEAL_VERSION, "public_key": public_text(key.public_key())}
    signature = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    return (json.dumps({**body, "signature": signature}, sort_keys=True, indent=1) + "\n").encode()


def parsed_seals(versions: list[tuple[str, bytes | None]]) -> list[tuple[str, Seal]]:
    """The versions of out.seal that are seals at all (a removed file, a tree or a
    damaged document in history is simply not one), in the order given."""
    out = []
    for commit, raw in versions:
        if raw is None:
            continue
        try:
            out.append((commit, parse_seal(raw, f"{commit[:12]}:{SEAL_PATH}")))
        except PkicError:
            continue
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
