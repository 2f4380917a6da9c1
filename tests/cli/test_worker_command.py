"""``authkeep worker``: delivers the outbox in a process of its own and stops cleanly on
SIGTERM (a real subprocess, on a SQLite file, through the file transport)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from authkeep import Settings
from authkeep.db.engine import Database
from authkeep.db.migrate import upgrade
from authkeep.services.delivery import build_delivery
from mail_helpers import read_eml_dir

STRONG = "pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA"


def test_worker_delivers_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}"
    outgoing = tmp_path / "mail"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        secret_key=STRONG,
        database_url=url,
        email_backend="file",
        email_file_dir=outgoing,
    )

    async def prepare() -> None:
        db = Database(url)
        try:
            await upgrade(db)
            delivery = build_delivery(settings, db)
            async with db.transaction() as conn:
                await delivery.mailer.enqueue(conn, "password_changed", "w@example.com")
        finally:
            await db.close()

    asyncio.run(prepare())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(
        AUTHKEEP_ENV="test",
        AUTHKEEP_SECRET_KEY=STRONG,
        AUTHKEEP_DATABASE_URL=url,
        AUTHKEEP_EMAIL_BACKEND="file",
        AUTHKEEP_EMAIL_FILE_DIR=str(outgoing),
        AUTHKEEP_OUTBOX_POLL_SECONDS="0.2",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "authkeep", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not read_eml_dir(outgoing) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        assert [m["To"] for m in read_eml_dir(outgoing)] == ["w@example.com"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "outbox_worker_stopped" in stderr
    assert len(read_eml_dir(outgoing)) == 1
