"""Domain errors. Services raise these; ``authkeep.http.errors`` maps them to HTTP.

::

    AuthkeepError
    ├── InvalidCredentials        wrong email/password, unknown, inactive or deleted user
    │   └── InvalidCode           a wrong, replayed or malformed second-factor code (401)
    ├── InvalidToken              bad, expired, revoked or wrongly typed token
    │   └── TokenReused           a spent refresh token came back: the family is revoked
    ├── StepUpRequired            a valid token, but its sign-in is too old or too weak (401)
    ├── PermissionDenied          a known user lacks the right
    ├── ConsentRequired           a consent purpose not granted at its current version (403)
    ├── SecondFactorRequired      the organization requires MFA the user has not enrolled (403)
    ├── NotFound                  absent, or in another tenant (never says which)
    ├── Conflict                  e.g. the email is already registered
    │   ├── WebhookReplayed       an incoming webhook's id was accepted already (409)
    │   └── SoleAdmin             deleting the last admin of organizations with members (409)
    ├── PolicyViolation           a value breaks a rule (password policy, last admin)
    ├── InvitationUnusable        accepted, declined, revoked or expired invitation (400)
    ├── EmailTokenUnusable        a bad, used, expired or voided link from an email (400)
    ├── EmailNotVerified          right password, but the address is not proven yet (403)
    ├── PasskeyRejected           a passkey enrolment response that does not verify (400)
    ├── WebhookRejected           an incoming webhook whose signature or time fails (400)
    ├── ChallengeRequired         failed logins: a solved challenge is required (401)
    ├── RateLimited               too many attempts; carries retry_after
    ├── Overloaded                a bounded resource is full (hashing queue)
    └── DependencyUnavailable     a backing service (database, Redis) does not answer
"""

from __future__ import annotations

import uuid
from typing import Any


class AuthkeepError(Exception):
    """Root of every error authkeep raises on purpose."""

    detail: str = "Request failed"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail


class InvalidCredentials(AuthkeepError):
    """Login failed; deliberately silent about why."""

    detail = "Incorrect email or password"


class InvalidCode(InvalidCredentials):
    """A second-factor code (TOTP, recovery code) was wrong, already used, too old or not a
    code at all; which one is never said."""

    detail = "Invalid code"


class InvalidToken(AuthkeepError):
    """A token could not be accepted."""

    detail = "Could not validate credentials"


class TokenReused(InvalidToken):
    """A refresh token was presented after it was spent: possible theft."""


class StepUpRequired(AuthkeepError):
    """The caller's sign-in is older than ``max_age`` seconds, or weaker than
    ``acr_values`` (RFC 9470): re-authenticate (``POST /api/v1/auth/step-up``) and retry."""

    detail = "A more recent or stronger sign-in is required: step up and retry"

    def __init__(
        self, detail: str | None = None, *, max_age: int | None, acr_values: str | None
    ) -> None:
        super().__init__(detail)
        self.max_age = max_age
        self.acr_values = acr_values


class PermissionDenied(AuthkeepError):
    """The caller is known but not allowed. The optional keywords say what was refused; they
    go to the audit log, never to the client."""

    detail = "Not enough permissions"

    def __init__(
        self,
        detail: str | None = None,
        *,
        entity_type: str | None = None,
        entity_id: object | None = None,
        org_id: uuid.UUID | None = None,
    ) -> None:
        super().__init__(detail)
        self.entity_type = entity_type
        self.entity_id = None if entity_id is None else str(entity_id)
        self.org_id = org_id


class ConsentRequired(AuthkeepError):
    """The user has not granted ``purpose`` at its current ``version`` (never, withdrawn, or
    an older version): :func:`authkeep.require_consent` refuses the route until they do.
    Not a :class:`PermissionDenied`: it is the user's own pending decision, not a refusal
    worth an audit row on every request."""

    def __init__(self, purpose: str, version: str) -> None:
        super().__init__(
            f"Consent required: {purpose!r} version {version!r} is not granted; grant it with "
            f"PUT /api/v1/auth/me/consents/{purpose}"
        )
        self.purpose = purpose
        self.version = version


