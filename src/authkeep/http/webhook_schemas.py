"""Bodies of the webhook routes (``/api/v1/webhooks``, ``/api/v1/admin/webhooks``).

Requests forbid unknown fields (no ``organization_id`` or ``secret`` can ride along). A
signing secret appears in two answers only — creation and rotation — and in no request.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from authkeep.http.fields import CleanText

Url = Annotated[CleanText, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[CleanText, StringConstraints(max_length=200)]
EventTypeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
EventTypes = Annotated[list[EventTypeName], Field(max_length=50)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_In):
    """``POST …/webhooks``: where to post, and which events (none listed: every event)."""

    url: Url = Field(
        description="https (http outside production); its host must resolve to public "
        "addresses only, unless AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS allows them"
    )
    description: Description = ""
    event_types: EventTypes = Field(
        default_factory=list, description="Event types to receive; empty: every type"
    )


class EndpointPatch(_In):
    """``PATCH …/webhooks/{id}``: any of the fields; ``enabled`` true re-enables a disabled
    endpoint (its failure count starts again)."""

    url: Url | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.model_fields_set.isdisjoint({"url", "description", "event_types", "enabled"}):
            raise ValueError("send at least one of url, description, event_types, enabled")
        return self


class EndpointOut(BaseModel):
    """An endpoint: never its secret."""

    id: uuid.UUID
    org_id: uuid.UUID | None = Field(description="None: a platform endpoint (every event)")
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="admin, gone (the endpoint answered 410) or failures (too many in a row)"
    )
    disabled_at: datetime | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="During a rotation: until when the previous secret signs too"
    )


class EndpointSecretOut(EndpointOut):
    """An endpoint with its signing secret: shown once, at creation and at each rotation."""

    secret: str = Field(description="whsec_…: verify deliveries with it (Standard Webhooks)")


class DeliveryOut(BaseModel):
    """One event for one endpoint, and how its attempts went."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    webhook_id: str = Field(description="The webhook-id header: the same on every attempt")
    event_type: str
    status: str = Field(description="pending, succeeded, failed (gave up) or cancelled")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    succeeded_at: datetime | None
    payload: dict[str, Any] = Field(description="The body as delivered")


class EventTypeOut(BaseModel):
    """An entry of the event catalogue."""

    type: str
    description: str
    data_schema: dict[str, Any] = Field(description="JSON Schema of the event's data")
