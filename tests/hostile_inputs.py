"""Hostile input values for fuzzing (importable as ``hostile_inputs``; also by ``make fuzz``).

Generic generators draw from all of Unicode and from the middle of every range, so the few
values that break a storage layer or a conversion are found only by luck: 5,000 schemathesis
cases once missed every one of these. The strategies here put them up front:

- characters PostgreSQL refuses in ``text`` (NUL), C0/C1 controls, and the invisible
  format and bidirectional-override characters used to spoof names (U+202E, U+200B, ...);
- datetimes at the ends of the calendar with an offset, whose conversion to UTC leaves
  the range of :class:`datetime.datetime`;
- integers past every database column's range.

``hostile_text`` and ``sprinkle`` feed the property tests (``tests/property``) and the
schemathesis hooks (``tests/fuzz``, ``scripts/fuzz_hooks.py``).
"""

from __future__ import annotations

import string
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# NUL (PostgreSQL text cannot hold it), the rest of C0, DEL, C1 (NEL), and the invisible
# format and bidi characters that make a name display as something else (Trojan Source).
HOSTILE_CHARACTERS = (
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f\x85\x9f"
    "\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff\ufff9\ufffe"
)
EXTREME_DATETIMES = (
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59",
    "0001-01-01T00:00:00",
    "1970-01-01T00:00:00Z",
)
EXTREME_INTEGERS = (
    -1,
    0,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**40,
)

# NUL drawn half of the time: it is the one that reaches a driver error on PostgreSQL.
hostile_characters = st.just("\x00") | st.sampled_from(HOSTILE_CHARACTERS)
"""One hostile character."""

hostile_text = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(alphabet=string.ascii_letters, max_size=4),
    st.text(alphabet=hostile_characters, min_size=1, max_size=3),
    st.text(alphabet=string.ascii_letters + "@.", max_size=4),
)
"""Short text holding at least one hostile character, between ordinary ones."""

extreme_datetimes = st.sampled_from(EXTREME_DATETIMES)
"""RFC 3339 datetimes at the ends of the calendar, offsets included."""

extreme_integers = st.sampled_from(EXTREME_INTEGERS)
"""Integers at and past the 32- and 64-bit column limits."""

hostile_scalars = st.one_of(
    hostile_text,
    extreme_datetimes,
    extreme_integers,
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
"""Any JSON scalar, the hostile ones first."""

json_values = st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
"""JSON of any shape whose leaves are :data:`hostile_scalars`."""


# Control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs) and line or
# paragraph separator (Zl, Zp) characters: what a careful service refuses in names.
_HOSTILE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_hostile(value: Any) -> bool:
    """Whether ``value`` (a request part: body, query, path parameters) holds a control,
    format or separator character or an extreme datetime anywhere, whether drawn from these
    strategies or by the generic generator. Such a value may be refused (4xx) even where
    the schema allows it; it must never be a 5xx."""
    if isinstance(value, str):
        return value in EXTREME_DATETIMES or any(
            c in HOSTILE_CHARACTERS or unicodedata.category(c) in _HOSTILE_CATEGORIES for c in value
        )
    if isinstance(value, dict):
        return any(is_hostile(k) or is_hostile(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(is_hostile(item) for item in value)
    return False


def _infect(text: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda bad: bad + text, hostile_text),
        st.builds(
            lambda bad: text[: len(text) // 2] + bad + text[len(text) // 2 :], hostile_characters
        ),
        extreme_datetimes,
    )


def _infected(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, str):
        return st.just(value) | _infect(value)
    if isinstance(value, dict) and value:
        keys = list(value)
        return st.tuples(*(_infected(value[k]) for k in keys)).map(
            lambda values: dict(zip(keys, values, strict=True))
        )
    if isinstance(value, list) and value:
        return st.tuples(*(_infected(item) for item in value)).map(list)
    return st.just(value)


def sprinkle(value: Any) -> st.SearchStrategy[Any]:
    """``value`` as generated, or a copy in which string leaves hold hostile characters or
    became extreme datetimes: a schema-shaped request that reaches the handler with them."""
    return st.just(value) | _infected(value)


def forged_cursors() -> st.SearchStrategy[str]:
    """Paging cursors in the shape the server issues (:func:`encode_cursor`), around extreme
    row ids: an opaque token is still input, and its payload must be bounded."""
    from authkeep.services.audit_admin import encode_cursor

    return extreme_integers.map(encode_cursor)


def hostile_query(query: Any) -> st.SearchStrategy[Any]:
    """:func:`sprinkle` for a query string, whose ``cursor`` may also be forged."""
    if not isinstance(query, dict) or "cursor" not in query:
        return sprinkle(query)
    return sprinkle(query) | forged_cursors().map(lambda cursor: {**query, "cursor": cursor})


def _rfc3339(moment: datetime, offset_minutes: int) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


def date_times() -> st.SearchStrategy[str]:
    """RFC 3339 datetimes for the ``date-time`` format: the extremes half of the time, any
    instant of the calendar with any offset the other half."""
    return extreme_datetimes | st.builds(_rfc3339, st.datetimes(), st.integers(-1439, 1439))


# Operations whose only schema-valid input is a token the server issued by email: a
# generated one is never valid, and the contract answers 400 ("bad, used or expired token").
# Their refusals are the rule working, not a rejected positive case.
NEEDS_AN_ISSUED_TOKEN = frozenset(
    {
        "/api/v1/auth/verify-email",
        "/api/v1/auth/password/reset",
        "/api/v1/auth/email/confirm",
        "/api/v1/auth/me/deletion/cancel",
    }
)
