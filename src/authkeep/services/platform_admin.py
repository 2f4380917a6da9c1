"""Platform administration (``is_superuser``): find, activate, deactivate and delete users.

Platform admins manage accounts, not tenants: being one grants no access to any
organization's data (that takes a membership, like anyone else). An admin cannot deactivate
or delete their own account here (Conflict): the last platform admin locking themselves out
would need a database session to undo. Each change is audited by
:class:`~authkeep.services.accounts.Accounts` in the change's transaction, with the admin as
the actor.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from authkeep.db import users as user_rows
from authkeep.db.engine import Database
from authkeep.db.users import UserRecord
from authkeep.errors import Conflict, PermissionDenied
from authkeep.services.accounts import Accounts
from authkeep.services.audit import Actor
from authkeep.services.authn import Principal
from authkeep.services.context import RequestInfo

MAX_PAGE = 100
SELF_CHANGE = "Platform admins cannot deactivate or delete their own account"


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of a user search."""

    items: list[UserRecord]
    total: int
    offset: int
    limit: int


def require_superuser(principal: Principal) -> None:
    """PermissionDenied unless a platform admin acts through a user session."""
    if principal.is_api_key or not principal.user.is_superuser:
        raise PermissionDenied("Platform admins only", entity_type="admin")


class PlatformAdmin:
    """Use cases of the platform admin routes."""

    def __init__(self, db: Database, accounts: Accounts) -> None:
        self._db = db
        self._accounts = accounts

    async def search(
        self, principal: Principal, *, query: str | None, offset: int = 0, limit: int = 50
    ) -> UserPage:
        """Users whose email or name contains ``query``, newest first."""
        require_superuser(principal)
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        async with self._db.read_transaction() as conn:
            items, total = await user_rows.search(conn, query=query, offset=offset, limit=limit)
        return UserPage(items, total, offset, limit)

    async def set_active(
        self,
        principal: Principal,
        user_id: uuid.UUID,
        active: bool,
        info: RequestInfo | None = None,
    ) -> UserRecord:
        """Activate or deactivate a user; deactivation ends their sessions at once."""
        require_superuser(principal)
        if user_id == principal.user.id and not active:
            raise Conflict(SELF_CHANGE)
        return await self._accounts.set_active(
            user_id, active, actor=Actor.of(principal), info=info
        )

    async def delete(
        self, principal: Principal, user_id: uuid.UUID, info: RequestInfo | None = None
    ) -> UserRecord:
        """Soft-delete a user; their sessions end at once."""
        require_superuser(principal)
        if user_id == principal.user.id:
            raise Conflict(SELF_CHANGE)
        return await self._accounts.soft_delete(user_id, actor=Actor.of(principal), info=info)
