"""The key types pkic issues for, and what each one implies.

One home for every rule that depends on a key type: its parameters (curve or RSA size),
the hash a signature with it uses, which type a public key is, and the fingerprints
pkic records of a public key. Key *generation* is not here: it lives in the keystore,
the only place a clear private key exists, which reads the parameters from this enum.

A member's value is its spelling in pki.yaml, the state and plan JSON: ``KeyType`` is a
``StrEnum``, so it formats, compares and serialises as that string.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PublicKeyTypes

# the hashes pkic signs with (cryptography's signing APIs accept only these SHA-2/3 types)
SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ecdsa-p256": ec.SECP256R1,
    "ecdsa-p384": ec.SECP384R1,
    "ecdsa-p521": ec.SECP521R1,
}


class KeyType(StrEnum):
    """A key type, spelled as in pki.yaml (the spec's ``key`` field lists the same values)."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    ECDSA_P521 = "ecdsa-p521"
    ED25519 = "ed25519"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def curve(self) -> ec.EllipticCurve | None:
        """The NIST curve of an ECDSA type (None for the others)."""
        cls = _CURVES.get(self.value)
        return cls() if cls is not None else None

    @property
    def rsa_bits(self) -> int | None:
        """The modulus size of an RSA type (None for the others)."""
        return int(self.value.removeprefix("rsa-")) if self.is_rsa else None

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    def signature_hash(self) -> SignatureHash | None:
        """The hash matched to the signing key: P-384 -> SHA-384, P-521 -> SHA-512,
        Ed25519 -> none (it hashes internally), everything else SHA-256."""
        if self is KeyType.ED25519:
            return None
        if self is KeyType.ECDSA_P384:
            return hashes.SHA384()
        if self is KeyType.ECDSA_P521:
            return hashes.SHA512()
        return hashes.SHA256()

    @classmethod
    def of(cls, public_key: object) -> KeyType | None:
        """The type of ``public_key``; None when pkic does not issue for it (another
        curve, an RSA size not listed, DSA...)."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            name = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}.get(public_key.curve.name)
            return cls(name) if name is not None else None
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            return cls.ED25519
        if isinstance(public_key, rsa.RSAPublicKey):
            try:
                return cls(f"rsa-{public_key.key_size}")
            except ValueError:
                return None
        return None


def public_key_sha256(public_key: PublicKeyTypes) -> str:
    """The SHA-256 of the DER SubjectPublicKeyInfo, hex: how the state, the seal and the
    keystore recognise a key (``public_key_sha256`` in records and key files)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_id(public_key: CertificatePublicKeyTypes) -> bytes:
    """The key identifier (RFC 5280 4.2.1.2, method 1: SHA-1 of the subjectPublicKey) that
    goes into the SubjectKeyIdentifier and the children's AuthorityKeyIdentifier."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest
