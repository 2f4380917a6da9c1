"""Password policy after NIST SP 800-63B §5.1.1.2.

Length between 8 and 1024 characters, no composition rules, and refusal of passwords found in
a list of commonly used ones (19,640 entries) or equal to the account's email (or its local
part). Messages never contain the password.
"""

from __future__ import annotations

import gzip
import unicodedata
from functools import lru_cache
from importlib import resources

MIN_LENGTH = 8
# Long enough for any passphrase, short enough that hashing it cannot be used for a
# denial of service; argon2 has no 72-byte truncation, so all of it counts.
MAX_LENGTH = 1024


class PasswordRejected(ValueError):
    """The password breaks the policy; ``str()`` is safe to show the user."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    data = resources.files("authkeep.security").joinpath("data/common-passwords.txt.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip().lower() for line in lines if line.strip())


def normalize_password(password: str) -> str:
    """NFKC form, as 800-63B recommends, so one password typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


def check_password(password: str, *, email: str | None = None) -> None:
    """Raise :class:`PasswordRejected` when ``password`` breaks the policy."""
    normalized = normalize_password(password)
    length = len(normalized)
    if length < MIN_LENGTH:
        raise PasswordRejected(f"Password must be at least {MIN_LENGTH} characters long")
    if length > MAX_LENGTH:
        raise PasswordRejected(f"Password must be at most {MAX_LENGTH} characters long")
    folded = normalized.casefold()
    if folded in common_passwords():
        raise PasswordRejected("Password is too common; choose a less predictable one")
    if email:
        email_folded = unicodedata.normalize("NFKC", email).strip().casefold()
        local = email_folded.split("@", 1)[0]
        if folded in {email_folded, local}:
            raise PasswordRejected("Password must not be your email address")
