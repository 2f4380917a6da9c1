"""Password hashing: argon2id parameters, legacy bcrypt upgrade, dummy verification, and the
bounded worker pool that keeps hashing off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from authkeep.errors import Overloaded
from authkeep.security.passwords import Argon2Params, PasswordHasher
from helpers import passlib_bcrypt_hash

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    """A hasher with the default (OWASP) parameters."""
    instance = PasswordHasher(workers=2)
    yield instance
    await asyncio.to_thread(instance.close)


def spy(
    monkeypatch: pytest.MonkeyPatch, hasher: PasswordHasher, method: str
) -> list[tuple[str, tuple[Any, ...]]]:
    """Record (thread name, arguments) of every call to the argon2 hasher's ``method``."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    argon2 = hasher._argon2
    real: Callable[..., Any] = getattr(argon2, method)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((threading.current_thread().name, args))
        return real(*args, **kwargs)

    monkeypatch.setattr(argon2, method, recording)
    return calls


async def test_new_hashes_are_argon2id_with_owasp_parameters(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await hasher.verify(PASSWORD, hashed)).ok
    assert not (await hasher.verify(PASSWORD + "!", hashed)).ok


async def test_hashes_of_one_password_differ(hasher: PasswordHasher) -> None:
    assert await hasher.hash(PASSWORD) != await hasher.hash(PASSWORD)  # salted


async def test_argon2_parameters_are_configurable() -> None:
    custom = PasswordHasher(Argon2Params(memory_kib=8192, time_cost=3, parallelism=2))
    try:
        assert (await custom.hash(PASSWORD)).startswith("$argon2id$v=19$m=8192,t=3,p=2$")
    finally:
        custom.close()


async def test_an_outdated_argon2_hash_is_upgraded_on_success(hasher: PasswordHasher) -> None:
    cheap = PasswordHasher(Argon2Params(memory_kib=8192, time_cost=1))
    try:
        old = await cheap.hash(PASSWORD)
    finally:
        cheap.close()
    result = await hasher.verify(PASSWORD, old)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    failed = await hasher.verify("wrong " + PASSWORD, old)
    assert (failed.ok, failed.new_hash) == (False, None)


async def test_a_current_hash_needs_no_upgrade(hasher: PasswordHasher) -> None:
    result = await hasher.verify(PASSWORD, await hasher.hash(PASSWORD))
    assert (result.ok, result.new_hash) == (True, None)


async def test_a_passlib_bcrypt_hash_verifies_and_is_upgraded(hasher: PasswordHasher) -> None:
    legacy = passlib_bcrypt_hash(PASSWORD)
    result = await hasher.verify(PASSWORD, legacy)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await hasher.verify(PASSWORD, result.new_hash)).ok


async def test_a_wrong_password_on_a_bcrypt_hash_fails_without_upgrade(
    hasher: PasswordHasher,
) -> None:
    result = await hasher.verify("not " + PASSWORD, passlib_bcrypt_hash(PASSWORD))
    assert (result.ok, result.new_hash) == (False, None)


async def test_a_long_password_hashed_by_passlib_still_verifies(hasher: PasswordHasher) -> None:
    # passlib cut passwords at 72 bytes without a word; bcrypt>=5 refuses them instead.
    # Users who chose long passphrases in the old app must still get in.
    long_password = "é" * 50 + " and a long tail"  # 116 bytes in UTF-8
    result = await hasher.verify(long_password, passlib_bcrypt_hash(long_password))
    assert result.ok
    assert result.new_hash is not None
    assert (await hasher.verify(long_password, result.new_hash)).ok


async def test_an_unknown_account_verifies_the_dummy_hash(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy(monkeypatch, hasher, "verify")
    result = await hasher.verify(PASSWORD, None)
    assert (result.ok, result.new_hash) == (False, None)
    # The same argon2 work as a real account, against the dummy hash (same parameters).
    assert [args[1] for _, args in calls] == [hasher._dummy_hash]
    assert hasher._dummy_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_a_corrupt_stored_hash_fails_after_the_same_work(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy(monkeypatch, hasher, "verify")
    for corrupt in ("", "plaintext-password", "$argon2id$garbage", "$2b$12$short"):
        result = await hasher.verify(PASSWORD, corrupt)
        assert (result.ok, result.new_hash) == (False, None)
    assert len(calls) == 4


async def test_passwords_are_nfkc_normalised(hasher: PasswordHasher) -> None:
    # Full-width letters (an East Asian keyboard) and ASCII are one password.
    hashed = await hasher.hash("ｃｏｒｒｅｃｔ horse battery staple")
    assert (await hasher.verify(PASSWORD, hashed)).ok


async def test_hashing_and_verifying_run_in_the_worker_threads(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = spy(monkeypatch, hasher, "hash")
    verifies = spy(monkeypatch, hasher, "verify")
    stored = await hasher.hash(PASSWORD)
    await hasher.verify(PASSWORD, stored)
    await hasher.verify(PASSWORD, None)
    await hasher.verify(PASSWORD, passlib_bcrypt_hash(PASSWORD))  # the upgrade hashes too
    threads = [name for name, _ in hashes + verifies]
    assert len(hashes) == 2
    assert len(verifies) == 2
    assert all(name.startswith("authkeep-hash") for name in threads), threads
    assert threading.current_thread().name not in threads


class Gate:
    """Holds argon2 hashing in its worker thread until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hasher: PasswordHasher) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        real = hasher._argon2.hash

        def gated(password: Any, **kwargs: Any) -> str:
            self.entered.release()
            # A deadlock guard, not a timing assertion: the test releases the gate itself.
            if not self.release.wait(30):
                raise RuntimeError("the gate was never released")
            return real(password, **kwargs)

        monkeypatch.setattr(hasher._argon2, "hash", gated)

    async def wait_entered(self) -> None:
        """Until one more hash is inside the gate."""
        assert await asyncio.to_thread(self.entered.acquire, True, 60)


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until ``condition`` holds (bounded, so it cannot hang)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_a_full_queue_raises_overloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(workers=1, queue_limit=1)
    gate = Gate(monkeypatch, hasher)
    try:
        running = asyncio.create_task(hasher.hash(PASSWORD))
        await gate.wait_entered()
        queued = asyncio.create_task(hasher.hash(PASSWORD))
        await until(hasher._pool._slots.locked)  # one hashing + one waiting = full

        with pytest.raises(Overloaded) as caught:
            await hasher.hash(PASSWORD)
        assert caught.value.retry_after == 1
        with pytest.raises(Overloaded):
            await hasher.verify(PASSWORD, None)

        gate.release.set()
        assert all(h.startswith("$argon2id$") for h in await asyncio.gather(running, queued))
        # Room again once the queue drains.
        assert (await hasher.hash(PASSWORD)).startswith("$argon2id$")
    finally:
        gate.release.set()
        hasher.close()


async def test_the_event_loop_runs_while_a_hash_is_in_progress(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch, hasher)
    try:
        pending = asyncio.create_task(hasher.hash(PASSWORD))
        await gate.wait_entered()
        # Were the hash on the loop's thread, the loop could not get here before it finished,
        # and it cannot finish before the loop (this test) opens the gate: the gate's guard
        # would then fail the hash.
        assert not pending.done()
        gate.release.set()
        assert (await pending).startswith("$argon2id$")
    finally:
        gate.release.set()


def test_the_pool_defaults_to_one_worker_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from authkeep import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 3)
    settings = Settings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert settings.hash_workers == 0
    assert settings.hash_worker_count == 3
    assert Settings(_env_file=None, env="test", hash_workers=5).hash_worker_count == 5  # type: ignore[call-arg]
