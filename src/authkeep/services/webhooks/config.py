"""The webhook settings, read once from :class:`~authkeep.settings.Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from authkeep.services.outbox import RetrySchedule
from authkeep.services.webhooks.ssrf import AddressPolicy
from authkeep.settings import Settings

STANDARD_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""The Standard Webhooks retry schedule after the first attempt: 5 s, 5 min, 30 min, 2 h,
5 h, 10 h, 10 h (eight attempts over about 27.6 hours)."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """How webhooks behave in this deployment."""

    enabled: bool = True
    policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeout_seconds: float = 15.0
    schedule: RetrySchedule = field(default_factory=lambda: RetrySchedule(STANDARD_SCHEDULE))
    failure_limit: int = 50
    rotation_grace: timedelta = timedelta(hours=24)
    max_endpoints: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """The configuration ``settings`` describe."""
        return cls(
            enabled=settings.webhooks_enabled,
            policy=AddressPolicy.build(
                settings.webhook_allowed_networks, https_only=settings.is_production
            ),
            timeout_seconds=settings.webhook_timeout_seconds,
            # AUTHKEEP_OUTBOX_MAX_ATTEMPTS caps every kind: a longer schedule is cut to it, so
            # the delivery's status and the outbox agree on which attempt is the last.
            schedule=RetrySchedule(
                tuple(settings.webhook_retry_schedule)[: max(settings.outbox_max_attempts - 1, 1)]
            ),
            failure_limit=settings.webhook_failure_limit,
            rotation_grace=timedelta(hours=settings.webhook_secret_rotation_hours),
            max_endpoints=settings.webhook_max_endpoints,
        )
