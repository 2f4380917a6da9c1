"""The global limit's overshoot bound with four real processes (true parallelism, as four
``authkeep serve`` workers): each builds the limiter as a worker does, waits for a common
start signal in Redis, then hammers one key. Admitted in the window: at least the limit and
at most ``limit + 4 × block`` (``docs/rate-limits.md``). The in-process variant with four
independent limiters: ``tests/services/test_shared_window.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import redis

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WORKERS = 4
LIMIT = 2000
ATTEMPTS = 2048  # per process (32 clients × 64): four times the limit in all
DEADLINE = 60.0

# One worker: build the limiter, say "ready", wait for the go key, hammer, print the count.
WORKER = """
import asyncio, json, sys, time
from authkeep import Settings
from authkeep.services.rate_limits import RateLimits

url, prefix, limit, attempts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def main():
    settings = Settings(env="test", redis_url=url, redis_prefix=prefix, rate_limit_per_minute=limit)
    limits = RateLimits.from_settings(settings, pepper=b"pepper")
    client = limits._client
    await client.ping()
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not await client.exists(prefix + "go"):
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        await asyncio.sleep(0.001)
    admitted = refused = unanswered = 0

    async def one_client(count):
        nonlocal admitted, refused, unanswered
        for _ in range(count):
            decision = await limits.hit_global("user:hammered")
            if decision is None:
                unanswered += 1
            elif decision.allowed:
                admitted += 1
            else:
                refused += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(one_client(attempts // 32) for _ in range(32)))
    block = limits._shared_global.block
    await limits.close()
    print(json.dumps({"admitted": admitted, "refused": refused, "unanswered": unanswered,
                      "block": block}), flush=True)

asyncio.run(main())
"""


def test_four_processes_stay_within_the_stated_bound(redis_available: str) -> None:
    prefix = f"authkeep-test:{uuid.uuid4().hex[:12]}:"
    args = [redis_available, prefix, str(LIMIT), str(ATTEMPTS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    control = redis.Redis.from_url(redis_available)
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # bounded by the worker's own 30 s wait
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        control.set(prefix + "go", b"1", ex=60)
        results = []
        started = time.monotonic()
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, DEADLINE - (time.monotonic() - started)))
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        control.close()
    block = results[0]["block"]
    assert block == LIMIT // 100
    assert all(r["unanswered"] == 0 for r in results)  # Redis answered throughout
    admitted = sum(r["admitted"] for r in results)
    assert sum(r["admitted"] + r["refused"] for r in results) == WORKERS * ATTEMPTS
    assert LIMIT <= admitted <= LIMIT + WORKERS * block