class SecondFactorRequired(AuthkeepError):
    """The organization requires two-factor authentication (``require_mfa``) and the user
    (for an API key: its creator) has no second factor: refused until they enrol one. Not a
    :class:`PermissionDenied`: it is the member's own pending enrolment, met on every request
    of theirs until then, not a refusal worth an audit row each time."""

    detail = (
        "This organization requires two-factor authentication; enrol a second factor at "
        "/api/v1/auth/mfa/totp/setup"
    )


class NotFound(AuthkeepError):
    """The resource does not exist for this caller."""

    detail = "Not found"


class Conflict(AuthkeepError):
    """The request conflicts with the current state."""

    detail = "Conflict"


class SoleAdmin(Conflict):
    """The account cannot be deleted: it is the last admin of ``organizations`` (``(id,
    name)`` pairs), which have other members who would be left without one."""

    detail = (
        "The account is the last admin of organizations that have other members: make "
        "another member admin first (each organization is named in `organizations`)"
    )

    def __init__(self, organizations: list[tuple[uuid.UUID, str]]) -> None:
        super().__init__()
        self.organizations = organizations


class PolicyViolation(AuthkeepError):
    """A submitted value breaks a rule; ``detail`` says which, never echoing the value."""

    detail = "Request violates policy"


class InvitationUnusable(AuthkeepError):
    """The invitation exists for the caller but can no longer be accepted or declined;
    ``detail`` says why (accepted, declined, revoked, expired)."""

    detail = "This invitation can no longer be used"


class EmailTokenUnusable(AuthkeepError):
    """A token from an email (verification, reset, email change) is unknown, used, expired
    or voided; which one is never said."""

    detail = "Invalid or expired link: request a new one"


class EmailNotVerified(AuthkeepError):
    """The password was right but the account's address is not verified, and
    ``AUTHKEEP_EMAIL_VERIFICATION=required``."""

    detail = "Email not verified"


class PasskeyRejected(AuthkeepError):
    """A WebAuthn response could not be used: malformed, for an unknown, used or expired
    challenge, or failing verification; ``detail`` says which (never a secret). A failed
    passkey *sign-in* is :class:`InvalidCredentials` instead, the same for every cause."""

    detail = "The passkey response could not be verified"


class ChallengeRequired(AuthkeepError):
    """Too many failed attempts for this email or client IP: the next attempt needs a solved
    challenge. ``challenge`` is a fresh one for the client (public, no secret)."""

    detail = "Too many failed attempts: solve the challenge and send its solution"

    def __init__(self, detail: str | None = None, *, challenge: dict[str, Any]) -> None:
        super().__init__(detail)
        self.challenge = challenge


class RateLimited(AuthkeepError):
    """Too many requests; ``retry_after`` is in whole seconds. ``limit`` names the limit that
    was hit and ``key`` what it counted (for the audit log's throttling; never sent)."""

    detail = "Too many requests"

    def __init__(
        self,
        retry_after: int,
        detail: str | None = None,
        *,
        limit: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)
        self.limit = limit
        self.key = key


class Overloaded(AuthkeepError):
    """A bounded queue is full; the client should retry shortly."""

    detail = "Server busy, retry shortly"
    retry_after = 1


class DependencyUnavailable(AuthkeepError):
    """A backing service is unreachable; ``retry_after`` (seconds) is a hint for clients."""

    detail = "Service temporarily unavailable"
    retry_after = 2


class WebhookRejected(AuthkeepError):
    """An incoming webhook failed verification: signature, timestamp or id (400). The
    detail names the failed check, never a value from the request."""

    detail = "Webhook verification failed"


class WebhookReplayed(Conflict):
    """An incoming webhook's id was accepted before, within the tolerance (409)."""

    detail = "Webhook already received"
