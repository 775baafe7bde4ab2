"""X.509 building: one small function per concern, one skeleton every certificate shares.

No private key ever reaches this module: it returns an unsigned
``CertificateBuilder``; the keystore signs it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from compiler.model.keytype import KeyType, key_id

# Everything pkic signs starts a minute before it is signed: a certificate's notBefore,
# a CRL's and an OCSP response's thisUpdate, and a revocation's date. A verifier whose
# clock runs a little behind then never rejects a fresh one as "not yet valid".
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


class SpecEntry(Protocol):
    """What X.509 building reads of a resolved spec entry (``spec.Entry`` is one). A
    protocol, so that x509/ depends on nothing above the model layer."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...  # "authority" or "certificate"
    @property
    def spec(self) -> Mapping[str, Any]: ...  # the canonical spec: subject, names, profile, URLs...
    @property
    def lifetime(self) -> timedelta: ...
    @property
    def key_type(self) -> KeyType: ...


@dataclass(frozen=True)
class IssuerRef:
    """What a child needs of its issuer: the exact subject and the key identifier."""

    subject: x509.Name
    key_id: bytes
    key_type: KeyType

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, key_type: KeyType) -> IssuerRef:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        return cls(cert.subject, ski, key_type)


def subject_name(subject: list[list[str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(_ATTR[k], v) for k, v in subject])


def key_usage(entry: SpecEntry) -> x509.KeyUsage:
    ca = entry.kind == "authority"
    self_ocsp = ca and entry.spec.get("ocsp_signer") == "self"
    rsa_encipher = entry.key_type.is_rsa and entry.spec.get("profile") in ("server", "peer")
    return x509.KeyUsage(
        digital_signature=not ca or self_ocsp,
        content_commitment=False,
        key_encipherment=rsa_encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def basic_constraints(entry: SpecEntry) -> x509.BasicConstraints:
    if entry.kind == "authority":
        return x509.BasicConstraints(ca=True, path_length=entry.spec.get("path_length"))
    return x509.BasicConstraints(ca=False, path_length=None)


def subject_alt_names(spec: Mapping[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.get("dns", [])]
    names += [x509.IPAddress(ipaddress.ip_address(n)) for n in spec.get("ip", [])]
    names += [x509.UniformResourceIdentifier(n) for n in spec.get("uri", [])]
    names += [x509.RFC822Name(n) for n in spec.get("email", [])]
    return names


def name_constraints(nc: dict[str, Any]) -> x509.NameConstraints:
    def subtrees(prefix: str) -> list[x509.GeneralName] | None:
        out: list[x509.GeneralName] = []
        out += [x509.DNSName(v) for v in nc.get(f"{prefix}_dns", [])]
        out += [x509.IPAddress(ipaddress.ip_network(v)) for v in nc.get(f"{prefix}_ip", [])]
        out += [x509.RFC822Name(v) for v in nc.get(f"{prefix}_email", [])]
        out += [x509.UniformResourceIdentifier(v) for v in nc.get(f"{prefix}_uri", [])]
        return out or None

    return x509.NameConstraints(permitted_subtrees=subtrees("permitted"), excluded_subtrees=subtrees("excluded"))


# an extension and whether it is critical
Extension = tuple[x509.ExtensionType, bool]


def skeleton(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: IssuerRef | None,
    serial: int,
    now: datetime,
    lifetime: timedelta,
    extensions: Sequence[Extension],
) -> x509.CertificateBuilder:
    """What every certificate pkic signs shares: ``serial``, ``subject``, the issuer's
    subject (``issuer`` None: self-signed), the public key, a validity from a minute
    back (``BACKDATE``) to ``now + lifetime``; then ``extensions`` (first the critical
    BasicConstraints and KeyUsage, by RFC 5280 habit), then the subject and authority
    key identifiers (a self-signed one names its own key). Callers add what follows."""
    ski = x509.SubjectKeyIdentifier(key_id(public_key))
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.add_extension(ski, critical=False).add_extension(
        x509.AuthorityKeyIdentifier(issuer.key_id if issuer else ski.digest, None, None), critical=False
    )


def build(
    entry: SpecEntry,
    public_key: CertificatePublicKeyTypes,
    issuer: IssuerRef | None,
    serial: int,
    now: datetime,
) -> x509.CertificateBuilder:
    """The unsigned certificate for ``entry``; ``issuer`` None means self-signed."""
    subject = subject_name(entry.spec["subject"])
    constraints: list[Extension] = [(basic_constraints(entry), True), (key_usage(entry), True)]
    builder = skeleton(subject, public_key, issuer, serial, now, entry.lifetime, constraints)
    builder = issuer_pointers(builder, entry.spec)
    if entry.kind == "certificate":
        builder = builder.add_extension(x509.ExtendedKeyUsage(EKU[entry.spec["profile"]]), critical=False)
        sans = subject_alt_names(entry.spec)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    elif entry.spec.get("name_constraints"):
        builder = builder.add_extension(name_constraints(entry.spec["name_constraints"]), critical=True)
    return builder


def issuer_pointers(builder: x509.CertificateBuilder, spec: Mapping[str, Any]) -> x509.CertificateBuilder:
    """The issuer's CRL distribution point and AIA (OCSP, caIssuers), when it declares them."""
    if spec.get("crl_url"):
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(spec["crl_url"])], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    access = []
    if spec.get("ocsp_url"):
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(spec["ocsp_url"])))
    if spec.get("ca_issuers_url"):
        access.append(
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(spec["ca_issuers_url"]))
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder


