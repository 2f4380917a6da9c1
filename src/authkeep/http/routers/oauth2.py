"""The OAuth2 endpoints: token (RFC 6749 §4.3, §6), revocation (RFC 7009), introspection
(RFC 7662) and the authorization server metadata (RFC 8414). ``docs/oauth2.md``.

The token endpoint runs the very service calls of the JSON routes — ``/login``'s (limits,
challenge, email verification) and ``/refresh``'s (rotation, theft detection, grace
window, per-IP limit) — and differs only in how it is asked and how it answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse

from authkeep.errors import InvalidToken
from authkeep.http.authz import api_key_scheme
from authkeep.http.deps import TOKEN_URL, Info, bearer_scheme, get_authkeep, request_info
from authkeep.http.limits import limit_per_ip, report_of
from authkeep.http.oauth2_route import OAuth2Problem, OAuth2Route
from authkeep.http.oauth2_schemas import (
    GRANT_TYPES,
    AuthorizationServerMetadata,
    IntrospectForm,
    IntrospectionOut,
    RevokeForm,
    TokenForm,
)
from authkeep.http.routers.auth import token_out
from authkeep.http.schemas import TokenOut
from authkeep.services.api_keys import looks_like_key
from authkeep.services.authn import Principal
from authkeep.services.sessions import MfaPending

router = APIRouter(prefix="/auth", tags=["oauth2"], route_class=OAuth2Route)
discovery_router = APIRouter(tags=["oauth2"])

TOKEN_PATH = TOKEN_URL
REVOKE_PATH = TOKEN_URL.removesuffix("/token") + "/revoke"
INTROSPECT_PATH = TOKEN_URL.removesuffix("/token") + "/introspect"
METADATA_PATH = "/.well-known/oauth-authorization-server"
FORM_TYPE = "application/x-www-form-urlencoded"
REFRESH_REFUSED = "The refresh token is invalid, expired, revoked or already used"
KEY_NEEDED = "Introspection needs an API key of the token's organization (X-API-Key: ak_…)"


def _oauth2_error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "error_description": {"type": "string"},
                    },
                    "required": ["error", "error_description"],
                }
            }
        },
    }


_TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _oauth2_error(
        "`invalid_request` (missing, repeated or malformed parameter), "
        "`unsupported_grant_type`, `invalid_scope`, `invalid_grant` (wrong email or "
        "password, unverified email, bad or spent refresh token), `challenge_required`"
    ),
    403: {
        "description": "`mfa_required`: the password was right and the account has a second "
        "factor; finish with `POST /api/v1/auth/mfa/verify` and the `mfa_token` (docs/mfa.md)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string", "enum": ["mfa_required"]},
                        "error_description": {"type": "string"},
                        "mfa_token": {"type": "string"},
                        "methods": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["error", "error_description", "mfa_token", "methods"],
                }
            }
        },
    },
    429: _oauth2_error("`temporarily_unavailable`: a login limit; see Retry-After"),
    503: _oauth2_error("`temporarily_unavailable`: a dependency does not answer; see Retry-After"),
}


async def _form_only(request: Request) -> None:
    """RFC 6749 §3.2: the body is ``application/x-www-form-urlencoded``, each parameter at
    most once (a repeated parameter could be read one way here and another upstream)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise OAuth2Problem("invalid_request", f"The body must be {FORM_TYPE}")
    form = await request.form()
    repeated = sorted({key for key in form if len(form.getlist(key)) > 1})
    if repeated:
        raise OAuth2Problem("invalid_request", "Repeated parameter: " + ", ".join(repeated))


FormOnly = Depends(_form_only)

MFA_REQUIRED = "Multi-factor authentication required: finish with POST /api/v1/auth/mfa/verify"


def mfa_required_response(pending: MfaPending) -> JSONResponse:
    """The password grant's answer for an account with a second factor: 403
    ``mfa_required`` with the ``mfa_token`` (Auth0's shape; RFC 6749 §5.2 allows extension
    error codes). No token is issued until the second step."""
    return JSONResponse(
        {
            "error": "mfa_required",
            "error_description": MFA_REQUIRED,
            "mfa_token": pending.mfa_token,
            "methods": pending.methods,
        },
        status_code=403,
    )


