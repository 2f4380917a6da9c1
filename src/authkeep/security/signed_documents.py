"""Documents signed with the token key ring: a compact JWS whose payload is the document.

What authkeep signs this way (the data export, ``docs/privacy.md#export``) is a statement
the service makes to a user, which the user keeps and shows to others later. So it is signed
with the keys the JWKS publishes (:class:`~authkeep.security.keys.KeyRing`): with an Ed25519 or
RSA key pair anyone verifies it against ``/.well-known/jwks.json`` (PyJWT's ``PyJWKClient``);
with HS256 only the service can.

Each kind of document has its own ``typ`` header (``authkeep-export+jwt``), and the rules
below keep documents and tokens apart, both ways:

* the token codec accepts ``typ`` ``JWT`` (or none) only, and requires the claims of its
  token types, which a document does not have: a signed document is never a token;
* :func:`verify_document` requires the document's exact ``typ``: an access or refresh token
  (``typ`` ``JWT``) is never a document;
* as for tokens, the header may hold only ``alg``, ``typ`` and ``kid``; ``kid`` must name a
  key of the ring and ``alg`` be that key's single algorithm (no ``none``, no HS256 keyed
  with a public key).

The payload is canonical JSON (sorted keys, no whitespace, ASCII): the same document always
gives the same bytes, so a digest of them identifies one export.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jwt

from authkeep.security.audit_signing import canonical
from authkeep.security.keys import KeyRing

__all__ = [
    "EXPORT_TYPE",
    "InvalidSignedDocument",
    "document_digest",
    "sign_document",
    "verify_document",
]

EXPORT_TYPE = "authkeep-export+jwt"
"""The ``typ`` header of a signed data export."""

_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})


class InvalidSignedDocument(ValueError):
    """A signed document that does not verify: malformed, of another ``typ``, signed by a key
    outside the ring, or altered."""


def document_digest(document: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the bytes a signature over ``document`` covers."""
    return hashlib.sha256(canonical(document)).hexdigest()


def sign_document(keys: KeyRing, document: Mapping[str, Any], *, typ: str) -> str:
    """``document`` as a compact JWS signed by the ring's current key, with header
    ``{"alg", "kid", "typ": typ}``. ``document`` must be JSON (no NaN, no other types)."""
    key = keys.current
    return jwt.PyJWS().encode(
        canonical(document),
        key.signing_material,
        algorithm=key.algorithm,
        headers={"kid": key.kid, "typ": typ},
    )


def verify_document(token: str, keys: KeyRing, *, typ: str) -> dict[str, Any]:
    """The document signed in ``token`` if a key of ``keys`` signed it as a ``typ``
    document; :class:`InvalidSignedDocument` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidSignedDocument("not a compact JWS") from exc
    if not header.keys() <= _ALLOWED_HEADER_KEYS or header.get("typ") != typ:
        raise InvalidSignedDocument(f"not a {typ} document")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or header.get("alg") != key.algorithm:
        raise InvalidSignedDocument("not signed by a key of this service")
    try:
        payload = jwt.PyJWS().decode(token, key.verifying_material, algorithms=[key.algorithm])
        document = json.loads(payload)
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidSignedDocument("the signature does not verify") from exc
    if not isinstance(document, dict):
        raise InvalidSignedDocument("the payload is not a JSON object")
    return document
