"""The email-token primitive: random, URL-safe, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac

from authkeep.security.email_tokens import (
    EmailTokenKey,
    derive_token_key,
    looks_like_token,
    new_token,
    token_hash,
)

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def test_tokens_are_32_random_url_safe_bytes() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) == 43 and looks_like_token(t) for t in tokens)


def test_the_hash_is_keyed_by_a_key_derived_for_this_purpose_only() -> None:
    key = derive_token_key(SECRET)
    assert key != SECRET.encode()
    assert len(key) == 32
    assert derive_token_key(SECRET, b"another purpose") != key
    token = new_token()
    stored = token_hash(key, token)
    assert len(stored) == 64
    # Neither a plain hash nor an HMAC under the raw secret: a stolen table and a captured
    # link cannot be matched without the derived key.
    assert stored != hashlib.sha256(token.encode()).hexdigest()
    assert stored != hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
    assert token_hash(derive_token_key(SECRET + "x"), token) != stored


def test_the_key_refuses_what_cannot_be_a_token_and_hides_itself() -> None:
    key = EmailTokenKey.from_secret(SECRET)
    issued = key.issue()
    assert key.hash(issued.token) == issued.hash
    for junk in ("", "short", "a" * 44, "a" * 42 + "!", "é" * 43, "\x00" * 43):
        assert key.hash(junk) is None
    assert SECRET not in repr(key)
    assert "hidden" in repr(key)
