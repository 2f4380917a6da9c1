"""Email normalisation: one account per address however it is typed, and no look-alikes."""

from __future__ import annotations

import pytest

from authkeep.security.emails import (
    InvalidEmail,
    email_key,
    email_key_of,
    login_key,
    normalize_email,
)


def test_stored_form_trims_and_lowercases_only_the_domain() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM \n") == "Ada.Lovelace@example.com"


@pytest.mark.parametrize(
    "variant",
    [
        "user@example.com",
        "USER@EXAMPLE.COM",
        " User@Example.com ",
        "ｕｓｅｒ@example.com",  # full-width letters: NFKC folds them
    ],
)
def test_variants_share_one_key(variant: str) -> None:
    assert email_key(normalize_email(variant)) == "user@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "us\u200ber@example.com",  # zero-width space
        "user\u202e@example.com",  # right-to-left override
        "user@exa\u200dmple.com",  # zero-width joiner
        "user\x00@example.com",
        "user\n@example.com",
        "",
        "   ",
        "not-an-email",
        "a" * 250 + "@example.com",
    ],
)
def test_invisible_control_and_malformed_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        normalize_email(raw)
    # The message never repeats what was submitted.
    assert raw.strip() not in str(caught.value) or not raw.strip()
    assert login_key(raw) is None


def test_counting_key_folds_even_invalid_input() -> None:
    # Rate-limit buckets: junk is still counted under one bounded key.
    assert email_key_of(" NOT-AN-EMAIL ") == email_key_of("not-an-email")
    assert len(email_key_of("x" * 5000)) == 254
