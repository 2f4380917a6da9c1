"""Token revocation (RFC 7009) and introspection (RFC 7662): what the OAuth2 endpoints do
with a token someone hands them.

Both answer "nothing" for anything that is not a token authkeep issued and that is still
good, and neither says why: an error would tell a caller that a string *was* a token once.

* :meth:`OAuth2Tokens.revoke` ends the session a refresh or an access token belongs to. The
  session is the unit of revocation (the revocation store works per ``sid``): revoking
  either token of a pair ends both, at once for every worker, like ``/logout``. Possession
  of the token is the authority, as it is for ``/logout``: authkeep's clients are public.
* :meth:`OAuth2Tokens.introspect` checks an access token exactly as a protected route does
  (signature, expiry, revocation, the user's state and current membership) and shows its
  claims only to an API key of the token's own organization.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import structlog

from authkeep.errors import InvalidToken
from authkeep.security.permissions import Role
from authkeep.security.tokens import AccessClaims, TokenCodec
from authkeep.services.authn import Authenticator
from authkeep.services.context import RequestInfo
from authkeep.services.sessions import Sessions

log = structlog.get_logger("authkeep.oauth2")

TokenKind = Literal["access_token", "refresh_token"]
REVOKED_REASON = "token_revoked"
"""The reason recorded on a session ended through the revocation endpoint."""


@dataclass(frozen=True, slots=True)
class ActiveToken:
    """An access token that introspection found active: its verified claims, and the role
    its user holds *now* in the token's organization (not the token's ``role`` claim)."""

    claims: AccessClaims
    org_id: uuid.UUID
    role: Role
    issuer: str
    audience: str


class OAuth2Tokens:
    """Revoke and introspect authkeep's tokens."""

    def __init__(self, codec: TokenCodec, sessions: Sessions, authenticator: Authenticator):
        self._codec = codec
        self._sessions = sessions
        self._authenticator = authenticator

    def _owner(self, token: str, kind: TokenKind) -> tuple[uuid.UUID, uuid.UUID] | None:
        """(user, session) of a token of ``kind`` that authkeep signed and that has not
        expired, else None."""
        try:
            if kind == "access_token":
                access = self._codec.decode_access(token)
                user_id, session_id = access.user_id, access.session_id
            else:
                refresh = self._codec.decode_refresh(token)
                user_id, session_id = refresh.user_id, refresh.session_id
            return uuid.UUID(user_id), uuid.UUID(session_id)
        except (InvalidToken, ValueError):
            return None

    async def revoke(self, token: str, hint: str | None, info: RequestInfo) -> bool:
        """End the session of ``token`` (a refresh or an access token); whether one ended.

        ``hint`` (``token_type_hint``) only orders the search: an unknown or wrong hint
        still finds the token (RFC 7009 §2.1). A token that is unknown, forged, expired or
        already revoked ends nothing, silently (§2.2)."""
        kinds: tuple[TokenKind, TokenKind] = (
            ("access_token", "refresh_token")
            if hint == "access_token"
            else ("refresh_token", "access_token")
        )
        for kind in kinds:
            owner = self._owner(token, kind)
            if owner is None:
                continue
            user_id, session_id = owner
            ended = await self._sessions.end(
                user_id, only=session_id, reason=REVOKED_REASON, info=info
            )
            log.info("token_revoked", kind=kind, session_id=str(session_id), ended=bool(ended))
            return bool(ended)
        return False

    async def introspect(self, token: str, org_id: uuid.UUID) -> ActiveToken | None:
        """The active access token ``token``, if it belongs to organization ``org_id``
        (the introspecting API key's); None for anything else.

        Refresh tokens are never active here: a resource server has no business holding
        one, and calling it active would invite using it as a bearer credential."""
        try:
            principal = await self._authenticator.authenticate(token)
        except InvalidToken:
            return None
        # Another tenant's token, a token without an organization, or a user who has left
        # the organization since: none of the key's business (a key of tenant A must not
        # learn who holds live sessions in tenant B).
        if principal.claims is None or principal.org_id != org_id or principal.role is None:
            return None
        return ActiveToken(
            principal.claims,
            principal.org_id,
            principal.role,
            self._codec.issuer,
            self._codec.audience,
        )
