"""The plan's vocabulary: what a change does, why, and what gets (re-)signed.

Each code is a ``StrEnum`` whose value is the string a plan has always carried (plan
JSON, the markdown plan, commit messages and state records are unchanged by the enums),
and each member carries a one-line ``description``: the reference tables in the docs
are generated from these, so the code is the one place a reason is explained.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class Code(StrEnum):
    """A code and its one-line description (``Member = "value", "description"``)."""

    description: str

    def __new__(cls, value: str, description: str = "") -> Self:
        # the default lets mypy accept a lookup by value (``Action("issue")``), which
        # never reaches this method
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member


class Action(Code):
    """What a change does to one certificate. A rename is not a change: it is
    ``Plan.moves`` (state and files carried over, nothing signed)."""

    ISSUE = "issue", "a first certificate for an entry not issued yet"
    REISSUE = "reissue", "a new certificate because the spec, the key or the issuer changed"
    RENEW = "renew", "a new certificate with the same content, because time passed"
    REVOKE = "revoke", "the certificate goes on its issuer's CRL (and OCSP says revoked)"


class KeyDisposition(Code):
    """Where the key of an issued, reissued or renewed certificate comes from."""

    NEW = "new", "pkic makes a new key"
    KEEP = "keep", "the current key is kept"
    EXTERNAL = "external", "the key stays on its host: the certificate is issued from a CSR"


class ReasonCode(Code):
    """Why a certificate is issued, reissued, renewed or revoked. A change carries every
    reason that applies, not only the first."""

    NEW = "new", "not issued yet"
    KIND_CHANGED = "kind_changed", "the entry moved between authorities and certificates"
    ISSUER_CHANGED = "issuer_changed", "the entry names another issuer"
    SUBJECT_CHANGED = "subject_changed", "the subject changed"
    KEY_CHANGED = "key_changed", "the key type changed (a new key)"
    PROFILE_CHANGED = "profile_changed", "the profile (key usages, extended key usages) changed"
    DNS_CHANGED = "dns_changed", "DNS names were added or removed"
    IP_CHANGED = "ip_changed", "IP addresses were added or removed"
    URI_CHANGED = "uri_changed", "URIs were added or removed"
    EMAIL_CHANGED = "email_changed", "email addresses were added or removed"
    LIFETIME_CHANGED = "lifetime_changed", "the lifetime changed"
    PATH_LENGTH_CHANGED = "path_length_changed", "the authority's path length constraint changed"
    NAME_CONSTRAINTS_CHANGED = "name_constraints_changed", "the authority's name constraints changed"
    OCSP_SIGNER_CHANGED = "ocsp_signer_changed", "the authority's OCSP signer (self or delegated) changed"
    CRL_URL_CHANGED = "crl_url_changed", "the CRL distribution point changed"
    OCSP_URL_CHANGED = "ocsp_url_changed", "the OCSP responder URL changed"
    CA_ISSUERS_URL_CHANGED = "ca_issuers_url_changed", "the CA issuers URL changed"
    CSR_KEY_CHANGED = "csr_key_changed", "the key of the CSR changed, or the entry started or stopped using a CSR"
    REKEY_REQUESTED = "rekey_requested", "the rekey counter was bumped: a new key"
    KEY_COMPROMISED = "key_compromised", "the key was declared compromised: a new key, and the certificates with it revoked"
    ISSUER_REISSUED = "issuer_reissued", "the issuer gets a new key or subject (blast radius)"
    ISSUER_KEY_MISMATCH = "issuer_key_mismatch", "signed by a key that is no longer the issuer's"
    EXPIRED = "expired", "past notAfter"
    RENEWAL_DUE = "renewal_due", "inside its renewal window (renew_before)"
    OUTLIVED_BY_CHILD = "outlived_by_child", "a child being issued would outlive it: renewed first, same key"
    REVOKE_REQUESTED = "revoke_requested", "revoked in pki.yaml (revoke:)"
    ISSUER_REVOKED = "issuer_revoked", "below a revoked authority: revoked with it"
    REMOVED = "removed", "no longer in pki.yaml: revoked"


class PublicationKind(Code):
    """Revocation information pkic signs besides certificates."""

    CRL = "crl", "an authority's certificate revocation list"
    OCSP = "ocsp", "a pre-signed OCSP response for one certificate"
    RESPONDER = "responder", "an authority's delegated OCSP responder certificate (and its key)"


class PublicationCode(Code):
    """Why a CRL, an OCSP response or a responder certificate is (re-)signed or removed,
    or (the last four) why a published file is renamed or removed with nothing signed."""

    NEW = "new", "none signed yet (or none published)"
    AUTHORITY_REKEYED = "authority_rekeyed", "the authority signs with a new key"
    AUTHORITY_REISSUED = "authority_reissued", "the authority has a new subject: its responder certificate names it"
    REVOCATIONS = "revocations", "certificates were revoked since the CRL was signed"
    EXPIRED = "expired", "past its next update (a responder: past notAfter)"
    DUE = "due", "inside its refresh window"
    FINAL = "final", "a compromised authority's last one, valid until what it covers expires (its key is used no more)"
    REVOKED_AUTHORITY = "revoked_authority", "the authority is revoked: it signs on, with its own key, while what it signed is unexpired"
    DIR_CHANGED = "dir_changed", "publish.ocsp_dir changed: the response moves"
    STATUS_CHANGED = "status_changed", "the certificate's status (good or revoked) changed"
    SIGNER_CHANGED = "signer_changed", "another key signs the response now (self or delegated)"
    OCSP_OFF = "ocsp_off", "publish.ocsp is false: the response is removed, the responder retired"
    # cleanup: files apply renames or removes, nothing signed (Plan.cleanup)
    MOVED_RESPONSE_RENAMED = "moved_response_renamed", "the certificate was renamed (moved:): its published response follows it"
    REPLACED_RESPONSE_RENAMED = (
        "replaced_response_renamed",
        "the certificate is replaced: its response moves to name.serial.der, the new one takes name.der",
    )
    EXPIRED_RESPONSE_REMOVED = "expired_response_removed", "the certificate expired: its response leaves out/ (the state keeps its record)"
    CRL_OF_REMOVED_AUTHORITY = (
        "crl_of_removed_authority",
        "the authority no longer signs (removed from pki.yaml): its CRL files leave out/ (the state keeps its number)",
    )
