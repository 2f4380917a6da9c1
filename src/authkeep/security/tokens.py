"""JWT access and refresh tokens (PyJWT).

Every failure, whatever its cause, becomes one :class:`~authkeep.errors.InvalidToken` raised
from the cause: callers cannot accidentally treat one kind of bad token differently.

Checks, in order, each stopping an attack:

* size (8 KB) and alphabet (three base64url segments) before any parsing — oversized or
  malformed input costs nothing;
* the header may hold only ``alg``, ``typ`` and ``kid`` — ``jku``/``x5u``/``jwk`` (key
  injection) and ``crit`` extensions are refused, nothing is ever fetched;
* ``kid`` must name a key of our ring and ``alg`` must be that key's single algorithm —
  no ``none``, no HS256-with-the-public-key confusion;
* signature, ``exp``, ``iat`` (not in the future), ``nbf``, exact ``iss`` and ``aud`` — with a
  small leeway for clock skew;
* ``token_type`` must be the one expected — a refresh token is not an access token;
* ``auth_time``, ``amr`` and ``acr`` all present or all absent, ``auth_time`` not after
  ``iat``, ``amr`` only known methods and ``acr`` exactly what ``amr`` reaches.

An access token that passed all of these is remembered (see :class:`_VerifiedTokens`): the
same string presented again costs a dictionary look-up and an expiry check, not a second
verification. Revocation and the user's state are not part of that: callers check them on
every request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from jwt.algorithms import HMACAlgorithm

from authkeep.errors import InvalidToken
from authkeep.security.assurance import AAL1, AMR_VALUES, AuthContext, acr_of
from authkeep.security.keys import KeyRing

TokenType = Literal["access", "refresh"]

MAX_TOKEN_BYTES = 8192
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})


@functools.lru_cache(maxsize=64)
def _unverified_header(segment: str) -> Any:
    # Only to pick the key: PyJWT verifies the whole token, header included, right after.
    # ``jwt.get_unverified_header`` would decode and validate all three segments just for
    # this, doubling the hot path's token parsing; the shape was already checked. Kept per
    # segment: every token a key signs has the same header. Callers must not change it.
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidToken() from None


class _KeyCheckedOnceHMAC(HMACAlgorithm):
    """HS256 that checks each secret once. PyJWT asks on every sign and verify whether the
    secret is really a PEM, SSH or DER key (refusing algorithm confusion) — a third of its
    decode time. The answer for a given secret never changes, and a codec only ever passes
    the secrets of its own key ring, so the prepared key is kept."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)  # raises for an asymmetric key: not kept
            self._prepared[key] = prepared
        return prepared


def _pyjwt() -> jwt.PyJWT:
    """A PyJWT of our own, so that its HS256 is the key-checked-once one without changing
    the process-wide ``jwt.encode``/``jwt.decode`` an embedding app may use."""
    instance = jwt.PyJWT()
    # PyJWT exposes no constructor argument for its signer; the registry is public API.
    signer = instance._jws
    signer.unregister_algorithm("HS256")
    signer.register_algorithm("HS256", _KeyCheckedOnceHMAC())
    return instance


class _VerifiedTokens:
    """Access tokens that passed full verification, by their exact string.

    A client presents the same access token on every request for its whole life (15
    minutes by default), and verifying it again gives the same answer every time except for
    expiry: the signature, header, issuer, audience and ``iat``/``nbf`` checks are facts
    about an unchanging string and an unchanging key ring. So the claims are kept and only
    ``exp`` is checked again (Envoy's JWT filter does the same with its ``jwt_cache_config``).
    The key is the whole token: any changed byte, signature included, is a different string
    and goes through full verification. Bounded: when full, it starts over.
    """

    def __init__(self, max_entries: int, leeway: int) -> None:
        self._max_entries = max_entries
        self._leeway = leeway
        self._claims: dict[str, AccessClaims] = {}

    def get(self, token: str) -> AccessClaims | None:
        """The claims of ``token`` if it was verified and has not expired since."""
        claims = self._claims.get(token)
        if claims is None:
            return None
        # PyJWT's own rule: expired once exp <= now - leeway.
        if claims.expires_at + self._leeway <= time.time():
            del self._claims[token]
            return None
        return claims

    def put(self, token: str, claims: AccessClaims) -> None:
        """Remember a token that has just passed full verification."""
        if len(self._claims) >= self._max_entries:
            self._claims.clear()
        self._claims[token] = claims


VERIFIED_TOKENS_KEPT = 10_000

