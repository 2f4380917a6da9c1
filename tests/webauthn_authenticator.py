"""A software WebAuthn authenticator for tests (importable as ``webauthn_authenticator``).

It plays both the browser and the authenticator: given the options JSON a server sent, it
answers with the credential JSON that ``navigator.credentials.create()`` / ``get()`` would,
signed with its own ES256 (P-256) key. Built on ``cryptography`` and ``cbor2`` only, so it
checks the server's use of py_webauthn rather than py_webauthn against itself.

* ``create(options, origin)``: attestation ``none``; authenticator data = SHA-256 of the rp
  id | flags (UP, UV, AT, and BE/BS for a synced passkey) | counter | AAGUID, credential id
  and COSE key.
* ``get(options, origin)``: authenticator data | signature over authenticator data ||
  SHA-256(clientDataJSON), with the ``userHandle`` (a discoverable credential).
* Counter: a synced passkey always reports 0; a device-bound one increments before each
  assertion, and ``counter=`` sets the value one assertion reports (backwards, say).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    """base64url without padding, as WebAuthn JSON writes binary members."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of a base64url member (padded or not)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class NotAllowed(Exception):
    """What the browser would raise: the options do not fit this authenticator."""


class SoftAuthenticator:
    """One passkey on a software authenticator."""

    def __init__(
        self,
        *,
        synced: bool = False,
        user_verification: bool = True,
        aaguid: bytes = b"\x00" * 16,
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.synced = synced
        self.user_verification = user_verification
        self.aaguid = aaguid
        self.sign_count = 0
        self.user_handle: bytes | None = None
        self.rp_id: str | None = None

    @property
    def id(self) -> str:
        """The credential id as WebAuthn JSON writes it."""
        return b64url(self.credential_id)

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _flags(self, attested: bool) -> int:
        flags = UP
        if self.user_verification:
            flags |= UV
        if self.synced:
            flags |= BE | BS
        if attested:
            flags |= AT
        return flags

    def _auth_data(self, rp_id: str, counter: int, attested: bool) -> bytes:
        data = hashlib.sha256(rp_id.encode()).digest()
        data += bytes([self._flags(attested)]) + struct.pack(">I", counter)
        if attested:
            data += self.aaguid + struct.pack(">H", len(self.credential_id))
            data += self.credential_id + self._cose_key()
        return data

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
        ).encode()

    def create(
        self, options: dict[str, Any], origin: str, *, rp_id: str | None = None
    ) -> dict[str, Any]:
        """A registration credential (``RegistrationResponseJSON``) for ``options``;
        ``rp_id`` overrides the options' (a phishing page's rp id, say)."""
        excluded = {entry["id"] for entry in options.get("excludeCredentials", [])}
        if self.id in excluded:
            raise NotAllowed("this authenticator holds an excluded credential")
        self.rp_id = rp_id or options["rp"]["id"]
        self.user_handle = unb64url(options["user"]["id"])
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps(
            {"fmt": "none", "attStmt": {}, "authData": self._auth_data(self.rp_id, 0, True)}
        )
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        origin: str,
        *,
        rp_id: str | None = None,
        counter: int | None = None,
        user_handle: bool = True,
    ) -> dict[str, Any]:
        """An assertion (``AuthenticationResponseJSON``) for ``options``. ``counter``: the
        value this assertion reports (a device-bound key otherwise counts up; a synced one
        reports 0); ``rp_id`` overrides the options'."""
        allowed = {entry["id"] for entry in options.get("allowCredentials", [])}
        if allowed and self.id not in allowed:
            raise NotAllowed("this credential is not among allowCredentials")
        if counter is not None:
            self.sign_count = counter
        elif not self.synced:
            self.sign_count += 1
        auth_data = self._auth_data(rp_id or options["rpId"], self.sign_count, False)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if user_handle and self.user_handle is not None:
            response["userHandle"] = b64url(self.user_handle)
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
