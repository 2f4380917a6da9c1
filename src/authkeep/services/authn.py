"""Authenticating a request's access token: the hot path of every protected route.

Per request: the JWT is verified in memory, the session is checked against the revocation
store (memory, or one Redis ``EXISTS``), and the user is loaded — with their current role in
the token's organization — by one query on two primary keys that selects only the columns
needed: no ORM identity map, no relationship loading. The token's ``role`` claim is never
used for authorization: the role read here is, so a demotion or removal applies at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog

from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import DependencyUnavailable, InvalidToken, PermissionDenied
from authkeep.security.permissions import Role, parse_role
from authkeep.security.tokens import AccessClaims, TokenCodec
from authkeep.services.revocation import RevocationStore

log = structlog.get_logger("authkeep.authn")


@dataclass(frozen=True, slots=True)
class ApiKeyIdentity:
    """The API key a request authenticated with."""

    id: uuid.UUID
    prefix: str
    name: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user's session (``claims`` of the access token they presented), or
    an API key (``api_key``; ``user`` is then the key's creator, on whose behalf it acts).

    ``org_id`` and ``role`` describe the active organization — the token's, or the key's —
    as read from the database for this request: None when there is none or the caller is no
    longer a member of it.
    """

    user: UserRecord
    claims: AccessClaims | None
    org_id: uuid.UUID | None = None
    role: Role | None = None
    api_key: ApiKeyIdentity | None = None

    @property
    def is_api_key(self) -> bool:
        """True when the caller presented an API key, not a user session."""
        return self.api_key is not None

    @property
    def api_key_id(self) -> uuid.UUID | None:
        """The id of the API key used, if any (what the audit log records)."""
        return self.api_key.id if self.api_key is not None else None

    @property
    def session_id(self) -> uuid.UUID:
        """The session (``sid``) the token belongs to; PermissionDenied for an API key,
        which has no session (routes that need one accept user sessions only)."""
        if self.claims is None:
            raise PermissionDenied("This route needs a user session; API keys are not accepted")
        return uuid.UUID(self.claims.session_id)


class Authenticator:
    """Turns a bearer token into a :class:`Principal` or raises InvalidToken."""

    def __init__(self, db: Database, codec: TokenCodec, revocations: RevocationStore) -> None:
        self._db = db
        self._codec = codec
        self._revocations = revocations

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token`` (signature, claims, type, revocation, user state)."""
        claims = self._codec.decode_access(token)
        try:
            user_id = uuid.UUID(claims.user_id)
            session_id = uuid.UUID(claims.session_id)
            org_id = uuid.UUID(claims.org_id) if claims.org_id is not None else None
        except ValueError:
            raise InvalidToken() from None
        try:
            revoked = await self._revocations.is_revoked(claims.session_id)
            check_database = False
        except DependencyUnavailable:
            revoked, check_database = False, True
        if revoked:
            raise InvalidToken()
        async with self._db.reading() as conn:
            if check_database and await session_rows.session_is_revoked(conn, session_id):
                raise InvalidToken()
            found = await user_rows.get_with_role(conn, user_id, org_id)
        if found is None or not found[0].can_sign_in:
            raise InvalidToken()
        user, stored_role = found
        role = parse_role(stored_role)
        return Principal(user, claims, org_id if role else None, role)
