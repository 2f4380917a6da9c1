"""Facts about the caller that services record (sessions, audit) but do not trust."""

from __future__ import annotations

from dataclasses import dataclass

USER_AGENT_MAX = 256


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Where a request came from: client IP (proxy-aware), user agent, request id."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def short_user_agent(self) -> str | None:
        """The user agent cut to what the sessions table stores."""
        return self.user_agent[:USER_AGENT_MAX] if self.user_agent else None
