"""authkeep's service (``create_app``) with ONE layer taken out, chosen by ``BENCH_WITHOUT``,
so that bench/run.py can price each layer as the throughput ratio of the same request with
and without it. Bench-only: it reaches into internals on purpose and is never shipped.

- ``headers``: no security-headers middleware;
- ``request_context``: no request id, access log or last-resort 500 handler;
- ``revocation``: the per-request revocation look-up (one Redis ``MGET``) answers "not
  revoked, user unchanged" without asking anyone;
- ``token_memory``: the codec forgets every verified access token, so each request
  verifies its token in full (PyJWT), as the JWT-only floor does;
- ``outbox``: the outbox accepts nothing (no row, nothing to deliver): the flows run as
  they do with email, minus the email and its mail intent (``bench/outbox.py``);
- anything else (or unset): the full stack, exactly as ``authkeep serve`` runs it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from authkeep.http.app import Authkeep, create_app
from authkeep.http.middleware.request_context import RequestContextMiddleware
from authkeep.http.middleware.security_headers import SecurityHeadersMiddleware

_MIDDLEWARE = {"headers": SecurityHeadersMiddleware, "request_context": RequestContextMiddleware}


class _NoMemory:
    def get(self, token: str) -> None:
        return None

    def put(self, token: str, claims: object) -> None:
        pass


async def _queue_nothing(*args: object, **kwargs: object) -> None:
    return None


class _NeverRevoked:
    async def check(self, session_id: str, user_id: str) -> tuple[bool, str | None]:
        return False, "bench"


def create() -> FastAPI:
    without = os.environ.get("BENCH_WITHOUT", "")
    app = create_app()
    authkeep: Authkeep = app.state.authkeep
    if without in _MIDDLEWARE:
        # The stack is built on the first request: dropping the entry now is enough.
        app.user_middleware = [m for m in app.user_middleware if m.cls is not _MIDDLEWARE[without]]
    if without in ("revocation", "token_memory", "outbox"):
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(target: Any) -> AsyncIterator[Any]:
            async with inner(target) as state:
                services = authkeep.services
                if without == "revocation":
                    services.authenticator._revocations = _NeverRevoked()  # type: ignore[assignment]
                elif without == "outbox":
                    # The flows and the mailer hold this very Outbox: its enqueue, patched on
                    # the instance, is theirs.
                    services.delivery.outbox.enqueue = _queue_nothing  # type: ignore[method-assign]
                else:
                    services.codec._verified = _NoMemory()  # type: ignore[assignment]
                yield state

        app.router.lifespan_context = lifespan
    return app
