"""Bodies of the passkey routes (``/api/v1/auth/webauthn/...``).

The credentials are the WebAuthn JSON encodings that browsers produce
(``PublicKeyCredential.toJSON()``, ``RegistrationResponseJSON`` and
``AuthenticationResponseJSON``): binary members as base64url. Their shape is checked here
(422 naming the member), their content by py_webauthn in the service (400 saying what is
malformed). Unlike authkeep's own bodies, members a newer browser adds to a credential are
ignored rather than refused: they carry nothing authkeep would store.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from authkeep.http.fields import Name

Base64Url = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]*={0,2}$")]
CredentialId = Annotated[Base64Url, StringConstraints(min_length=1, max_length=1400)]
MfaToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class _Browser(BaseModel):
    """A structure written by the browser: unknown members are ignored."""

    model_config = ConfigDict(extra="ignore")


class _Credential(_Browser):
    id: CredentialId
    raw_id: CredentialId = Field(alias="rawId")
    type: Literal["public-key"]
    authenticator_attachment: Literal["platform", "cross-platform"] | None = Field(
        default=None, alias="authenticatorAttachment"
    )
    client_extension_results: dict[str, Any] = Field(
        default_factory=dict, alias="clientExtensionResults"
    )

    def webauthn_json(self) -> dict[str, Any]:
        """The credential as WebAuthn JSON, for py_webauthn."""
        return self.model_dump(by_alias=True, exclude_none=True)


class AttestationResponseIn(_Browser):
    """``AuthenticatorAttestationResponseJSON``."""

    client_data_json: Annotated[Base64Url, StringConstraints(min_length=1, max_length=8192)] = (
        Field(alias="clientDataJSON")
    )
    attestation_object: Annotated[Base64Url, StringConstraints(min_length=1, max_length=65536)] = (
        Field(alias="attestationObject")
    )
    transports: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=10
    )


class AssertionResponseIn(_Browser):
    """``AuthenticatorAssertionResponseJSON``."""

    client_data_json: Annotated[Base64Url, StringConstraints(min_length=1, max_length=8192)] = (
        Field(alias="clientDataJSON")
    )
    authenticator_data: Annotated[Base64Url, StringConstraints(min_length=1, max_length=8192)] = (
        Field(alias="authenticatorData")
    )
    signature: Annotated[Base64Url, StringConstraints(min_length=1, max_length=2048)]
    user_handle: Annotated[Base64Url, StringConstraints(max_length=128)] | None = Field(
        default=None, alias="userHandle"
    )


class RegistrationCredentialIn(_Credential):
    """``RegistrationResponseJSON``: what ``navigator.credentials.create()`` gave."""

    response: AttestationResponseIn


class AuthenticationCredentialIn(_Credential):
    """``AuthenticationResponseJSON``: what ``navigator.credentials.get()`` gave."""

    response: AssertionResponseIn


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterVerifyIn(_In):
    """``POST /auth/webauthn/register/verify``."""

    credential: RegistrationCredentialIn
    name: Name | None = Field(
        default=None, description="What to call the passkey (default: 'Passkey <date>')"
    )


class LoginOptionsIn(_In):
    """``POST /auth/webauthn/login/options``: empty for a usernameless sign-in; with the
    ``mfa_token`` of a password login for its second step (``allowCredentials`` then lists
    that account's passkeys)."""

    mfa_token: MfaToken | None = None


class LoginVerifyIn(_In):
    """``POST /auth/webauthn/login/verify``: the assertion, and the ``mfa_token`` when it
    is the second step of a password login."""

    credential: AuthenticationCredentialIn
    mfa_token: MfaToken | None = None


class PasskeyOut(BaseModel):
    """One of the caller's passkeys (never its public key)."""

    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    device_type: Literal["single_device", "multi_device"] = Field(
        description="multi_device: a synced passkey (its counter stays 0); single_device: "
        "bound to one authenticator"
    )
    backed_up: bool = Field(description="Whether the passkey is backed up (synced) now")
