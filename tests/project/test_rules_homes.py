"""Each rule that several layers need has one home (issue 14); these are its sentences.

* a third of the lifetime, half a publication's, and a delegated responder's window
  (``model.durations``);
* which revoked certificates an authority's CRL lists, when a CRL or OCSP response is
  due, when a revoked authority's CRL is final (``state.revocation``);
* whose certificates a chain file and the trust bundle hold (``apply.bundle``);
* where sops keeps the age identity (``settings.age_key_file``);
* what every certificate shares (``x509.build.skeleton``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from compiler import settings
from compiler.apply.bundle import chain_names, root_names
from compiler.model.durations import default_refresh_before, default_renew_before, responder_renew_before
from compiler.model.keytype import KeyType, key_id
from compiler.model.stamp import Stamp
from compiler.state import State
from compiler.state.revocation import crl_entries, crl_retired, crl_status, refresh_point, revoked_by_issuer
from compiler.x509.build import BACKDATE, IssuerRef, build, responder_certificate, skeleton

NOW = datetime(2027, 1, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def at(days: float) -> Stamp:
    """A time as the state holds it once read (compiler/model/stamp.py)."""
    return Stamp.of(NOW + timedelta(days=days))


def rec(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "serial": name.encode().hex(),
        "status": "active",
        "kind": "certificate",
        "issuer": None,
        "key_id": f"k-{name}",
        "issuer_key_id": None,
        "not_before": at(-10),
        "not_after": at(80),
    }
    return {**base, **fields}


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("sentence", "value", "expected"),
    [
        ("a 90-day certificate renews with 30 days left", default_renew_before(90 * DAY), 30 * DAY),
        ("a 7-day CRL is re-signed half-way", default_refresh_before(7 * DAY), timedelta(days=3, hours=12)),
        ("a long-lived responder renews with a third of its lifetime left", responder_renew_before(90 * DAY, 4 * DAY), 30 * DAY),
        ("a responder renews an OCSP lifetime early when that is longer", responder_renew_before(6 * DAY, 4 * DAY), 4 * DAY),
    ],
)
def test_lifetime_fractions(sentence: str, value: timedelta, expected: timedelta) -> None:
    assert value == expected, sentence


# --------------------------------------------------------------------------- CRLs and OCSP


def test_refresh_point_prefers_pki_yaml_then_the_recorded_point_then_half_way() -> None:
    crl = {"this_update": at(-1), "next_update": at(7), "refresh_at": at(5)}
    assert refresh_point(crl, 1 * DAY) == NOW + 6 * DAY
    assert refresh_point(crl) == NOW + 5 * DAY
    del crl["refresh_at"]
    assert refresh_point(crl) == NOW + 3 * DAY  # half of 8 days before the next update


@pytest.mark.parametrize(
    ("sentence", "now", "expected"),
    [
        ("before its refresh point a CRL is fresh", NOW + 4 * DAY, "fresh"),
        ("at its refresh point a CRL is due", NOW + 5 * DAY, "due"),
        ("at its next update a CRL has expired", NOW + 7 * DAY, "expired"),
    ],
)
def test_crl_status(sentence: str, now: datetime, expected: str) -> None:
    crl = {"this_update": at(-1), "next_update": at(7), "refresh_at": at(5)}
    assert crl_status(crl, now) == expected, sentence


def _pki() -> State:
    """root -> ca (key k-ca, rekeyed from k-old) -> web (revoked), api (revoked, by the old key), db."""
    state = State()
    state.certificates = {
        "root": [rec("root", kind="authority")],
        "ca": [rec("ca", kind="authority", issuer="root", issuer_key_id="k-root")],
        "web": [rec("web", issuer="ca", issuer_key_id="k-ca", status="revoked")],
        "api": [rec("api", issuer="ca", issuer_key_id="k-old", status="revoked")],
        "db": [
            rec("db", issuer="ca", issuer_key_id="k-ca"),
            rec("db", serial="0d", issuer="ca", issuer_key_id="k-ca", status="superseded"),
        ],
        "old": [rec("old", issuer="ca", issuer_key_id="k-ca", status="revoked", crl_listed_after_expiry=True)],
    }
    return state


def test_revoked_by_issuer_includes_what_the_plan_revokes() -> None:
    state = _pki()
    assert {n: [r["name"] for r in rs] for n, rs in revoked_by_issuer(state).items()} == {"ca": ["web", "api", "old"]}
    planned = revoked_by_issuer(state, {("db", "0d")})
    assert [r["name"] for r in planned["ca"]] == ["web", "api", "db", "old"]


def test_a_crl_lists_what_its_key_signed_and_not_what_was_dropped_after_expiry() -> None:
    revoked = revoked_by_issuer(_pki())["ca"]
    assert [r["name"] for r in crl_entries(revoked, "k-ca")] == ["web"]
    assert [r["name"] for r in crl_entries(revoked, "k-old")] == ["api"]


def test_a_revoked_authoritys_crl_is_final_once_what_it_signed_expired() -> None:
    state = _pki()
    assert not crl_retired(state, "ca", NOW)  # active
    state.certificates["ca"][0].update(status="revoked", keeps_signing=True)
    assert not crl_retired(state, "ca", NOW)  # db, signed by k-ca, is unexpired
    assert crl_retired(state, "ca", NOW + 81 * DAY)
    assert not crl_retired(state, "gone", NOW)


# --------------------------------------------------------------------------- chains and the trust bundle


def test_a_chain_holds_the_certificate_and_its_issuers_but_not_the_root() -> None:
    state = _pki()
    assert chain_names(state, "db") == ["db", "ca"]
    assert chain_names(state, "ca") == ["ca"]
    assert chain_names(state, "root") == ["root"]
    assert root_names(state) == ["root"]
    state.certificates["root2"] = [rec("root2", kind="authority")]
    assert root_names(state) == ["root", "root2"]


# --------------------------------------------------------------------------- the age identity


def test_age_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "ids.txt"))
    assert settings.age_key_file() == tmp_path / "ids.txt"
    monkeypatch.delenv("SOPS_AGE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert settings.age_key_file() == tmp_path / "cfg" / "sops" / "age" / "keys.txt"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.age_key_file() == tmp_path / ".config" / "sops" / "age" / "keys.txt"


# --------------------------------------------------------------------------- the certificate skeleton


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str
    spec: dict[str, Any]
    lifetime: timedelta
    key_type: KeyType


def _oids(builder: x509.CertificateBuilder) -> list[x509.ObjectIdentifier]:
    """The certificate's extensions in the order they are written in (part of its bytes)."""
    return [e.oid for e in builder.sign(ed25519.Ed25519PrivateKey.generate(), None).extensions]


