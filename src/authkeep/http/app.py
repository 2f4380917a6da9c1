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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI
from redis.exceptions import RedisError
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from authkeep.db import roles as db_roles
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
from authkeep.http.routers import consents as consent_routes
from authkeep.http.routers import data_export as export_routes
from authkeep.http.routers import deletion as deletion_routes
from authkeep.http.routers import invitations as invitation_routes
from authkeep.http.routers import metrics as metrics_routes
from authkeep.http.routers import mfa as mfa_routes
from authkeep.http.routers import oauth2 as oauth2_routes
from authkeep.http.routers import orgs as org_routes
from authkeep.http.routers import step_up as step_up_routes
from authkeep.http.routers import webauthn as webauthn_routes
from authkeep.http.routers import webhooks as webhook_routes
from authkeep.http.schemas import Readiness
from authkeep.logging import configure_logging
from authkeep.services.audit import AuditLog
from authkeep.services.audit_checkpoints import scheduler_from_settings
from authkeep.settings import Problem, Settings, find_problems
from authkeep.tls import TLSError, explain_redis
from authkeep.wiring import (
    Services,
    build_key_ring,
    build_secret_ring,
    build_services,
    close_services,
)

log = structlog.get_logger("authkeep")

API_PREFIX = "/api/v1"
_READY_TIMEOUT = 2.0


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

    async def start(self) -> Services:
        """Open the database, Redis and the hashing pool; build the services."""
        services = await build_services(self.settings, self.secrets, self.keys)
        self._services = services
        try:
            await self._check_start(services.db, services.audit)
        except BaseException:
            await self.stop()
            raise
        s = self.settings
        log.info(
            "authkeep_started",
            env=s.env,
            database=services.db.dialect,
            redis=services.redis is not None,
        )
        return services

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

    async def stop(self) -> None:
        """Close everything :meth:`start` opened."""
        services, self._services = self._services, None
        if services is not None:
            await close_services(services)

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
        except Exception as exc:  # any failure means "not ready"; the reason is logged
            # A TLS failure's message names the setting to fix (authkeep.tls).
            reason = str(exc) if isinstance(exc, TLSError) else None
            log.warning("readiness_database_failed", reason=reason, exc_info=True)
            database = "unavailable"
        redis: Literal["ok", "unavailable", "not_configured"] = "not_configured"
        if services.redis is not None:
            try:
                await asyncio.wait_for(services.redis.ping(), _READY_TIMEOUT)
                redis = "ok"
            except (RedisError, TimeoutError, OSError) as exc:
                url = self.settings.redis_url
                reason = explain_redis(
                    exc, url.get_secret_value() if url else "", self.settings.redis_ssl_ca_file
                )
                if reason is not None:
                    log.warning("readiness_redis_failed", reason=reason)
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
            (consent_routes.router, API_PREFIX),
            (deletion_routes.router, API_PREFIX),
            (export_routes.router, API_PREFIX),
            (mfa_routes.router, API_PREFIX),
            (step_up_routes.router, API_PREFIX),
            (webauthn_routes.router, API_PREFIX),
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
            (webhook_routes.router, API_PREFIX),
            (admin_routes.router, API_PREFIX),
            (webhook_routes.admin_router, API_PREFIX),
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
                # PUT: /auth/me/consents/{purpose}.
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
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
        version=package_version("authkeep"),
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
