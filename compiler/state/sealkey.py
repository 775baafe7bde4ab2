"""The seal key: an Ed25519 key that never lives in the repository, not even SOPS-encrypted.

Anyone can encrypt to a public recipient, so decrypting proves nothing about who wrote a
file; only a signature does. CI gets the key as the secret ``PKIC_SEAL_KEY``; on a
laptop ``pkic init`` writes it beside the age identity (``PKIC_SEAL_KEY_FILE``). Apply
derives the public key from the secret; it never trusts the recorded one.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from compiler import settings
from compiler.model.errors import PkicError, fail

KEY_PREFIX = "PKIC-SEAL-KEY-1:"
PUB_PREFIX = "ed25519:"


def seal_key_file() -> Path:
    """Where this machine keeps its seal key: $PKIC_SEAL_KEY_FILE, else beside the age
    identity (``pkic-seal.key`` in the directory of the age key file)."""
    explicit = settings.seal_key_file()
    if explicit is not None:
        return explicit
    return settings.age_key_file().parent / "pkic-seal.key"


def parse_key(text: str, where: str) -> Ed25519PrivateKey:
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
    text = settings.seal_key_text()
    if text:
        return parse_key(text, "PKIC_SEAL_KEY")
    path = seal_key_file()
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(str(path), f"cannot read the seal key: {exc}", "fix its permissions, or set PKIC_SEAL_KEY") from None
    return parse_key(text, str(path))


def cache_mac_key(key: Ed25519PrivateKey) -> bytes:
    """A key for authenticating what apply keeps in the user's cache (the entry cache and
    its record of out/'s blob ids, each MAC under its own prefix):
    derived from the seal key, so that only the apply identity can make a record apply
    will trust; a plan, which holds no secret, cannot."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"pkic entry cache v1").derive(raw)


def cache_key() -> bytes | None:
    """The key of this machine's apply caches (:func:`cache_mac_key` of the seal key), or
    None: no seal key here, or one that does not load (apply's seal gate reports that).
    Apply authenticates what it keeps with it; so does a plan run where the seal key is
    (a laptop that applies too): what it keeps is what apply would make of the same
    bytes, and the apply that follows takes it instead of loading everything again. A
    plan without the key (a pull request's) keeps its own, which apply never takes."""
    try:
        key = load_key()
    except PkicError:
        return None
    return cache_mac_key(key) if key is not None else None


def new_key_file(path: Path, label: str) -> tuple[Ed25519PrivateKey, bool]:
    """The seal key in ``path``, made (mode 0600) if there is none: (key, created)."""
    try:
        return parse_key(path.read_text(encoding="ascii"), str(path)), False
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


def public_from_text(text: str) -> Ed25519PublicKey | None:
    if not text.startswith(PUB_PREFIX):
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[len(PUB_PREFIX) :], validate=True))
    except (ValueError, binascii.Error):
        return None
