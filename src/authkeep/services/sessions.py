"""Sessions: login, refresh-token rotation with theft detection, logout, listing.

A session is one login. It ends at the first of: its absolute expiry (set at login), an idle
timeout (no refresh for that long: each refresh token expires then, and each refresh pushes
it forward), logout or revocation. Its refresh tokens form a family: each refresh spends the
presented token and issues its successor. A spent token presented again is treated as theft
— the legitimate client and the thief hold the same family, and the server cannot tell which
is which — so the whole session is revoked. The one exception is a retry inside a short grace
window (a client whose first response was lost): while the successor is still unused, and
only for a request with the User-Agent of the rotation, it receives the very same successor,
which is re-derived from stored facts (tokens are deterministic), so no token is kept in
clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep import metrics
from authkeep.db import orgs as org_rows
from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.orgs import ActiveOrg
from authkeep.db.sessions import RefreshRecord, SessionRecord
from authkeep.db.users import UserRecord
from authkeep.errors import InvalidToken, NotFound, TokenReused
from authkeep.security.assurance import AuthContext
from authkeep.security.envelope import Envelope
from authkeep.security.tokens import IssuedToken, TokenCodec
from authkeep.services.accounts import Accounts
from authkeep.services.audit import Action, Actor, AuditEvent, AuditLog
from authkeep.services.context import RequestInfo
from authkeep.services.revocation import Publish

log = structlog.get_logger("authkeep.sessions")

Gate = Callable[[UserRecord, RequestInfo], Awaitable[None]]
SecondStep = Callable[[UserRecord, RequestInfo], Awaitable["MfaPending"]]

PURGE_BATCH = 1000
PURGE_PAUSE = 1.0
"""How long :meth:`Sessions.purge` rests after each batch, as a multiple of the batch's time."""


async def _rest(seconds: float) -> None:
    # Between two purge batches; a module function so that a test can count the rests.
    await asyncio.sleep(seconds)


def agent_digest(user_agent: str | None) -> str:
    """The stored form of the User-Agent that rotated a refresh token: SHA-256, hex (a
    missing header hashes as the empty string)."""
    return hashlib.sha256((user_agent or "").encode("utf-8", "surrogatepass")).hexdigest()


def token_digest(token: str) -> str:
    """The stored form of a refresh token: SHA-256, hex. The token is random enough that a
    fast hash is safe; a stolen table yields nothing usable."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int
    user: UserRecord
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class MfaPending:
    """What a login returns when the password was right but the user has a second factor:
    no token yet, only the ``mfa_token`` that ``POST /auth/mfa/verify`` (or a passkey)
    completes within ``expires_in`` seconds, and the ``methods`` it accepts (``totp``,
    ``recovery_code``, ``webauthn``). See :mod:`authkeep.services.mfa.login`."""

    mfa_token: str = field(repr=False)
    methods: list[str]
    expires_in: int


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A live session as its user sees it: ``idle_expires_at`` is when it ends unless
    refreshed first; ``record.expires_at`` is its absolute end, whatever happens."""

    record: SessionRecord
    idle_expires_at: datetime


_END_ACTIONS = {
    "logout": Action.LOGOUT,
    "logout_all": Action.LOGOUT_ALL,
    "revoked_by_user": Action.SESSION_REVOKED,
}


