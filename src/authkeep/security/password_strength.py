"""Password guessability, measured with zxcvbn, at a bounded cost.

:func:`measure` scores a password 0–4 (zxcvbn's scale: 3 means about 10^8 guesses or more,
"safely unguessable" for an online attacker and a good obstacle offline) with the user's own
words (email, name, the product name) counted as the first guesses, and returns zxcvbn's
feedback. zxcvbn is pure Python and its cost grows faster than the length, so:

* **Only a prefix is scored.** At most :data:`SCORED_MAX_CHARS` characters (zxcvbn's own
  default guard is 72): on the project's machine a 64-character password costs about 15 ms,
  a 1,024-character one several minutes (431 s for ``"x" * 1024``). A password whose first
  64 characters are hard to guess is hard to guess; one whose prefix is weak must change it.
* **The prefix shrinks when it is full of l33t symbols.** zxcvbn re-runs its dictionary
  matcher once per combination of l33t substitutions present (``1`` may be ``i`` or ``l``,
  ``|`` too, ``(`` ``{`` ``[`` ``<`` are ``c``, …): with every symbol of its table in the
  password that is 736 passes, and 64 such characters cost seconds. The scored prefix is cut
  until (estimated substitutions × characters²) fits :data:`L33T_WORK_BUDGET`, but never
  below :data:`SCORED_MIN_CHARS` — 16 characters drawn from so many symbols score 4 anyway.
  Without this one request could hold a core for seconds (a denial of service).
* **One call at a time per process.** zxcvbn keeps the current call's user inputs in a
  module-level dictionary, so two threads scoring at once could score one user's password
  against another's words; :data:`_ZXCVBN_LOCK` serialises the calls. It holds the GIL
  throughout, so parallel threads would gain nothing anyway.

Callers on the event loop run :func:`measure` in a worker thread
(:class:`authkeep.security.password_policy.PasswordPolicy` does).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCORED_MAX_CHARS = 64
SCORED_MIN_CHARS = 16
# 64 characters with 8 substitution combinations: about 30 ms of l33t matching here.
L33T_WORK_BUDGET = 64 * 64 * 8

_ZXCVBN_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Strength:
    """zxcvbn's verdict on (a prefix of) a password. No field holds any of the password."""

    score: int
    """0 (too guessable) to 4 (very unguessable)."""
    guesses_log10: float
    """log10 of the estimated number of guesses."""
    warning: str
    """What makes it guessable ("" when nothing stands out)."""
    suggestions: tuple[str, ...]
    """How to make it better."""
    scored_chars: int
    """How many leading characters were scored."""


def _zxcvbn() -> Any:
    # Imported on first use: loading its frequency lists takes about half a second, which
    # commands that never score a password (``authkeep --version``) should not pay.
    from zxcvbn import zxcvbn  # type: ignore[import-untyped]

    return zxcvbn


def preload() -> None:
    """Load zxcvbn now (about half a second), e.g. on a worker thread at start-up, so that
    the first sign-up does not wait for it."""
    _zxcvbn()


def _l33t_combinations(text: str) -> int:
    """An estimate of how many substitution tables zxcvbn's l33t matcher tries on ``text``:
    the product, over letters, of how many of their l33t symbols ``text`` holds."""
    from zxcvbn.matching import L33T_TABLE  # type: ignore[import-untyped]

    present = set(text)
    combinations = 1
    for symbols in L33T_TABLE.values():
        combinations *= max(1, sum(1 for symbol in symbols if symbol in present))
    return combinations


def scored_prefix(password: str) -> str:
    """The leading part of ``password`` that :func:`measure` scores (see the module doc)."""
    text = password[:SCORED_MAX_CHARS]
    while len(text) > SCORED_MIN_CHARS:
        combinations = _l33t_combinations(text)
        if combinations * len(text) ** 2 <= L33T_WORK_BUDGET:
            break
        fits = math.isqrt(L33T_WORK_BUDGET // combinations)
        text = text[: max(SCORED_MIN_CHARS, min(fits, len(text) - 1))]
    return text


def measure(password: str, user_inputs: Iterable[str] = ()) -> Strength:
    """Score ``password`` with zxcvbn, ``user_inputs`` counted as known words (CPU-bound:
    tens of milliseconds at most; call it off the event loop)."""
    text = scored_prefix(password)
    if not text:  # zxcvbn fails on an empty string; nothing is as easy to guess
        return Strength(0, 0.0, "", (), 0)
    inputs = [word for word in user_inputs if word]
    zxcvbn = _zxcvbn()
    with _ZXCVBN_LOCK:
        result = zxcvbn(text, user_inputs=inputs, max_length=SCORED_MAX_CHARS)
    feedback = result["feedback"]
    return Strength(
        score=int(result["score"]),
        guesses_log10=round(float(result["guesses_log10"]), 2),
        warning=str(feedback.get("warning") or ""),
        suggestions=tuple(str(item) for item in feedback.get("suggestions") or ()),
        scored_chars=len(text),
    )
