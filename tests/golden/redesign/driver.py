"""Run pkic with its randomness made deterministic, for the redesign goldens.

Test-only: patches the randomness sources (cryptography's key generation and serial
numbers, pyrage identities, uuid4) in this process, then runs the CLI. Production code
has no deterministic mode. RSA keys cannot be derived from a seed with cryptography,
so the golden PKI uses none; ECDSA signatures use a random nonce, so its authorities
are Ed25519 (deterministic signatures) and only leaves are ECDSA.

usage: python driver.py <pkic arguments>; PKIC_GOLDEN_SEED names this invocation.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import sys
import uuid

import pyrage
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

SEED = os.environ["PKIC_GOLDEN_SEED"].encode()
_count = itertools.count()


def _draw(label: str, n: int = 64) -> bytes:
    out = b""
    i = next(_count)
    while len(out) < n:
        out += hmac.new(SEED, f"{label}:{i}:{len(out)}".encode(), hashlib.sha512).digest()
    return out[:n]


_ORDERS = {"secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
           "secp384r1": int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16)}


def _ec(curve, backend=None):
    order = _ORDERS[curve.name]
    return ec.derive_private_key(int.from_bytes(_draw("ec"), "big") % (order - 1) + 1, curve)


ec.generate_private_key = _ec
ed25519.Ed25519PrivateKey.generate = classmethod(lambda cls: ed25519.Ed25519PrivateKey.from_private_bytes(_draw("ed25519", 32)))  # type: ignore[method-assign]
x509.random_serial_number = lambda: int.from_bytes(_draw("serial", 20), "big") >> 1
uuid.uuid4 = lambda: uuid.UUID(bytes=_draw("uuid", 16), version=4)

_REAL_IDENTITY = pyrage.x25519.Identity
_AGE = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"


class _Identity:
    @staticmethod
    def generate():
        return _REAL_IDENTITY.from_str(_AGE)

    from_str = staticmethod(_REAL_IDENTITY.from_str)


pyrage.x25519.Identity = _Identity  # type: ignore[misc]

from compiler.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
