"""WebAuthn ceremonies on py_webauthn, without storage: options, parsing, verification.

:class:`RelyingParty` makes the options (WebAuthn JSON) and verifies the answers; the
passkey use cases (:mod:`authkeep.services.mfa.passkeys`) keep challenges and credentials.
Rules enforced here:

* enrolment asks for a discoverable credential with user verification and attestation
  ``none``, and accepts only a response for one of the configured origins and our rp id,
  with user presence and verification;
* an assertion must match the origins and rp id, carry user presence (and verification when
  asked), a valid signature by the stored key and a counter that increased — unless both
  the stored and the presented counter are 0 (a synced passkey keeps no counter);
* a counter that did not increase is a *counter regression* only when the assertion verifies
  without the counter check: py_webauthn checks the counter before the signature, so
  without this second pass anyone could raise the clone alarm with a forged assertion;
* input py_webauthn cannot parse is :class:`~authkeep.errors.PasskeyRejected` (400) saying
  what is malformed, never an unhandled exception (a 500).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from authkeep.errors import PasskeyRejected
from authkeep.settings import Settings

__all__ = [
    "Assertion",
    "KnownCredential",
    "NewPasskey",
    "Options",
    "Registration",
    "RelyingParty",
    "challenge_hash",
    "parse_assertion",
    "parse_registration",
]

# What py_webauthn raises on input it cannot use: its own errors, and the ValueError family
# (base64, JSON, UTF-8, CBOR) and TypeError/KeyError that its parsers let through.
_UNUSABLE = (WebAuthnException, ValueError, TypeError, KeyError, IndexError, OverflowError)
_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)
AssertionVerdict = Literal["counter_regression", "verification"] | None


def challenge_hash(challenge: bytes) -> str:
    """How a challenge is stored and found: the hex SHA-256 of its bytes."""
    return hashlib.sha256(challenge).hexdigest()


def _malformed(exc: BaseException) -> PasskeyRejected:
    reason = str(exc).replace(". See __cause__ for more info", "")[:200]
    return PasskeyRejected(f"Malformed passkey response: {reason or type(exc).__name__}")


@dataclass(frozen=True, slots=True)
class KnownCredential:
    """A stored credential as options name it: its id (base64url) and transports."""

    credential_id: str
    transports: tuple[str, ...] = ()

    def descriptor(self) -> PublicKeyCredentialDescriptor:
        """The ``PublicKeyCredentialDescriptor`` of the options."""
        transports = [AuthenticatorTransport(t) for t in self.transports if t in _TRANSPORTS]
        return PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(self.credential_id), transports=transports or None
        )


@dataclass(frozen=True, slots=True)
class Options:
    """Options for the browser (WebAuthn JSON) and the challenge they carry."""

    json: dict[str, Any]
    challenge: bytes


@dataclass(frozen=True, slots=True)
class Registration:
    """A parsed, not yet verified, registration response."""

    credential: RegistrationCredential
    challenge: bytes


@dataclass(frozen=True, slots=True)
class Assertion:
    """A parsed, not yet verified, authentication response."""

    credential: AuthenticationCredential
    challenge: bytes
    user_verified: bool
    """The UV flag of the authenticator data: to be trusted only once the signature is."""
    sign_count: int
    backed_up: bool

    @property
    def credential_id(self) -> str:
        """The credential id, base64url without padding (as stored)."""
        return bytes_to_base64url(self.credential.raw_id)

    @property
    def user_handle(self) -> bytes | None:
        """The user handle the authenticator returned (discoverable credentials do)."""
        return self.credential.response.user_handle


@dataclass(frozen=True, slots=True)
class NewPasskey:
    """A verified registration: what to store."""

    credential_id: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str
    device_type: str
    """``single_device`` (device-bound) or ``multi_device`` (synced)."""
    backed_up: bool


def parse_registration(data: Mapping[str, Any]) -> Registration:
    """A registration response (WebAuthn JSON) parsed, or PasskeyRejected saying what is
    malformed."""
    try:
        credential = parse_registration_credential_json(dict(data))
        challenge = parse_client_data_json(credential.response.client_data_json).challenge
    except _UNUSABLE as exc:
        raise _malformed(exc) from None
    return Registration(credential, challenge)


def parse_assertion(data: Mapping[str, Any]) -> Assertion:
    """An authentication response (WebAuthn JSON) parsed, or PasskeyRejected saying what is
    malformed."""
    try:
        credential = parse_authentication_credential_json(dict(data))
        client_data = parse_client_data_json(credential.response.client_data_json)
        auth_data = parse_authenticator_data(credential.response.authenticator_data)
    except _UNUSABLE as exc:
        raise _malformed(exc) from None
    return Assertion(
        credential,
        client_data.challenge,
        bool(auth_data.flags.uv),
        auth_data.sign_count,
        bool(auth_data.flags.bs),
    )


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the passkeys are for: the rp id (a domain), the name authenticators show, the
    origins ceremonies may run on, and how long a challenge lives."""

    id: str
    name: str
    origins: tuple[str, ...]
    challenge_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RelyingParty:
        """The relying party of ``AUTHKEEP_WEBAUTHN_*``."""
        return cls(
            id=settings.webauthn_rp_id or "localhost",
            name=settings.webauthn_rp_name or settings.product_name,
            origins=tuple(settings.webauthn_origins),
            challenge_ttl=timedelta(seconds=settings.webauthn_challenge_expire_seconds),
        )

    @property
    def _timeout_ms(self) -> int:
        return int(self.challenge_ttl.total_seconds() * 1000)

    def creation_options(
        self,
        *,
        user_handle: bytes,
        user_name: str,
        display_name: str,
        exclude: Sequence[KnownCredential],
    ) -> Options:
        """``PublicKeyCredentialCreationOptionsJSON``: a discoverable credential with user
        verification, attestation ``none``, ``exclude`` (the account's passkeys: an
        authenticator is not enrolled twice)."""
        options = generate_registration_options(
            rp_id=self.id,
            rp_name=self.name,
            user_id=user_handle,
            user_name=user_name,
            user_display_name=display_name,
            timeout=self._timeout_ms,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[known.descriptor() for known in exclude],
        )
        return Options(json.loads(options_to_json(options)), options.challenge)

    def request_options(
        self, *, allow: Sequence[KnownCredential], require_user_verification: bool
    ) -> Options:
        """``PublicKeyCredentialRequestOptionsJSON``: ``allow`` empty for a usernameless
        sign-in; user verification required or only preferred."""
        options = generate_authentication_options(
            rp_id=self.id,
            timeout=self._timeout_ms,
            allow_credentials=[known.descriptor() for known in allow],
            user_verification=(
                UserVerificationRequirement.REQUIRED
                if require_user_verification
                else UserVerificationRequirement.PREFERRED
            ),
        )
        return Options(json.loads(options_to_json(options)), options.challenge)

    def verify_registration(self, registration: Registration) -> NewPasskey:
        """The passkey a registration response creates; PasskeyRejected (saying why: origin,
        rp id, user verification, attestation...) when it does not verify."""
        try:
            verified = verify_registration_response(
                credential=registration.credential,
                expected_challenge=registration.challenge,
                expected_rp_id=self.id,
                expected_origin=list(self.origins),
                require_user_verification=True,
            )
        except _UNUSABLE as exc:
            raise PasskeyRejected(f"The passkey could not be verified: {exc}"[:300]) from None
        transports = registration.credential.response.transports or ()
        return NewPasskey(
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=tuple(t.value for t in transports if t in _TRANSPORTS),
            aaguid=verified.aaguid,
            device_type=verified.credential_device_type.value,
            backed_up=verified.credential_backed_up,
        )

    def verify_assertion(
        self,
        assertion: Assertion,
        *,
        public_key: bytes,
        sign_count: int,
        require_user_verification: bool,
    ) -> tuple[AssertionVerdict, str]:
        """Verify ``assertion`` against the stored ``public_key`` and ``sign_count``: None
        when it passes, else ``counter_regression`` (genuine, but its counter did not
        increase) or ``verification``; with py_webauthn's reason (for the log)."""

        def verify(current_count: int) -> None:
            verify_authentication_response(
                credential=assertion.credential,
                expected_challenge=assertion.challenge,
                expected_rp_id=self.id,
                expected_origin=list(self.origins),
                credential_public_key=public_key,
                credential_current_sign_count=current_count,
                require_user_verification=require_user_verification,
            )

        try:
            verify(sign_count)
            return None, ""
        except _UNUSABLE as exc:
            reason = str(exc)[:200]
        if sign_count > 0:
            # Against a stored 0 the counter check always passes: the verdict stands.
            try:
                verify(0)
            except _UNUSABLE:
                return "verification", reason
            return "counter_regression", reason
        return "verification", reason
