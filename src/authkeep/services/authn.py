"""Authenticating a request's access token: the hot path of every protected route.

Per request: the JWT is verified in memory, then one look-up in the revocation store
(memory, or one Redis ``MGET``) answers both "was this session revoked?" and "did this user
change?" (a stamp, see :mod:`authkeep.services.revocation`). The user — with their current
role in the token's organization — comes from a small in-process cache while the stamp is
unchanged, else from one query on two primary keys that selects only the needed columns. So
the hot path makes no database round trip, and a demotion, removal or deactivation made by
any worker still applies on the very next request. The token's ``role`` claim is never used
for authorization: the role read here is.

Entries also expire after :data:`CACHE_SECONDS`, the bound for changes made behind
authkeep's back (an operator's SQL); authkeep's own changes invalidate at once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import structlog

from authkeep.db import sessions as session_rows
from authkeep.db import users as user_rows
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import DependencyUnavailable, InvalidToken, PermissionDenied
from authkeep.security.envelope import Envelope
from authkeep.security.permissions import Role, parse_role
from authkeep.security.tokens import AccessClaims, TokenCodec
from authkeep.services.revocation import RevocationStore

log = structlog.get_logger("authkeep.authn")

CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000

# The user, their role in the token's organization, and whether it requires MFA.
_Found = tuple[UserRecord, str | None, bool]


class _UserCache:
    """(user, organization) → (stamp, user record, role), bounded in size and age."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, max_age: float = CACHE_SECONDS) -> None:
        self._entries: dict[tuple[uuid.UUID, uuid.UUID | None], tuple[str, float, _Found]] = {}
        self._max_entries = max_entries
        self._max_age = max_age

    def get(self, key: tuple[uuid.UUID, uuid.UUID | None], stamp: str) -> _Found | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp or entry[1] < time.monotonic():
            return None
        return entry[2]

    def put(self, key: tuple[uuid.UUID, uuid.UUID | None], stamp: str, found: _Found) -> None:
        if len(self._entries) >= self._max_entries and key not in self._entries:
            # Oldest first (dicts keep insertion order): cheap and good enough for a cache
            # whose entries all expire within a minute anyway.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (stamp, time.monotonic() + self._max_age, found)


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
    longer a member of it. ``org_requires_mfa``: that organization's policy (members without
    a second factor are refused its routes), read in the same query as the role.
    """

    user: UserRecord
    claims: AccessClaims | None
    org_id: uuid.UUID | None = None
    role: Role | None = None
    api_key: ApiKeyIdentity | None = None
    org_requires_mfa: bool = False

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

    def __init__(
        self, db: Database, codec: TokenCodec, revocations: RevocationStore, *, envelope: Envelope
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._codec = codec
        self._revocations = revocations
        self._users = _UserCache()

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token`` (signature, claims, type, revocation, user state)."""
        claims = self._codec.decode_access(token)
        try:
            user_id = uuid.UUID(claims.user_id)
            session_id = uuid.UUID(claims.session_id)
            org_id = uuid.UUID(claims.org_id) if claims.org_id is not None else None
        except ValueError:
            raise InvalidToken() from None
        stamp: str | None = None
        try:
            revoked, stamp = await self._revocations.check(claims.session_id, claims.user_id)
            check_database = False
        except DependencyUnavailable:
            revoked, check_database = False, True
        if revoked:
            raise InvalidToken()
        key = (user_id, org_id)
        found = self._users.get(key, stamp) if stamp is not None else None
        if found is None:
            async with self._db.reading() as conn:
                if check_database and await session_rows.session_is_revoked(conn, session_id):
                    raise InvalidToken()
                found = await user_rows.get_with_role(conn, self._envelope, user_id, org_id)
            # The stamp was read BEFORE the row: a change committed in between bumps the
            # counter afterwards, so this entry can only be too old to match, never wrong.
            if found is not None and stamp is not None:
                self._users.put(key, stamp, found)
        if found is None or not found[0].can_sign_in:
            raise InvalidToken()
        user, stored_role, requires_mfa = found
        role = parse_role(stored_role)
        if role is None:
            return Principal(user, claims)
        return Principal(user, claims, org_id, role, org_requires_mfa=requires_mfa)
