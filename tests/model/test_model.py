"""compiler/model on its own: key types, durations (names: test_model_names.py; the
journal's steps: test_ops.py; state records: test_state_format.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from hypothesis import given
from hypothesis import strategies as st

from compiler.keys.keystore import generate
from compiler.model.durations import default_refresh_before, default_renew_before, format_duration, parse_duration
from compiler.model.keytype import KeyType, key_id, public_key_sha256


@pytest.mark.parametrize("kt", [k for k in KeyType if k is not KeyType.RSA_4096 and k is not KeyType.RSA_3072])
def test_a_generated_key_is_recognised_as_its_type(kt: KeyType) -> None:
    public = generate(kt).public_key()
    assert KeyType.of(public) is kt
    assert len(public_key_sha256(public)) == 64
    assert key_id(public) == x509.SubjectKeyIdentifier.from_public_key(public).digest


def test_key_types_pkic_does_not_issue_for_are_none() -> None:
    assert KeyType.of(ec.generate_private_key(ec.SECP256K1()).public_key()) is None
    assert KeyType.of(ed448.Ed448PrivateKey.generate().public_key()) is None
    assert KeyType.of(rsa.generate_private_key(65537, 1024).public_key()) is None
    assert KeyType.of(dsa.generate_private_key(2048).public_key()) is None
    assert KeyType.of("not a key") is None


def test_the_signature_hash_matches_the_key() -> None:
    names = {kt: (h.name if (h := kt.signature_hash()) else None) for kt in KeyType}
    assert names == {
        KeyType.ECDSA_P256: "sha256", KeyType.ECDSA_P384: "sha384", KeyType.ECDSA_P521: "sha512", KeyType.ED25519: None,
        KeyType.RSA_2048: "sha256", KeyType.RSA_3072: "sha256", KeyType.RSA_4096: "sha256",
    }
    assert isinstance(KeyType.ECDSA_P384.signature_hash(), hashes.SHA384)


def test_curves_and_sizes() -> None:
    assert isinstance(KeyType.ECDSA_P521.curve, ec.SECP521R1)
    assert KeyType.RSA_3072.rsa_bits == 3072 and KeyType.RSA_3072.curve is None
    assert KeyType.ED25519.curve is None and KeyType.ED25519.rsa_bits is None


@pytest.mark.parametrize(
    ("text", "delta"),
    [("90d", timedelta(days=90)), ("1y", timedelta(days=365)), ("36h", timedelta(hours=36)), ("P1Y2M", timedelta(days=425)),
     ("PT90M", timedelta(minutes=90)), ("2w3d", timedelta(days=17)), (" 7d ", timedelta(days=7))],
)
def test_durations_are_read_as_the_spec_documents(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "0d", "P", "PT", "P1YT", "-1d", "1.5d", "d", "90 days", "9" * 65, "99999y", 90])
def test_anything_else_is_a_clear_value_error(text: object) -> None:
    with pytest.raises(ValueError, match="duration|longer than any X.509 date"):
        parse_duration(text)  # type: ignore[arg-type]


@given(st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=365 * 8000)))
def test_a_formatted_duration_reads_back_to_the_whole_seconds(delta: timedelta) -> None:
    whole = timedelta(seconds=int(delta.total_seconds()))
    assert parse_duration(format_duration(whole)) == whole


def test_default_windows() -> None:
    assert default_renew_before(timedelta(days=90)) == timedelta(days=30)
    assert default_refresh_before(timedelta(days=7)) == timedelta(days=3.5)
