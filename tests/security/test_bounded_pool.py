"""The bounded pool that keeps hashing off the event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from authkeep.errors import Overloaded
from authkeep.security.bounded_pool import BoundedPool


def _kernel_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names in /proc: Linux")
async def test_pool_threads_carry_their_name_in_the_kernel() -> None:
    # top -H and /proc show it: the operator (and bench/login_cpu.py) can tell a hash
    # thread's CPU from the event loop's.
    pool = BoundedPool(workers=1, queue_limit=1, name="authkeep-hash")
    try:
        assert await pool.run(_kernel_name) == "authkeep-hash"
        assert _kernel_name() != "authkeep-hash"
    finally:
        pool.close()


async def test_initializer_still_runs_in_each_thread() -> None:
    seen: list[int] = []
    pool = BoundedPool(
        workers=1, queue_limit=1, name="t", initializer=lambda: seen.append(threading.get_ident())
    )
    try:
        ident = await pool.run(threading.get_ident)
        assert seen == [ident]
    finally:
        pool.close()


async def test_a_full_queue_is_refused_not_queued() -> None:
    release = threading.Event()
    pool = BoundedPool(workers=1, queue_limit=1, name="t")
    try:
        running = asyncio.ensure_future(pool.run(release.wait))
        waiting = asyncio.ensure_future(pool.run(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await pool.run(release.wait)
        release.set()
        await asyncio.gather(running, waiting)
    finally:
        release.set()
        pool.close()