_REQUIRED = ["exp", "iat", "sub", "jti", "sid", "iss", "aud", "token_type"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: str
    session_id: str
    token_id: str
    email: str
    issued_at: int
    expires_at: int
    org_id: str | None = None
    role: str | None = None
    email_verified: bool = False
    # When and how the user last authenticated (see authkeep.security.assurance); tokens
    # minted before these claims existed read as authenticated at the epoch, by password.
    auth_time: int = 0
    amr: tuple[str, ...] = ("pwd",)
    acr: str = AAL1


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    """The verified content of a refresh token."""

    user_id: str
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token and the facts a caller stores about it."""

    token: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


def _assurance(claims: dict[str, Any]) -> tuple[int, tuple[str, ...], str]:
    """``auth_time``, ``amr`` and ``acr`` of verified claims. All three or none (a token
    minted before they existed); ``acr`` must be what ``amr`` reaches, so no single edited
    claim is ever trusted (the signature already forbids editing; this is belt and braces)."""
    if "auth_time" not in claims and "amr" not in claims and "acr" not in claims:
        return 0, ("pwd",), AAL1
    auth_time, amr, acr = claims.get("auth_time"), claims.get("amr"), claims.get("acr")
    if (
        not isinstance(auth_time, int)
        or isinstance(auth_time, bool)
        or auth_time > int(claims["iat"])
        or not isinstance(amr, list)
        or not amr
        or not all(isinstance(m, str) and m in AMR_VALUES for m in amr)
        or acr != acr_of(amr)
    ):
        raise InvalidToken()
    return auth_time, tuple(amr), acr


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


class TokenCodec:
    """Sign and verify authkeep's JWTs."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        leeway_seconds: int = 10,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.leeway = leeway_seconds
        self._jwt = _pyjwt()
        self._verified = _VerifiedTokens(VERIFIED_TOKENS_KEPT, leeway_seconds)

    def _encode(self, claims: dict[str, Any]) -> str:
        key = self.keys.current
        return self._jwt.encode(
            claims, key.signing_material, algorithm=key.algorithm, headers={"kid": key.kid}
        )

    def issue_access(
        self,
        *,
        user_id: str,
        email: str,
        session_id: str,
        org_id: str | None = None,
        role: str | None = None,
        email_verified: bool = False,
        auth: AuthContext | None = None,
        now: datetime | None = None,
    ) -> IssuedToken:
        """Sign a new access token. ``email_verified``: whether the owner proved
        ``email`` when the token was issued; ``auth``: when and how the session's user last
        authenticated (``auth_time``, ``amr``, ``acr``; None: now, by password)."""
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + self.access_ttl
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "sub": user_id,
            "email": email,
            "email_verified": email_verified,
            "sid": session_id,
            "jti": jti,
            "iat": _epoch(issued),
            "exp": _epoch(expires),
            "iss": self.issuer,
            "aud": self.audience,
            "token_type": "access",
        }
        context = auth if auth is not None else AuthContext(issued)
        claims["auth_time"] = _epoch(context.auth_time)
        claims["amr"] = list(context.amr)
        claims["acr"] = context.acr
        if org_id is not None:
            claims["org_id"] = org_id
            claims["role"] = role
        return IssuedToken(self._encode(claims), jti, issued, expires)

    def encode_refresh(
        self,
        *,
        user_id: str,
        session_id: str,
        token_id: str,
        issued_at: datetime,
        expires_at: datetime,
    ) -> str:
        """Sign a refresh token. Deterministic: the same facts give the same token, which is
        how a retried refresh inside the grace window receives the very same successor while
        the server keeps only its hash."""
        return self._encode(
            {
                "sub": user_id,
                "sid": session_id,
                "jti": token_id,
                "iat": _epoch(issued_at),
                "exp": _epoch(expires_at),
                "iss": self.issuer,
                "aud": self.audience,
                "token_type": "refresh",
            }
        )

    def new_refresh(
        self, *, user_id: str, session_id: str, now: datetime | None = None
    ) -> IssuedToken:
        """Sign a refresh token with a new id."""
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + self.refresh_ttl
        jti = uuid.uuid4().hex
        token = self.encode_refresh(
            user_id=user_id,
            session_id=session_id,
            token_id=jti,
            issued_at=issued,
            expires_at=expires,
        )
        return IssuedToken(token, jti, issued, expires)

    def decode(self, token: str, expected_type: TokenType) -> dict[str, Any]:
        """Verify ``token`` completely and return its claims, or raise InvalidToken."""
        if len(token) > MAX_TOKEN_BYTES or not _JWT_SHAPE.fullmatch(token):
            raise InvalidToken()
        header = _unverified_header(token[: token.index(".")])
        if not isinstance(header, dict) or not header.keys() <= _ALLOWED_HEADER_KEYS:
            raise InvalidToken()
        if header.get("typ", "JWT") != "JWT":
            raise InvalidToken()
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.algorithm:
            raise InvalidToken()
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                key.verifying_material,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED, "strict_aud": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc
        if claims.get("token_type") != expected_type:
            raise InvalidToken()
        for name in ("sub", "sid", "jti"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken()
        return claims

    def decode_access(self, token: str) -> AccessClaims:
        """Verify an access token (once per token string: see :class:`_VerifiedTokens`)."""
        known = self._verified.get(token)
        if known is not None:
            return known
        verified = self._verify_access(token)
        self._verified.put(token, verified)
        return verified

    def _verify_access(self, token: str) -> AccessClaims:
        claims = self.decode(token, "access")
        email = claims.get("email")
        org_id = claims.get("org_id")
        role = claims.get("role")
        if not isinstance(email, str) or not isinstance(org_id, str | None):
            raise InvalidToken()
        if not isinstance(role, str | None):
            raise InvalidToken()
        # Absent from tokens issued before the claim existed: not verified.
        email_verified = claims.get("email_verified", False)
        if not isinstance(email_verified, bool):
            raise InvalidToken()
        auth_time, amr, acr = _assurance(claims)
        return AccessClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            token_id=claims["jti"],
            email=email,
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            org_id=org_id,
            role=role,
            email_verified=email_verified,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
        )

    def decode_refresh(self, token: str) -> RefreshClaims:
        """Verify a refresh token."""
        claims = self.decode(token, "refresh")
        return RefreshClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            token_id=claims["jti"],
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )
