"""Certificate signing requests: keys that never leave their host.

The compiler checks a CSR's self-signature and takes only its public key; the subject,
names and extensions come from pki.yaml (never CA:TRUE or anything else the CSR asks
for). The names a CSR asks for that pki.yaml does not list are reported.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from compiler.layout import read_input
from compiler.model.errors import PkicError
from compiler.model.keytype import KeyType, public_key_sha256

MIN_RSA_BITS = 2048


class CsrError(ValueError):
    """A CSR that cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class CsrInfo:
    public_key: CertificatePublicKeyTypes
    key_type: KeyType
    public_key_sha256: str
    names: dict[str, list[str]] = field(default_factory=dict)  # dns/ip/uri/email the CSR asks for


def load_csr(path: Path, repo: Path | None = None) -> CsrInfo:
    """Read and check a CSR. Inside a repository (``repo`` given) it is read without
    following symlinks, and only if it is a regular file."""
    try:
        if repo is not None:
            data = read_input(repo, path.relative_to(repo).as_posix())
        else:
            data = path.read_bytes()
    except PkicError as exc:
        raise CsrError(exc.diagnostics[0].message) from None
    except FileNotFoundError:
        raise CsrError("file not found") from None
    except OSError as exc:
        raise CsrError(f"cannot read it: {exc.strerror}") from None
    try:
        csr = x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
    except ValueError:
        raise CsrError("not a PEM or DER certificate signing request (PKCS #10)") from None
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError):
        raise CsrError("its public key is of an unsupported type or curve") from None
    kt = KeyType.of(public_key)  # None: of no type pkic issues for; the checks below say why
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        raise CsrError(f"its RSA key has {public_key.key_size} bits: weak (at least {MIN_RSA_BITS})")
    if isinstance(public_key, ec.EllipticCurvePublicKey) and kt is None:
        raise CsrError(f"its key is on the unsupported curve {public_key.curve.name} (use P-256, P-384 or P-521)")
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise CsrError("its public key is of an unsupported type (use ECDSA, Ed25519 or RSA)")
    if kt is None:
        raise CsrError(f"its RSA key size ({getattr(public_key, 'key_size', '?')}) is not one pkic issues for (2048, 3072, 4096)")
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported signature algorithm
        valid = False
    if not valid:
        raise CsrError("its self-signature does not verify (tampered with, or not signed by its key)")
    asked: dict[str, list[str]] = {}
    try:
        extensions = csr.extensions
    except Exception as exc:  # DuplicateExtension, UnsupportedGeneralNameType, a malformed value...
        raise CsrError(
            f"its extensions cannot be read ({type(exc).__name__}): pkic names the certificate's extensions itself, "
            "but refuses a CSR it cannot read whole"
        ) from None
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        asked["dns"] = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        # an address with a mask (a network) is no name: ip_address refuses it (ValueError)
        asked["ip"] = [str(ipaddress.ip_address(str(a))) for a in san.get_values_for_type(x509.IPAddress)]
        asked["uri"] = list(san.get_values_for_type(x509.UniformResourceIdentifier))
        asked["email"] = list(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    except Exception as exc:  # a name type pkic cannot read (x400Address...), a bad IP
        raise CsrError(f"its subjectAltName cannot be read ({type(exc).__name__})") from None
    return CsrInfo(public_key, kt, public_key_sha256(public_key), {k: v for k, v in asked.items() if v})
