"""``authkeep keys rotate-data`` as an operator runs it: a separate process with the new
data key first in ``AUTHKEEP_DATA_KEYS``; ``--dry-run`` counts and changes nothing, the run
reports each phase, and afterwards the old key can go (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from authkeep import Settings
from cli.test_purge_command import cli_env
from conftest import Backend
from helpers import PASSWORD, login, register
from session_helpers import started

K1 = "k1:" + "A" * 43
K2 = "k2:" + "B" * 43


async def rotate_data(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authkeep",
        "keys",
        "rotate-data",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_rotate_data_command(
    make_settings: Callable[..., Settings], backend: Backend, tmp_path: Path
) -> None:
    async with started(make_settings(data_keys=[K1])) as (_app, http):
        for n in range(3):
            await register(http, f"user{n}@example.com")
    settings = make_settings()
    env = cli_env(backend, settings)
    env["AUTHKEEP_DATA_KEYS"] = json.dumps([K2, K1])
    if backend.owner_url is not None:
        env["AUTHKEEP_MIGRATION_DATABASE_URL"] = backend.owner_url

    code, out = await rotate_data(env, tmp_path, "--dry-run")
    assert code == 0, out
    assert "user_keys: 3 rows to re-encrypt" in out
    assert "users.email_key: 3 rows to re-encrypt" in out

    code, out = await rotate_data(env, tmp_path, "--batch-size", "2", "--no-progress")
    assert code == 0, out
    assert "user_keys: 3 re-encrypted, 0 unreadable" in out
    assert "users.email_key: 3 re-encrypted, 0 unreadable" in out

    code, out = await rotate_data(env, tmp_path, "--dry-run")
    assert "user_keys: 0 rows to re-encrypt" in out, out

    # The old key is gone: the accounts still sign in.
    async with started(make_settings(data_keys=[K2])) as (_app, http):
        for n in range(3):
            await login(http, f"user{n}@example.com", PASSWORD)
