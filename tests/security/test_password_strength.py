"""zxcvbn at a bounded cost: the scored prefix, the l33t work budget, one call at a time."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from authkeep.security.password_strength import (
    L33T_WORK_BUDGET,
    SCORED_MAX_CHARS,
    SCORED_MIN_CHARS,
    _l33t_combinations,
    measure,
    scored_prefix,
)

# Every symbol of zxcvbn's l33t table: 736 substitution tables for its l33t matcher, which
# on 64 characters took seconds.
EVERY_L33T_SYMBOL = "4@8({[<36!|1790$5+%2"


@pytest.mark.parametrize(
    "password", ["x" * 1024, "correct horse battery staple " * 40, "1234567890" * 100]
)
def test_at_most_64_characters_are_scored(password: str) -> None:
    # zxcvbn is super-linear: "x" * 1024 took 431 s whole; its first 64 characters, ms.
    assert scored_prefix(password) == password[:SCORED_MAX_CHARS]
    assert measure(password).scored_chars == SCORED_MAX_CHARS


def test_a_prefix_full_of_l33t_symbols_is_cut_to_the_work_budget() -> None:
    password = EVERY_L33T_SYMBOL * 50
    prefix = scored_prefix(password)
    assert password.startswith(prefix)
    assert len(prefix) < SCORED_MAX_CHARS
    assert (
        len(prefix) == SCORED_MIN_CHARS
        or _l33t_combinations(prefix) * len(prefix) ** 2 <= L33T_WORK_BUDGET
    )
    assert measure(password).score == 4  # 16 characters from 20 symbols are still strong


def test_ordinary_passwords_are_scored_whole() -> None:
    for password in ["violet giraffe eats 7 lanterns", "!c51nAXtp]^)88Fq'}?5", "Tr0ub4dor&3"]:
        assert scored_prefix(password) == password


def test_the_empty_password_scores_zero() -> None:
    assert measure("").score == 0  # zxcvbn itself raises on ""


def test_the_verdict_never_holds_the_password() -> None:
    password = "aaaaaaaaaaaaaaaaaaaa"
    strength = measure(password, ["alice"])
    assert strength.score == 0
    assert strength.warning
    assert all(password not in text for text in (strength.warning, *strength.suggestions))


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that races show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_calls_never_score_against_another_users_words() -> None:
    # zxcvbn keeps a call's user inputs in a module-level dictionary: without the lock, one
    # thread's password was scored against another thread's words (about a third of calls).
    password = "lleddil1865"  # "liddell" reversed
    expected = {word: measure(password, [word]).guesses_log10 for word in ("liddell", "smith")}
    assert expected["liddell"] < expected["smith"]
    jobs = ["liddell", "smith"] * 50
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda word: (word, measure(password, [word])), jobs))
    assert [word for word, got in found if got.guesses_log10 != expected[word]] == []
