"""Password hashing: argon2id for new hashes, legacy bcrypt verified and upgraded.

Hashing is CPU- and memory-heavy by design, so it never runs on the event loop. It runs in a
thread pool with one thread per core (argon2-cffi and bcrypt release the GIL), and at most
``queue_limit`` requests may wait for a thread: past that, :class:`~authkeep.errors.Overloaded`
is raised, so a login storm costs bounded memory (threads × argon2 memory) and other requests
keep being served.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from dataclasses import dataclass

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from authkeep.security.bounded_pool import BoundedPool
from authkeep.security.password_policy import normalize_password

_BCRYPT_MAX_BYTES = 72


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost. The default is OWASP's first choice: 19 MiB, 2 passes, 1 lane."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of a verification: whether it matched and, if so, maybe a new hash to store."""

    ok: bool
    new_hash: str | None = None


# Niceness of the hashing threads. With one thread per core, a login storm keeps every core
# busy hashing; at the default priority the event loop (and the database's own processes)
# would then get only a share of the CPU, and everything else — authenticated reads, health
# checks, the rest of each login — would queue behind argon2. A lower priority lets them run
# first and the hashes fill the remaining time, so throughput stays at the hashing limit.
HASH_THREAD_NICENESS = 10


def _lower_priority() -> None:
    # On Linux, PRIO_PROCESS with a thread id sets that one thread's niceness; raising it
    # needs no privilege. Elsewhere this is a no-op.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class PasswordHasher:
    """Hash and verify passwords off the event loop, in a bounded pool."""

    def __init__(
        self, params: Argon2Params | None = None, *, workers: int = 1, queue_limit: int = 256
    ) -> None:
        params = params or Argon2Params()
        self._argon2 = Argon2Hasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
        )
        self._bcrypt = BcryptHasher()
        self._hash = PasswordHash((self._argon2, self._bcrypt))
        self._pool = BoundedPool(
            workers=workers,
            queue_limit=queue_limit,
            name="authkeep-hash",
            initializer=_lower_priority,
        )
        # Verified against when the account does not exist, so that an unknown email costs
        # the same time as a wrong password (no user enumeration by timing).
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(16))

    @property
    def workers(self) -> int:
        """Number of hashes that can run at once."""
        return self._pool.workers

    def close(self) -> None:
        """Stop the worker threads (waits for running hashes)."""
        self._pool.close()

    async def hash(self, password: str) -> str:
        """Return an argon2id hash of ``password`` (NFKC-normalised first)."""
        normalized = normalize_password(password)
        return await self._pool.run(lambda: self._argon2.hash(normalized))

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check ``password`` against ``stored_hash``.

        ``stored_hash`` None means "no such account": a dummy hash is verified so that the
        call takes as long as a real one, and the result is always a failure. A match on a
        legacy (bcrypt) or outdated argon2 hash returns ``new_hash``: the caller stores it.
        """
        return await self._pool.run(lambda: self._verify_sync(password, stored_hash))

    def _verify_sync(self, password: str, stored_hash: str | None) -> Verification:
        normalized = normalize_password(password)
        if stored_hash is None:
            self._argon2.verify(normalized, self._dummy_hash)
            return Verification(ok=False)
        if self._bcrypt.identify(stored_hash):
            return self._verify_bcrypt(password, normalized, stored_hash)
        try:
            ok, new_hash = self._hash.verify_and_update(normalized, stored_hash)
        except UnknownHashError:
            # A corrupt or foreign hash: spend the same time, then fail.
            self._argon2.verify(normalized, self._dummy_hash)
            return Verification(ok=False)
        return Verification(ok=ok, new_hash=new_hash)

    def _verify_bcrypt(self, raw: str, normalized: str, stored_hash: str) -> Verification:
        # passlib (which wrote these hashes) hashed the raw string and silently truncated it
        # to 72 bytes; bcrypt>=5 refuses longer input, so truncate the same way to verify.
        candidate = raw.encode("utf-8")[:_BCRYPT_MAX_BYTES]
        if not self._bcrypt.verify(candidate, stored_hash):
            return Verification(ok=False)
        return Verification(ok=True, new_hash=self._argon2.hash(normalized))
