"""Form bodies and answers of the OAuth2 endpoints (RFC 6749, 7009, 7662, 8414).

The forms follow RFC 6749 §3.1–3.2: ``application/x-www-form-urlencoded``; a parameter sent
empty counts as omitted; parameters this server does not know (``client_id``,
``client_secret``, ``audience``…) are ignored. A value failing its bounds is a 400
``invalid_request`` naming the parameter (see :mod:`authkeep.http.oauth2_route`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from authkeep.http.fields import ChallengeSolution, CleanText
from authkeep.http.schemas import Email, Password

GrantType = Literal["password", "refresh_token"]
GRANT_TYPES: tuple[GrantType, ...] = ("password", "refresh_token")

# Longer than any token authkeep signs (8 KB), short enough to cost nothing.
_TOKEN_MAX = 16_384
Token = Annotated[str, StringConstraints(min_length=1, max_length=_TOKEN_MAX)]
Word = Annotated[CleanText, StringConstraints(max_length=64)]
"""A protocol keyword (``grant_type``, ``token_type_hint``): short, printable."""


class _OAuth2Form(BaseModel):
    # RFC 6749 §3.2: "The authorization server MUST ignore unrecognized request parameters."
    model_config = ConfigDict(extra="ignore")


class TokenForm(_OAuth2Form):
    """``POST /auth/token``: the password grant (§4.3.2) or the refresh grant (§6)."""

    grant_type: Word = Field(
        description="`password` (with `username` and `password`) or `refresh_token` (with "
        "`refresh_token`); any other value: 400 `unsupported_grant_type`"
    )
    username: Email | None = Field(default=None, description="The account's email")
    password: Password | None = None
    refresh_token: Token | None = None
    scope: Annotated[CleanText, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="authkeep issues no scopes: leave it out (or empty)"
    )
    challenge_solution: ChallengeSolution | None = Field(
        default=None,
        description="The solved challenge, when a `challenge_required` error asked for one",
    )


class RevokeForm(_OAuth2Form):
    """``POST /auth/revoke`` (RFC 7009 §2.1)."""

    token: Token = Field(description="A refresh or an access token")
    token_type_hint: Word | None = Field(
        default=None, description="`refresh_token` or `access_token`; only orders the search"
    )


class IntrospectForm(_OAuth2Form):
    """``POST /auth/introspect`` (RFC 7662 §2.1)."""

    token: Token = Field(description="The access token a client presented to you")
    token_type_hint: Word | None = Field(default=None, description="Ignored")


class IntrospectionOut(BaseModel):
    """RFC 7662 §2.2. Inactive: ``{"active": false}`` and nothing else."""

    active: bool
    token_type: Literal["bearer"] | None = None
    sub: str | None = Field(default=None, description="The user's id")
    username: str | None = Field(default=None, description="The user's email")
    email: str | None = None
    email_verified: bool | None = None
    iss: str | None = None
    aud: str | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    sid: str | None = Field(default=None, description="The session")
    org_id: uuid.UUID | None = Field(default=None, description="The token's organization")
    role: str | None = Field(
        default=None,
        description="The user's role in that organization now (not the token's claim)",
    )


class AuthorizationServerMetadata(BaseModel):
    """RFC 8414 §2."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="Exactly the `iss` of authkeep's tokens")
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    grant_types_supported: list[str]
    response_types_supported: list[str] = Field(
        description="Empty: there is no authorization endpoint (no redirect-based flow)"
    )
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    jwks_uri: str | None = Field(
        default=None, description="Only when tokens are signed with an asymmetric key"
    )
