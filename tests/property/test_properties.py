"""Property tests (hypothesis): invariants that must hold for every input, not just examples."""

from __future__ import annotations

import string
import unicodedata
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authkeep.errors import InvalidToken
from authkeep.security import password_policy
from authkeep.security.emails import InvalidEmail, email_key, email_key_of, normalize_email
from authkeep.security.keys import KeyRing
from authkeep.security.password_policy import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordRejected,
    check_password,
    common_passwords,
)
from authkeep.security.tokens import TokenCodec

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = TokenCodec(
    KeyRing.from_secret("property-secret-0123456789-abcdefghijklmnopqrstuvwxyz"),
    issuer="authkeep",
    audience="authkeep",
    access_ttl=timedelta(minutes=30),
    refresh_ttl=timedelta(days=14),
)

local_parts = st.text(
    alphabet=string.ascii_letters + string.digits + "._+-", min_size=1, max_size=30
)
domains = st.from_regex(r"[a-z][a-z0-9]{0,15}\.(com|org|example|io)", fullmatch=True)


@SETTINGS
@given(
    user_id=st.uuids(),
    session_id=st.uuids(),
    email=st.emails(),
    org=st.none() | st.uuids(),
    role=st.sampled_from(["admin", "editor", "viewer"]),
)
def test_access_token_round_trip(
    user_id: uuid.UUID, session_id: uuid.UUID, email: str, org: uuid.UUID | None, role: str
) -> None:
    issued = CODEC.issue_access(
        user_id=str(user_id),
        email=email,
        session_id=str(session_id),
        org_id=str(org) if org else None,
        role=role if org else None,
    )
    claims = CODEC.decode_access(issued.token)
    assert claims.user_id == str(user_id)
    assert claims.session_id == str(session_id)
    assert claims.email == email
    assert claims.token_id == issued.token_id
    assert claims.org_id == (str(org) if org else None)
    assert claims.role == (role if org else None)
    # ... and it is never a refresh token.
    with pytest.raises(InvalidToken):
        CODEC.decode_refresh(issued.token)


@SETTINGS
@given(user_id=st.uuids(), session_id=st.uuids())
def test_refresh_token_is_deterministic_and_round_trips(
    user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    issued = CODEC.new_refresh(user_id=str(user_id), session_id=str(session_id))
    again = CODEC.encode_refresh(
        user_id=str(user_id),
        session_id=str(session_id),
        token_id=issued.token_id,
        issued_at=issued.issued_at,
        expires_at=issued.expires_at,
    )
    assert again == issued.token
    claims = CODEC.decode_refresh(issued.token)
    assert (claims.user_id, claims.session_id, claims.token_id) == (
        str(user_id),
        str(session_id),
        issued.token_id,
    )
    with pytest.raises(InvalidToken):
        CODEC.decode_access(issued.token)


@SETTINGS
@given(data=st.data(), position=st.integers(min_value=0))
def test_any_single_character_change_invalidates_a_token(
    data: st.DataObject, position: int
) -> None:
    token = CODEC.issue_access(
        user_id=str(uuid.uuid4()), email="p@example.com", session_id=str(uuid.uuid4())
    ).token
    index = position % len(token)
    replacement = data.draw(st.characters(codec="ascii"))
    assume(replacement != token[index])
    tampered = token[:index] + replacement + token[index + 1 :]
    try:
        CODEC.decode_access(tampered)
    except InvalidToken:
        return
    # base64url's last character of a segment can carry unused bits: a change there may decode
    # to the same bytes. Anything accepted must then be byte-identical in meaning.
    assert CODEC.decode_access(tampered) == CODEC.decode_access(token)


@SETTINGS
@given(garbage=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_decoding_garbage_only_ever_raises_invalid_token(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        CODEC.decode_access(garbage)


@SETTINGS
@given(
    local=local_parts,
    domain=domains,
    pad_left=st.text(" \t", max_size=3),
    pad_right=st.text(" \t\n", max_size=3),
)
def test_email_key_ignores_case_and_surrounding_space(
    local: str, domain: str, pad_left: str, pad_right: str
) -> None:
    assume(not local.startswith(".") and not local.endswith(".") and ".." not in local)
    address = f"{local}@{domain}"
    try:
        canonical = email_key(normalize_email(address))
    except InvalidEmail:
        return
    assert email_key_of(pad_left + address.upper() + pad_right) == canonical
    assert email_key_of(address.swapcase()) == canonical


@SETTINGS
@given(local=local_parts, domain=domains)
def test_normalisation_is_idempotent_and_lowercases_the_domain(local: str, domain: str) -> None:
    assume(not local.startswith(".") and not local.endswith(".") and ".." not in local)
    try:
        stored = normalize_email(f"{local}@{domain.upper()}")
    except InvalidEmail:
        return
    assert normalize_email(stored) == stored
    assert stored.split("@")[1] == domain.lower()


@SETTINGS
@given(text=st.text(max_size=80))
def test_normalize_email_never_raises_anything_but_invalid_email(text: str) -> None:
    message = None
    try:
        stored = normalize_email(text)
    except InvalidEmail as exc:
        message = str(exc)
    if message is not None:
        # The message never repeats the input (it may be a password typed in the wrong box).
        assert len(text.strip()) < 3 or text.strip() not in message
        return
    assert not any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in stored)


_FIXED_REFUSALS = {
    password_policy.TOO_COMMON,
    password_policy.HAS_EMAIL,
    password_policy.HAS_NAME,
    password_policy.HAS_PRODUCT,
}


@SETTINGS
@given(password=st.text(min_size=MIN_LENGTH, max_size=120), name=st.text(max_size=40))
def test_policy_accepts_or_refuses_any_text_in_fixed_words(password: str, name: str) -> None:
    # No composition rule, no crash (zxcvbn's included), and a refusal worded from fixed
    # text only: it can never carry the password.
    normalized = unicodedata.normalize("NFKC", password)
    assume(MIN_LENGTH <= len(normalized) <= MAX_LENGTH)
    try:
        check_password(password, email="alice@example.com", full_name=name)
    except PasswordRejected as exc:
        message = str(exc)
        assert message in _FIXED_REFUSALS or (
            message.startswith("Password is too easy to guess.")
            and message.endswith(password_policy.ADVICE)
        ), message


@SETTINGS
@given(password=st.text(max_size=MIN_LENGTH - 1))
def test_policy_rejects_short_passwords_without_echoing_them(password: str) -> None:
    assume(len(unicodedata.normalize("NFKC", password)) < MIN_LENGTH)
    with pytest.raises(PasswordRejected) as excinfo:
        check_password(password)
    if len(password.strip()) >= 4:  # shorter strings occur in any sentence by chance
        assert password not in str(excinfo.value)


@SETTINGS
@given(common=st.sampled_from(sorted(common_passwords())), upper=st.booleans())
def test_policy_rejects_every_common_password_in_any_case(common: str, upper: bool) -> None:
    candidate = common.upper() if upper else common
    with pytest.raises(PasswordRejected):
        check_password(candidate)


@SETTINGS
@given(local=st.text(alphabet=string.ascii_lowercase, min_size=8, max_size=20), domain=domains)
def test_policy_rejects_the_users_own_email(local: str, domain: str) -> None:
    email = f"{local}@{domain}"
    with pytest.raises(PasswordRejected):
        check_password(email.upper(), email=email)
    with pytest.raises(PasswordRejected):
        check_password(local, email=email)