@router.post(
    "/token",
    response_model=TokenOut,
    responses=_TOKEN_ERRORS,
    dependencies=[FormOnly],
)
async def token(
    form: Annotated[TokenForm, Form()], request: Request, info: Info
) -> TokenOut | JSONResponse:
    """OAuth2 token endpoint: ``grant_type=password`` (``username`` = email, ``password``)
    or ``grant_type=refresh_token`` (``refresh_token``). What Swagger UI's Authorize button
    and OAuth2 libraries (authlib, oauthlib) call. Errors are RFC 6749's
    ``{"error", "error_description"}``."""
    if form.grant_type not in GRANT_TYPES:
        raise OAuth2Problem(
            "unsupported_grant_type", "Supported grant types: password, refresh_token"
        )
    if form.scope:
        # Refused rather than ignored: a client that asked for a scope must not believe
        # it got one (RFC 6749 §3.3).
        raise OAuth2Problem("invalid_scope", "authkeep issues no scopes: omit scope")
    services = get_authkeep(request).services
    if form.grant_type == "password":
        if form.username is None or form.password is None:
            raise OAuth2Problem(
                "invalid_request", "grant_type=password needs username and password"
            )
        result = await services.login_throttle.login(
            form.username,
            form.password,
            info,
            report_of(request.scope),
            challenge_solution=form.challenge_solution,
        )
        if isinstance(result, MfaPending):
            return mfa_required_response(result)
        return token_out(result)
    if form.refresh_token is None:
        raise OAuth2Problem("invalid_request", "grant_type=refresh_token needs refresh_token")
    # The same per-IP budget as POST /auth/refresh: two doors, one limit.
    await limit_per_ip("refresh")(request)
    try:
        pair = await services.sessions.refresh(form.refresh_token, info)
    except InvalidToken:
        # Reuse (theft) included: the session is already revoked; the client learns only
        # that this token is no good, as on /refresh.
        raise OAuth2Problem("invalid_grant", REFRESH_REFUSED) from None
    return token_out(pair)


@router.post(
    "/revoke",
    responses={400: _oauth2_error("`invalid_request`: no `token`, or a repeated parameter")},
    dependencies=[FormOnly],
)
async def revoke(form: Annotated[RevokeForm, Form()], request: Request, info: Info) -> JSONResponse:
    """RFC 7009 revocation: ends the session of a refresh or an access token (both stop
    working at once). 200 whether or not the token was valid (§2.2). No client
    authentication: the token is the credential, as for ``/logout``."""
    await get_authkeep(request).services.oauth2.revoke(form.token, form.token_type_hint, info)
    return JSONResponse({})


async def introspecting_key(
    request: Request,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    header: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The API key of the resource server asking (``X-API-Key`` or ``Authorization: Bearer
    ak_…``), or 401 ``invalid_client``. A user's access token is no client credential."""
    if bearer and header:
        raise _no_client("Send either a bearer credential or an API key, not both")
    key = header or bearer
    if not key or not looks_like_key(key):
        raise _no_client(KEY_NEEDED)
    try:
        principal = await get_authkeep(request).services.api_keys.authenticate(
            key, request_info(request)
        )
    except InvalidToken:
        raise _no_client("Invalid, revoked or expired API key") from None
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


def _no_client(description: str) -> OAuth2Problem:
    # RFC 6749 §5.2: a failed client authentication through the Authorization header is a
    # 401 with WWW-Authenticate.
    return OAuth2Problem("invalid_client", description, 401, {"WWW-Authenticate": "Bearer"})


@router.post(
    "/introspect",
    response_model=IntrospectionOut,
    response_model_exclude_none=True,
    responses={
        400: _oauth2_error("`invalid_request`: no `token`, or a repeated parameter"),
        401: _oauth2_error("`invalid_client`: no valid API key"),
    },
    dependencies=[FormOnly],
)
async def introspect(
    form: Annotated[IntrospectForm, Form()],
    key: Annotated[Principal, Depends(introspecting_key)],
    request: Request,
) -> IntrospectionOut:
    """RFC 7662 introspection, for resource servers holding an API key (any role). Active
    only for a live access token of the key's own organization; anything else —
    invalid, expired, revoked, a refresh token, another organization's — is
    ``{"active": false}``."""
    if key.org_id is None:  # never for an API key: each belongs to one organization
        raise _no_client(KEY_NEEDED)
    found = await get_authkeep(request).services.oauth2.introspect(form.token, key.org_id)
    if found is None:
        return IntrospectionOut(active=False)
    claims = found.claims
    return IntrospectionOut(
        active=True,
        token_type="bearer",
        sub=claims.user_id,
        username=claims.email,
        email=claims.email,
        email_verified=claims.email_verified,
        iss=found.issuer,
        aud=found.audience,
        exp=claims.expires_at,
        iat=claims.issued_at,
        jti=claims.token_id,
        sid=claims.session_id,
        org_id=found.org_id,
        role=found.role.value,
    )


@discovery_router.get(METADATA_PATH, response_model=AuthorizationServerMetadata)
async def metadata(request: Request) -> JSONResponse:
    """RFC 8414 authorization server metadata. ``issuer`` is exactly the ``iss`` of the
    tokens; the endpoints are absolute URLs under ``AUTHKEEP_PUBLIC_URL`` (else this
    request's own origin)."""
    authkeep = get_authkeep(request)
    base = (authkeep.settings.public_url or str(request.base_url)).rstrip("/")
    services = authkeep.services
    body = AuthorizationServerMetadata(
        issuer=services.codec.issuer,
        token_endpoint=base + TOKEN_PATH,
        revocation_endpoint=base + REVOKE_PATH,
        introspection_endpoint=base + INTROSPECT_PATH,
        grant_types_supported=list(GRANT_TYPES),
        response_types_supported=[],
        token_endpoint_auth_methods_supported=["none"],
        revocation_endpoint_auth_methods_supported=["none"],
        jwks_uri=base + "/.well-known/jwks.json" if services.codec.keys.jwks()["keys"] else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), headers={"Cache-Control": "public, max-age=300"}
    )
