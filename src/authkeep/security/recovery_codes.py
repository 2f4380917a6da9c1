"""Recovery codes: the single-use second factor a user keeps on paper for a lost phone.

Rules this module enforces:

* A set is :data:`CODE_COUNT` (10) codes, each 12 characters of lower-case base32
  (RFC 4648's alphabet: no 0/1/8/9 to confuse with o/l/b/g), shown as ``xxxx-xxxx-xxxx``:
  60 random bits from :mod:`secrets` per code. Online, behind the MFA rate limit, guessing
  one of ten such codes is hopeless (2**60 / 10 tries).
* Input is normalised before anything else: case, dashes and white space do not matter
  (``ABCD EFGH-ijkl`` is ``abcdefghijkl``). Anything that is then not 12 characters of the
  alphabet is no code, and reaches no query.
* Only keyed hashes are stored (HMAC-SHA256 under a key derived from the server secret for
  this purpose, every key of the ring tried on read, like email links), over the user's id
  and the code: a copy of the table yields no working code, and a row copied to another user
  matches nothing.
"""

from __future__ import annotations

import re
import secrets
import uuid

from authkeep.security.key_ring import SecretRing

__all__ = [
    "ALPHABET",
    "CODE_COUNT",
    "code_hash",
    "code_hashes",
    "new_code",
    "new_codes",
    "normalize",
]

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
CODE_COUNT = 10
_GROUPS = 3
_GROUP_CHARS = 4
_CODE = re.compile(f"[{ALPHABET}]{{{_GROUPS * _GROUP_CHARS}}}")
_SEPARATORS = re.compile(r"[\s-]+")


def new_code() -> str:
    """One fresh code, ``xxxx-xxxx-xxxx``."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(_GROUPS * _GROUP_CHARS))
    return "-".join(
        chars[i : i + _GROUP_CHARS] for i in range(0, _GROUPS * _GROUP_CHARS, _GROUP_CHARS)
    )


def new_codes(count: int = CODE_COUNT) -> list[str]:
    """A fresh set of ``count`` distinct codes."""
    codes: list[str] = []
    while len(codes) < count:
        code = new_code()
        if code not in codes:
            codes.append(code)
    return codes


def normalize(code: str) -> str | None:
    """The canonical form of a typed code (no separators, lower case), or None when it
    cannot be a recovery code."""
    compact = _SEPARATORS.sub("", code).lower()
    return compact if _CODE.fullmatch(compact) else None


def _message(user_id: uuid.UUID, canonical: str) -> bytes:
    return user_id.bytes + canonical.encode("ascii")


def code_hash(ring: SecretRing, user_id: uuid.UUID, code: str) -> str:
    """The stored form of ``user_id``'s ``code`` under the ring's newest key.
    ValueError when ``code`` is no recovery code."""
    canonical = normalize(code)
    if canonical is None:
        raise ValueError("not a recovery code")
    return ring.mac(_message(user_id, canonical))


def code_hashes(ring: SecretRing, user_id: uuid.UUID, code: str) -> list[str]:
    """Every hash ``code`` of ``user_id`` may be stored under (newest key first); none when
    ``code`` cannot be a recovery code."""
    canonical = normalize(code)
    if canonical is None:
        return []
    return ring.macs(_message(user_id, canonical))
