"""A bounded thread pool for CPU-heavy work that must stay off the event loop.

Password hashing and the zxcvbn strength check each burn milliseconds of CPU per call; run on
the event loop they would stall every other request. A pool of ``workers`` threads runs them,
and at most ``queue_limit`` more calls may wait: past that, :class:`~authkeep.errors.Overloaded`
(503 with ``Retry-After``) — a flood of logins or sign-ups costs bounded memory instead of an
ever-growing queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from authkeep.errors import Overloaded

T = TypeVar("T")


class BoundedPool:
    """``workers`` threads and at most ``queue_limit`` waiting calls."""

    def __init__(
        self,
        *,
        workers: int,
        queue_limit: int,
        name: str,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=initializer
        )
        self._slots = asyncio.Semaphore(workers + queue_limit)

    def submit_background(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the pool without waiting for it (warm-ups)."""
        self._executor.submit(fn)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a pool thread; raise Overloaded when the queue is full."""
        if self._slots.locked():
            raise Overloaded()
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """Stop the threads (waits for running calls, cancels waiting ones)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