def test_the_skeleton_every_certificate_shares() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    issuer = IssuerRef(x509.Name([]), b"\x01" * 20, KeyType.ED25519)
    cert = skeleton(x509.Name([]), key, issuer, 7, NOW, 30 * DAY, []).sign(ed25519.Ed25519PrivateKey.generate(), None)
    assert cert.serial_number == 7
    assert cert.not_valid_before_utc == NOW - BACKDATE and cert.not_valid_after_utc == NOW + 30 * DAY
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == key_id(key)
    assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == b"\x01" * 20
    root = skeleton(x509.Name([]), key, None, 8, NOW, DAY, []).sign(ed25519.Ed25519PrivateKey.generate(), None)
    assert root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == key_id(key)


def test_leaves_and_responders_add_only_what_differs_in_an_unchanged_order() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    issuer = IssuerRef(x509.Name([]), b"\x02" * 20, KeyType.ED25519)
    spec = {"subject": [["CN", "web"]], "profile": "server", "dns": ["web.test"], "ocsp_url": "http://ocsp.test"}
    leaf = build(_Entry("web", "certificate", spec, 30 * DAY, KeyType.ED25519), key, issuer, 9, NOW)
    assert _oids(leaf) == [
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ]
    authority = _Entry("ca", "authority", {"subject": [["O", "X"], ["CN", "CA"]]}, DAY, KeyType.ED25519)
    responder = responder_certificate(authority, [["O", "X"], ["CN", "CA"]], key, issuer, 10, NOW, 5 * DAY)
    assert _oids(responder) == [
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.OCSP_NO_CHECK,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ]
    cert = responder.sign(ed25519.Ed25519PrivateKey.generate(), None)
    assert cert.subject.rfc4514_string() == "CN=CA OCSP Responder,O=X"
    assert cert.not_valid_before_utc == NOW - BACKDATE and cert.not_valid_after_utc == NOW + 5 * DAY
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