# --------------------------------------------------------------------------- revocation

REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str
    invalidity: datetime | None = None


def crl(
    issuer: IssuerRef, number: int, revoked: list[Revoked], this_update: datetime, next_update: datetime
) -> x509.CertificateRevocationListBuilder:
    """An unsigned CRL (RFC 5280 §5): CRL number, AKI; reason codes (never 'unspecified',
    which RFC 5280 says to omit) and invalidity dates for key compromise. No entry's
    revocationDate is later than the CRL's thisUpdate (a CRL cannot know of a revocation
    after it was issued): a later one is clamped to thisUpdate."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(issuer.key_id, None, None), critical=False)
    )
    for r in sorted(revoked, key=lambda r: r.serial):
        entry = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(min(r.revoked_at, this_update))
        if r.reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REASONS[r.reason]), critical=False)
        if r.invalidity is not None:
            entry = entry.add_extension(x509.InvalidityDate(r.invalidity.replace(tzinfo=None)), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder


def responder_certificate(
    authority: SpecEntry,
    authority_subject: list[list[str]],
    public_key: CertificatePublicKeyTypes,
    issuer: IssuerRef,
    serial: int,
    now: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    """A delegated OCSP responder (RFC 6960 §4.2.2.2): id-kp-OCSPSigning, id-pkix-ocsp-nocheck."""
    attrs = [[k, v] for k, v in authority_subject if k != "CN"]
    cn = next((v for k, v in authority_subject if k == "CN"), authority.name)
    attrs.append(["CN", (cn[:49] + " OCSP Responder")])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    extensions: list[Extension] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
        (x509.OCSPNoCheck(), False),
    ]
    return skeleton(subject_name(attrs), public_key, issuer, serial, now, lifetime, extensions)


def ocsp_response(
    issuer: IssuerRef,
    serial: int,
    revoked: Revoked | None,
    this_update: datetime,
    next_update: datetime,
    signer: x509.Certificate,
    delegated: bool,
) -> ocsp.OCSPResponseBuilder:
    """An unsigned, pre-signable OCSP response (RFC 6960): SHA-1 CertID, no nonce,
    responder id by key hash; the delegated responder's certificate is included. The
    revocationTime is never later than thisUpdate (clamped, as on the CRL). producedAt is
    set by cryptography when it signs: the wall clock."""
    import hashlib

    name_hash = hashlib.sha1(issuer.subject.public_bytes()).digest()
    status = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=name_hash,
        issuer_key_hash=issuer.key_id,  # SHA-1 of the issuer's subjectPublicKey: the SKI (RFC 5280 method 1)
        serial_number=serial,
        algorithm=hashes.SHA1(),
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=min(revoked.revoked_at, this_update) if revoked else None,
        revocation_reason=(REASONS[revoked.reason] if revoked and revoked.reason != "unspecified" else None),
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
    if delegated:
        builder = builder.certificates([signer])
    return builder


def csr_builder(entry: SpecEntry) -> x509.CertificateSigningRequestBuilder:
    """A CSR for a leaf in the spec (subject and names; the compiler ignores the rest)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_name(entry.spec["subject"]))
    sans = subject_alt_names(entry.spec)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder
