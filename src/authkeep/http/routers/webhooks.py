"""Webhook endpoints: ``/api/v1/webhooks`` (the caller's active organization, its admins)
and ``/api/v1/admin/webhooks`` (the platform's endpoints, which get every event: platform
admins, behind the admin IP allow-list).

The same routes on both: list, create, read, update, delete, rotate the secret, list the
deliveries, replay one, send a test event. Ids in paths are UUIDs by the path's own
converter, so ``/event-types`` is never an endpoint id (a wrong method there is a 405). User
sessions only (API keys get 403); creating an endpoint and rotating its secret need a recent
sign-in (step-up). Thin: the rules live in
:class:`authkeep.services.webhooks.WebhookEndpoints`.
"""

# No ``from __future__ import annotations``: the routes are defined in a function, and
# FastAPI must resolve their local ``Annotated`` aliases when the function runs.
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from authkeep.db.webhooks import DeliveryRecord, EndpointRecord
from authkeep.http.deps import CurrentPrincipal, Info, RecentPrincipal, get_authkeep
from authkeep.http.fields import UTCDatetime
from authkeep.http.routers.admin import AdminRoute, admin_ip_allowed
from authkeep.http.webhook_schemas import (
    DeliveryOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointSecretOut,
    EventTypeOut,
)
from authkeep.security.permissions import Role
from authkeep.services.authn import Principal
from authkeep.services.authz import org_access
from authkeep.services.webhooks import EVENT_TYPES, Scope, WebhookEndpoints, message_id

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
admin_router = APIRouter(
    prefix="/admin/webhooks",
    tags=["webhooks"],
    route_class=AdminRoute,
    dependencies=[Depends(admin_ip_allowed)],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated, or (create, rotate) the sign-in is not recent"},
    403: {"description": "Not an admin of the active organization (or the platform), or a key"},
    404: {"description": "No such endpoint or delivery in this scope"},
}


def _service(request: Request) -> WebhookEndpoints:
    return get_authkeep(request).services.webhooks


def endpoint_out(record: EndpointRecord) -> EndpointOut:
    """The public view of an endpoint: never its secret."""
    return EndpointOut(
        id=record.id,
        org_id=record.org_id,
        url=record.url,
        description=record.description,
        event_types=record.event_types,
        enabled=record.enabled,
        disabled_reason=record.disabled_reason,
        disabled_at=record.disabled_at,
        consecutive_failures=record.consecutive_failures,
        created_at=record.created_at,
        updated_at=record.updated_at,
        previous_secret_expires_at=record.previous_secret_expires_at,
    )


def delivery_out(record: DeliveryRecord) -> DeliveryOut:
    """The public view of a delivery."""
    return DeliveryOut(
        id=record.id,
        endpoint_id=record.endpoint_id,
        event_id=record.event_id,
        webhook_id=message_id(record.event_id),
        event_type=record.event_type,
        status=record.status,
        attempts=record.attempts,
        last_status_code=record.last_status_code,
        last_error=record.last_error,
        created_at=record.created_at,
        last_attempt_at=record.last_attempt_at,
        succeeded_at=record.succeeded_at,
        payload=record.payload,
    )


async def org_scope(principal: CurrentPrincipal) -> Scope:
    """The active organization's endpoints; its admins only."""
    return Scope.organization(org_access(principal, Role.ADMIN))


async def recent_org_scope(principal: RecentPrincipal) -> Scope:
    """:func:`org_scope` with a recent sign-in (a sensitive change)."""
    return Scope.organization(org_access(principal, Role.ADMIN))


async def platform_scope(principal: CurrentPrincipal) -> Scope:
    """The platform's endpoints; platform admins only."""
    return Scope.platform(principal)


async def recent_platform_scope(principal: RecentPrincipal) -> Scope:
    """:func:`platform_scope` with a recent sign-in (a sensitive change)."""
    return Scope.platform(principal)


ScopeDependency = Callable[[Principal], Awaitable[Scope]]


