"""The floor F: plain `cryptography`, nothing else. A root, 10 intermediates and N P-256
leaves (one in ten with 30-day lifetimes, as the workload), each key generated and
each certificate signed and written as PEM, in one process: what any Python PKI tool
must at least spend. pkic's figures are read as multiples of it.

Usage: pyca.py N DIR; prints the seconds spent on the leaves.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench Corp"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=3 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(signer, hashes.SHA256())
    )


def main() -> int:
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = ca(name("Bench Root"), name("Bench Root"), root_key, root_key)
    cas = []
    for i in range(10):
        key = ec.generate_private_key(ec.SECP256R1())
        cas.append((key, ca(name(f"Bench CA {i}"), root.subject, key, root_key)))
    start = time.perf_counter()
    for j in range(n):
        ca_key, ca_cert = cas[j % 10]
        key = ec.generate_private_key(ec.SECP256R1())
        days = 30 if j % 10 == 0 else 90
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"svc-{j:05d}"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"svc-{j:05d}.svc.internal")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (out / f"svc-{j:05d}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"svc-{j:05d}.key.pem").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    print(f"{time.perf_counter() - start:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
