"""The event catalogue: what happens in authkeep that a webhook endpoint can hear about.

Events come from the audit log, in one place: an audited change whose ``(action, outcome)``
is a key of :data:`SOURCES` becomes the events listed there, in the same transaction
(:class:`authkeep.services.webhooks.WebhookEvents`). Extending the catalogue is one entry in
:data:`EVENT_TYPES` (the type, its description and the JSON schema of its ``data``) and one
line in :data:`SOURCES` (the audit action and how to build ``data`` from the audit event).

``data`` carries identifiers and attributes, never personal data (an address, a name, an IP)
nor a secret: the body leaves authkeep for a third-party URL and is kept, unencrypted, with
its deliveries. A consumer looks people up by id through the API it is entitled to.

Every delivered body is ``{"type", "timestamp", "data", "audit"}``; ``audit`` is ``{"seq",
"hash", "chain"}`` of the audit row that recorded the change (``seq`` is its id in
``/api/v1/audit``), so a consumer can find the row and notice a gap against the chain; a
test event has ``"audit": null``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authkeep.services.audit import Action, AuditEvent

TEST_EVENT = "webhook.test"
"""The type of the event ``POST …/webhooks/{id}/test`` sends (never from the audit log)."""

_UUID = {"type": "string", "format": "uuid"}
_OPTIONAL_UUID = {"type": ["string", "null"], "format": "uuid"}
_ROLE = {"type": "string", "enum": ["admin", "editor", "viewer"]}
_COUNT = {"type": "integer", "minimum": 0}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    properties = {**required, **(optional or {})}
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(required),
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class EventType:
    """One entry of the catalogue: its name, what it means and the schema of its data."""

    name: str
    description: str
    data_schema: dict[str, Any]


EVENT_TYPES: dict[str, EventType] = {
    event.name: event
    for event in (
        EventType(
            "user.created",
            "An account was created (sign-up, or an admin creating one).",
            _object({"user_id": _UUID}),
        ),
        EventType(
            "user.email_verified",
            "The owner of an account proved its email address.",
            _object({"user_id": _UUID}),
        ),
        EventType(
            "user.deleted",
            "An account was erased: its data is gone and its id will not come back (a "
            "deletion by its owner, after the grace period; by a platform admin, at once; "
            "or for inactivity). Its sessions had ended when the deletion was requested.",
            _object({"user_id": _UUID}),
        ),
        EventType(
            "user.password_changed",
            "A password was changed by its owner (`method` `change`) or reset through an "
            "emailed link (`reset`); other sessions ended.",
            _object(
                {
                    "user_id": _UUID,
                    "method": {"type": "string", "enum": ["change", "reset"]},
                    "sessions_ended": _COUNT,
                }
            ),
        ),
        EventType(
            "session.revoked",
            "Sessions of a user ended before their time: a logout, a logout everywhere, one "
            "session ended from the session list, or an admin's action. `session_id` is set "
            "when one session ended.",
            _object(
                {
                    "user_id": _UUID,
                    "session_id": _OPTIONAL_UUID,
                    "reason": {"type": "string"},
                    "sessions_ended": _COUNT,
                }
            ),
        ),
        EventType(
            "session.refresh_reuse_detected",
            "A spent refresh token came back (possible theft); its session was revoked.",
            _object({"user_id": _UUID, "session_id": _UUID, "sessions_revoked": _COUNT}),
        ),
        EventType(
            "membership.created",
            "A user became a member of an organization: by creating it (`origin` `created`) "
            "or by accepting an invitation (`invitation`).",
            _object(
                {
                    "org_id": _UUID,
                    "user_id": _UUID,
                    "role": _ROLE,
                    "origin": {"type": "string", "enum": ["created", "invitation", "added"]},
                },
                {"invitation_id": _UUID},
            ),
        ),
        EventType(
            "membership.role_changed",
            "A member's role changed.",
            _object({"org_id": _UUID, "user_id": _UUID, "previous_role": _ROLE, "role": _ROLE}),
        ),
        EventType(
            "membership.removed",
            "A member was removed, or left (`left` true).",
            _object(
                {"org_id": _UUID, "user_id": _UUID, "role": _ROLE, "left": {"type": "boolean"}}
            ),
        ),
        EventType(
            "invitation.created",
            "An admin invited an email address (not included) with a role.",
            _object({"org_id": _UUID, "invitation_id": _UUID, "role": _ROLE}),
        ),
        EventType(
            "invitation.accepted",
            "The invitee accepted: `user_id` is now a member (see `membership.created`).",
            _object({"org_id": _UUID, "invitation_id": _UUID, "user_id": _UUID, "role": _ROLE}),
        ),
        EventType(
            "invitation.declined",
            "The invitee declined.",
            _object({"org_id": _UUID, "invitation_id": _UUID}),
        ),
        EventType(
            "invitation.revoked",
            "An admin revoked a pending invitation.",
            _object({"org_id": _UUID, "invitation_id": _UUID}),
        ),
        EventType(
            "api_key.created",
            "An admin created an API key (its secret is never sent).",
            _object(
                {
                    "org_id": _UUID,
                    "api_key_id": _UUID,
                    "prefix": {"type": "string"},
                    "role": _ROLE,
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                }
            ),
        ),
        EventType(
            "api_key.revoked",
            "An API key was revoked; its next use gets 401.",
            _object({"org_id": _UUID, "api_key_id": _UUID, "prefix": {"type": "string"}}),
        ),
        EventType(
            "mfa.enrolled",
            "A user enrolled a second factor (`method`: `totp`, or `webauthn` for a passkey).",
            _object({"user_id": _UUID, "method": {"type": "string"}}),
        ),
        EventType(
            "mfa.removed",
            "A second factor was removed: by its user (`method` `totp` or `webauthn`) or by "
            "a platform admin's reset of every factor (`all`).",
            _object({"user_id": _UUID, "method": {"type": "string"}}),
        ),
        EventType(
            TEST_EVENT,
            "Sent on request to check an endpoint; `audit` is null.",
            _object({"endpoint_id": _UUID, "message": {"type": "string"}}),
        ),
    )
}


DataBuilder = Callable[[AuditEvent], dict[str, Any] | None]
"""Builds an event's ``data`` from the audit event; None: this change is no such event."""


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _count(details: Mapping[str, Any], key: str) -> int:
    value = details.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _subject(event: AuditEvent) -> str | None:
    """The user an event is about: the entity when it is a user, else the actor."""
    if event.entity_type == "user" and event.entity_id is not None:
        return str(event.entity_id)
    return _text(event.actor.user_id)


