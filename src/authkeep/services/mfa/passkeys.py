"""Passkeys (WebAuthn): enrolment, usernameless sign-in, the second step of a password
login, listing and removal (docs/passkeys.md). The ceremonies themselves (options, parsing,
verification by py_webauthn) are :mod:`authkeep.security.webauthn`; this module keeps their
state and decides what the verdicts mean:

* **Challenges are single-use and short-lived.** Options store the SHA-256 of their random
  challenge with its purpose (``register``, ``login``, ``mfa``), its user (none for a
  usernameless sign-in) and an expiry (``AUTHKEEP_WEBAUTHN_CHALLENGE_EXPIRE_SECONDS``). A
  response is checked against the challenge its ``clientDataJSON`` carries, which is spent
  first in one conditional ``UPDATE`` (:func:`authkeep.db.webauthn.spend_challenge`): a
  replayed or raced assertion finds it used, a late one finds it expired.
* **User verification is required** for enrolment and usernameless sign-in (a passkey with
  its PIN or biometric is two factors: ``amr`` ``["hwk", "user"]``, ``acr`` ``aal2``). As
  the second step of a password login it is only preferred: the password is the other
  factor, and ``user`` joins ``amr`` only when the authenticator verified the user.
* **Signature counters.** A genuine assertion whose counter did not increase (a cloned
  device-bound key) is refused (401) and audited as ``mfa.passkey_counter_regression``; a
  synced passkey's constant 0 is fine. The stored counter moves in one conditional
  ``UPDATE``, so two racing assertions cannot both pass against the same stale value.
* **No oracle.** An unknown credential, a wrong signature, a spent challenge, an inactive
  account: the same 401 for a sign-in; the reason goes to the audit log only.
* **The WebAuthn user handle is the account id** (the 16 random bytes of a UUID4): stable,
  not personal data, never the email.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import users as user_rows
from authkeep.db import webauthn as rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.db.webauthn import CredentialRecord, CredentialTaken, Purpose
from authkeep.errors import (
    AuthkeepError,
    Conflict,
    InvalidCode,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    PasskeyRejected,
)
from authkeep.security.envelope import Envelope
from authkeep.security.webauthn import (
    Assertion,
    KnownCredential,
    NewPasskey,
    Registration,
    RelyingParty,
    challenge_hash,
    parse_assertion,
    parse_registration,
)
from authkeep.services.audit import SYSTEM, Action, Actor, AuditEvent, AuditLog, Outcome
from authkeep.services.context import RequestInfo
from authkeep.services.mfa.login import MfaLogins
from authkeep.services.revocation import UsersChanged
from authkeep.services.sessions import Sessions, TokenPair

__all__ = ["MAX_PASSKEYS", "SIGN_IN_FAILED", "AssertionCheck", "Passkeys"]

log = structlog.get_logger("authkeep.passkeys")

MAX_PASSKEYS = 20
"""Passkeys per account: bounds the options' ``excludeCredentials`` and the table."""
SIGN_IN_FAILED = "Passkey sign-in failed"
EmailGate = Callable[[UserRecord, RequestInfo], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AssertionCheck:
    """The verdict on an assertion: ``failure`` is None when it verified."""

    failure: str | None
    user: UserRecord | None = None
    credential: CredentialRecord | None = None


class _Refused(Exception):
    """An enrolment refused: why (for the audit row) and what the client is told."""

    def __init__(self, reason: str, error: AuthkeepError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def _known(records: Iterable[CredentialRecord]) -> list[KnownCredential]:
    return [KnownCredential(r.credential_id, r.transports) for r in records]


class Passkeys:
    """The passkey use cases (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        sessions: Sessions,
        rp: RelyingParty,
        *,
        users_changed: UsersChanged,
        email_gate: EmailGate | None = None,
        mfa_logins: MfaLogins | None = None,
        envelope: Envelope,
    ) -> None:
        """``users_changed`` tells every worker's user cache (``mfa_enabled`` changed);
        ``email_gate`` is password login's email-verification gate; ``mfa_logins`` the
        second step of password logins, which a passkey may finish (None: it cannot);
        ``envelope`` opens the user's personal data."""
        self._db = db
        self._envelope = envelope
        self._audit = audit
        self._sessions = sessions
        self.rp = rp
        self._users_changed = users_changed
        self._email_gate = email_gate
        self._mfa_logins = mfa_logins

    async def _new_challenge(
        self, conn: AsyncConnection, challenge: bytes, purpose: Purpose, user_id: uuid.UUID | None
    ) -> None:
        now = utcnow()
        # Expired challenges go as new ones come (an indexed range delete): the open
        # sign-in options would otherwise let anyone grow the table without bound.
        await rows.purge_challenges(conn, expired_before=now)
        await rows.insert_challenge(
            conn,
            purpose=purpose,
            user_id=user_id,
            challenge_hash=challenge_hash(challenge),
            now=now,
            expires_at=now + self.rp.challenge_ttl,
        )

    # -- enrolment ---------------------------------------------------------------------

    async def registration_options(self, user: UserRecord) -> dict[str, Any]:
        """``PublicKeyCredentialCreationOptionsJSON`` to enrol a passkey for ``user``."""
        async with self._db.transaction() as conn:
            existing = await rows.list_for_user(conn, user.id)
            options = self.rp.creation_options(
                user_handle=user.id.bytes,
                user_name=user.email,
                display_name=user.full_name or user.email,
                exclude=_known(existing),
            )
            await self._new_challenge(conn, options.challenge, "register", user.id)
        return options.json

    async def register(
        self, user: UserRecord, data: Mapping[str, Any], name: str | None, info: RequestInfo
    ) -> CredentialRecord:
        """Verify an enrolment response and store the passkey (a second factor from now
        on). PasskeyRejected (400) when it does not verify, Conflict (409) when the passkey
        is registered already or the account has :data:`MAX_PASSKEYS`. Audited either way."""
        registration = parse_registration(data)
        now = utcnow()
        refused: _Refused | None = None
        stored: CredentialRecord | None = None
        async with self._db.transaction() as conn:
            try:
                stored = await self._store(conn, user, registration, name, now)
            except _Refused as exc:
                refused = exc
            if stored is not None:
                await user_rows.refresh_mfa_enabled(conn, user.id)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_PASSKEY_REGISTERED,
                    "success" if stored else "failure",
                    actor=Actor(user.id),
                    entity_type="webauthn_credential",
                    entity_id=stored.id if stored else None,
                    details=(
                        {"device_type": stored.device_type, "backed_up": stored.backed_up}
                        if stored
                        else {"reason": refused.reason if refused else "verification"}
                    ),
                ),
                info,
            )
        metrics.PASSKEY_CEREMONIES.labels("register", "success" if stored else "failure").inc()
        if stored is None:
            reason = refused.reason if refused else None
            log.info("passkey_registration_failed", user_id=str(user.id), reason=reason)
            raise refused.error if refused else PasskeyRejected()
        await self._users_changed([user.id])
        log.info("passkey_registered", user_id=str(user.id), passkey_id=str(stored.id))
        return stored

    async def _store(
        self,
        conn: AsyncConnection,
        user: UserRecord,
        registration: Registration,
        name: str | None,
        now: datetime,
    ) -> CredentialRecord:
        """Spend the challenge, verify, store; :class:`_Refused` saying why not."""
        spent = await rows.spend_challenge(
            conn,
            challenge_hash=challenge_hash(registration.challenge),
            purpose="register",
            user_id=user.id,
            now=now,
        )
        if not spent:
            raise _Refused(
                "challenge",
                PasskeyRejected("Unknown, expired or already used challenge: request new options"),
            )
        try:
            new: NewPasskey = self.rp.verify_registration(registration)
        except PasskeyRejected as exc:
            raise _Refused("verification", exc) from None
        if await rows.count_for_user(conn, user.id) >= MAX_PASSKEYS:
            raise _Refused(
                "too_many",
                Conflict(f"An account may have {MAX_PASSKEYS} passkeys: remove one first"),
            )
        try:
            return await rows.insert_credential(
                conn,
                user_id=user.id,
                credential_id=new.credential_id,
                public_key=new.public_key,
                sign_count=new.sign_count,
                transports=new.transports,
                aaguid=new.aaguid,
                device_type=new.device_type,
                backed_up=new.backed_up,
                name=name or f"Passkey {now:%Y-%m-%d}",
                now=now,
            )
        except CredentialTaken:
            # Attestation "none" lets anyone pair a known credential id with their own key:
            # an id keeps meaning the key first registered under it.
            raise _Refused("taken", Conflict("This passkey is registered already")) from None

    # -- listing and removal -----------------------------------------------------------

    async def credentials(self, user_id: uuid.UUID) -> list[CredentialRecord]:
        """The user's passkeys, oldest first."""
        async with self._db.reading() as conn:
            return await rows.list_for_user(conn, user_id)

    async def remove(self, user_id: uuid.UUID, credential: uuid.UUID, info: RequestInfo) -> None:
        """Delete one of the user's passkeys (NotFound when it is not theirs); the account
        loses MFA with its last factor."""
        async with self._db.transaction() as conn:
            removed = await rows.delete_credential(conn, user_id=user_id, credential=credential)
            if removed is None:
                raise NotFound("Passkey not found")
            mfa = await user_rows.refresh_mfa_enabled(conn, user_id)
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.MFA_PASSKEY_REMOVED,
                    actor=Actor(user_id),
                    entity_type="webauthn_credential",
                    entity_id=removed.id,
                    details={"mfa_enabled": mfa},
                ),
                info,
            )
        await self._users_changed([user_id])

    # -- sign-in -----------------------------------------------------------------------

    async def login_options(self, mfa_token: str | None = None) -> dict[str, Any]:
        """``PublicKeyCredentialRequestOptionsJSON``: usernameless (no ``allowCredentials``,
        user verification required) without ``mfa_token``; with it, for the second step of
        that password login (the account's passkeys, user verification preferred).
        InvalidToken (401) when the ``mfa_token`` is not live."""
        user_id = None
        if mfa_token is not None:
            user_id = await self._pending_logins.user_of(mfa_token)
        async with self._db.transaction() as conn:
            allowed = await rows.list_for_user(conn, user_id) if user_id is not None else []
            options = self.rp.request_options(
                allow=_known(allowed), require_user_verification=user_id is None
            )
            purpose: Purpose = "login" if user_id is None else "mfa"
            await self._new_challenge(conn, options.challenge, purpose, user_id)
        return options.json

    async def login(self, data: Mapping[str, Any], info: RequestInfo) -> TokenPair:
        """Usernameless sign-in: the passkey names its account. Tokens with ``amr``
        ``["hwk", "user"]``; InvalidCredentials (401) for any failure, the same for all;
        EmailNotVerified (403) after a valid passkey, as after a correct password."""
        assertion = parse_assertion(data)
        async with self._db.transaction() as conn:
            check = await self.check_assertion(conn, assertion, expected_user=None, info=info)
        if check.failure is not None or check.user is None:
            raise InvalidCredentials(SIGN_IN_FAILED)
        if self._email_gate is not None:
            await self._email_gate(check.user, info)
        return await self._sessions.start(check.user, info, method="passkey", amr=("hwk", "user"))

    async def finish_login(
        self, mfa_token: str, data: Mapping[str, Any], info: RequestInfo
    ) -> TokenPair:
        """The second step of a password login, with one of that account's passkeys: tokens
        whose ``amr`` is ``["pwd", "hwk"]``, plus ``user`` when the authenticator verified
        the user. InvalidToken (401) for a dead ``mfa_token``; a failed assertion is
        InvalidCredentials (401) and counts as a wrong code against the ``mfa_token``."""
        assertion = parse_assertion(data)

        async def verify(conn: AsyncConnection, user: UserRecord) -> bool:
            check = await self.check_assertion(conn, assertion, expected_user=user.id, info=info)
            return check.failure is None

        try:
            return await self._pending_logins.finish(
                mfa_token,
                info,
                factor="hwk",
                verify=verify,
                # Read before the signature is checked, but covered by it: it only counts
                # when verify() passes.
                extra_amr=("user",) if assertion.user_verified else (),
            )
        except InvalidCode:
            raise InvalidCredentials(SIGN_IN_FAILED) from None

    @property
    def _pending_logins(self) -> MfaLogins:
        if self._mfa_logins is None:
            raise InvalidToken("Passkeys cannot finish a password login here")
        return self._mfa_logins

    async def check_assertion(
        self,
        conn: AsyncConnection,
        assertion: Assertion,
        *,
        expected_user: uuid.UUID | None,
        info: RequestInfo | None,
    ) -> AssertionCheck:
        """Spend the assertion's challenge, verify the assertion against the stored passkey,
        move its counter and write the audit row, all in the caller's transaction (so the
        second step of a password login commits with its own bookkeeping).
        ``expected_user`` None: a usernameless sign-in; else the user of the password login
        whose second step this is (only their passkeys and ``mfa`` challenges count)."""
        purpose: Purpose = "login" if expected_user is None else "mfa"
        check = await self._check(conn, assertion, purpose, expected_user, utcnow())
        regression = check.failure == "counter_regression"
        outcome: Outcome = "success" if check.failure is None else "failure"
        metrics.PASSKEY_CEREMONIES.labels(
            purpose, "counter_regression" if regression else outcome
        ).inc()
        details: dict[str, Any] = {"ceremony": purpose}
        if check.failure is not None:
            details["reason"] = check.failure
        stored = check.credential
        if stored is not None:
            details["device_type"] = stored.device_type
        await self._audit.record(
            conn,
            AuditEvent(
                Action.MFA_PASSKEY_COUNTER_REGRESSION if regression else Action.MFA_PASSKEY_LOGIN,
                outcome,
                actor=Actor(stored.user_id) if stored else SYSTEM,
                entity_type="webauthn_credential",
                entity_id=stored.id if stored else None,
                details=details,
            ),
            info,
        )
        if regression:
            log.warning("passkey_counter_regression", passkey_id=str(stored.id if stored else ""))
        elif check.failure is not None:
            log.info("passkey_sign_in_failed", reason=check.failure, ceremony=purpose)
        return check

    async def _check(
        self,
        conn: AsyncConnection,
        assertion: Assertion,
        purpose: Purpose,
        expected_user: uuid.UUID | None,
        now: datetime,
    ) -> AssertionCheck:
        spent = await rows.spend_challenge(
            conn,
            challenge_hash=challenge_hash(assertion.challenge),
            purpose=purpose,
            user_id=expected_user,
            now=now,
        )
        if not spent:
            return AssertionCheck("challenge")
        stored = await rows.get_by_credential_id(conn, assertion.credential_id)
        if stored is None or (expected_user is not None and stored.user_id != expected_user):
            return AssertionCheck("unknown_credential")
        user = await user_rows.get_by_id(conn, self._envelope, stored.user_id)
        if user is None or not user.can_sign_in:
            return AssertionCheck("user_cannot_sign_in", credential=stored)
        # A usernameless sign-in learns the account from the passkey: the authenticator must
        # name the account that owns the credential (WebAuthn §7.2, step 6).
        handle = assertion.user_handle
        if (handle is None and expected_user is None) or (
            handle is not None and handle != stored.user_id.bytes
        ):
            return AssertionCheck("user_handle", credential=stored)
        verdict, reason = self.rp.verify_assertion(
            assertion,
            public_key=stored.public_key,
            sign_count=stored.sign_count,
            require_user_verification=expected_user is None,
        )
        if verdict is not None:
            log.info("passkey_assertion_refused", verdict=verdict, reason=reason)
            return AssertionCheck(verdict, user, stored)
        moved = await rows.record_use(
            conn, stored.id, sign_count=assertion.sign_count, backed_up=assertion.backed_up, now=now
        )
        if not moved:  # a concurrent sign-in moved the counter to this value or past it
            return AssertionCheck("counter_regression", user, stored)
        return AssertionCheck(None, user, stored)
