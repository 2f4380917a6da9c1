"""Encryption at rest, part 2: encrypt the personal data already stored, in place.

Each account gets its user key (``user_keys``, wrapped by the data-key ring); then, in
batches of :data:`BATCH` rows (keyset order on the primary key, so memory stays flat):

- ``users.email``/``full_name``: sealed with the account's key; ``users.email_key`` (the
  folded address) becomes its blind index — one-to-one, so uniqueness carries over;
- ``account_tokens.email`` and ``auth_sessions.ip``/``user_agent``: sealed with the key of
  the row's user;
- ``invitations.email``: sealed with the master ring (the invitee may have no account);
  ``invitations.email_key`` becomes its blind index.

Every seal binds the value to its table, column and row (``security/envelope.py``). Values
already sealed (or indexed) are left as they are, so a run that was interrupted, or rows
written by a newer version, are no problem. The keys are the running service's: ``authkeep
migrate`` passes them (``authkeep.db.migrate``, ``config.attributes["envelope"]``). An empty
database needs none; a database with accounts or invitations and no keys stops with one line
(:class:`~authkeep.db.migrate.DataKeysRequired`).

Downgrade opens everything again (and recomputes the folded ``email_key``); an address whose
key is gone (an erased account) becomes ``erased-<id>@invalid.invalid``, a name, IP or user
agent NULL. The user keys stay until 0012's downgrade drops their table.

The whole migration is one transaction (``authkeep.db.migrate`` holds the migration lock):
a failure leaves the data as it was.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import context, op
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Connection

from authkeep.db.base import UTCDateTime
from authkeep.db.migrate import ENVELOPE, DataKeysRequired
from authkeep.security.emails import email_key as fold_email
from authkeep.security.envelope import Envelope, SealedValueError, field_context

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 500
"""Rows read, sealed and written at a time."""

log = structlog.get_logger("authkeep.migrations")

# The tables as this revision knows them (not the models, which move on).
users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.Text()),
    sa.column("email_key", sa.String()),
    sa.column("full_name", sa.Text()),
)
user_keys = sa.table(
    "user_keys",
    sa.column("user_id", sa.Uuid()),
    sa.column("wrapped_key", sa.String()),
    sa.column("created_at", UTCDateTime()),
)
account_tokens = sa.table(
    "account_tokens",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("email", sa.Text()),
)
auth_sessions = sa.table(
    "auth_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("ip", sa.Text()),
    sa.column("user_agent", sa.Text()),
)
invitations = sa.table(
    "invitations",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.Text()),
    sa.column("email_key", sa.String()),
)


def _plain_address(value: str) -> bool:
    # An address (or its folded key) has an "@"; a sealed value or a blind index never does
    # (base64url and key ids only).
    return "@" in value


class _Keys:
    """The user keys of the accounts, made or unwrapped once each (the envelope remembers
    them)."""

    def __init__(self, conn: Connection, envelope: Envelope) -> None:
        self._conn = conn
        self.envelope = envelope

    def ensure(self, user_id: uuid.UUID, wrapped: str | None) -> AESGCM:
        """The cipher of ``user_id``'s key, making and storing one if it has none."""
        if wrapped is not None:
            try:
                return self.envelope.cipher_for(user_id, wrapped)
            except SealedValueError:
                raise DataKeysRequired(
                    "migration 0013: the user keys already stored do not open with these data "
                    "keys; run it with the AUTHKEEP_DATA_KEYS that wrapped them"
                ) from None
        key = self.envelope.new_user_key()
        self._conn.execute(
            sa.insert(user_keys).values(
                user_id=user_id,
                wrapped_key=self.envelope.wrap(user_id, key),
                created_at=datetime.now(UTC),
            )
        )
        return self.envelope.remember(user_id, key)

    def find(self, user_id: uuid.UUID, wrapped: str | None) -> AESGCM | None:
        """The cipher of ``user_id``'s key; None when it has none (or it does not unwrap)."""
        if wrapped is None:
            return None
        try:
            return self.envelope.cipher_for(user_id, wrapped)
        except SealedValueError:
            return None


def _sealed_by(aead: AESGCM, stored: str, context_: bytes) -> bool:
    try:
        Envelope.open_with(aead, stored, context=context_)
    except SealedValueError:
        return False
    return True