def _user(event: AuditEvent) -> dict[str, Any] | None:
    user_id = _subject(event)
    return None if user_id is None else {"user_id": user_id}


def _password(method: str) -> DataBuilder:
    def build(event: AuditEvent) -> dict[str, Any] | None:
        user_id = _subject(event)
        if user_id is None:
            return None
        count = _count(event.details, "sessions_ended")
        return {"user_id": user_id, "method": method, "sessions_ended": count}

    return build


def _sessions_ended(event: AuditEvent) -> dict[str, Any] | None:
    user_id = _subject(event)
    if user_id is None:
        return None
    return {
        "user_id": user_id,
        "session_id": _text(event.entity_id) if event.entity_type == "session" else None,
        "reason": str(event.details.get("reason") or event.action),
        "sessions_ended": _count(event.details, "sessions_ended"),
    }


def _refresh_reuse(event: AuditEvent) -> dict[str, Any] | None:
    user_id, session_id = _text(event.actor.user_id), _text(event.entity_id)
    if user_id is None or session_id is None:
        return None
    return {
        "user_id": user_id,
        "session_id": session_id,
        "sessions_revoked": _count(event.details, "sessions_revoked"),
    }


def _org(event: AuditEvent, **data: Any) -> dict[str, Any] | None:
    if event.org_id is None or any(value is None for value in data.values()):
        return None
    return {"org_id": str(event.org_id), **data}


def _org_created(event: AuditEvent) -> dict[str, Any] | None:
    return _org(event, user_id=_text(event.actor.user_id), role="admin", origin="created")


def _member_added(event: AuditEvent) -> dict[str, Any] | None:
    return _org(
        event,
        user_id=_subject(event),
        role=_text(event.details.get("role")),
        origin="added",
    )


def _invitation_joined(event: AuditEvent) -> dict[str, Any] | None:
    if not event.details.get("joined"):
        return None  # already a member: no membership was created
    return _org(
        event,
        user_id=_text(event.details.get("user_id")),
        role=_text(event.details.get("role")),
        origin="invitation",
        invitation_id=_text(event.entity_id),
    )


def _role_changed(event: AuditEvent) -> dict[str, Any] | None:
    return _org(
        event,
        user_id=_subject(event),
        previous_role=_text(event.details.get("from")),
        role=_text(event.details.get("to")),
    )


def _member_removed(event: AuditEvent) -> dict[str, Any] | None:
    return _org(
        event,
        user_id=_subject(event),
        role=_text(event.details.get("role")),
        left=bool(event.details.get("left")),
    )


def _invitation(*extra: str) -> DataBuilder:
    def build(event: AuditEvent) -> dict[str, Any] | None:
        values = {key: _text(event.details.get(key)) for key in extra}
        return _org(event, invitation_id=_text(event.entity_id), **values)

    return build


