"""NIST SP 800-63B password policy: length, common passwords, the user's own email, and no
composition rules."""

from __future__ import annotations

import pytest

from authkeep.security.password_policy import (
    PasswordRejected,
    check_password,
    common_passwords,
)


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # all lower case, no digit, no symbol
        "zqxwvmpl",  # exactly 8 characters
        "ALLUPPERCASEPASSPHRASE",
        "48213907561",  # digits only
        "Ω≈ç√∫˜µ≤≥÷ unicode too",
        "x" * 1024,  # the longest allowed
    ],
)
def test_no_composition_rules(password: str) -> None:
    check_password(password, email="alice@example.com")


@pytest.mark.parametrize("password", ["", "a", "seven77", "é" * 7])
def test_shorter_than_8_characters_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="at least 8 characters"):
        check_password(password)


def test_longer_than_1024_characters_is_rejected() -> None:
    with pytest.raises(PasswordRejected, match="at most 1024 characters"):
        check_password("x" * 1025)


@pytest.mark.parametrize(
    "password", ["password1", "PASSWORD1", "Password123", "iloveyou", "12345678", "qwertyuiop"]
)
def test_common_passwords_are_rejected_in_any_case(password: str) -> None:
    with pytest.raises(PasswordRejected, match="too common") as caught:
        check_password(password)
    assert password not in str(caught.value)


@pytest.mark.parametrize(
    "password",
    ["alice.liddell@example.com", "ALICE.LIDDELL@EXAMPLE.COM", "Alice.Liddell", "alice.liddell"],
)
def test_the_users_own_email_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="must not be your email") as caught:
        check_password(password, email="alice.liddell@example.com")
    assert password not in str(caught.value)


def test_the_email_rule_applies_only_with_an_email() -> None:
    check_password("alice.liddell@example.com")
    check_password("alice.liddell@example.com", email="bob@example.com")


def test_the_shipped_list_has_at_least_10000_entries() -> None:
    entries = common_passwords()
    assert len(entries) >= 10_000
    assert {"123456", "password", "qwerty", "letmein1", "trustno1"} <= entries
    assert all(entry == entry.lower() for entry in entries)
