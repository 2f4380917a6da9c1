"""Building the challenge gate from settings."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from authkeep.security.proof_of_work import ProofOfWork
from authkeep.services.challenge.gate import ChallengeGate
from authkeep.services.challenge.providers import (
    VERIFY_URLS,
    AltchaProvider,
    ChallengeProvider,
    SiteVerifyProvider,
)
from authkeep.services.challenge.spent import MemorySpent, RedisSpent, SpentSolutions
from authkeep.settings import Settings

CHALLENGE_KEY_PURPOSE = b"authkeep/altcha-challenge/v1"
"""The HKDF purpose of the ALTCHA signing keys (derived from the secret ring)."""


def build_challenge_gate(
    settings: Settings, *, keys: Sequence[bytes], redis: Redis | None
) -> ChallengeGate:
    """The gate for ``settings``: its provider, and the single-use store (Redis when
    configured, shared by every worker; else memory). ``keys`` sign ALTCHA challenges
    (the first) and verify them (all): subkeys of the secret ring for
    :data:`CHALLENGE_KEY_PURPOSE`."""
    provider: ChallengeProvider
    name = settings.challenge_provider
    if name == "altcha":
        provider = AltchaProvider(
            ProofOfWork(
                keys,
                max_number=settings.challenge_altcha_max_number,
                ttl_seconds=settings.challenge_expire_seconds,
            )
        )
    else:
        if settings.challenge_secret is None:
            raise ValueError(f"AUTHKEEP_CHALLENGE_SECRET is required for {name}")
        provider = SiteVerifyProvider(
            name,
            secret=settings.challenge_secret.get_secret_value(),
            site_key=settings.challenge_site_key,
            verify_url=settings.challenge_verify_url or VERIFY_URLS[name],
        )
    spent: SpentSolutions = (
        RedisSpent(redis, prefix=settings.redis_prefix) if redis is not None else MemorySpent()
    )
    after = settings.challenge_after_failures if settings.rate_limit_enabled else 0
    return ChallengeGate(provider, spent, after_failures=after)
