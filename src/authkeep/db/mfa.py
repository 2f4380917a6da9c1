"""Queries on ``mfa_totp``, ``mfa_recovery_codes`` and ``mfa_login_challenges``.

Every decision that two requests could race for is one conditional statement, so it holds on
any number of workers without a lock:

* a TOTP step is accepted once: ``UPDATE mfa_totp SET last_step = :s WHERE user_id = :u AND
  confirmed_at IS NOT NULL AND last_step < :s`` (:func:`accept_step`) — of concurrent
  submissions of one code exactly one matches the row; a replayed or older code never does;
* a recovery code is spent once: ``UPDATE … SET used_at = :now WHERE user_id = :u AND
  code_hash IN (…) AND used_at IS NULL`` (:func:`use_recovery_code`);
* a login challenge finishes once (:func:`finish_challenge`) and counts its wrong codes with
  an atomic increment that stops at the limit (:func:`fail_challenge`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.models import MfaLoginChallenge, RecoveryCode, TotpFactor, WebAuthnCredential

__all__ = [
    "ChallengeRecord",
    "FactorExists",
    "TotpRecord",
    "accept_step",
    "confirm_totp",
    "count_unused_codes",
    "delete_pending_totp",
    "delete_recovery_codes",
    "delete_totp",
    "fail_challenge",
    "find_live_challenge",
    "finish_challenge",
    "get_totp",
    "insert_challenge",
    "insert_totp",
    "methods_of",
    "replace_recovery_codes",
    "use_recovery_code",
]


class FactorExists(Exception):
    """The user already has a TOTP row (a concurrent setup inserted it first)."""


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A TOTP factor row: the sealed secret, the newest accepted step, when confirmed."""

    id: uuid.UUID
    user_id: uuid.UUID
    secret_sealed: str
    last_step: int
    created_at: datetime
    confirmed_at: datetime | None

    @property
    def confirmed(self) -> bool:
        """Whether a code confirmed it (only then does it count as a factor)."""
        return self.confirmed_at is not None


_TOTP_COLUMNS = (
    TotpFactor.id,
    TotpFactor.user_id,
    TotpFactor.secret_sealed,
    TotpFactor.last_step,
    TotpFactor.created_at,
    TotpFactor.confirmed_at,
)


async def get_totp(conn: AsyncConnection, user_id: uuid.UUID) -> TotpRecord | None:
    """The user's TOTP row, confirmed or pending, if any."""
    row = (await conn.execute(select(*_TOTP_COLUMNS).where(TotpFactor.user_id == user_id))).first()
    return TotpRecord(*row) if row else None


async def delete_pending_totp(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """Delete the user's unconfirmed TOTP row (a setup never finished); returns how many."""
    result = await conn.execute(
        delete(TotpFactor).where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_(None))
    )
    return int(result.rowcount or 0)


async def insert_totp(
    conn: AsyncConnection,
    *,
    factor_id: uuid.UUID,
    user_id: uuid.UUID,
    secret_sealed: str,
    now: datetime,
) -> None:
    """Store a new, unconfirmed factor; :class:`FactorExists` when the user has a row."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(TotpFactor).values(
                    id=factor_id,
                    user_id=user_id,
                    secret_sealed=secret_sealed,
                    last_step=0,
                    created_at=now,
                    confirmed_at=None,
                )
            )
    except IntegrityError:
        raise FactorExists() from None


async def confirm_totp(
    conn: AsyncConnection, factor_id: uuid.UUID, step: int, now: datetime
) -> bool:
    """Confirm the pending factor ``factor_id`` with the code of time step ``step``, which
    becomes its ``last_step``: the enrolment code can never be accepted again. False when
    the factor is gone or already confirmed (a concurrent confirmation won)."""
    result = await conn.execute(
        update(TotpFactor)
        .where(TotpFactor.id == factor_id, TotpFactor.confirmed_at.is_(None))
        .values(confirmed_at=now, last_step=step)
    )
    return result.rowcount == 1


async def accept_step(conn: AsyncConnection, user_id: uuid.UUID, step: int) -> bool:
    """Accept time step ``step`` for the user's confirmed factor if it is newer than every
    step accepted before; one atomic statement (see the module docstring)."""
    result = await conn.execute(
        update(TotpFactor)
        .where(
            TotpFactor.user_id == user_id,
            TotpFactor.confirmed_at.is_not(None),
            TotpFactor.last_step < step,
        )
        .values(last_step=step)
    )
    return result.rowcount == 1


async def delete_totp(conn: AsyncConnection, user_id: uuid.UUID) -> bool:
    """Delete the user's TOTP row, confirmed or not; False when there was none."""
    result = await conn.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    return bool(result.rowcount)


# -- recovery codes ----------------------------------------------------------------------


