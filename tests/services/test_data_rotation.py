"""``authkeep keys rotate-data`` (services/privacy/rotation.py) on SQLite and PostgreSQL: a
rotation while requests are served loses nothing, and once it is done the old data key can
be dropped — every account, session, TOTP secret, invitation and queued email still reads
under the new key alone. An interrupted run goes on from where it stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import select

from authkeep import Settings
from authkeep.db import rotation as rotation_rows
from authkeep.db.engine import Database
from authkeep.db.models import UserKey
from authkeep.security.data_keys import SecretBox
from authkeep.security.envelope import Envelope
from authkeep.services.privacy.rotation import JOB_PREFIX, DataRotation
from conftest import Backend
from helpers import PASSWORD, bearer, login, register
from mfa_helpers import code, enrol, first_step, second_step
from org_helpers import create_org, invite, mark_verified, sign_up
from session_helpers import started

K1 = "k1:" + "A" * 43
K2 = "k2:" + "B" * 43
SESSIONS = "/api/v1/auth/sessions"


def rotation(backend: Backend, *keys: str, batch_size: int = 2) -> tuple[Database, DataRotation]:
    """A rotation on the schema owner's connection (row-level security would hide other
    organizations' rows from the app role), with the ring ``keys``."""
    assert backend.owner_url is not None
    db = Database(backend.owner_url)
    return db, DataRotation(db, Envelope(SecretBox.from_entries(keys)), batch_size=batch_size)


async def test_a_rotation_while_serving_loses_nothing_and_the_old_key_can_go(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    before = [f"before{n}@example.com" for n in range(5)]
    async with started(make_settings(data_keys=[K1])) as (_app, http):
        admin = await sign_up(http, "admin@example.com")
        org_id = await create_org(http, admin)
        assert (await invite(http, admin, org_id, "invitee@example.com")).status_code == 202
        for email in before:
            await register(http, email)
        alice = await sign_up(http, "alice@example.com")
        secret, _codes = await enrol(http, alice.access)

    during: list[str] = []
    async with started(make_settings(data_keys=[K2, K1])) as (_app, http):
        db, job = rotation(backend, K2, K1)
        done = asyncio.Event()

        async def serve() -> None:
            # Sign-ups and sign-ins keep coming while the rotation walks the tables.
            n = 0
            while not done.is_set() or n < 3:
                email = f"during{n}@example.com"
                await register(http, email)
                await login(http, email, PASSWORD)
                during.append(email)
                n += 1

        async def rotate() -> None:
            try:
                await job.run()
            finally:
                done.set()

        try:
            await asyncio.gather(serve(), rotate())
            left = await job.pending()
        finally:
            await db.close()
    assert set(left.values()) == {0}, left

    # The old key is gone: everything must read under the new one alone.
    async with started(make_settings(data_keys=[K2])) as (_app, http):
        for email in [*before, *during, "admin@example.com"]:
            pair = await login(http, email, PASSWORD)
            me = await http.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
            assert (me.status_code, me.json()["email"]) == (200, email)
            sessions = (await http.get(SESSIONS, headers=bearer(pair["access_token"]))).json()
            assert sessions, email
            assert all(s["ip"] for s in sessions), sessions
        # The TOTP secret was re-sealed: alice's next code still signs her in.
        pending = await first_step(http, "alice@example.com")
        verified = await second_step(http, pending["mfa_token"], code=code(secret, 1))
        assert verified.status_code == 200, verified.text
        # The invitation's address was re-sealed and re-indexed: the admin sees it, and the
        # invitee, once registered, finds it by the blind index under the new key.
        admin_pair = await login(http, "admin@example.com", PASSWORD)
        listed = await http.get(
            f"/api/v1/orgs/{org_id}/invitations", headers=bearer(admin_pair["access_token"])
        )
        assert [i["email"] for i in listed.json()] == ["invitee@example.com"]
        invitee = await sign_up(http, "invitee@example.com")
        await mark_verified(http, invitee)  # invitations reach proven addresses only
        theirs = await http.get("/api/v1/auth/invitations", headers=invitee.auth)
        assert [i["org_id"] for i in theirs.json()] == [str(org_id)]


async def test_an_interrupted_rotation_goes_on_where_it_stopped(
    make_settings: Callable[..., Settings], backend: Backend
) -> None:
    async with started(make_settings(data_keys=[K1])) as (_app, http):
        for n in range(5):
            await register(http, f"user{n}@example.com")

    class Stop(Exception):
        pass

    def stop_after_two(phase: str, done: int, _total: int) -> None:
        if phase == "user_keys" and done >= 2:
            raise Stop

    db, job = rotation(backend, K2, K1, batch_size=1)
    try:
        with pytest.raises(Stop):
            await job.run(stop_after_two)
        async with db.transaction() as conn:
            stopped_at = await rotation_rows.get_position(conn, JOB_PREFIX + "user_keys")
            wrapped = (await conn.execute(select(UserKey.wrapped_key))).scalars().all()
        assert stopped_at is not None
        assert sorted(w.split(".")[0] for w in wrapped) == ["k1", "k1", "k1", "k2", "k2"]

        seen: list[int] = []
        report = await job.run(
            lambda phase, done, _t: seen.append(done) if phase == "user_keys" else None
        )
        async with db.transaction() as conn:
            wrapped = (await conn.execute(select(UserKey.wrapped_key))).scalars().all()
            assert await rotation_rows.get_position(conn, JOB_PREFIX + "user_keys") is None
    finally:
        await db.close()
    # The second run did only the three rows the first had not reached.
    [user_keys] = [phase for phase in report.phases if phase.name == "user_keys"]
    assert (user_keys.changed, seen[-1]) == (3, 3)
    assert {w.split(".")[0] for w in wrapped} == {"k2"}
