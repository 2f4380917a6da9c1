"""The application: :class:`Authkeep` (embeddable) and :func:`create_app` (the service).

Nothing is built at import time. ``Authkeep(settings)`` checks the configuration and loads the
signing keys; its lifespan opens the database, Redis and the hashing pool and closes them.

Embedding in an existing FastAPI app::

    authkeep = Authkeep(Settings())
    app = FastAPI()
    authkeep.install(app)           # routers, middleware, error handlers, lifespan

    @app.get("/private")
    async def private(user: CurrentUser) -> dict[str, str]:
        return {"hello": user.email}
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from authkeep.db import roles as db_roles
from authkeep.db import sessions as session_rows
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.http.allowlist import IPAllowList
from authkeep.http.client_ip import ClientIPResolver
from authkeep.http.docs import install_docs
from authkeep.http.errors import document_common_errors, install_error_handlers
from authkeep.http.middleware.body_limit import BodyLimitMiddleware
from authkeep.http.middleware.rate_limit import RateLimitMiddleware
from authkeep.http.middleware.request_context import RequestContextMiddleware
from authkeep.http.middleware.security_headers import SecurityHeadersMiddleware
from authkeep.http.routers import account_email, auth, health, jwks
from authkeep.http.routers import admin as admin_routes
from authkeep.http.routers import api_keys as api_key_routes
from authkeep.http.routers import audit as audit_routes
from authkeep.http.routers import challenge as challenge_routes
from authkeep.http.routers import invitations as invitation_routes
from authkeep.http.routers import metrics as metrics_routes
from authkeep.http.routers import oauth2 as oauth2_routes
from authkeep.http.routers import orgs as org_routes
from authkeep.http.schemas import Readiness
from authkeep.logging import configure_logging
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.security.key_ring import SecretRing
from authkeep.security.keys import KeyRing
from authkeep.security.passwords import Argon2Params, PasswordHasher
from authkeep.security.tokens import TokenCodec
from authkeep.services.accounts import Accounts
from authkeep.services.api_keys import ApiKeys
from authkeep.services.audit import AuditLog
from authkeep.services.audit_admin import AuditReader
from authkeep.services.audit_checkpoints import scheduler_from_settings
from authkeep.services.authn import Authenticator
from authkeep.services.challenge import (
    CHALLENGE_KEY_PURPOSE,
    ChallengeGate,
    build_challenge_gate,
)
from authkeep.services.delivery import Delivery, build_delivery
from authkeep.services.email_flows import EmailFlows, EmailTokens, MailLimits
from authkeep.services.invitations import Invitations
from authkeep.services.login_throttle import LoginThrottle
from authkeep.services.oauth2 import OAuth2Tokens
from authkeep.services.orgs import Organizations
from authkeep.services.platform_admin import PlatformAdmin
from authkeep.services.rate_limits import RateLimits
from authkeep.services.revocation import MemoryRevocations, RedisRevocations, RevocationStore
from authkeep.services.sessions import Sessions
from authkeep.services.stats import SessionStats
from authkeep.settings import Problem, Settings, find_problems, load_or_create_dev_secret

log = structlog.get_logger("authkeep")

API_PREFIX = "/api/v1"
RATE_LIMIT_KEY_PURPOSE = b"authkeep/rate-limit-keys/v1"
_READY_TIMEOUT = 2.0


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


def signing_secret(settings: Settings) -> str:
    """The HS256 secret: configured, or (development only) generated once and kept."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.env == "test":
        return secrets.token_urlsafe(48)
    value, created = load_or_create_dev_secret(settings.secret_key_file)
    log.warning(
        "development_secret_key",
        file=str(settings.secret_key_file),
        created=created,
        hint="set AUTHKEEP_SECRET_KEY in production; this key is for this machine only",
    )
    return value


def build_secret_ring(settings: Settings) -> SecretRing:
    """The server secret and its predecessors (``AUTHKEEP_PREVIOUS_SECRET_KEYS``): the
    root of every symmetric key (HS256, keyed hashes), whatever signs the tokens."""
    previous = [value.get_secret_value() for value in settings.previous_secret_keys]
    return SecretRing.from_secrets(signing_secret(settings), previous)


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


def make_redis(url: str) -> Redis:
    """A Redis client that fails fast: a dead Redis must cost milliseconds, not seconds."""
    return Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        # One retry rides over a connection the server closed (a Redis restart). It must be
        # the asyncio Retry: the sync one wraps creating the coroutine, not awaiting it.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
    )