def _install(router: APIRouter, scope_of: ScopeDependency, recent_of: ScopeDependency) -> None:
    """The routes on ``router``, for the scope its dependencies name."""
    Managed = Annotated[Scope, Depends(scope_of)]
    Sensitive = Annotated[Scope, Depends(recent_of)]

    @router.get("", response_model=list[EndpointOut], responses=_ERRORS)
    async def list_endpoints(scope: Managed, request: Request) -> list[EndpointOut]:
        """The scope's endpoints."""
        return [endpoint_out(r) for r in await _service(request).endpoints(scope)]

    @router.post(
        "",
        response_model=EndpointSecretOut,
        status_code=status.HTTP_201_CREATED,
        responses={**_ERRORS, 409: {"description": "Too many endpoints"}},
    )
    async def create_endpoint(
        body: EndpointIn, scope: Sensitive, request: Request, info: Info
    ) -> EndpointSecretOut:
        """Register an endpoint; the response is the only time ``secret`` is shown."""
        created = await _service(request).create(
            scope,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            info=info,
        )
        return EndpointSecretOut(
            **endpoint_out(created.endpoint).model_dump(), secret=created.secret
        )

    @router.get("/event-types", response_model=list[EventTypeOut], responses=_ERRORS)
    async def event_types(scope: Managed) -> list[EventTypeOut]:
        """The event catalogue: each type, what it means and its data's JSON schema."""
        return [
            EventTypeOut(type=e.name, description=e.description, data_schema=e.data_schema)
            for e in EVENT_TYPES.values()
        ]

    @router.get("/{endpoint_id:uuid}", response_model=EndpointOut, responses=_ERRORS)
    async def get_endpoint(endpoint_id: uuid.UUID, scope: Managed, request: Request) -> EndpointOut:
        """One endpoint."""
        return endpoint_out(await _service(request).get(scope, endpoint_id))

    @router.patch("/{endpoint_id:uuid}", response_model=EndpointOut, responses=_ERRORS)
    async def update_endpoint(
        endpoint_id: uuid.UUID, body: EndpointPatch, scope: Managed, request: Request, info: Info
    ) -> EndpointOut:
        """Change the URL, description, event filter, or enable/disable the endpoint."""
        record = await _service(request).update(
            scope,
            endpoint_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            enabled=body.enabled,
            info=info,
        )
        return endpoint_out(record)

    @router.delete("/{endpoint_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
    async def delete_endpoint(
        endpoint_id: uuid.UUID, scope: Managed, request: Request, info: Info
    ) -> Response:
        """Delete the endpoint and its deliveries."""
        await _service(request).delete(scope, endpoint_id, info)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/{endpoint_id:uuid}/rotate-secret", response_model=EndpointSecretOut, responses=_ERRORS
    )
    async def rotate_secret(
        endpoint_id: uuid.UUID, scope: Sensitive, request: Request, info: Info
    ) -> EndpointSecretOut:
        """A new signing secret, shown once; the previous one also signs until
        ``previous_secret_expires_at``."""
        rotated = await _service(request).rotate_secret(scope, endpoint_id, info)
        return EndpointSecretOut(
            **endpoint_out(rotated.endpoint).model_dump(), secret=rotated.secret
        )

    @router.get(
        "/{endpoint_id:uuid}/deliveries", response_model=list[DeliveryOut], responses=_ERRORS
    )
    async def list_deliveries(
        endpoint_id: uuid.UUID,
        scope: Managed,
        request: Request,
        before: Annotated[UTCDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[DeliveryOut]:
        """The endpoint's deliveries, newest first (``before``: created before, to page)."""
        found = await _service(request).deliveries(scope, endpoint_id, before=before, limit=limit)
        return [delivery_out(d) for d in found]

    @router.post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/replay",
        response_model=DeliveryOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={**_ERRORS, 409: {"description": "The endpoint is disabled"}},
    )
    async def replay_delivery(
        endpoint_id: uuid.UUID,
        delivery_id: uuid.UUID,
        scope: Managed,
        request: Request,
        info: Info,
    ) -> DeliveryOut:
        """Send a delivery again (same ``webhook-id``), now."""
        return delivery_out(await _service(request).replay(scope, endpoint_id, delivery_id, info))

    @router.post(
        "/{endpoint_id:uuid}/test",
        response_model=DeliveryOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={**_ERRORS, 409: {"description": "The endpoint is disabled"}},
    )
    async def send_test(
        endpoint_id: uuid.UUID, scope: Managed, request: Request, info: Info
    ) -> DeliveryOut:
        """Queue a ``webhook.test`` event to this endpoint (whatever its filter)."""
        return delivery_out(await _service(request).send_test(scope, endpoint_id, info))


_install(router, org_scope, recent_org_scope)
_install(admin_router, platform_scope, recent_platform_scope)