def _seal_user(aead: AESGCM, table: str, column: str, row_id: object, value: Any) -> Any:
    """``value`` sealed with ``aead`` unless it already is (or is NULL)."""
    if value is None:
        return None
    where = field_context(table, column, row_id)
    if Envelope.is_user_sealed(value) and _sealed_by(aead, value, where):
        return value
    return Envelope.seal_with(aead, value, context=where)


def _open_user(aead: AESGCM | None, table: str, column: str, row_id: object, value: Any) -> Any:
    """The plaintext of ``value`` (left as it is when it is not sealed); None when it does
    not open."""
    if value is None or not Envelope.is_user_sealed(value):
        return value
    if aead is None:
        return None
    try:
        return Envelope.open_with(aead, value, context=field_context(table, column, row_id))
    except SealedValueError:
        return None


def _batches(
    conn: Connection, key: sa.ColumnClause[Any], query: sa.Select[Any]
) -> Iterator[list[tuple[Any, ...]]]:
    """``query``'s rows, :data:`BATCH` at a time, by ``key`` (its first column)."""
    after = None
    while True:
        stmt = query.order_by(key).limit(BATCH)
        if after is not None:
            stmt = stmt.where(key > after)
        rows = [tuple(row) for row in conn.execute(stmt)]
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _write(
    conn: Connection, table: sa.TableClause, changes: list[dict[str, Any]], columns: Sequence[str]
) -> None:
    """One executemany UPDATE of ``columns`` by id (``b_id``, ``b_<column>`` parameters)."""
    if not changes:
        return
    stmt = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in columns})
    )
    conn.execute(stmt, changes)


def _with_key(table: sa.TableClause, *columns: str) -> sa.Select[Any]:
    return sa.select(
        table.c.id, table.c.user_id, *(table.c[name] for name in columns), user_keys.c.wrapped_key
    ).select_from(table.outerjoin(user_keys, user_keys.c.user_id == table.c.user_id))


def _envelope(conn: Connection, direction: str) -> Envelope | None:
    envelope: Envelope | None = context.config.attributes.get(ENVELOPE)
    if envelope is not None:
        return envelope
    accounts = conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
    invited = conn.execute(sa.select(sa.func.count()).select_from(invitations)).scalar_one()
    if accounts or invited:
        raise DataKeysRequired(
            f"migration 0013 must {direction} the personal data of {accounts} accounts and "
            f"{invited} invitations and has no data keys: run `authkeep migrate` with "
            "AUTHKEEP_DATA_KEYS set (or pass envelope= to authkeep.db.migrate.upgrade)"
        )
    return None


# -- upgrade -------------------------------------------------------------------------------


def _encrypt_users(conn: Connection, keys: _Keys) -> int:
    query = sa.select(
        users.c.id, users.c.email, users.c.email_key, users.c.full_name, user_keys.c.wrapped_key
    ).select_from(users.outerjoin(user_keys, user_keys.c.user_id == users.c.id))
    done = 0
    for rows in _batches(conn, users.c.id, query):
        changes = []
        for user_id, email, key, name, wrapped in rows:
            aead = keys.ensure(user_id, wrapped)
            changes.append(
                {
                    "b_id": user_id,
                    "b_email": (
                        Envelope.seal_with(
                            aead, email, context=field_context("users", "email", user_id)
                        )
                        if _plain_address(email)
                        else email
                    ),
                    # The folded address as it was stored: the index keeps its uniqueness.
                    "b_email_key": keys.envelope.blind_index(key) if _plain_address(key) else key,
                    "b_full_name": _seal_user(aead, "users", "full_name", user_id, name),
                }
            )
        _write(conn, users, changes, ("email", "email_key", "full_name"))
        done += len(rows)
    return done


def _encrypt_user_rows(
    conn: Connection, keys: _Keys, table: sa.TableClause, columns: Sequence[str]
) -> int:
    done = 0
    for rows in _batches(conn, table.c.id, _with_key(table, *columns)):
        changes = []
        for row in rows:
            row_id, user_id, *values, wrapped = row
            aead = keys.find(user_id, wrapped)
            if aead is None:
                # Its user has no key (the users phase gave every account one): only a row
                # whose user vanished; its values cannot be sealed for anyone.
                changes.append({"b_id": row_id, **{f"b_{c}": None for c in columns}})
                continue
            change = {"b_id": row_id}
            for column, value in zip(columns, values, strict=True):
                change[f"b_{column}"] = _seal_user(aead, table.name, column, row_id, value)
            changes.append(change)
        _write(conn, table, changes, columns)
        done += len(rows)
    return done


