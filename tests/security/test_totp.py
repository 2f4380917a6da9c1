"""The TOTP primitive (RFC 6238 on pyotp) and the recovery-code primitive."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from authkeep.security.key_ring import SecretRing
from authkeep.security.recovery_codes import (
    CODE_COUNT,
    code_hash,
    code_hashes,
    new_codes,
    normalize,
)
from authkeep.security.totp import (
    code_at,
    matching_step,
    new_secret,
    normalize_code,
    otpauth_uri,
    qr_svg,
    step_of,
)

# The middle of a step: a test's "now" is never near a boundary.
NOW = datetime(2026, 12, 1, 12, 0, 15, tzinfo=UTC)


def test_codes_are_rfc_6238_sha1_30_seconds_6_digits() -> None:
    # RFC 6238 appendix B's SHA-1 test vector (8 digits there; the last 6 here).
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert code_at(secret, 59 // 30) == "287082"
    assert code_at(secret, 1111111109 // 30) == "081804"
    assert code_at(secret, step_of(NOW)) == pyotp.TOTP(secret).at(NOW)


def test_a_secret_is_160_random_bits_of_base32() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(re.fullmatch(r"[A-Z2-7]{32}", s) for s in secrets)


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)]
)
def test_one_step_of_skew_either_way_and_no_more(offset: int, accepted: bool) -> None:
    secret = new_secret()
    step = step_of(NOW) + offset
    code = code_at(secret, step)
    found = matching_step(secret, code, NOW)
    if accepted:
        assert found == step
    else:
        # Unless the code happens to repeat within the window (1 in 300,000).
        assert found is None or code_at(secret, found) == code


def test_the_matching_step_is_returned_for_replay_rejection() -> None:
    secret = new_secret()
    later = NOW + timedelta(seconds=30)
    assert matching_step(secret, code_at(secret, step_of(later)), later) == step_of(NOW) + 1


@pytest.mark.parametrize(
    "typed", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12345\n", "123-456", "０１２３４５"]
)
def test_anything_but_six_ascii_digits_matches_nothing(typed: str) -> None:
    assert normalize_code(typed) is None
    assert matching_step(new_secret(), typed, NOW) is None


def test_spaces_between_digits_are_allowed() -> None:
    secret = new_secret()
    code = code_at(secret, step_of(NOW))
    assert matching_step(secret, f"{code[:3]} {code[3:]}", NOW) == step_of(NOW)


def test_the_otpauth_uri_names_the_issuer_and_account() -> None:
    secret = new_secret()
    uri = otpauth_uri(secret, account="alice@example.com", issuer="Acme ID")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth"
    assert parsed.netloc == "totp"
    assert parsed.path == "/Acme%20ID:alice%40example.com"
    query = parse_qs(parsed.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Acme ID"]
    assert pyotp.parse_uri(uri).now() == pyotp.TOTP(secret).now()


def test_the_qr_code_is_a_standalone_svg() -> None:
    svg = qr_svg("otpauth://totp/Acme:alice?secret=JBSWY3DPEHPK3PXP&issuer=Acme")
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "<script" not in svg


# -- recovery codes ------------------------------------------------------------------------


def test_a_set_is_ten_distinct_readable_codes_of_60_bits() -> None:
    codes = new_codes()
    assert len(codes) == CODE_COUNT == 10
    assert len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", c) for c in codes)
    # 12 characters of a 32-letter alphabet: 60 bits.
    assert 12 * 5 >= 60


@pytest.mark.parametrize(
    "typed", ["ABCD-EFGH-IJKL", "abcd efgh ijkl", " abcdefghijkl ", "abcd--efgh\tijkl"]
)
def test_case_dashes_and_spaces_do_not_matter(typed: str) -> None:
    assert normalize(typed) == "abcdefghijkl"


@pytest.mark.parametrize(
    "typed", ["", "abcd-efgh-ijk", "abcd-efgh-ijklm", "abcd-efgh-ijk0", "ａbcd-efgh-ijkl"]
)
def test_anything_else_is_no_code(typed: str) -> None:
    assert normalize(typed) is None
    assert code_hashes(SecretRing.from_secrets("s" * 40), uuid.uuid4(), typed) == []


def test_hashes_are_keyed_bound_to_the_user_and_checked_under_every_key() -> None:
    old = SecretRing.from_secrets("old-secret-" + "x" * 40)
    rotated = SecretRing.from_secrets("new-secret-" + "y" * 40, ["old-secret-" + "x" * 40])
    user, other = uuid.uuid4(), uuid.uuid4()
    stored = code_hash(old, user, "abcd-efgh-ijkl")
    assert "abcdefghijkl" not in stored
    assert stored in code_hashes(rotated, user, "ABCD EFGH IJKL")
    assert stored not in code_hashes(rotated, other, "abcd-efgh-ijkl")
    assert code_hash(rotated, user, "abcd-efgh-ijkl") != stored
