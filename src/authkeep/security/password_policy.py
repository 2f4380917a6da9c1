"""Password policy after NIST SP 800-63B §5.1.1.2 (and ASVS 5.0 V6.2).

A new password is refused, with a message that says what to do and never contains it, when:

1. it is shorter than 8 or longer than 1,024 characters (no composition rules);
2. it is in a list of commonly used passwords (19,640 entries), in any letter case;
3. it *contains* a word of the account's context (:func:`context_words`): the email, its
   local part, the user's name or one of their parts of :data:`MIN_CONTEXT_PART` characters
   or more, or the product name — ``alice@example.com!`` or ``xx alice xx`` is guessed
   by anyone who knows whose account it is (a targeted attack);
4. zxcvbn scores it below :data:`MIN_SCORE` with those same words as known guesses
   (:mod:`authkeep.security.password_strength`: keyboard walks, dates, repeats, l33t
   spellings of dictionary words…).

Comparisons are on the NFKC form, case-folded, as the password is hashed in NFKC form.
:func:`check_password` applies the policy (synchronously: zxcvbn takes up to tens of
milliseconds); :class:`PasswordPolicy` runs it on one worker thread, off the event loop.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from authkeep.security.bounded_pool import BoundedPool
from authkeep.security.password_strength import measure, preload

MIN_LENGTH = 8
# Long enough for any passphrase, short enough that hashing it cannot be used for a
# denial of service; argon2 has no 72-byte truncation, so all of it counts.
MAX_LENGTH = 1024
MIN_SCORE = 3
"""zxcvbn score a new password needs (0–4; 3 ≈ 10^8 guesses or more)."""
MIN_CONTEXT_PART = 3
"""Shortest name part (or local part) refused inside a password: "Bob" forbids "bob", but a
two-letter part like "Al" would forbid every password holding "al"."""
PRODUCT_NAME = "authkeep"

TOO_SHORT = f"Password must be at least {MIN_LENGTH} characters long"
TOO_LONG = f"Password must be at most {MAX_LENGTH} characters long"
TOO_COMMON = "Password is too common; choose a less predictable one"
HAS_EMAIL = "Password must not contain your email address or words from it"
HAS_NAME = "Password must not contain your name"
HAS_PRODUCT = f"Password must not contain the name of this service ({PRODUCT_NAME})"
ADVICE = "Use a passphrase of four or more unrelated words, or a password manager."

# Separators between the parts of a name or of an email's local part.
_PART_SEPARATORS = re.compile(r"[\W_]+")


class PasswordRejected(ValueError):
    """The password breaks the policy; ``str()`` is safe to show the user."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """A password measured against the policy; no field holds any of the password."""

    score: int
    """zxcvbn's score, 0–4."""
    guesses_log10: float
    """log10 of zxcvbn's estimated guesses."""
    problems: tuple[str, ...]
    """Every rule the password breaks, as a message for the user; empty when acceptable."""
    warning: str
    """zxcvbn's warning ("" when nothing stands out)."""
    suggestions: tuple[str, ...]
    """How to make it better."""

    @property
    def acceptable(self) -> bool:
        """Whether the policy accepts the password."""
        return not self.problems

    def reject(self) -> None:
        """Raise :class:`PasswordRejected` with the first problem, unless acceptable."""
        if self.problems:
            raise PasswordRejected(self.problems[0])


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    data = resources.files("authkeep.security").joinpath("data/common-passwords.txt.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip().lower() for line in lines if line.strip())


def normalize_password(password: str) -> str:
    """NFKC form, as 800-63B recommends, so one password typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def _parts(text: str) -> list[str]:
    """``text`` and its parts (split at spaces and punctuation) of MIN_CONTEXT_PART or more
    characters."""
    candidates = [text, *_PART_SEPARATORS.split(text)]
    return [part for part in dict.fromkeys(candidates) if len(part) >= MIN_CONTEXT_PART]


@dataclass(frozen=True, slots=True)
class ContextWords:
    """The words of an account a password must not contain, folded."""

    email: tuple[str, ...]
    name: tuple[str, ...]
    product: tuple[str, ...] = (PRODUCT_NAME,)

    def all(self) -> list[str]:
        """Every word, for zxcvbn's user inputs."""
        return [*self.email, *self.name, *self.product]


def context_words(email: str | None = None, full_name: str | None = None) -> ContextWords:
    """The email, its local part and that part's pieces (``alice.liddell`` → ``alice``,
    ``liddell``), the name and its pieces, and the product name — folded, each at least
    :data:`MIN_CONTEXT_PART` characters long."""
    email_words: list[str] = []
    if email:
        folded = _fold(email)
        local = folded.rpartition("@")[0] if "@" in folded else folded
        email_words = _parts(local)
        if len(folded) >= MIN_CONTEXT_PART and folded not in email_words:
            email_words.insert(0, folded)
    name_words = _parts(_fold(full_name)) if full_name else []
    return ContextWords(email=tuple(email_words), name=tuple(name_words))


def _length_problem(normalized: str) -> str | None:
    if len(normalized) < MIN_LENGTH:
        return TOO_SHORT
    if len(normalized) > MAX_LENGTH:
        return TOO_LONG
    return None


def _context_problems(folded: str, words: ContextWords) -> list[str]:
    problems = []
    if any(word in folded for word in words.email):
        problems.append(HAS_EMAIL)
    if any(word in folded for word in words.name):
        problems.append(HAS_NAME)
    if any(word in folded for word in words.product):
        problems.append(HAS_PRODUCT)
    return problems


def _guessable(warning: str) -> str:
    reason = warning.rstrip(".") + ". " if warning else ""
    return f"Password is too easy to guess. {reason}{ADVICE}"


def assess_password(
    password: str, *, email: str | None = None, full_name: str | None = None
) -> Assessment:
    """Measure ``password`` against every rule (CPU-bound: run it off the event loop)."""
    normalized = normalize_password(password)
    folded = normalized.casefold()
    words = context_words(email, full_name)
    problems: list[str] = []
    length = _length_problem(normalized)
    if length is not None:
        problems.append(length)
    if folded in common_passwords():
        problems.append(TOO_COMMON)
    problems.extend(_context_problems(folded, words))
    strength = measure(normalized, words.all())
    if strength.score < MIN_SCORE:
        problems.append(_guessable(strength.warning))
    suggestions = strength.suggestions
    if strength.score < MIN_SCORE and ADVICE not in suggestions:
        suggestions = (*suggestions, ADVICE)
    return Assessment(
        score=strength.score,
        guesses_log10=strength.guesses_log10,
        problems=tuple(problems),
        warning=strength.warning,
        suggestions=suggestions,
    )


def check_password(
    password: str, *, email: str | None = None, full_name: str | None = None
) -> None:
    """Raise :class:`PasswordRejected` when ``password`` breaks the policy.

    Cheap rules first: a password refused for its length (a 10 MB string included), its
    commonness or its context is never handed to zxcvbn."""
    normalized = normalize_password(password)
    problem = _length_problem(normalized)
    if problem is not None:
        raise PasswordRejected(problem)
    folded = normalized.casefold()
    if folded in common_passwords():
        raise PasswordRejected(TOO_COMMON)
    words = context_words(email, full_name)
    problems = _context_problems(folded, words)
    if problems:
        raise PasswordRejected(problems[0])
    strength = measure(normalized, words.all())
    if strength.score < MIN_SCORE:
        raise PasswordRejected(_guessable(strength.warning))


class PasswordPolicy:
    """The policy, applied on one worker thread so the event loop never runs zxcvbn.

    One thread, because zxcvbn calls are serialised anyway (see
    :mod:`authkeep.security.password_strength`); at most ``queue_limit`` checks may wait for
    it, beyond that :class:`~authkeep.errors.Overloaded` (503 with ``Retry-After``), so a
    flood of sign-ups costs bounded memory and at most one core.
    """

    def __init__(self, *, queue_limit: int = 64) -> None:
        self._pool = BoundedPool(workers=1, queue_limit=queue_limit, name="authkeep-zxcvbn")
        self._pool.submit_background(preload)  # start-up does not wait for the import

    async def check(
        self, password: str, *, email: str | None = None, full_name: str | None = None
    ) -> None:
        """:func:`check_password`, off the event loop."""
        await self._pool.run(lambda: check_password(password, email=email, full_name=full_name))

    async def assess(
        self, password: str, *, email: str | None = None, full_name: str | None = None
    ) -> Assessment:
        """:func:`assess_password`, off the event loop."""
        return await self._pool.run(
            lambda: assess_password(password, email=email, full_name=full_name)
        )

    def close(self) -> None:
        """Stop the worker thread (waits for a running check)."""
        self._pool.close()