def _encrypt_invitations(conn: Connection, envelope: Envelope) -> int:
    query = sa.select(invitations.c.id, invitations.c.email, invitations.c.email_key)
    done = 0
    for rows in _batches(conn, invitations.c.id, query):
        changes = [
            {
                "b_id": row_id,
                "b_email": (
                    envelope.seal(email, context=field_context("invitations", "email", row_id))
                    if _plain_address(email)
                    else email
                ),
                "b_email_key": envelope.blind_index(key) if _plain_address(key) else key,
            }
            for row_id, email, key in rows
        ]
        _write(conn, invitations, changes, ("email", "email_key"))
        done += len(rows)
    return done


def upgrade() -> None:
    conn = op.get_bind()
    envelope = _envelope(conn, "encrypt")
    if envelope is None:
        return
    keys = _Keys(conn, envelope)
    phases: tuple[tuple[str, Callable[[], int]], ...] = (
        ("users", lambda: _encrypt_users(conn, keys)),
        ("account_tokens", lambda: _encrypt_user_rows(conn, keys, account_tokens, ("email",))),
        (
            "auth_sessions",
            lambda: _encrypt_user_rows(conn, keys, auth_sessions, ("ip", "user_agent")),
        ),
        ("invitations", lambda: _encrypt_invitations(conn, envelope)),
    )
    for table, run in phases:
        log.info("migration_encrypted", table=table, rows=run())


# -- downgrade -----------------------------------------------------------------------------


def _decrypt_users(conn: Connection, keys: _Keys) -> None:
    query = sa.select(
        users.c.id, users.c.email, users.c.full_name, user_keys.c.wrapped_key
    ).select_from(users.outerjoin(user_keys, user_keys.c.user_id == users.c.id))
    for rows in _batches(conn, users.c.id, query):
        changes = []
        for user_id, email, name, wrapped in rows:
            aead = keys.find(user_id, wrapped)
            plain = email if _plain_address(email) else None
            if plain is None and aead is not None:
                plain = _open_user(aead, "users", "email", user_id, email)
            if plain is None:
                # Erased (its key destroyed) or unreadable: unique, and no one's address.
                plain = f"erased-{uuid.UUID(str(user_id)).hex}@invalid.invalid"
            changes.append(
                {
                    "b_id": user_id,
                    "b_email": plain,
                    "b_email_key": fold_email(plain),
                    "b_full_name": _open_user(aead, "users", "full_name", user_id, name),
                }
            )
        _write(conn, users, changes, ("email", "email_key", "full_name"))


def _decrypt_user_rows(
    conn: Connection,
    keys: _Keys,
    table: sa.TableClause,
    columns: Sequence[str],
    unreadable: Any = None,
) -> None:
    for rows in _batches(conn, table.c.id, _with_key(table, *columns)):
        changes = []
        for row in rows:
            row_id, user_id, *values, wrapped = row
            aead = keys.find(user_id, wrapped)
            change = {"b_id": row_id}
            for column, value in zip(columns, values, strict=True):
                plain = _open_user(aead, table.name, column, row_id, value)
                change[f"b_{column}"] = unreadable if plain is None and value else plain
            changes.append(change)
        _write(conn, table, changes, columns)


def _decrypt_invitations(conn: Connection, envelope: Envelope) -> None:
    query = sa.select(invitations.c.id, invitations.c.email)
    for rows in _batches(conn, invitations.c.id, query):
        changes = []
        for row_id, email in rows:
            plain = email
            if not _plain_address(email):
                try:
                    where = field_context("invitations", "email", row_id)
                    plain = envelope.open(email, context=where)
                except SealedValueError:
                    plain = f"erased-{uuid.UUID(str(row_id)).hex}@invalid.invalid"
            changes.append({"b_id": row_id, "b_email": plain, "b_email_key": fold_email(plain)})
        _write(conn, invitations, changes, ("email", "email_key"))


def downgrade() -> None:
    conn = op.get_bind()
    envelope = _envelope(conn, "decrypt")
    if envelope is None:
        return
    keys = _Keys(conn, envelope)
    _decrypt_users(conn, keys)
    _decrypt_user_rows(conn, keys, account_tokens, ("email",), unreadable="")
    _decrypt_user_rows(conn, keys, auth_sessions, ("ip", "user_agent"))
    _decrypt_invitations(conn, envelope)
