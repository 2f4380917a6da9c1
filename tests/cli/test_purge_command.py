"""``authkeep purge`` as an operator runs it: a separate process, while the service serves
logins, refreshes and authenticated requests on the same database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from authkeep import Settings
from authkeep.db.base import utcnow
from conftest import TEST_SECRET, Backend
from helpers import login, register
from session_helpers import me, refresh, set_session, started

PURGE_TIMEOUT = 90.0


def cli_env(backend: Backend, settings: Settings) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(
        AUTHKEEP_ENV="test",
        AUTHKEEP_SECRET_KEY=TEST_SECRET,
        AUTHKEEP_DATABASE_URL=backend.database_url,
        AUTHKEEP_REDIS_PREFIX=settings.redis_prefix,
        AUTHKEEP_HASH_WORKERS="1",
    )
    if backend.redis_url:
        env["AUTHKEEP_REDIS_URL"] = backend.redis_url
    return env


async def run_purge(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authkeep",
        "purge",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PURGE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_purge_command_while_serving(
    make_settings: Callable[..., Settings], backend: Backend, tmp_path: Path
) -> None:
    settings = make_settings()
    async with started(settings) as (app, http):
        await register(http)
        for _ in range(3):
            ended = await login(http)
            await set_session(app, ended, expires_at=utcnow() - timedelta(days=1))
        pair: dict[str, Any] = await login(http)
        statuses: list[int] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            nonlocal pair
            while not stop.is_set():
                rotated = await refresh(http, pair["refresh_token"])
                statuses.append(rotated.status_code)
                if rotated.status_code == 200:
                    pair = rotated.json()
                statuses.append((await me(http, pair["access_token"])).status_code)
                statuses.append(
                    (
                        await http.get(
                            "/api/v1/auth/sessions",
                            headers={"Authorization": f"Bearer {pair['access_token']}"},
                        )
                    ).status_code
                )
                # Steady traffic, not a busy loop that starves the purge process of CPU.
                await asyncio.sleep(0.01)

        load = asyncio.create_task(traffic())
        try:
            code, output = await run_purge(cli_env(backend, settings), tmp_path)
        finally:
            stop.set()
            await load

        assert code == 0, output
        assert "purged 3 sessions and 3 refresh tokens" in output
        assert statuses, "no request ran during the purge"
        assert set(statuses) == {200}, sorted(set(statuses))
        assert (await refresh(http, pair["refresh_token"])).status_code == 200


async def run_cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authkeep",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), PURGE_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_purge_erases_due_accounts_after_a_dry_run_and_the_audit_log_verifies(
    make_settings: Callable[..., Settings], backend: Backend, tmp_path: Path
) -> None:
    from sqlalchemy import select, update
    from sqlalchemy.ext.asyncio import create_async_engine

    from authkeep.db.models import User
    from helpers import PASSWORD, bearer

    settings = make_settings()
    env = cli_env(backend, settings)
    if backend.purge_url:
        env["AUTHKEEP_AUDIT_PURGE_DATABASE_URL"] = backend.purge_url
    async with started(settings) as (_app, http):
        ann = await register(http, "ann@example.com")
        await register(http, "bob@example.com")
        pair = await login(http, "ann@example.com")
        deleted = await http.request(
            "DELETE",
            "/api/v1/auth/me",
            json={"password": PASSWORD},
            headers=bearer(pair["access_token"]),
        )
        assert deleted.status_code == 202, deleted.text
    # The grace period is over (an operator's clock: the CLI runs in another process).
    assert backend.owner_url is not None
    engine = create_async_engine(backend.owner_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(User)
                .values(deletion_at=utcnow() - timedelta(minutes=1))
                .where(User.deletion_at.is_not(None))
            )

        code, output = await run_cli(env, tmp_path, "purge", "--dry-run")
        assert code == 0, output
        assert "would erase 1 accounts whose deletion was due" in output
        assert "would purge up to 0 audit rows" in output
        async with engine.connect() as conn:
            assert len((await conn.execute(select(User.id))).all()) == 2

        code, output = await run_cli(env, tmp_path, "purge")
        assert code == 0, output
        assert "erased 1 accounts whose deletion was due" in output
        assert "purged 0 audit rows" in output
        async with engine.connect() as conn:
            left = (await conn.execute(select(User.id))).scalars().all()
        assert [str(user_id) for user_id in left] != [ann["id"]]
        assert len(left) == 1

        code, output = await run_cli(env, tmp_path, "audit", "verify")
        assert code == 0, output
        assert "ok:" in output
    finally:
        await engine.dispose()
