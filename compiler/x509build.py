"""X.509 building: one small function per concern, one skeleton every certificate shares.

No private key ever reaches this module: it returns an unsigned
``CertificateBuilder``; the keystore signs it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .spec import Entry

BACKDATE = timedelta(minutes=1)

_ATTR = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}
EKU = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}


@dataclass(frozen=True)
class IssuerRef:
    """What a child needs of its issuer: the exact subject and the key identifier."""

    subject: x509.Name
    key_id: bytes
    key_type: str

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, key_type: str) -> "IssuerRef":
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        return cls(cert.subject, ski, key_type)


def signature_hash(key_type: str) -> hashes.HashAlgorithm | None:
    """The hash matched to the signing key: P-384 -> SHA-384, P-521 -> SHA-512, Ed25519 -> none."""
    if key_type == "ed25519":
        return None
    if key_type == "ecdsa-p384":
        return hashes.SHA384()
    if key_type == "ecdsa-p521":
        return hashes.SHA512()
    return hashes.SHA256()


def subject_name(subject: list[list[str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(_ATTR[k], v) for k, v in subject])


def key_usage(entry: Entry) -> x509.KeyUsage:
    ca = entry.kind == "authority"
    rsa_encipher = entry.key_type.startswith("rsa-") and entry.spec.get("profile") in ("server", "peer")
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=rsa_encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def basic_constraints(entry: Entry) -> x509.BasicConstraints:
    if entry.kind == "authority":
        return x509.BasicConstraints(ca=True, path_length=entry.spec.get("path_length"))
    return x509.BasicConstraints(ca=False, path_length=None)


def subject_alt_names(spec: dict) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.get("dns", [])]
    names += [x509.IPAddress(ipaddress.ip_address(n)) for n in spec.get("ip", [])]
    names += [x509.UniformResourceIdentifier(n) for n in spec.get("uri", [])]
    names += [x509.RFC822Name(n) for n in spec.get("email", [])]
    return names


def name_constraints(nc: dict) -> x509.NameConstraints:
    def subtrees(prefix: str) -> list[x509.GeneralName] | None:
        out: list[x509.GeneralName] = []
        out += [x509.DNSName(v) for v in nc.get(f"{prefix}_dns", [])]
        out += [x509.IPAddress(ipaddress.ip_network(v)) for v in nc.get(f"{prefix}_ip", [])]
        out += [x509.RFC822Name(v) for v in nc.get(f"{prefix}_email", [])]
        out += [x509.UniformResourceIdentifier(v) for v in nc.get(f"{prefix}_uri", [])]
        return out or None

    return x509.NameConstraints(permitted_subtrees=subtrees("permitted"), excluded_subtrees=subtrees("excluded"))


def build(
    entry: Entry,
    public_key,
    issuer: IssuerRef | None,
    serial: int,
    now: datetime,
) -> x509.CertificateBuilder:
    """The unsigned certificate for ``entry``; ``issuer`` None means self-signed."""
    subject = subject_name(entry.spec["subject"])
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki_id = issuer.key_id if issuer else ski.digest
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + entry.lifetime)
        .add_extension(basic_constraints(entry), critical=True)
        .add_extension(key_usage(entry), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(aki_id, None, None), critical=False)
    )
    if entry.kind == "certificate":
        builder = builder.add_extension(x509.ExtendedKeyUsage(EKU[entry.spec["profile"]]), critical=False)
        sans = subject_alt_names(entry.spec)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    elif entry.spec.get("name_constraints"):
        builder = builder.add_extension(name_constraints(entry.spec["name_constraints"]), critical=True)
    return builder
