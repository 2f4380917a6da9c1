"""Every second factor of a user at once: what a platform admin's MFA reset removes.

The per-factor tables have their own repositories (``db/mfa.py``, ``db/webauthn.py``); this
module only deletes across all of them, in the caller's transaction, for a user who lost
their factors.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.models import (
    MfaLoginChallenge,
    RecoveryCode,
    TotpFactor,
    WebAuthnChallenge,
    WebAuthnCredential,
)


@dataclass(frozen=True, slots=True)
class FactorsRemoved:
    """How many rows of each kind :func:`delete_all_factors` removed."""

    totp: int
    recovery_codes: int
    passkeys: int
    challenges: int

    def as_details(self) -> dict[str, int]:
        """The counts, for an audit row (passkeys under ``webauthn``: the audit log redacts
        any key that looks like ``pass…``)."""
        return {
            "totp": self.totp,
            "recovery_codes": self.recovery_codes,
            "webauthn": self.passkeys,
            "challenges": self.challenges,
        }


async def delete_all_factors(conn: AsyncConnection, user_id: uuid.UUID) -> FactorsRemoved:
    """Delete the user's TOTP factor (confirmed or pending), recovery codes, passkeys and
    pending MFA challenges (logins waiting for their second step, passkey ceremonies), in the
    caller's transaction. The caller recomputes ``users.mfa_enabled`` afterwards
    (:func:`authkeep.db.users.refresh_mfa_enabled`)."""

    async def gone(table: type[TotpFactor | RecoveryCode | WebAuthnCredential]) -> int:
        result = await conn.execute(delete(table).where(table.user_id == user_id))
        return int(result.rowcount)

    totp = await gone(TotpFactor)
    codes = await gone(RecoveryCode)
    passkeys = await gone(WebAuthnCredential)
    logins = await conn.execute(
        delete(MfaLoginChallenge).where(MfaLoginChallenge.user_id == user_id)
    )
    ceremonies = await conn.execute(
        delete(WebAuthnChallenge).where(WebAuthnChallenge.user_id == user_id)
    )
    return FactorsRemoved(totp, codes, passkeys, int(logins.rowcount) + int(ceremonies.rowcount))
