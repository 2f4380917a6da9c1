"""Queries on ``webauthn_credentials`` (passkeys) and ``webauthn_challenges`` (the
single-use challenges of their ceremonies).

A challenge is found by the SHA-256 of its bytes. Spending one is a single conditional
``UPDATE … SET used_at = now WHERE challenge_hash = :h AND purpose = :p AND user_id … AND
used_at IS NULL AND expires_at > now``: of two concurrent uses exactly one matches the row,
so an assertion can never be replayed, on any number of workers.

A passkey's signature counter moves forward in one conditional ``UPDATE`` too (see
:func:`record_use`), so two racing sign-ins with a cloned key cannot both pass the counter
check that each made against the same stale value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db.models import WebAuthnChallenge, WebAuthnCredential

Purpose = Literal["register", "login", "mfa"]
"""What a challenge was issued for: enrolment, a usernameless sign-in, or the second step
of a password login (bound to that login's user)."""

__all__ = [
    "CredentialRecord",
    "CredentialTaken",
    "Purpose",
    "count_for_user",
    "delete_credential",
    "get_by_credential_id",
    "insert_challenge",
    "insert_credential",
    "list_for_user",
    "purge_challenges",
    "record_use",
    "spend_challenge",
]


class CredentialTaken(Exception):
    """The credential id is registered already (to this account or another)."""


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A stored passkey."""

    id: uuid.UUID
    user_id: uuid.UUID
    credential_id: str
    """The WebAuthn credential id, base64url without padding (as clients send it)."""
    public_key: bytes
    """The COSE public key."""
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str | None
    device_type: str
    """``single_device`` (device-bound) or ``multi_device`` (synced)."""
    backed_up: bool
    name: str
    created_at: datetime
    last_used_at: datetime | None


_COLUMNS = (
    WebAuthnCredential.id,
    WebAuthnCredential.user_id,
    WebAuthnCredential.credential_id,
    WebAuthnCredential.public_key,
    WebAuthnCredential.sign_count,
    WebAuthnCredential.transports,
    WebAuthnCredential.aaguid,
    WebAuthnCredential.device_type,
    WebAuthnCredential.backed_up,
    WebAuthnCredential.name,
    WebAuthnCredential.created_at,
    WebAuthnCredential.last_used_at,
)


def _record(row: object) -> CredentialRecord:
    values = list(row)  # type: ignore[call-overload]
    values[3] = bytes(values[3])
    values[5] = tuple(t for t in (values[5] or "").split(",") if t)
    return CredentialRecord(*values)


async def insert_challenge(
    conn: AsyncConnection,
    *,
    purpose: Purpose,
    user_id: uuid.UUID | None,
    challenge_hash: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Store a new challenge's hash."""
    await conn.execute(
        insert(WebAuthnChallenge).values(
            id=uuid.uuid4(),
            purpose=purpose,
            user_id=user_id,
            challenge_hash=challenge_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )


async def spend_challenge(
    conn: AsyncConnection,
    *,
    challenge_hash: str,
    purpose: Purpose,
    user_id: uuid.UUID | None,
    now: datetime,
) -> bool:
    """Mark the challenge used if it is usable (issued for ``purpose`` and ``user_id`` —
    None: issued to nobody in particular —, unused, unexpired); returns whether it was."""
    owner = (
        WebAuthnChallenge.user_id.is_(None)
        if user_id is None
        else WebAuthnChallenge.user_id == user_id
    )
    result = await conn.execute(
        update(WebAuthnChallenge)
        .where(
            WebAuthnChallenge.challenge_hash == challenge_hash,
            WebAuthnChallenge.purpose == purpose,
            owner,
            WebAuthnChallenge.used_at.is_(None),
            WebAuthnChallenge.expires_at > now,
        )
        .values(used_at=now)
    )
    return bool(result.rowcount)


async def purge_challenges(conn: AsyncConnection, *, expired_before: datetime) -> int:
    """Delete challenges that expired before ``expired_before`` (used or not: neither kind
    can be spent any more); returns how many."""
    result = await conn.execute(
        delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < expired_before)
    )
    return int(result.rowcount or 0)


async def insert_credential(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID,
    credential_id: str,
    public_key: bytes,
    sign_count: int,
    transports: tuple[str, ...],
    aaguid: str | None,
    device_type: str,
    backed_up: bool,
    name: str,
    now: datetime,
) -> CredentialRecord:
    """Store a passkey; :class:`CredentialTaken` when its credential id is known already."""
    row_id = uuid.uuid4()
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(WebAuthnCredential).values(
                    id=row_id,
                    user_id=user_id,
                    credential_id=credential_id,
                    public_key=public_key,
                    sign_count=sign_count,
                    transports=",".join(transports) or None,
                    aaguid=aaguid,
                    device_type=device_type,
                    backed_up=backed_up,
                    name=name,
                    created_at=now,
                )
            )
    except IntegrityError:
        raise CredentialTaken() from None
    return CredentialRecord(
        row_id,
        user_id,
        credential_id,
        public_key,
        sign_count,
        transports,
        aaguid,
        device_type,
        backed_up,
        name,
        now,
        None,
    )


async def get_by_credential_id(
    conn: AsyncConnection, credential_id: str
) -> CredentialRecord | None:
    """The passkey with this WebAuthn credential id (base64url), whoever owns it."""
    row = (
        await conn.execute(
            select(*_COLUMNS).where(WebAuthnCredential.credential_id == credential_id)
        )
    ).first()
    return _record(row) if row else None


async def list_for_user(conn: AsyncConnection, user_id: uuid.UUID) -> list[CredentialRecord]:
    """The user's passkeys, oldest first."""
    rows = await conn.execute(
        select(*_COLUMNS)
        .where(WebAuthnCredential.user_id == user_id)
        .order_by(WebAuthnCredential.created_at, WebAuthnCredential.id)
    )
    return [_record(row) for row in rows]


async def count_for_user(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """How many passkeys the user has."""
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(WebAuthnCredential)
                .where(WebAuthnCredential.user_id == user_id)
            )
        ).scalar_one()
    )


async def record_use(
    conn: AsyncConnection,
    credential: uuid.UUID,
    *,
    sign_count: int,
    backed_up: bool,
    now: datetime,
) -> bool:
    """Store a verified assertion's counter and backup state, and when it was used — only
    if the counter moved forward, or both the stored and the new counter are 0 (a synced
    passkey, which keeps no counter). Returns False when another sign-in got there first
    with a counter at least as high: the key was cloned, or the assertion raced itself."""
    forward = (
        WebAuthnCredential.sign_count < sign_count
        if sign_count > 0
        else WebAuthnCredential.sign_count == 0
    )
    result = await conn.execute(
        update(WebAuthnCredential)
        .where(WebAuthnCredential.id == credential, forward)
        .values(sign_count=sign_count, backed_up=backed_up, last_used_at=now)
    )
    return bool(result.rowcount)


async def delete_credential(
    conn: AsyncConnection, *, user_id: uuid.UUID, credential: uuid.UUID
) -> CredentialRecord | None:
    """Delete the user's passkey with row id ``credential``; returns it, or None when the
    user has no such passkey (someone else's is none of theirs)."""
    row = (
        await conn.execute(
            delete(WebAuthnCredential)
            .where(WebAuthnCredential.id == credential, WebAuthnCredential.user_id == user_id)
            .returning(*_COLUMNS)
        )
    ).first()
    return _record(row) if row else None
