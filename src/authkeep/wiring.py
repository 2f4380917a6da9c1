"""The composition root: builds authkeep's services from its settings, for the HTTP app and
the command line alike. The only module that knows how the services fit together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from authkeep.db import sessions as session_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord

# Re-exported: the HTTP app, the command line and tests build keys through these names.
from authkeep.security.configured import TEST_DATA_KEY_PURPOSE as TEST_DATA_KEY_PURPOSE
from authkeep.security.configured import build_data_box as build_data_box
from authkeep.security.configured import build_secret_ring as build_secret_ring
from authkeep.security.configured import signing_secret as signing_secret
from authkeep.security.data_keys import SecretBox
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.security.envelope import Envelope
from authkeep.security.key_ring import SecretRing
from authkeep.security.keys import KeyRing
from authkeep.security.passwords import Argon2Params, PasswordHasher
from authkeep.security.tokens import TokenCodec
from authkeep.security.webauthn import RelyingParty
from authkeep.services.accounts import Accounts
from authkeep.services.api_keys import ApiKeys
from authkeep.services.audit import AuditLog
from authkeep.services.audit_admin import AuditReader
from authkeep.services.authn import Authenticator
from authkeep.services.challenge import (
    CHALLENGE_KEY_PURPOSE,
    ChallengeGate,
    build_challenge_gate,
)
from authkeep.services.consents import ConsentPolicy, Consents
from authkeep.services.context import RequestInfo
from authkeep.services.delivery import Delivery, build_delivery
from authkeep.services.email_flows import EmailFlows, EmailTokens, MailLimits
from authkeep.services.invitations import Invitations
from authkeep.services.login_throttle import LoginThrottle
from authkeep.services.mfa import MfaLimits, MfaLogins, RecoveryCodes, TotpFactors
from authkeep.services.mfa.login import MFA_TOKEN_KEY_PURPOSE
from authkeep.services.mfa.passkeys import Passkeys
from authkeep.services.mfa.recovery import RECOVERY_CODE_KEY_PURPOSE
from authkeep.services.oauth2 import OAuth2Tokens
from authkeep.services.orgs import Organizations
from authkeep.services.platform_admin import PlatformAdmin
from authkeep.services.privacy.deletion import AccountDeletion
from authkeep.services.privacy.erasure import Erasure
from authkeep.services.privacy.export import DataExports
from authkeep.services.privacy.purge import Purge
from authkeep.services.privacy.retention import Retention
from authkeep.services.rate_limits import RateLimits
from authkeep.services.revocation import MemoryRevocations, RedisRevocations, RevocationStore
from authkeep.services.sessions import MfaPending, Sessions
from authkeep.services.stats import SessionStats
from authkeep.services.step_up import StepUp, StepUpPolicy
from authkeep.services.webhooks import WebhookEndpoints
from authkeep.settings import Settings
from authkeep.tls import TLSError, explain_redis, is_rediss, redis_tls_options

log = structlog.get_logger("authkeep")

RATE_LIMIT_KEY_PURPOSE = b"authkeep/rate-limit-keys/v1"


@dataclass(slots=True)
class Services:
    """Everything a running authkeep uses; built by the lifespan, closed by it."""

    db: Database
    hasher: PasswordHasher
    codec: TokenCodec
    revocations: RevocationStore
    accounts: Accounts
    sessions: Sessions
    authenticator: Authenticator
    audit: AuditLog
    audit_reader: AuditReader
    stats: SessionStats
    rate_limits: RateLimits
    login_throttle: LoginThrottle
    challenge: ChallengeGate
    """The challenge after failed logins (docs/challenge.md)."""
    orgs: Organizations
    invitations: Invitations
    api_keys: ApiKeys
    platform_admin: PlatformAdmin
    redis: Redis | None
    delivery: Delivery
    """The outbox and mailer (``delivery.mailer.enqueue`` in a flow's transaction)."""
    email_flows: EmailFlows
    """Sign-up, verification, password reset and email change."""
    oauth2: OAuth2Tokens
    """Token revocation (RFC 7009) and introspection (RFC 7662)."""
    data_box: SecretBox
    """Seals stored secrets (MFA, webhook signing secrets) with the data keys."""
    envelope: Envelope
    """Personal data at rest: user keys wrapped by the data keys, the email blind index."""
    step_up: StepUpPolicy
    """Sensitive routes: a recent sign-in, with the second factor when the user has one."""
    step_ups: StepUp
    """``POST /auth/step-up``: re-authentication (password or TOTP code) inside a session."""
    totp: TotpFactors
    """TOTP factors: setup, confirmation, removal, ``verify(user_id, code)``."""
    recovery_codes: RecoveryCodes
    """Recovery codes: regenerate; spent in a login's second step."""
    mfa_logins: MfaLogins
    """The second step of a login (``mfa_token``), finished by any factor."""
    passkeys: Passkeys
    """Passkeys (WebAuthn): enrolment, usernameless sign-in, second step (docs/passkeys.md)."""
    webhooks: WebhookEndpoints
    """Webhook endpoints: register, rotate, replay, test (docs/webhooks.md)."""
    consents: Consents
    """Consent purposes: grant, withdraw, outstanding, ``require`` (docs/privacy.md)."""
    deletion: AccountDeletion
    """Account deletion: the owner's request and cancel link, an admin's (docs/privacy.md)."""
    retention: Retention
    """Inactive accounts warned then deleted; dead single-use rows (docs/privacy.md)."""
    purge: Purge
    """``authkeep purge``: sessions, erasures, retention, audit rows, with a dry run."""
    exports: DataExports = field(init=False)
    """The signed data export of everything held about a user (docs/privacy.md#export);
    set once the services it reads through exist."""


def build_key_ring(settings: Settings, secrets_ring: SecretRing | None = None) -> KeyRing:
    """The token key ring for ``settings``: the key directory if set, else the HS256
    secrets of ``secrets_ring`` (built from ``settings`` when not given)."""
    if settings.jwt_keys_dir is not None:
        return KeyRing.from_directory(settings.jwt_keys_dir)
    ring = secrets_ring if secrets_ring is not None else build_secret_ring(settings)
    current, *previous = (key.material.decode() for key in ring.keys)
    return KeyRing.from_secret(current, previous)


def build_codec(settings: Settings, keys: KeyRing) -> TokenCodec:
    """The token codec for ``settings``."""
    return TokenCodec(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(minutes=settings.access_token_expire_minutes),
        refresh_ttl=timedelta(days=settings.refresh_token_expire_days),
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def make_redis(url: str, *, ca_file: Path | None = None) -> Redis:
    """A Redis client that fails fast: a dead Redis must cost milliseconds, not seconds.
    A ``rediss://`` URL is TLS with the certificate (chained to ``ca_file`` or the system's
    trust store) and the host name checked."""
    return Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        # One retry rides over a connection the server closed (a Redis restart). It must be
        # the asyncio Retry: the sync one wraps creating the coroutine, not awaiting it.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
        **redis_tls_options(url, ca_file),
    )


async def open_connections(s: Settings) -> tuple[Database, Redis | None]:
    """The database and Redis clients, each tried once: a TLS failure (wrong CA, wrong host
    name, a server without TLS) stops the start here as :class:`~authkeep.tls.TLSError`, one
    line naming the setting, rather than at the first request. Redis that is merely down
    does not stop the start (its failure policy applies per request, docs/faults.md)."""
    db = Database(s.database_url, pool_size=s.database_pool_size, tls=s.database_tls)
    url = s.redis_url.get_secret_value() if s.redis_url else None
    redis = make_redis(url, ca_file=s.redis_ssl_ca_file) if url else None
    try:
        await db.ping()
        if redis is not None and url is not None and is_rediss(url):
            try:
                await redis.ping()
            except (RedisError, OSError) as exc:
                reason = explain_redis(exc, url, s.redis_ssl_ca_file)
                if reason is not None:
                    raise TLSError(reason) from exc
    except BaseException as exc:
        if isinstance(exc, TLSError):
            log.error("authkeep_start_failed", reason=str(exc))
        await db.close()
        if redis is not None:
            await redis.aclose()
        raise
    return db, redis


def revocation_ttl(settings: Settings) -> int:
    """How long a revocation must be remembered: the longest access-token life."""
    return settings.access_token_expire_minutes * 60 + settings.jwt_leeway_seconds


async def recent_revocations(db: Database, ttl: int) -> list[tuple[str, int]]:
    """Sessions revoked within ``ttl`` seconds and how long each must still be remembered
    (loads a fresh revocation store)."""
    now = utcnow()
    async with db.reading() as conn:
        rows = await session_rows.revoked_since(conn, now - timedelta(seconds=ttl))
    return [(str(sid), ttl - int((now - at).total_seconds())) for sid, at in rows]


async def build_services(s: Settings, secret_ring: SecretRing, keys: KeyRing) -> Services:
    """Open the database, Redis and the hashing pool, and build every service on them."""
    data_box = build_data_box(s)
    envelope = Envelope(data_box)
    db, redis = await open_connections(s)
    hasher = await asyncio.to_thread(
        PasswordHasher,
        Argon2Params(s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism),
        workers=s.hash_worker_count,
        queue_limit=s.hash_queue_limit,
    )
    codec = build_codec(s, keys)
    revocations: RevocationStore
    if redis is not None:
        revocations = RedisRevocations(
            redis,
            prefix=s.redis_prefix,
            ttl_seconds=revocation_ttl(s),
            resync=lambda: recent_revocations(db, revocation_ttl(s)),
        )
    else:
        memory = MemoryRevocations(revocation_ttl(s))
        memory.load(await recent_revocations(db, revocation_ttl(s)))
        revocations = memory

    async def publish(session_ids: Iterable[uuid.UUID]) -> None:
        await revocations.revoke(str(sid) for sid in session_ids)

    async def users_changed(user_ids: Iterable[uuid.UUID]) -> None:
        await revocations.users_changed(str(uid) for uid in user_ids)

    # First: its webhook events are the audit log's hook (every audited change the event
    # catalogue names becomes an event in the change's transaction).
    delivery = build_delivery(s, db, data_box=data_box, envelope=envelope)
    audit = AuditLog(db, enabled=s.audit_enabled, events=delivery.events, envelope=envelope)
    accounts = Accounts(db, hasher, publish, audit, users_changed=users_changed, envelope=envelope)
    # Limit keys only live for a window: a rotation merely restarts the counters, so
    # the newest key hashes them. Derived from the secret, not the token-signing key,
    # so rotating an asymmetric key changes neither.
    rate_limits = RateLimits.from_settings(
        s, pepper=secret_ring.derive(RATE_LIMIT_KEY_PURPOSE).newest.material
    )
    # The newest subkey signs challenges, every one verifies: a rotation fails none in
    # flight. The single-use store is Redis when configured (shared by every worker).
    challenge = build_challenge_gate(
        s,
        keys=[key.material for key in secret_ring.derive(CHALLENGE_KEY_PURPOSE).keys],
        redis=redis,
    )
    email_tokens = EmailTokenKey.from_ring(secret_ring)
    consents = Consents(db, audit, ConsentPolicy.from_settings(s))
    flows = EmailFlows.build(
        s,
        db,
        hasher,
        accounts,
        delivery,
        EmailTokens(email_tokens, envelope),
        MailLimits(rate_limits),
        audit,
        publish=publish,
        users_changed=users_changed,
        consents=consents,
    )

    async def second_step(user: UserRecord, info: RequestInfo) -> MfaPending:
        # A login of a user with MFA opens its second step. ``mfa_logins`` is bound below:
        # finishing that step opens a session, so each of the two needs the other.
        return await mfa_logins.open(user, info, ("pwd",))

    sessions = Sessions(
        db,
        codec,
        accounts,
        publish,
        reuse_interval=timedelta(seconds=s.refresh_reuse_interval_seconds),
        idle_timeout=s.session_idle_timeout,
        audit=audit,
        email_gate=flows.signup.require_verified,
        second_step=second_step,
        envelope=envelope,
    )
    mfa_limits = MfaLimits(rate_limits)
    recovery_codes = RecoveryCodes(
        db, secret_ring.derive(RECOVERY_CODE_KEY_PURPOSE), audit, delivery.mailer, envelope=envelope
    )
    totp = TotpFactors(
        db, data_box, audit, recovery_codes, mfa_limits, users_changed, issuer=s.product_name
    )
    mfa_logins = MfaLogins(
        db,
        sessions,
        secret_ring.derive(MFA_TOKEN_KEY_PURPOSE),
        audit,
        mfa_limits,
        totp,
        recovery_codes,
        envelope=envelope,
    )
    authenticator = Authenticator(db, codec, revocations, envelope=envelope)
    step_up = StepUpPolicy(s.step_up_max_age_seconds)
    login_throttle = LoginThrottle(rate_limits, sessions, challenge)
    erasure = Erasure(db, envelope, audit, publish=publish, users_changed=users_changed)
    deletion = AccountDeletion(
        db,
        envelope,
        hasher,
        audit,
        delivery.mailer,
        EmailTokens(email_tokens, envelope),
        erasure,
        grace=timedelta(days=s.account_deletion_grace_days),
        publish=publish,
        users_changed=users_changed,
    )
    retention = Retention(
        db, envelope, audit, delivery.mailer, deletion, inactive_days=s.inactive_account_days
    )
    services = Services(
        db=db,
        hasher=hasher,
        codec=codec,
        revocations=revocations,
        accounts=accounts,
        sessions=sessions,
        authenticator=authenticator,
        audit=audit,
        audit_reader=AuditReader(db, audit),
        orgs=Organizations(
            db,
            codec,
            audit,
            users_changed,
            idle_timeout=s.session_idle_timeout,
            step_up=step_up,
            envelope=envelope,
        ),
        invitations=Invitations(
            db,
            audit,
            delivery.mailer,
            email_tokens,
            users_changed,
            expire=timedelta(days=s.invitation_expire_days),
            verification=s.verification_mode,
            limits=MailLimits(rate_limits),
            envelope=envelope,
        ),
        api_keys=ApiKeys(db, audit, envelope=envelope),
        platform_admin=PlatformAdmin(
            db,
            accounts,
            audit=audit,
            mailer=delivery.mailer,
            publish=publish,
            users_changed=users_changed,
            envelope=envelope,
            deletion=deletion,
        ),
        stats=SessionStats(db),
        rate_limits=rate_limits,
        login_throttle=login_throttle,
        challenge=challenge,
        redis=redis,
        delivery=delivery,
        email_flows=flows,
        oauth2=OAuth2Tokens(codec, sessions, authenticator),
        data_box=data_box,
        envelope=envelope,
        step_up=step_up,
        step_ups=StepUp(db, hasher, codec, audit, login_throttle, totp=totp, envelope=envelope),
        totp=totp,
        recovery_codes=recovery_codes,
        mfa_logins=mfa_logins,
        passkeys=Passkeys(
            db,
            audit,
            sessions,
            RelyingParty.from_settings(s),
            users_changed=users_changed,
            email_gate=flows.signup.require_verified,
            mfa_logins=mfa_logins,
            envelope=envelope,
        ),
        webhooks=WebhookEndpoints(db, audit, delivery.outbox, data_box, delivery.webhooks),
        consents=consents,
        deletion=deletion,
        retention=retention,
        purge=Purge(
            db,
            sessions,
            erasure,
            retention,
            ended_grace=timedelta(seconds=revocation_ttl(s)),
            audit_retention_days=s.audit_retention_days,
        ),
    )
    services.exports = DataExports(
        db,
        envelope,
        keys,
        audit,
        consents.policy,
        services.invitations,
        rate_limits,
        issuer=s.jwt_issuer,
    )
    return services


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Services]:
    """Every service built from ``settings``, closed on exit: what a command-line job
    (``create-admin``, ``seed-demo``, ``purge``) runs on, without the HTTP layer."""
    secret_ring = build_secret_ring(settings)
    services = await build_services(settings, secret_ring, build_key_ring(settings, secret_ring))
    try:
        yield services
    finally:
        await close_services(services)


async def close_services(services: Services) -> None:
    """Close everything :func:`build_services` opened."""
    await services.delivery.stop()
    await services.revocations.close()
    await services.rate_limits.close()
    await services.challenge.close()
    await services.db.close()
    if services.redis is not None:
        await services.redis.aclose()
    await asyncio.to_thread(services.hasher.close)
    await asyncio.to_thread(services.accounts.close)
