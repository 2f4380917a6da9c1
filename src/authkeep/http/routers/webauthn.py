"""``/api/v1/auth/webauthn``: passkeys — enrolment, usernameless sign-in (or the second step
of a password login), listing and removal (docs/passkeys.md).

The options routes answer the WebAuthn JSON that ``PublicKeyCredential.parseCreationOptions
FromJSON()`` / ``parseRequestOptionsFromJSON()`` (or a library such as SimpleWebAuthn's
``startRegistration`` / ``startAuthentication``) take; the verify routes take the credential
that ``navigator.credentials.create()`` / ``get()`` returned, as ``toJSON()`` encodes it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from authkeep.db.webauthn import CredentialRecord
from authkeep.http.deps import CurrentPrincipal, Info, RecentPrincipal, get_authkeep
from authkeep.http.routers.auth import token_out
from authkeep.http.schemas import TokenOut
from authkeep.http.webauthn_schemas import (
    LoginOptionsIn,
    LoginVerifyIn,
    PasskeyOut,
    RegisterVerifyIn,
)

router = APIRouter(prefix="/auth/webauthn", tags=["passkeys"])

_401: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked credentials"}
}
_RECENT: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Not signed in, or not recently enough (or without the second factor "
        'when one is enrolled): `WWW-Authenticate: Bearer error="insufficient_user_'
        'authentication"` (RFC 9470) says what a new sign-in must meet'
    }
}
_OPTIONS_OUT = "WebAuthn JSON options (`challenge` and binary members as base64url)"


def passkey_out(record: CredentialRecord) -> PasskeyOut:
    """The public view of a stored passkey."""
    return PasskeyOut(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        device_type="multi_device" if record.device_type == "multi_device" else "single_device",
        backed_up=record.backed_up,
    )


@router.post(
    "/register/options", response_model=dict[str, Any], responses=_RECENT, summary=_OPTIONS_OUT
)
async def register_options(principal: RecentPrincipal, request: Request) -> dict[str, Any]:
    """Options to enrol a passkey (``PublicKeyCredentialCreationOptionsJSON``): a
    discoverable credential with user verification, attestation ``none``, the caller's
    passkeys excluded. Its challenge is single-use and expires
    (``AUTHKEEP_WEBAUTHN_CHALLENGE_EXPIRE_SECONDS``)."""
    return await get_authkeep(request).services.passkeys.registration_options(principal.user)


@router.post(
    "/register/verify",
    response_model=PasskeyOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        **_RECENT,
        400: {
            "description": "Malformed, for an unknown, used or expired challenge, or failing "
            "verification (origin, rp id, user verification, attestation): `detail` says which"
        },
        409: {"description": "Registered already, or the account has the most passkeys"},
    },
)
async def register_verify(
    body: RegisterVerifyIn, principal: RecentPrincipal, request: Request, info: Info
) -> PasskeyOut:
    """Verify the new credential and store it: the account now has a second factor."""
    record = await get_authkeep(request).services.passkeys.register(
        principal.user, body.credential.webauthn_json(), body.name, info
    )
    return passkey_out(record)


@router.get("/credentials", response_model=list[PasskeyOut], responses=_401)
async def credentials(principal: CurrentPrincipal, request: Request) -> list[PasskeyOut]:
    """The caller's passkeys, oldest first (never a public key)."""
    records = await get_authkeep(request).services.passkeys.credentials(principal.user.id)
    return [passkey_out(record) for record in records]


@router.delete(
    "/credentials/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_RECENT, 404: {"description": "No such passkey of yours"}},
)
async def remove_credential(
    credential_id: uuid.UUID, principal: RecentPrincipal, request: Request, info: Info
) -> Response:
    """Remove one of the caller's passkeys (needs a recent sign-in with the second factor).
    Removing the last factor turns MFA off."""
    await get_authkeep(request).services.passkeys.remove(principal.user.id, credential_id, info)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/login/options",
    response_model=dict[str, Any],
    responses={401: {"description": "The `mfa_token` is unknown, used or expired"}},
    summary=_OPTIONS_OUT,
)
async def login_options(request: Request, body: LoginOptionsIn | None = None) -> dict[str, Any]:
    """Options to sign in with a passkey (``PublicKeyCredentialRequestOptionsJSON``).
    Without a body (or with ``{}``): usernameless, ``allowCredentials`` empty, user
    verification required. With the ``mfa_token`` of a password login: that account's
    passkeys, for the login's second step."""
    mfa_token = body.mfa_token if body is not None else None
    return await get_authkeep(request).services.passkeys.login_options(mfa_token)


@router.post(
    "/login/verify",
    response_model=TokenOut,
    responses={
        400: {"description": "The credential is malformed: `detail` says what"},
        401: {
            "description": "Passkey sign-in failed: unknown passkey, bad signature, spent or "
            "expired challenge, a counter that went backwards, an inactive account — one "
            "answer for every cause"
        },
        403: {"description": "Email not verified (AUTHKEEP_EMAIL_VERIFICATION=required)"},
    },
)
async def login_verify(body: LoginVerifyIn, request: Request, info: Info) -> TokenOut:
    """Sign in with a passkey: tokens whose ``amr`` is ``["hwk", "user"]`` (``acr``
    ``aal2``). With an ``mfa_token``, the second step of a password login instead: its
    tokens carry ``["pwd", "hwk"]`` (plus ``user`` when the authenticator verified the
    user)."""
    passkeys = get_authkeep(request).services.passkeys
    credential = body.credential.webauthn_json()
    if body.mfa_token is None:
        return token_out(await passkeys.login(credential, info))
    return token_out(await passkeys.finish_login(body.mfa_token, credential, info))
