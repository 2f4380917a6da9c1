"""A challenge after failed logins (ALTCHA proof of work, or a CAPTCHA service); see
``docs/challenge.md``."""

from __future__ import annotations

from authkeep.services.challenge.build import CHALLENGE_KEY_PURPOSE, build_challenge_gate
from authkeep.services.challenge.gate import ChallengeGate
from authkeep.services.challenge.providers import (
    VERIFY_URLS,
    AltchaProvider,
    ChallengeProvider,
    SiteVerifyProvider,
    Solved,
)
from authkeep.services.challenge.spent import MemorySpent, RedisSpent, SpentSolutions

__all__ = [
    "CHALLENGE_KEY_PURPOSE",
    "VERIFY_URLS",
    "AltchaProvider",
    "ChallengeGate",
    "ChallengeProvider",
    "MemorySpent",
    "RedisSpent",
    "SiteVerifyProvider",
    "Solved",
    "SpentSolutions",
    "build_challenge_gate",
]
