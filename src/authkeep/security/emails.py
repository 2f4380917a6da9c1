"""Email normalisation.

Two forms exist. The *stored* form is what the user typed, trimmed, NFC-normalised, with the
domain lower-cased (and IDNA-checked) by ``email-validator``. The *key* form additionally
folds case and compatibility characters (NFKC + casefold); it is what uniqueness, look-ups and
rate-limit counters use, so ``User@Example.com `` and ``user@example.com`` are one account and
one bucket, and full-width or ligature look-alikes do not buy a second one.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit


class InvalidEmail(ValueError):
    """The address is not a syntactically valid email; the message never repeats it."""


def normalize_email(raw: str) -> str:
    """Return the stored form of ``raw`` or raise :class:`InvalidEmail`."""
    candidate = unicodedata.normalize("NFC", raw.strip())
    if not candidate or len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidEmail("value is not a valid email address")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in candidate):
        # Control and invisible format characters (zero-width joiners, bidi overrides)
        # make two addresses that look identical; refuse them outright.
        raise InvalidEmail("value is not a valid email address: invisible characters")
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidEmail("value is not a valid email address") from None
    return result.normalized


def email_key(stored: str) -> str:
    """Return the case- and compatibility-folded key of an already normalised email."""
    return unicodedata.normalize("NFKC", stored).casefold()


def login_key(raw: str) -> str | None:
    """Key to look an account up by, or None when ``raw`` is not a valid address.

    No account can have an invalid address, so there is nothing to look up; and the raw text
    never reaches a query (PostgreSQL refuses NUL characters with an error, which would
    otherwise turn a junk login into a 500).
    """
    try:
        return email_key(normalize_email(raw))
    except InvalidEmail:
        return None


def email_key_of(raw: str) -> str:
    """Key of any user-supplied string, valid email or not (for counting attempts)."""
    try:
        return email_key(normalize_email(raw))
    except InvalidEmail:
        return email_key(unicodedata.normalize("NFC", raw.strip()))[:MAX_EMAIL_LENGTH]
