"""What the email flows read from the settings, in one small value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from authkeep.settings import Settings

VerificationMode = Literal["required", "optional", "off"]


@dataclass(frozen=True, slots=True)
class EmailFlowConfig:
    """``verification``: ``AUTHKEEP_EMAIL_VERIFICATION`` in force; the three lifetimes are
    how long each kind of link works."""

    verification: VerificationMode = "optional"
    verify_ttl: timedelta = timedelta(hours=48)
    reset_ttl: timedelta = timedelta(minutes=60)
    change_ttl: timedelta = timedelta(hours=24)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailFlowConfig:
        """The configuration ``settings`` describe."""
        return cls(
            verification=settings.verification_mode,
            verify_ttl=timedelta(hours=settings.email_verification_expire_hours),
            reset_ttl=timedelta(minutes=settings.password_reset_expire_minutes),
            change_ttl=timedelta(hours=settings.email_change_expire_hours),
        )
