"""How strongly a session's user proved who they are: ``auth_time``, ``amr`` and ``acr``.

``amr`` lists the methods used (RFC 8176 values): ``pwd`` (a password), ``otp`` (a TOTP
code), ``rc`` (a recovery code, authkeep's own value: a one-time secret kept on paper),
``hwk`` (a passkey, a proof of possession of a key), ``user`` (the passkey's user
verification: a PIN or biometric on the device). ``acr`` is the NIST SP 800-63B level it
reaches: ``aal2`` with two distinct factors or a user-verified passkey (itself
multi-factor), else ``aal1``.

Access tokens carry the three as they were when the token was minted, from the session row
(sign-in or the last step-up), so an elevation ends by itself when its age passes the limit a
route asks for: nothing needs to revoke it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["AAL1", "AAL2", "AMR_VALUES", "AuthContext", "acr_of", "parse_amr"]

AAL1: Literal["aal1"] = "aal1"
AAL2: Literal["aal2"] = "aal2"
AMR_VALUES = frozenset({"pwd", "otp", "rc", "hwk", "user", "swk"})
# Methods that prove possession of something: with a password they make two factors.
_POSSESSION = frozenset({"otp", "rc", "hwk", "swk"})


def acr_of(amr: Iterable[str]) -> Literal["aal1", "aal2"]:
    """The assurance level that the methods ``amr`` reach."""
    methods = set(amr)
    if "hwk" in methods and "user" in methods:
        return AAL2
    if "pwd" in methods and methods & _POSSESSION:
        return AAL2
    return AAL1


def parse_amr(stored: str) -> tuple[str, ...]:
    """The methods of a stored, comma-separated ``amr`` (unknown values dropped)."""
    return tuple(m for m in stored.split(",") if m in AMR_VALUES) or ("pwd",)


@dataclass(frozen=True, slots=True)
class AuthContext:
    """When and how a session's user last authenticated."""

    auth_time: datetime
    amr: tuple[str, ...] = ("pwd",)

    @property
    def acr(self) -> Literal["aal1", "aal2"]:
        """The assurance level of :attr:`amr`."""
        return acr_of(self.amr)

    @property
    def stored_amr(self) -> str:
        """The comma-separated form kept in the session row."""
        return ",".join(self.amr)
