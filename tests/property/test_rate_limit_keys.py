"""Property tests (hypothesis) of the rate-limit key functions: who shares a bucket."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authkeep.http.middleware.rate_limit import RateLimitMiddleware
from authkeep.security.emails import email_key_of
from authkeep.security.keys import KeyRing
from authkeep.security.tokens import TokenCodec
from authkeep.services.rate_limits import RateLimits
from authkeep.settings import Settings

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = "property-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def _codec(secret: str) -> TokenCodec:
    return TokenCodec(
        KeyRing.from_secret(secret),
        issuer="authkeep",
        audience="authkeep",
        access_ttl=timedelta(minutes=30),
        refresh_ttl=timedelta(days=14),
    )


CODEC = _codec(SECRET)
FORGER = _codec("another-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
MIDDLEWARE = RateLimitMiddleware(None, services=lambda: None)  # type: ignore[arg-type]
LIMITS = RateLimits.from_settings(
    Settings(env="test", secret_key=SECRET, rate_limit_enabled=False), pepper=b"pepper"
)
ips = st.ip_addresses().map(str)


def _key(authorization: bytes | None, ip: str) -> str:
    headers: list[tuple[bytes, bytes]] = []
    if authorization is not None:
        headers.append((b"authorization", authorization))
    scope: dict[str, Any] = {"headers": headers}
    return MIDDLEWARE._key(scope, {"client_ip": ip}, CODEC)


@SETTINGS
@given(user_id=st.uuids(), ip=ips)
def test_a_valid_token_is_counted_per_user_wherever_it_comes_from(
    user_id: uuid.UUID, ip: str
) -> None:
    token = CODEC.issue_access(user_id=str(user_id), email="u@example.com", session_id="s").token
    assert _key(b"Bearer " + token.encode(), ip) == f"user:{user_id}"


@SETTINGS
@given(user_id=st.uuids(), ip=ips)
def test_a_forged_token_is_counted_per_address(user_id: uuid.UUID, ip: str) -> None:
    # Signed with another key: a client must not be able to pick its own bucket.
    token = FORGER.issue_access(user_id=str(user_id), email="u@example.com", session_id="s").token
    assert _key(b"Bearer " + token.encode(), ip) == f"ip:{ip}"


@SETTINGS
@given(header=st.binary(max_size=300), ip=ips)
def test_any_other_authorization_header_is_counted_per_address(header: bytes, ip: str) -> None:
    assert _key(header, ip) == f"ip:{ip}"
    assert _key(None, ip) == f"ip:{ip}"


@SETTINGS
@given(
    local=st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True),
    domain=st.from_regex(r"[a-z]{1,12}\.(com|org)", fullmatch=True),
    pad=st.text(alphabet=" \t", max_size=3),
)
def test_email_buckets_ignore_case_and_spacing(local: str, domain: str, pad: str) -> None:
    canonical = f"{local}@{domain}"
    variant = pad + f"{local.upper()}@{domain.upper()}" + pad
    assert LIMITS.hashed(email_key_of(variant)) == LIMITS.hashed(email_key_of(canonical))


@SETTINGS
@given(a=st.text(min_size=1, max_size=60), b=st.text(min_size=1, max_size=60))
def test_distinct_email_keys_get_distinct_buckets_that_hide_them(a: str, b: str) -> None:
    assume(email_key_of(a) != email_key_of(b))
    assert LIMITS.hashed(email_key_of(a)) != LIMITS.hashed(email_key_of(b))
    assert email_key_of(a) not in LIMITS.hashed(email_key_of(a)) or len(email_key_of(a)) < 4