async def replace_recovery_codes(
    conn: AsyncConnection, user_id: uuid.UUID, hashes: Sequence[str], now: datetime
) -> None:
    """Void the user's codes (used or not) and store the hashes of a new set."""
    await delete_recovery_codes(conn, user_id)
    await conn.execute(
        insert(RecoveryCode),
        [
            {"id": uuid.uuid4(), "user_id": user_id, "code_hash": h, "created_at": now}
            for h in hashes
        ],
    )


async def delete_recovery_codes(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """Delete every recovery code of the user; returns how many there were."""
    result = await conn.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    return int(result.rowcount or 0)


async def use_recovery_code(
    conn: AsyncConnection, user_id: uuid.UUID, hashes: Sequence[str], now: datetime
) -> bool:
    """Spend the user's unused code stored under one of ``hashes`` (one code under each key
    of the ring); atomic, so a code is spent once however many requests race for it."""
    if not hashes:
        return False
    result = await conn.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash.in_(list(hashes)),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return bool(result.rowcount)


async def count_unused_codes(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """How many of the user's recovery codes are still unused."""
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            )
        ).scalar_one()
    )


async def methods_of(conn: AsyncConnection, user_id: uuid.UUID) -> list[str]:
    """The second factors the user can finish a login with, in one query: ``totp`` (a
    confirmed factor), ``recovery_code`` (an unused code), ``webauthn`` (a passkey)."""
    totp = (
        select(TotpFactor.id)
        .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
        .exists()
    )
    codes = (
        select(RecoveryCode.id)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        .exists()
    )
    passkeys = select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == user_id).exists()
    row = (await conn.execute(select(totp, codes, passkeys))).one()
    names = ("totp", "recovery_code", "webauthn")
    return [name for name, present in zip(names, row, strict=True) if present]


# -- login challenges --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """A pending second step of a login: whose, and the methods already passed."""

    id: uuid.UUID
    user_id: uuid.UUID
    amr: str
    expires_at: datetime
    failures: int


_CHALLENGE_COLUMNS = (
    MfaLoginChallenge.id,
    MfaLoginChallenge.user_id,
    MfaLoginChallenge.amr,
    MfaLoginChallenge.expires_at,
    MfaLoginChallenge.failures,
)


def _live(now: datetime, max_failures: int) -> tuple[ColumnElement[bool], ...]:
    return (
        MfaLoginChallenge.used_at.is_(None),
        MfaLoginChallenge.expires_at > now,
        MfaLoginChallenge.failures < max_failures,
    )


async def insert_challenge(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID,
    token_hash: str,
    amr: str,
    now: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """Store a new login challenge (the ``mfa_token`` as a keyed hash); returns its id."""
    challenge_id = uuid.uuid4()
    await conn.execute(
        insert(MfaLoginChallenge).values(
            id=challenge_id,
            user_id=user_id,
            token_hash=token_hash,
            amr=amr,
            created_at=now,
            expires_at=expires_at,
            failures=0,
        )
    )
    return challenge_id


async def find_live_challenge(
    conn: AsyncConnection, hashes: Sequence[str], now: datetime, max_failures: int
) -> ChallengeRecord | None:
    """The challenge stored under one of ``hashes`` if it is unused, unexpired and has
    fewer than ``max_failures`` wrong codes."""
    if not hashes:
        return None
    row = (
        await conn.execute(
            select(*_CHALLENGE_COLUMNS).where(
                MfaLoginChallenge.token_hash.in_(list(hashes)), *_live(now, max_failures)
            )
        )
    ).first()
    return ChallengeRecord(*row) if row else None


async def finish_challenge(
    conn: AsyncConnection, challenge_id: uuid.UUID, now: datetime, max_failures: int
) -> bool:
    """Mark a live challenge used; False when it no longer is (a concurrent request
    finished it, or it expired or died meanwhile). A token finishes once."""
    result = await conn.execute(
        update(MfaLoginChallenge)
        .where(MfaLoginChallenge.id == challenge_id, *_live(now, max_failures))
        .values(used_at=now)
    )
    return result.rowcount == 1


async def fail_challenge(
    conn: AsyncConnection, challenge_id: uuid.UUID, max_failures: int
) -> int | None:
    """Count one wrong code against an unused challenge (atomic increment, never past
    ``max_failures``, where it is dead); the new count, or None if it was already dead or
    used."""
    row = (
        await conn.execute(
            update(MfaLoginChallenge)
            .where(
                MfaLoginChallenge.id == challenge_id,
                MfaLoginChallenge.used_at.is_(None),
                MfaLoginChallenge.failures < max_failures,
            )
            .values(failures=MfaLoginChallenge.failures + 1)
            .returning(MfaLoginChallenge.failures)
        )
    ).first()
    return int(row[0]) if row else None
