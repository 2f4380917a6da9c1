"""A bounded thread pool for CPU-heavy work that must stay off the event loop.

Password hashing and the zxcvbn strength check each burn milliseconds of CPU per call; run on
the event loop they would stall every other request. A pool of ``workers`` threads runs them,
and at most ``queue_limit`` more calls may wait: past that, :class:`~authkeep.errors.Overloaded`
(503 with ``Retry-After``) — a flood of logins or sign-ups costs bounded memory instead of an
ever-growing queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import sys
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

        def start() -> None:
            name_os_thread(name)
            if initializer is not None:
                initializer()

        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=start
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


_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (at most 15 bytes) in the kernel too, where ``top -H``,
    ``ps -L`` and ``/proc/<pid>/task/*/comm`` show it: Python names its threads only for
    itself, so an operator (or a benchmark) could not tell a hash thread from the event loop.
    Linux only; a no-op elsewhere or when libc cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
