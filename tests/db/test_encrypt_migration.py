"""Migration 0013 encrypts a database written in clear (revision 0011) in place: every
account gets its user key, rows are sealed, ``email_key`` becomes the blind index — and
everything still signs in. On SQLite and PostgreSQL, each test on a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy.engine import Connection

from authkeep import Settings, create_app
from authkeep.db.base import UTCDateTime, utcnow
from authkeep.db.engine import Database
from authkeep.db.migrate import ENVELOPE, DataKeysRequired, alembic_config, run_migrations, upgrade
from authkeep.security.configured import build_envelope, build_secret_ring
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.security.envelope import Envelope
from conftest import GENEROUS_LIMITS, TEST_SECRET, pg_async_url
from helpers import PASSWORD, bearer, client_for, login, running
from servers import fresh_pg_database

ALICE, ALICE_NAME = "Alice.Old@Example.com", "Alice Oldtimer"
BOB = "bob.old@example.com"
IP, AGENT = "192.0.2.44", "LegacyBrowser/1.0"
CLEAR = ("alice.old", "bob.old", "oldtimer", IP, "legacybrowser")

_users = sa.table(
    "users",
    *(sa.column(name) for name in ("id", "email", "email_key", "full_name", "hashed_password")),
    *(sa.column(name) for name in ("is_active", "is_superuser")),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at", "email_verified_at")),
)
_orgs = sa.table(
    "organizations",
    *(sa.column(name) for name in ("id", "name", "created_by")),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at")),
)
_members = sa.table(
    "memberships",
    *(sa.column(name) for name in ("user_id", "organization_id", "role", "origin")),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at")),
)
_invitations = sa.table(
    "invitations",
    *(sa.column(n) for n in ("id", "organization_id", "email", "email_key", "role", "token_hash")),
    sa.column("invited_by"),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "expires_at")),
)
_tokens = sa.table(
    "account_tokens",
    *(sa.column(name) for name in ("id", "user_id", "purpose", "token_hash", "email")),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "expires_at")),
)
_sessions = sa.table(
    "auth_sessions",
    *(sa.column(name) for name in ("id", "user_id", "ip", "user_agent")),
    *(sa.column(name, UTCDateTime()) for name in ("created_at", "last_used_at", "expires_at")),
)
for _table in (_users, _orgs, _members, _invitations, _tokens, _sessions):
    for _column in ("id", "user_id", "organization_id", "created_by", "invited_by"):
        if _column in _table.c:
            _table.c[_column].type = sa.Uuid()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (as its owner)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_pg_database("authkeep_enc") as name:
        yield pg_async_url(name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=database_url,
        hash_workers=1,
        **GENEROUS_LIMITS,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.close()


async def populate_at_0011(db: Database, settings: Settings) -> str:
    """Alice (with a name, a session, a password-reset link; admin of Acme, which invited
    Bob) and Bob (verified), written in clear as revision 0011 stored them. Returns the
    reset link's token."""
    await upgrade(db, "0011")
    now = utcnow()
    alice, bob, org = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    hashed = PasswordHasher().hash(PASSWORD)
    links = EmailTokenKey.from_ring(build_secret_ring(settings))
    reset, invitation = links.issue(), links.issue()
    later = now + timedelta(days=1)
    async with db.transaction() as conn:
        for user_id, email, name in ((alice, ALICE, ALICE_NAME), (bob, BOB, None)):
            await conn.execute(
                sa.insert(_users).values(
                    id=user_id,
                    email=email,
                    email_key=email.lower(),
                    full_name=name,
                    hashed_password=hashed,
                    is_active=True,
                    is_superuser=False,
                    created_at=now,
                    updated_at=now,
                    email_verified_at=now,
                )
            )
        await conn.execute(
            sa.insert(_orgs).values(
                id=org, name="Acme", created_by=alice, created_at=now, updated_at=now
            )
        )
        await conn.execute(
            sa.insert(_members).values(
                user_id=alice,
                organization_id=org,
                role="admin",
                origin="created",
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            sa.insert(_invitations).values(
                id=uuid.uuid4(),
                organization_id=org,
                email=BOB,
                email_key=BOB,
                role="viewer",
                token_hash=invitation.hash,
                invited_by=alice,
                created_at=now,
                expires_at=later,
            )
        )
        await conn.execute(
            sa.insert(_tokens).values(
                id=uuid.uuid4(),
                user_id=alice,
                purpose="password_reset",
                token_hash=reset.hash,
                email=ALICE,
                created_at=now,
                expires_at=later,
            )
        )
        await conn.execute(
            sa.insert(_sessions).values(
                id=uuid.uuid4(),
                user_id=alice,
                ip=IP,
                user_agent=AGENT,
                created_at=now,
                last_used_at=now,
                expires_at=later,
            )
        )
    return reset.token


async def stored(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """The personal columns of the four tables, by table, in id order."""
    queries = {
        "users": "SELECT id, email, email_key, full_name FROM users ORDER BY id",
        "account_tokens": "SELECT id, email FROM account_tokens ORDER BY id",
        "invitations": "SELECT id, email, email_key FROM invitations ORDER BY id",
        "auth_sessions": "SELECT id, ip, user_agent FROM auth_sessions ORDER BY id",
    }
    async with db.reading() as conn:
        return {
            table: [tuple(row) for row in await conn.execute(sa.text(sql))]
            for table, sql in queries.items()
        }


async def version(db: Database) -> str:
    async with db.reading() as conn:
        return str(
            (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        )


async def downgrade_to_0012(db: Database, envelope: Envelope) -> None:
    def down(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        config.attributes[ENVELOPE] = envelope
        command.downgrade(config, "0012")

    async with db.transaction() as conn:
        await conn.run_sync(down)


async def test_the_migration_encrypts_a_database_written_in_clear_and_all_still_signs_in(
    db: Database, settings: Settings
) -> None:
    reset_token = await populate_at_0011(db, settings)
    clear = await stored(db)

    # Accounts and no keys: one line saying what to do, and nothing changed.
    with pytest.raises(DataKeysRequired) as refused:
        await upgrade(db)
    assert "\n" not in str(refused.value)
    assert "AUTHKEEP_DATA_KEYS" in str(refused.value)
    assert "2 accounts and 1 invitations" in str(refused.value)
    assert (await version(db), await stored(db)) == ("0011", clear)

    envelope = build_envelope(settings)
    await upgrade(db, "0013", envelope=envelope)
    sealed = await stored(db)
    text = repr(sealed).lower()
    assert [word for word in CLEAR if word.lower() in text] == []
    assert all(email.startswith("uk1.") for _, email, _, _ in sealed["users"])
    assert all(key.startswith("bi.") for _, _, key, _ in sealed["users"])
    async with db.reading() as conn:
        keys = (await conn.execute(sa.text("SELECT count(*) FROM user_keys"))).scalar_one()
    assert keys == 2

    # Run again over sealed rows (an interrupted run, rows a newer version wrote): every
    # value is left exactly as it is, not sealed a second time.
    async with db.transaction() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0012'"))
    await upgrade(db, "0013", envelope=envelope)
    assert await stored(db) == sealed

    # Downgrade opens everything again (the folded email_key back too).
    await downgrade_to_0012(db, envelope)
    reopened = await stored(db)
    assert {email for _, email, _, _ in reopened["users"]} == {ALICE, BOB}
    assert {key for _, _, key, _ in reopened["users"]} == {ALICE.lower(), BOB}
    assert reopened["auth_sessions"] == clear["auth_sessions"]
    assert reopened["account_tokens"] == clear["account_tokens"]
    assert reopened["invitations"] == clear["invitations"]

    # What `authkeep migrate` does: to head, with the keys the service will read with.
    await run_migrations(settings)
    assert "oldtimer" not in repr(await stored(db)).lower()
    app = create_app(settings)
    async with running(app), client_for(app) as http:
        pair = await login(http, "alice.old@EXAMPLE.com")
        auth = bearer(pair["access_token"])
        me = (await http.get("/api/v1/auth/me", headers=auth)).json()
        assert (me["email"], me["full_name"]) == (ALICE, ALICE_NAME)
        listed = (await http.get("/api/v1/auth/sessions", headers=auth)).json()
        assert [(s["ip"], s["user_agent"]) for s in listed if s["ip"] == IP] == [(IP, AGENT)]
        # Bob's invitation is found by the blind index of his folded address.
        bobs = bearer((await login(http, BOB))["access_token"])
        [invited] = (await http.get("/api/v1/auth/invitations", headers=bobs)).json()
        assert invited["email"] == BOB
        # The reset link mailed before the migration still works (its address opens).
        reset = {"token": reset_token, "new_password": "a brand new passphrase"}
        answer = await http.post("/api/v1/auth/password/reset", json=reset)
        assert answer.status_code == 204, answer.text
        await login(http, ALICE, "a brand new passphrase")


async def test_an_empty_database_needs_no_keys(db: Database) -> None:
    await upgrade(db)
    async with db.reading() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM user_keys"))).scalar_one() == 0