def _api_key_created(event: AuditEvent) -> dict[str, Any] | None:
    data = _org(
        event,
        api_key_id=_text(event.entity_id),
        prefix=_text(event.details.get("prefix")),
        role=_text(event.details.get("role")),
    )
    if data is not None:
        data["expires_at"] = _text(event.details.get("expires_at"))
    return data


def _api_key_revoked(event: AuditEvent) -> dict[str, Any] | None:
    return _org(event, api_key_id=_text(event.entity_id), prefix=_text(event.details.get("prefix")))


def mfa(method: str) -> DataBuilder:
    """``data`` of ``mfa.enrolled``/``mfa.removed`` for a factor of kind ``method``."""

    def build(event: AuditEvent) -> dict[str, Any] | None:
        user_id = _subject(event)
        return None if user_id is None else {"user_id": user_id, "method": method}

    return build


SUCCESS = "success"
FAILURE = "failure"

SOURCES: dict[tuple[str, str], tuple[tuple[str, DataBuilder], ...]] = {
    (Action.USER_REGISTERED.value, SUCCESS): (("user.created", _user),),
    (Action.EMAIL_VERIFIED.value, SUCCESS): (("user.email_verified", _user),),
    (Action.USER_ERASED.value, SUCCESS): (("user.deleted", _user),),
    (Action.PASSWORD_CHANGED.value, SUCCESS): (("user.password_changed", _password("change")),),
    (Action.PASSWORD_RESET.value, SUCCESS): (("user.password_changed", _password("reset")),),
    (Action.SESSION_REVOKED.value, SUCCESS): (("session.revoked", _sessions_ended),),
    (Action.LOGOUT.value, SUCCESS): (("session.revoked", _sessions_ended),),
    (Action.LOGOUT_ALL.value, SUCCESS): (("session.revoked", _sessions_ended),),
    (Action.SESSIONS_ENDED.value, SUCCESS): (("session.revoked", _sessions_ended),),
    (Action.REFRESH_REUSE.value, FAILURE): (("session.refresh_reuse_detected", _refresh_reuse),),
    (Action.ORG_CREATED.value, SUCCESS): (("membership.created", _org_created),),
    (Action.MEMBER_ADDED.value, SUCCESS): (("membership.created", _member_added),),
    (Action.MEMBER_ROLE_CHANGED.value, SUCCESS): (("membership.role_changed", _role_changed),),
    (Action.MEMBER_REMOVED.value, SUCCESS): (("membership.removed", _member_removed),),
    (Action.INVITATION_CREATED.value, SUCCESS): (("invitation.created", _invitation("role")),),
    (Action.INVITATION_ACCEPTED.value, SUCCESS): (
        ("invitation.accepted", _invitation("user_id", "role")),
        ("membership.created", _invitation_joined),
    ),
    (Action.INVITATION_DECLINED.value, SUCCESS): (("invitation.declined", _invitation()),),
    (Action.INVITATION_REVOKED.value, SUCCESS): (("invitation.revoked", _invitation()),),
    (Action.API_KEY_CREATED.value, SUCCESS): (("api_key.created", _api_key_created),),
    (Action.API_KEY_REVOKED.value, SUCCESS): (("api_key.revoked", _api_key_revoked),),
    (Action.MFA_TOTP_ENROLLED.value, SUCCESS): (("mfa.enrolled", mfa("totp")),),
    (Action.MFA_TOTP_REMOVED.value, SUCCESS): (("mfa.removed", mfa("totp")),),
    (Action.MFA_PASSKEY_REGISTERED.value, SUCCESS): (("mfa.enrolled", mfa("webauthn")),),
    (Action.MFA_PASSKEY_REMOVED.value, SUCCESS): (("mfa.removed", mfa("webauthn")),),
    (Action.MFA_RESET.value, SUCCESS): (("mfa.removed", mfa("all")),),
}
"""``(audit action, outcome)`` → the events it becomes, each with its data builder."""


def events_for(event: AuditEvent) -> list[dict[str, Any]]:
    """The events an audited change becomes: ``{"id", "type", "org_id", "data", "source"}``
    each; ``source`` (the audit action and entity) finds the audit row at fan-out, which
    adds the audit reference and the timestamp."""
    sources = SOURCES.get((str(event.action), event.outcome))
    if not sources:
        return []
    found = []
    source = {
        "action": str(event.action),
        "entity_type": event.entity_type,
        "entity_id": None if event.entity_id is None else str(event.entity_id)[:64],
    }
    for event_type, build in sources:
        data = build(event)
        if data is not None:
            found.append(
                {
                    "id": str(uuid.uuid4()),
                    "type": event_type,
                    "org_id": _text(event.org_id),
                    "data": data,
                    "source": source,
                }
            )
    return found