class Sessions:
    """Use cases on sessions and refresh tokens."""

    def __init__(
        self,
        db: Database,
        codec: TokenCodec,
        accounts: Accounts,
        publish: Publish,
        *,
        reuse_interval: timedelta,
        idle_timeout: timedelta | None = None,
        audit: AuditLog | None = None,
        email_gate: Gate | None = None,
        second_step: SecondStep | None = None,
        envelope: Envelope,
    ) -> None:
        """``idle_timeout``: how long a session lives without a refresh (None: as long as
        its absolute lifetime, the codec's ``refresh_ttl``). ``email_gate`` runs after a
        correct password and may refuse the login (an unverified address). ``second_step``
        opens the second step of a login for a user with a second factor (None: no MFA).
        ``envelope`` seals a session's IP address and user agent with the user's key."""
        self._db = db
        self._envelope = envelope
        self._codec = codec
        self._accounts = accounts
        self._publish = publish
        self._reuse_interval = reuse_interval
        self._idle_timeout = idle_timeout if idle_timeout is not None else codec.refresh_ttl
        self._audit = audit if audit is not None else AuditLog(db)
        self._email_gate = email_gate
        self._second_step = second_step

    def _pair(
        self,
        user: UserRecord,
        session_id: uuid.UUID,
        refresh: str,
        org: ActiveOrg | None,
        auth: AuthContext,
    ) -> TokenPair:
        access = self._codec.issue_access(
            user_id=str(user.id),
            email=user.email,
            session_id=str(session_id),
            org_id=str(org.org_id) if org else None,
            role=org.role.value if org else None,
            email_verified=user.email_verified,
            auth=auth,
        )
        expires_in = int((access.expires_at - access.issued_at).total_seconds())
        return TokenPair(access.token, refresh, expires_in, user, session_id)

    def _issue_refresh(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        now: datetime,
        session_expires_at: datetime,
        token_id: str | None = None,
    ) -> IssuedToken:
        """A new refresh token for the session, alive until the idle timeout from ``now``
        and never past the session's absolute expiry."""
        issued = now.replace(microsecond=0)
        expires = min(now + self._idle_timeout, session_expires_at)
        jti = token_id or uuid.uuid4().hex
        token = self._codec.encode_refresh(
            user_id=str(user_id),
            session_id=str(session_id),
            token_id=jti,
            issued_at=issued,
            expires_at=expires,
        )
        return IssuedToken(token, jti, issued, expires)

    async def _store_refresh(
        self, conn: AsyncConnection, user: UserRecord, session_id: uuid.UUID, issued: IssuedToken
    ) -> None:
        await session_rows.insert_refresh(
            conn,
            jti=issued.token_id,
            user_id=user.id,
            session_id=session_id,
            token_hash=token_digest(issued.token),
            created_at=issued.issued_at,
            expires_at=issued.expires_at,
        )

    async def login(self, email: str, password: str, info: RequestInfo) -> TokenPair | MfaPending:
        """Check credentials and open a session; for a user with a second factor, no
        session yet but the pending second step (:class:`MfaPending`), after exactly the
        same checks (password, then the email-verification gate)."""
        user = await self._accounts.check_credentials(email, password, info)
        if self._email_gate is not None:
            await self._email_gate(user, info)
        if user.mfa_enabled and self._second_step is not None:
            return await self._second_step(user, info)
        pair = await self.start(user, info)
        metrics.LOGINS.labels("success").inc()
        return pair

    async def start(
        self,
        user: UserRecord,
        info: RequestInfo,
        *,
        method: str = "password",
        amr: tuple[str, ...] = ("pwd",),
    ) -> TokenPair:
        """Open a session for a user authenticated by the methods ``amr`` (audited as a
        login by ``method``)."""
        now = utcnow()
        auth = AuthContext(now, amr)
        expires_at = now + self._codec.refresh_ttl
        session_id = uuid.uuid4()
        refresh = self._issue_refresh(user.id, session_id, now, expires_at)
        event = AuditEvent(
            Action.LOGIN,
            actor=Actor(user.id),
            entity_type="session",
            entity_id=session_id,
            details={"method": method, "amr": list(auth.amr)},
        )
        # A new session starts in the user's oldest organization (if any); switch-org
        # moves it, and the session row remembers the choice for later refreshes.
        async with self._db.transaction() as conn:
            if self._db.is_postgres:
                # Every login pays for its round trips in event-loop CPU (issue 18): the
                # organization's read, the session, its refresh token and its audit row go
                # as one statement, atomic alone, instead of six round trips (BEGIN, four
                # statements, COMMIT). None of its tables has row-level security, so it needs
                # no SET LOCAL, hence no transaction of its own.
                org = await session_rows.open_session(
                    conn,
                    self._envelope,
                    session_id=session_id,
                    user_id=user.id,
                    now=now,
                    expires_at=expires_at,
                    ip=info.ip,
                    user_agent=info.short_user_agent,
                    amr=auth.stored_amr,
                    refresh=session_rows.NewRefresh(
                        refresh.token_id,
                        token_digest(refresh.token),
                        refresh.issued_at,
                        refresh.expires_at,
                    ),
                    audit=await self._audit.prepare(conn, event, info),
                )
            else:
                org = await org_rows.default_org(conn, user.id)
                await session_rows.create_session(
                    conn,
                    self._envelope,
                    user_id=user.id,
                    now=now,
                    expires_at=expires_at,
                    ip=info.ip,
                    user_agent=info.short_user_agent,
                    org_id=org.org_id if org else None,
                    amr=auth.stored_amr,
                    session_id=session_id,
                )
                await self._store_refresh(conn, user, session_id, refresh)
                await self._audit.record(conn, event, info)
        log.info("login_succeeded", user_id=str(user.id), session_id=str(session_id))
        return self._pair(user, session_id, refresh.token, org, auth)

    async def refresh(self, token: str, info: RequestInfo) -> TokenPair:
        """Rotate a refresh token; TokenReused (after revoking the family) on replay."""
        claims = self._codec.decode_refresh(token)
        try:
            user_id = uuid.UUID(claims.user_id)
            session_id = uuid.UUID(claims.session_id)
        except ValueError:
            raise InvalidToken() from None
        digest = token_digest(token)
        agent = agent_digest(info.user_agent)
        now = utcnow()
        successor_jti = uuid.uuid4().hex
        async with self._db.transaction() as conn:
            won = await session_rows.spend_refresh(
                conn,
                jti=claims.token_id,
                token_hash=digest,
                successor_jti=successor_jti,
                agent_hash=agent,
                now=now,
            )
            if won:
                user = await user_rows.get_by_id(conn, self._envelope, user_id)
                session = await session_rows.get_session(conn, self._envelope, session_id)
                if user is None or not user.can_sign_in or session is None:
                    raise InvalidToken()
                # Checked here, not only through the token's ``exp``: a token issued before
                # the idle timeout was lowered (or before it existed) must not outlive it,
                # and no token outlives the session's absolute expiry.
                if not session.is_live(now, self._idle_timeout):
                    raise InvalidToken()
                successor = self._issue_refresh(
                    user_id, session_id, now, session.expires_at, successor_jti
                )
                await self._store_refresh(conn, user, session_id, successor)
                await session_rows.touch_session(conn, session_id, now)
                await self._audit.record(conn, self._refresh_event(user_id, session_id), info)
                org = await org_rows.session_org(conn, session_id)
                pair = self._pair(user, session_id, successor.token, org, session.auth)
        if won:
            return pair
        return await self._retry_or_theft(
            claims.token_id, digest, agent, user_id, session_id, now, info
        )

    @staticmethod
    def _refresh_event(
        user_id: uuid.UUID, session_id: uuid.UUID, *, grace_retry: bool = False
    ) -> AuditEvent:
        return AuditEvent(
            Action.REFRESH,
            actor=Actor(user_id),
            entity_type="session",
            entity_id=session_id,
            details={"grace_retry": True} if grace_retry else {},
        )

    async def _retry_or_theft(
        self,
        jti: str,
        digest: str,
        agent: str,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        now: datetime,
        info: RequestInfo | None = None,
    ) -> TokenPair:
        """A presented token that could not be spent: a bad or dead one is InvalidToken; a
        spent one is a genuine retry (the same successor again) or theft (the session is
        revoked, audited, and TokenReused raised)."""
        async with self._db.transaction() as conn:
            row = await session_rows.get_refresh(conn, jti)
            if (
                row is None
                or not hmac.compare_digest(row.token_hash, digest)
                or row.user_id != user_id
                or row.session_id != session_id
                or row.revoked_at is not None
                or row.expires_at <= now
                or row.spent_at is None
            ):
                raise InvalidToken()
            verdict = await self._grace_retry(conn, row, agent, now)
            if isinstance(verdict, TokenPair):
                await self._audit.record(
                    conn, self._refresh_event(user_id, session_id, grace_retry=True), info
                )
                log.info("refresh_retry_in_grace", session_id=str(session_id))
                return verdict
            revoked = await session_rows.revoke_sessions(
                conn, user_id=user_id, now=now, reason="refresh_reuse", only=session_id
            )
            await self._audit.record(
                conn,
                AuditEvent(
                    Action.REFRESH_REUSE,
                    "failure",
                    actor=Actor(user_id),
                    entity_type="session",
                    entity_id=session_id,
                    details={"sessions_revoked": len(revoked), "reason": verdict},
                ),
                info,
            )
        metrics.REFRESH_REUSE.inc()
        await self._publish(revoked)
        log.warning(
            "refresh_token_reuse_detected",
            user_id=str(user_id),
            session_id=str(session_id),
            reason=verdict,
        )
        raise TokenReused()

    async def _grace_retry(
        self, conn: AsyncConnection, spent: RefreshRecord, agent: str, now: datetime
    ) -> TokenPair | str:
        """The pair to hand back again for a replay of the spent token ``spent``, or why the
        replay is theft.

        A lost response is the only innocent replay, and it comes from the client that made
        the rotating request, before it could use the successor. So the successor goes back
        only inside the window, only while it is unused (once it was used, someone holds a
        newer token: handing it out again would fork the family between two holders), and
        only to the same User-Agent (a thief replaying a token stolen from storage or logs
        is usually other software). Not the IP: a genuine retry may come after a network
        switch."""
        # `now` was read before the winner committed, so a concurrent loser can see a
        # negative age: a zero window must still mean "no grace at all".
        if (
            spent.spent_at is None
            or self._reuse_interval <= timedelta(0)
            or now - spent.spent_at > self._reuse_interval
        ):
            return "outside_grace_window"
        successor = (
            await session_rows.get_refresh(conn, spent.successor_jti)
            if spent.successor_jti
            else None
        )
        if successor is None or successor.revoked_at is not None:
            return "successor_unavailable"
        if successor.spent_at is not None:
            return "successor_used"
        if spent.rotated_agent_hash is None or not hmac.compare_digest(
            spent.rotated_agent_hash, agent
        ):
            return "user_agent_mismatch"
        user = await user_rows.get_by_id(conn, self._envelope, spent.user_id)
        if user is None or not user.can_sign_in:
            return "user_cannot_sign_in"
        again = self._codec.encode_refresh(
            user_id=str(spent.user_id),
            session_id=str(spent.session_id),
            token_id=successor.jti,
            issued_at=successor.created_at,
            expires_at=successor.expires_at,
        )
        if not hmac.compare_digest(token_digest(again), successor.token_hash):
            return "successor_unavailable"
        session = await session_rows.get_session(conn, self._envelope, spent.session_id)
        if session is None:
            return "successor_unavailable"
        org = await org_rows.session_org(conn, spent.session_id)
        return self._pair(user, spent.session_id, again, org, session.auth)

    async def list_live(self, user_id: uuid.UUID) -> list[LiveSession]:
        """The user's live sessions (neither revoked, expired nor idle too long), most
        recently used first."""
        async with self._db.reading() as conn:
            records = await session_rows.live_sessions(
                conn, self._envelope, user_id, utcnow(), self._idle_timeout
            )
        return [LiveSession(r, r.idle_expires_at(self._idle_timeout)) for r in records]

    async def end(
        self,
        user_id: uuid.UUID,
        *,
        only: uuid.UUID | None = None,
        keep: uuid.UUID | None = None,
        reason: str = "logout",
        info: RequestInfo | None = None,
        actor: Actor | None = None,
    ) -> list[uuid.UUID]:
        """End one session (``only``), or all but ``keep``, at once for every worker.

        Audited (when something ended) as ``auth.logout``, ``auth.logout_all`` or
        ``session.revoked`` by ``reason``, else ``session.ended``; ``actor`` defaults to the
        user."""
        async with self._db.transaction() as conn:
            ended = await session_rows.revoke_sessions(
                conn, user_id=user_id, now=utcnow(), reason=reason, only=only, keep=keep
            )
            if ended:
                await self._audit.record(
                    conn,
                    AuditEvent(
                        _END_ACTIONS.get(reason, Action.SESSIONS_ENDED),
                        actor=actor if actor is not None else Actor(user_id),
                        entity_type="session" if only is not None else "user",
                        entity_id=only if only is not None else user_id,
                        details={"reason": reason, "sessions_ended": len(ended)},
                    ),
                    info,
                )
        await self._publish(ended)
        log.info("sessions_ended", user_id=str(user_id), count=len(ended), reason=reason)
        return ended

    async def end_one(
        self, user_id: uuid.UUID, session_id: uuid.UUID, info: RequestInfo | None = None
    ) -> None:
        """End one of the user's sessions; NotFound if it is not theirs or not live."""
        if not await self.end(user_id, only=session_id, reason="revoked_by_user", info=info):
            raise NotFound("Session not found")

    async def purge(self) -> tuple[int, int]:
        """Delete expired refresh tokens, and sessions that ended longer ago than the longest
        access-token lifetime; returns (sessions, refresh tokens) deleted.

        Safe while serving: only rows no request can still use go, in batches of
        ``PURGE_BATCH`` rows per transaction, so no writer (SQLite has one at a time) waits
        long behind a purge. After each batch it pauses ``PURGE_PAUSE`` times as long as the
        batch took: a million ended sessions kept the database busy enough to halve the
        logins of a 2-core machine (issue 18, ``bench/scale.py``); the daily job may take
        twice as long instead."""
        now = utcnow()
        ended_before = now - self._codec.access_ttl - timedelta(seconds=self._codec.leeway)
        sessions = tokens = 0
        while True:
            started = time.monotonic()
            async with self._db.transaction() as conn:
                ended, expired, cascaded = await session_rows.purge_batch(
                    conn, now=now, ended_before=ended_before, limit=PURGE_BATCH
                )
            sessions += ended
            tokens += expired + cascaded
            if ended < PURGE_BATCH and expired < PURGE_BATCH:
                return sessions, tokens
            await _rest((time.monotonic() - started) * PURGE_PAUSE)
