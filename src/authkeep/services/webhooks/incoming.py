"""Verifying webhooks that an embedding app *receives* (the FastAPI dependency is
:func:`authkeep.http.incoming_webhooks.incoming_webhook`).

Two schemes:

* :class:`StandardWebhooksScheme` — ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, several
  space-separated during a sender's rotation), secrets ``whsec_…``; signed with the
  ``standardwebhooks`` library. (Its own ``verify`` fixes the tolerance at five minutes and
  raises on a malformed header; this check takes a configured tolerance and refuses every
  malformed header as a bad signature.)
* :class:`HmacScheme` — a plain header: ``X-Signature: sha256=<hex HMAC-SHA256 of
  timestamp.body>`` with ``X-Timestamp`` (Unix seconds) and ``X-Webhook-Id``; the names,
  the prefix and whether a timestamp is signed are configurable.

What both enforce: a signature made with one of the secrets (a list: a rotation), compared
in constant time; a timestamp within the tolerance either way (an old message replayed
after the tolerance is refused without any memory); each id accepted once within the window
(:class:`ReplayGuard`: in process, or Redis shared by every worker) — so a captured request
replayed within the tolerance is refused too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from standardwebhooks.webhooks import Webhook

from authkeep.errors import DependencyUnavailable, WebhookRejected

MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A verified incoming webhook: its id, its signed time (None when the scheme signs
    none) and the raw body, read once."""

    id: str
    timestamp: datetime | None
    body: bytes

    def text(self) -> str:
        """The body as text (it was checked to be UTF-8 where the scheme signs text)."""
        return self.body.decode("utf-8")


class Scheme(Protocol):
    """A signature scheme: verifies one request."""

    @property
    def tolerance(self) -> timedelta:
        """How far a signed timestamp may be from now, either way."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> VerifiedWebhook:
        """The verified webhook, or WebhookRejected."""
        ...


def _timestamp(value: str | None, now: datetime, tolerance: timedelta) -> datetime:
    if not value or not value.isdigit() or len(value) > 12:
        raise WebhookRejected("Webhook timestamp missing or malformed")
    moment = datetime.fromtimestamp(int(value), tz=UTC)
    if moment < now - tolerance:
        raise WebhookRejected("Webhook timestamp too old")
    if moment > now + tolerance:
        raise WebhookRejected("Webhook timestamp too far in the future")
    return moment


def _message_id(value: str | None) -> str:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise WebhookRejected("Webhook id missing or malformed")
    return value


@dataclass(frozen=True, slots=True)
class StandardWebhooksScheme:
    """Standard Webhooks verification (see the module docstring)."""

    secrets: tuple[str, ...]
    tolerance: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("at least one secret")
        for secret in self.secrets:
            Webhook(secret)  # a malformed secret fails here, at start-up, not per request

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> VerifiedWebhook:
        """Check the three headers and the signature over ``body``."""
        message_id = _message_id(headers.get("webhook-id"))
        moment = _timestamp(headers.get("webhook-timestamp"), now, self.tolerance)
        signatures = []
        for item in (headers.get("webhook-signature") or "").split():
            version, _, encoded = item.partition(",")
            if version != "v1":
                continue
            try:
                signatures.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                continue
        if not signatures:
            raise WebhookRejected("Webhook signature missing or malformed")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("Webhook body is not UTF-8") from None
        for secret in self.secrets:
            expected = base64.b64decode(
                Webhook(secret).sign(message_id, moment, text).partition(",")[2]
            )
            if any(hmac.compare_digest(expected, given) for given in signatures):
                return VerifiedWebhook(message_id, moment, body)
        raise WebhookRejected("Webhook signature does not match")


@dataclass(frozen=True, slots=True)
class HmacScheme:
    """A plain HMAC-SHA256 header (see the module docstring). With ``timestamp_header``
    None the signature covers the body alone and nothing bounds a replay but the id."""

    secrets: tuple[bytes, ...]
    tolerance: timedelta = timedelta(minutes=5)
    signature_header: str = "x-signature"
    timestamp_header: str | None = "x-timestamp"
    id_header: str = "x-webhook-id"
    prefix: str = "sha256="

    def __post_init__(self) -> None:
        if not self.secrets or not all(self.secrets):
            raise ValueError("at least one non-empty secret")

    def sign(self, body: bytes, timestamp: int | None, secret: bytes | None = None) -> str:
        """The header value for ``body`` (a sender's side, and tests)."""
        signed = body if timestamp is None else str(timestamp).encode() + b"." + body
        digest = hmac.new(secret or self.secrets[0], signed, hashlib.sha256).hexdigest()
        return self.prefix + digest

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> VerifiedWebhook:
        """Check the id, the timestamp (if signed) and the signature over ``body``."""
        message_id = _message_id(headers.get(self.id_header))
        moment = None
        if self.timestamp_header is not None:
            moment = _timestamp(headers.get(self.timestamp_header), now, self.tolerance)
        given = (headers.get(self.signature_header) or "").strip()
        if not given.startswith(self.prefix):
            raise WebhookRejected("Webhook signature missing or malformed")
        stamp = int(moment.timestamp()) if moment is not None else None
        for secret in self.secrets:
            if hmac.compare_digest(self.sign(body, stamp, secret).encode(), given.encode()):
                return VerifiedWebhook(message_id, moment, body)
        raise WebhookRejected("Webhook signature does not match")


class ReplayGuard(Protocol):
    """Remembers accepted ids for a while."""

    async def claim(self, key: str, ttl: timedelta) -> bool:
        """Remember ``key`` for ``ttl``; False when it is remembered already."""
        ...

    async def release(self, key: str) -> None:
        """Forget ``key`` (its request failed: the sender's retry must get through)."""
        ...


class MemoryReplayGuard:
    """Ids remembered in this process (one worker; a bounded number)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._until: dict[str, float] = {}
        self._max_keys = max_keys

    async def claim(self, key: str, ttl: timedelta) -> bool:
        """See :meth:`ReplayGuard.claim`."""
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return False
        if len(self._until) >= self._max_keys:
            self._until = {k: t for k, t in self._until.items() if t > now}
            while len(self._until) >= self._max_keys:
                # Full of live ids: forget the oldest (dicts keep insertion order).
                del self._until[next(iter(self._until))]
        self._until[key] = now + ttl.total_seconds()
        return True

    async def release(self, key: str) -> None:
        """See :meth:`ReplayGuard.release`."""
        self._until.pop(key, None)


class RedisReplayGuard:
    """Ids remembered in Redis (``SET NX EX``): every worker and host shares them."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def claim(self, key: str, ttl: timedelta) -> bool:
        """See :meth:`ReplayGuard.claim`. Redis down: 503 (failing open would accept
        replays; failing closed loses nothing, the sender retries)."""
        seconds = max(1, int(ttl.total_seconds()))
        try:
            return bool(await self._redis.set(self._prefix + key, b"1", nx=True, ex=seconds))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable() from exc

    async def release(self, key: str) -> None:
        """See :meth:`ReplayGuard.release`."""
        # Redis down: the id stays claimed until it expires (the sender's retry gets a 409).
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._prefix + key)


def replay_window(scheme: Scheme) -> timedelta:
    """How long an id must be remembered: a timestamp within the tolerance either way is
    accepted for twice the tolerance."""
    return scheme.tolerance * 2 + timedelta(seconds=1)


def secrets_tuple(secrets: str | Sequence[str]) -> tuple[str, ...]:
    """One secret or several (newest first, during a rotation)."""
    return (secrets,) if isinstance(secrets, str) else tuple(secrets)
