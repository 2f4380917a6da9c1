"""Organization roles and their order: ``admin`` > ``editor`` > ``viewer``.

* **viewer** — reads the organization's data;
* **editor** — also creates, and changes or deletes what it owns;
* **admin** — also changes or deletes anything, and manages members and API keys.

A role is only ever trusted when it was read from the database for this request; the
``role`` claim in an access token is informative (for a client's UI), never authority.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A member's (or an API key's) role in one organization."""

    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher is more powerful."""
        return _RANK[self]

    def at_least(self, minimum: Role | str) -> bool:
        """Whether this role grants everything ``minimum`` grants."""
        return self.rank >= Role(minimum).rank


_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}

ROLE_VALUES: tuple[str, ...] = tuple(role.value for role in Role)
"""Every role's stored value (used in the database's CHECK constraints)."""


def parse_role(value: object) -> Role | None:
    """The role stored as ``value``, or None (absent or unknown: grants nothing)."""
    if isinstance(value, str):
        try:
            return Role(value)
        except ValueError:
            return None
    return None


def weaker(first: Role, second: Role) -> Role:
    """The less powerful of two roles."""
    return first if first.rank <= second.rank else second