class Authkeep:
    """authkeep for one application: settings, keys and (while running) its services."""

    def __init__(self, settings: Settings | None = None, *, configure_logs: bool = True) -> None:
        self.settings = settings if settings is not None else Settings()
        if configure_logs:
            configure_logging(self.settings.log_level, self.settings.log_format)
        self.secrets = build_secret_ring(self.settings)
        self.keys = build_key_ring(self.settings, self.secrets)
        self.ip_resolver = ClientIPResolver(self.settings.trusted_proxies)
        self.metrics_allow_list = IPAllowList(self.settings.metrics_allowed_ips)
        # None: no IP restriction on the admin routes (the setting is empty).
        self.admin_allow_list = (
            IPAllowList(self.settings.admin_allowed_ips)
            if self.settings.admin_allowed_ips
            else None
        )
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        """The running services; an error outside the lifespan."""
        if self._services is None:
            raise RuntimeError("authkeep is not started: run the app with its lifespan")
        return self._services

    @property
    def revocation_ttl(self) -> int:
        """How long a revocation must be remembered: the longest access-token life."""
        return self.settings.access_token_expire_minutes * 60 + self.settings.jwt_leeway_seconds

    async def start(self) -> Services:
        """Open the database, Redis and the hashing pool."""
        s = self.settings
        db = Database(s.database_url, pool_size=s.database_pool_size)
        redis = make_redis(s.redis_url.get_secret_value()) if s.redis_url else None
        hasher = await asyncio.to_thread(
            PasswordHasher,
            Argon2Params(s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism),
            workers=s.hash_worker_count,
            queue_limit=s.hash_queue_limit,
        )
        codec = build_codec(s, self.keys)
        revocations: RevocationStore
        if redis is not None:
            revocations = RedisRevocations(
                redis,
                prefix=s.redis_prefix,
                ttl_seconds=self.revocation_ttl,
                resync=lambda: self._recent_revocations(db),
            )
        else:
            memory = MemoryRevocations(self.revocation_ttl)
            memory.load(await self._recent_revocations(db))
            revocations = memory

        async def publish(session_ids: Iterable[uuid.UUID]) -> None:
            await revocations.revoke(str(sid) for sid in session_ids)

        async def users_changed(user_ids: Iterable[uuid.UUID]) -> None:
            await revocations.users_changed(str(uid) for uid in user_ids)

        audit = AuditLog(db, enabled=s.audit_enabled)
        accounts = Accounts(db, hasher, publish, audit, users_changed=users_changed)
        # Limit keys only live for a window: a rotation merely restarts the counters, so
        # the newest key hashes them. Derived from the secret, not the token-signing key,
        # so rotating an asymmetric key changes neither.
        rate_limits = RateLimits.from_settings(
            s, pepper=self.secrets.derive(RATE_LIMIT_KEY_PURPOSE).newest.material
        )
        # The newest subkey signs challenges, every one verifies: a rotation fails none in
        # flight. The single-use store is Redis when configured (shared by every worker).
        challenge = build_challenge_gate(
            s,
            keys=[key.material for key in self.secrets.derive(CHALLENGE_KEY_PURPOSE).keys],
            redis=redis,
        )
        delivery = build_delivery(s, db)
        email_tokens = EmailTokenKey.from_ring(self.secrets)
        flows = EmailFlows.build(
            s,
            db,
            hasher,
            accounts,
            delivery,
            EmailTokens(email_tokens),
            MailLimits(rate_limits),
            audit,
            publish=publish,
            users_changed=users_changed,
        )
        sessions = Sessions(
            db,
            codec,
            accounts,
            publish,
            reuse_interval=timedelta(seconds=s.refresh_reuse_interval_seconds),
            idle_timeout=s.session_idle_timeout,
            audit=audit,
            email_gate=flows.signup.require_verified,
        )
        authenticator = Authenticator(db, codec, revocations)
        self._services = Services(
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
                db, codec, audit, users_changed, idle_timeout=s.session_idle_timeout
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
            ),
            api_keys=ApiKeys(db, audit),
            platform_admin=PlatformAdmin(db, accounts),
            stats=SessionStats(db),
            rate_limits=rate_limits,
            login_throttle=LoginThrottle(rate_limits, sessions, challenge),
            challenge=challenge,
            redis=redis,
            delivery=delivery,
            email_flows=flows,
            oauth2=OAuth2Tokens(codec, sessions, authenticator),
        )
        try:
            await self._check_start(db, audit)
        except BaseException:
            await self.stop()
            raise
        log.info("authkeep_started", env=s.env, database=db.dialect, redis=redis is not None)
        return self._services

    async def _check_start(self, db: Database, audit: AuditLog) -> None:
        """Refuse (production) or record the problems found at start: the settings' and
        the database role's (a superuser or owner could erase the audit log)."""
        async with db.reading() as conn:
            role_problems = await db_roles.connection_problems(conn)
        problems = find_problems(self.settings) + [
            Problem("AUTHKEEP_DATABASE_URL", message, "production") for message in role_problems
        ]
        blocking = [p.message for p in problems if p.blocks(self.settings.env)]
        if blocking:
            raise RuntimeError("unsafe configuration: " + "; ".join(blocking))
        await audit.config_problems(problems)

    async def _recent_revocations(self, db: Database) -> list[tuple[str, int]]:
        ttl = self.revocation_ttl
        now = utcnow()
        async with db.reading() as conn:
            rows = await session_rows.revoked_since(conn, now - timedelta(seconds=ttl))
        return [(str(sid), ttl - int((now - at).total_seconds())) for sid, at in rows]

    async def stop(self) -> None:
        """Close everything :meth:`start` opened."""
        services, self._services = self._services, None
        if services is None:
            return
        await services.delivery.stop()
        await services.revocations.close()
        await services.rate_limits.close()
        await services.challenge.close()
        await services.db.close()
        if services.redis is not None:
            await services.redis.aclose()
        await asyncio.to_thread(services.hasher.close)
        await asyncio.to_thread(services.accounts.close)

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Start on entry, stop on exit (use as, or inside, a FastAPI lifespan)."""
        services = await self.start()
        # Signed audit checkpoints every AUTHKEEP_AUDIT_CHECKPOINT_INTERVAL_SECONDS, in the
        # serving process only (not in CLI commands that call start()).
        checkpoints = scheduler_from_settings(self.settings, services.db)
        if checkpoints is not None:
            checkpoints.start()
        # The outbox is delivered by the serving process itself (the embedded default needs
        # nothing else) unless `authkeep worker` does it (AUTHKEEP_OUTBOX_IN_PROCESS=false);
        # stop() ends it, the message in flight first.
        if self.settings.outbox_in_process:
            services.delivery.start_in_background()
        try:
            yield
        finally:
            if checkpoints is not None:
                await checkpoints.stop()
            await self.stop()

    async def readiness(self) -> Readiness:
        """Whether the database and Redis answer, each within two seconds."""
        services = self.services
        database: Literal["ok", "unavailable"] = "ok"
        try:
            await asyncio.wait_for(services.db.ping(), _READY_TIMEOUT)
        except Exception:  # any failure means "not ready"; the reason is logged
            log.warning("readiness_database_failed", exc_info=True)
            database = "unavailable"
        redis: Literal["ok", "unavailable", "not_configured"] = "not_configured"
        if services.redis is not None:
            try:
                await asyncio.wait_for(services.redis.ping(), _READY_TIMEOUT)
                redis = "ok"
            except (RedisError, TimeoutError, OSError):
                redis = "unavailable"
        ok = database == "ok" and redis != "unavailable"
        return Readiness(
            status="ok" if ok else "unavailable",
            database=database,
            redis=redis,
        )

    def routers(self) -> list[tuple[APIRouter, str]]:
        """authkeep's routers and the prefix each is mounted under."""
        # Matched in this order on every request: the busiest router first.
        return [
            (auth.router, API_PREFIX),
            (oauth2_routes.router, API_PREFIX),
            (challenge_routes.router, API_PREFIX),
            (account_email.router, API_PREFIX),
            (health.router, ""),
            (jwks.router, ""),
            (oauth2_routes.discovery_router, ""),
            (metrics_routes.router, ""),
            (audit_routes.router, API_PREFIX),
            (org_routes.router, API_PREFIX),
            (org_routes.switch_router, API_PREFIX),
            (invitation_routes.router, API_PREFIX),
            (invitation_routes.mine_router, API_PREFIX),
            (api_key_routes.router, API_PREFIX),
            (admin_routes.router, API_PREFIX),
        ]

    def install(self, app: FastAPI, *, middleware: bool = True) -> None:
        """Add authkeep to ``app``: routers, error handlers, lifespan and (by default) the
        hardened middleware stack."""
        app.state.authkeep = self
        for router, prefix in self.routers():
            document_common_errors(router)
            app.include_router(router, prefix=prefix)
        install_error_handlers(app)
        if middleware:
            self.install_middleware(app)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(target: Any) -> AsyncIterator[Any]:
            async with self.lifespan(target), inner(target) as state:
                yield state

        app.router.lifespan_context = lifespan

    def install_middleware(self, app: FastAPI) -> None:
        """The middleware stack, outermost first: security headers, request context
        (id, log, last-resort 500), global rate limit, trusted hosts, CORS, body limit."""
        s = self.settings
        app.add_middleware(BodyLimitMiddleware, max_bytes=s.max_body_bytes)
        if s.allowed_origins:
            app.add_middleware(
                CORSMiddleware,
                allow_origins=s.allowed_origins,
                allow_credentials=False,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-API-Key"],
                expose_headers=[
                    "X-Request-ID",
                    "Retry-After",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                ],
                max_age=600,
            )
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=s.trusted_hosts, www_redirect=False)
        # Inside the request context (it needs the proxy-aware client IP, and its 429s get a
        # request id), outside everything else: a flood is refused before any other work.
        app.add_middleware(RateLimitMiddleware, services=lambda: self.services)
        app.add_middleware(RequestContextMiddleware, ip_resolver=self.ip_resolver)
        app.add_middleware(SecurityHeadersMiddleware)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The authkeep service as a FastAPI app."""
    authkeep = Authkeep(settings)
    app = FastAPI(
        title="authkeep",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    authkeep.install(app)
    if not authkeep.settings.is_production:
        install_docs(app)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        async with inner(target) as state:
            # Everything built so far (the app, the services, imported modules) lives as
            # long as the process: moving it out of the collector's sight keeps full
            # collections from scanning it again and again (they were the p99 latency
            # tail: 140 ms -> 58 ms in bench/run.py's authenticated read). Only the
            # service does this; an app that embeds authkeep owns its process. Not under
            # test: frozen cycles are never collected, and a test run builds many apps.
            if authkeep.settings.env != "test":
                gc.collect()
                gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app
