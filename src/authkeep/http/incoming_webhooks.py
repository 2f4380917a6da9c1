"""Receiving webhooks in an embedding app: a FastAPI dependency that verifies them.

::

    from authkeep import IncomingWebhook, incoming_webhook

    Billing = Annotated[IncomingWebhook, Depends(incoming_webhook(os.environ["BILLING_SECRET"]))]

    @app.post("/hooks/billing")
    async def billing(hook: Billing) -> dict[str, str]:
        event = json.loads(hook.body)       # the raw body, read once, verified
        ...

The dependency reads the raw body once (Starlette keeps it: the route may still take a JSON
body parameter or call ``request.body()``), verifies it — Standard Webhooks by default, or a
plain HMAC-SHA256 header (``scheme="hmac-sha256"``) — within ``tolerance_seconds``, and
accepts each id once: ids are remembered in Redis when authkeep runs with
``AUTHKEEP_REDIS_URL`` (every worker shares them), else in the process. An id is forgotten
again if the route raises, so the sender's retry of a failed request gets through.

Answers: 400 ``{"detail": "Webhook …"}`` naming the failed check (never a value), 409 for
an id seen already, 413 for a body over ``max_body_bytes``. Rules and proofs:
``docs/webhooks.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Literal

from fastapi import Request
from starlette.exceptions import HTTPException

from authkeep.db.base import utcnow
from authkeep.errors import WebhookReplayed
from authkeep.services.webhooks.incoming import (
    HmacScheme,
    MemoryReplayGuard,
    RedisReplayGuard,
    ReplayGuard,
    Scheme,
    StandardWebhooksScheme,
    VerifiedWebhook,
    replay_window,
    secrets_tuple,
)

IncomingWebhook = VerifiedWebhook
"""What the dependency yields: ``id``, ``timestamp`` and the raw ``body``."""

REPLAY_KEY_PREFIX = "incoming-webhook:"


def _redis_guard(request: Request) -> ReplayGuard | None:
    """authkeep's Redis, when the app runs authkeep with one."""
    authkeep = getattr(request.app.state, "authkeep", None)
    if authkeep is None:
        return None
    try:
        redis = authkeep.services.redis
    except RuntimeError:  # installed but not started
        return None
    if redis is None:
        return None
    return RedisReplayGuard(redis, authkeep.settings.redis_prefix + REPLAY_KEY_PREFIX)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail="Webhook body too large")
    body = await request.body()  # cached on the request: the route can read it again
    if len(body) > limit:
        raise HTTPException(status_code=413, detail="Webhook body too large")
    return body


def incoming_webhook(
    secrets: str | Sequence[str],
    *,
    scheme: Literal["standard-webhooks", "hmac-sha256"] = "standard-webhooks",
    tolerance_seconds: int = 300,
    name: str = "default",
    replay_guard: ReplayGuard | None = None,
    max_body_bytes: int = 1_048_576,
    signature_header: str = "X-Signature",
    timestamp_header: str | None = "X-Timestamp",
    id_header: str = "X-Webhook-Id",
    signature_prefix: str = "sha256=",
) -> Callable[[Request], AsyncIterator[VerifiedWebhook]]:
    """A dependency that verifies incoming webhooks signed with ``secrets`` (one, or a
    list during the sender's rotation: any of them verifies).

    ``scheme``: ``standard-webhooks`` (``whsec_…`` secrets, the ``webhook-*`` headers) or
    ``hmac-sha256`` (``signature_header`` = ``signature_prefix`` + hex HMAC-SHA256 of
    ``<timestamp>.<body>``, or of the body alone when ``timestamp_header`` is None — then
    only the id stops a replay). ``name`` separates the ids of several sources.
    ``replay_guard`` replaces the remembered-ids store (default: authkeep's Redis if
    configured, else this process). A bad secret fails here, not per request.
    """
    if not 1 <= tolerance_seconds <= 24 * 3600:
        raise ValueError("tolerance_seconds must be between 1 and 86400")
    tolerance = timedelta(seconds=tolerance_seconds)
    verifier: Scheme
    if scheme == "standard-webhooks":
        verifier = StandardWebhooksScheme(secrets_tuple(secrets), tolerance)
    elif scheme == "hmac-sha256":
        verifier = HmacScheme(
            tuple(secret.encode() for secret in secrets_tuple(secrets)),
            tolerance,
            signature_header=signature_header.lower(),
            timestamp_header=timestamp_header.lower() if timestamp_header else None,
            id_header=id_header.lower(),
            prefix=signature_prefix,
        )
    else:
        raise ValueError(f"unknown webhook scheme {scheme!r}")
    window = replay_window(verifier)
    memory = MemoryReplayGuard()

    async def verified_webhook(request: Request) -> AsyncIterator[VerifiedWebhook]:
        body = await _body(request, max_body_bytes)
        found = verifier.verify(body, request.headers, utcnow())
        guard = replay_guard or _redis_guard(request) or memory
        key = f"{name}:{found.id}"
        # Claimed only after the signature checks: an unsigned request cannot burn an id.
        if not await guard.claim(key, window):
            raise WebhookReplayed()
        try:
            yield found
        except BaseException:
            await guard.release(key)
            raise

    return verified_webhook
