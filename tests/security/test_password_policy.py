"""NIST SP 800-63B password policy: length, common passwords, no password containing the
account's email, name or the product name, a zxcvbn score of 3 or more, no composition
rules — and the policy's thread, off the event loop and bounded."""

from __future__ import annotations

import asyncio
import threading

import pytest

from authkeep.errors import Overloaded
from authkeep.security import password_policy
from authkeep.security.password_policy import (
    MIN_SCORE,
    PasswordPolicy,
    PasswordRejected,
    assess_password,
    check_password,
    common_passwords,
    context_words,
)

EMAIL = "alice.liddell@example.com"


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # all lower case, no digit, no symbol
        "zqxwvmplkdfj",  # letters only
        "ALLUPPERCASEPASSPHRASE",
        "48213907561",  # digits only
        "Ω≈ç√∫˜µ≤≥÷ unicode too",
        ("violet giraffe eats 7 lanterns " * 40)[:1024],  # the longest allowed
    ],
)
def test_no_composition_rules(password: str) -> None:
    check_password(password, email="alice@example.com", full_name="Alice Liddell")


@pytest.mark.parametrize("password", ["", "a", "seven77", "é" * 7])
def test_shorter_than_8_characters_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="at least 8 characters"):
        check_password(password)


def test_longer_than_1024_characters_is_rejected() -> None:
    with pytest.raises(PasswordRejected, match="at most 1024 characters"):
        check_password("x" * 1025)


@pytest.mark.parametrize(
    "password", ["password1", "PASSWORD1", "Password123", "iloveyou", "12345678", "qwertyuiop"]
)
def test_common_passwords_are_rejected_in_any_case(password: str) -> None:
    with pytest.raises(PasswordRejected, match="too common") as caught:
        check_password(password)
    assert password not in str(caught.value)


@pytest.mark.parametrize(
    "password",
    [
        "alice.liddell@example.com",
        "ALICE.LIDDELL@EXAMPLE.COM",
        "Alice.Liddell",
        "alice.liddell",
        # Containing, not only equal (the outside review's examples):
        "alice.liddell@example.com!",
        "xx alice.liddell@example.com xx",
        "my Alice.Liddell rules the kingdom",  # the local part inside
        "liddell bought seven lanterns",  # a piece of the local part
        "ＡＬＩＣＥ in wonderland 1865",  # fullwidth letters: NFKC makes them "alice"
    ],
)
def test_a_password_containing_the_users_email_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="must not contain your email") as caught:
        check_password(password, email=EMAIL)
    assert password not in str(caught.value)


@pytest.mark.parametrize(
    "password",
    ["Mary Jane Watson forever!", "watson likes purple lanterns", "violet MARYJANE lanterns"],
)
def test_a_password_containing_the_users_name_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="must not contain your name") as caught:
        check_password(password, email="mj@example.com", full_name="Mary-Jane Watson")
    assert password not in str(caught.value)


def test_name_parts_shorter_than_three_characters_do_not_count() -> None:
    # "Al" would otherwise forbid every password holding "al"; "Capone" still counts.
    check_password("always purple lanterns 9", full_name="Al Capone")
    with pytest.raises(PasswordRejected, match="must not contain your name"):
        check_password("capone drinks violet tea", full_name="Al Capone")
    assert context_words("al@example.com", "Al Capone").name == ("al capone", "capone")


@pytest.mark.parametrize("password", ["My AuthKeep passphrase 2024", "authkeep" * 2])
def test_a_password_containing_the_product_name_is_rejected(password: str) -> None:
    with pytest.raises(PasswordRejected, match="name of this service"):
        check_password(password)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("aaaaaaaaaaaaaaaa", 'Repeats like "aaa"'),
        ("zqxwvmpl", ""),  # 8 random letters: too few guesses
        ("qwertyuiop1234567", "commonly used password"),
        ("1234567890123456", ""),
    ],
)
def test_an_easily_guessed_password_is_rejected_with_advice(password: str, reason: str) -> None:
    with pytest.raises(PasswordRejected, match="too easy to guess") as caught:
        check_password(password, email="bob@example.com")
    message = str(caught.value)
    assert reason in message
    assert "passphrase of four or more unrelated words" in message  # what to do
    assert password not in message


@pytest.mark.parametrize("password", ["lleddil1865", "L1dd3ll!1865"])
def test_zxcvbn_counts_the_users_words_as_known_guesses(password: str) -> None:
    # Reversed or l33t-spelled, the name is not contained as such, but zxcvbn, given the
    # user's words, finds it: the same password is fine for a stranger.
    check_password(password, email="al@example.com", full_name="Bob Smith")
    with pytest.raises(PasswordRejected, match="too easy to guess"):
        check_password(password, email="al@example.com", full_name="Alice Liddell")


def test_a_strong_password_is_assessed_acceptable() -> None:
    verdict = assess_password(
        "violet giraffe eats 7 lanterns", email=EMAIL, full_name="Alice Liddell"
    )
    assert verdict.acceptable
    assert verdict.problems == ()
    assert verdict.score >= MIN_SCORE


def test_the_assessment_lists_every_problem() -> None:
    verdict = assess_password("alice authkeep", email=EMAIL)
    assert not verdict.acceptable
    assert any("email" in problem for problem in verdict.problems)
    assert any("name of this service" in problem for problem in verdict.problems)
    with pytest.raises(PasswordRejected):
        verdict.reject()


def test_the_shipped_list_has_at_least_10000_entries() -> None:
    entries = common_passwords()
    assert len(entries) >= 10_000
    assert {"123456", "password", "qwerty", "letmein1", "trustno1"} <= entries
    assert all(entry == entry.lower() for entry in entries)


async def test_the_policy_runs_zxcvbn_on_its_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = password_policy.measure

    def spy(password: str, user_inputs: list[str]) -> object:
        threads.append(threading.current_thread().name)
        return real(password, user_inputs)

    monkeypatch.setattr(password_policy, "measure", spy)
    policy = PasswordPolicy()
    try:
        await policy.check("violet giraffe eats 7 lanterns", email=EMAIL)
        verdict = await policy.assess("aaaaaaaaaaaa")
        with pytest.raises(PasswordRejected):
            await policy.check("aaaaaaaaaaaa")
    finally:
        policy.close()
    assert not verdict.acceptable
    assert threads
    assert all(name.startswith("authkeep-zxcvbn") for name in threads)


async def test_a_full_policy_queue_raises_overloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    real = password_policy.measure

    def gated(password: str, user_inputs: list[str]) -> object:
        entered.set()
        assert release.wait(10)
        return real(password, user_inputs)

    monkeypatch.setattr(password_policy, "measure", gated)
    policy = PasswordPolicy(queue_limit=1)
    try:
        running = asyncio.create_task(policy.check("violet giraffe eats 7 lanterns"))
        await asyncio.to_thread(entered.wait, 10)
        queued = asyncio.create_task(policy.check("violet giraffe eats 8 lanterns"))
        for _ in range(1000):
            if policy._pool._slots.locked():
                break
            await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await policy.check("violet giraffe eats 9 lanterns")
        release.set()
        await asyncio.gather(running, queued)
        await policy.check("violet giraffe eats 10 lanterns")  # room again
    finally:
        release.set()
        policy.close()
