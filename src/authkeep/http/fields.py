"""Validated types for every value a request carries into authkeep: use these, not bare
``str`` and ``datetime``, in request models and query parameters.

Each refuses with a 422 whose message says what is wrong (never repeating the value), so
that input the database or Python cannot represent is stopped at the edge instead of
surfacing as a 500 from a driver:

* :data:`UTCDatetime` (offset required) and :data:`UTCTimestamp` (no offset means UTC) —
  converted to UTC here; a value whose UTC form falls outside years 1–9999 (e.g.
  ``9999-12-31T23:59:59-05:00``) is out of range, where converting it later overflowed.
* :data:`CleanText` — no control characters, no unpaired surrogates
  (:func:`authkeep.security.text.check_text`): for free text such as search filters.
* :data:`DisplayName` and :data:`Name` — names people read, trimmed and NFC-normalised,
  without bidirectional overrides or invisible characters
  (:func:`authkeep.security.text.clean_display_name`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

from authkeep.security.text import check_text, clean_display_name

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
UTC_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
NAME_MAX = 100
"""Organization and API-key names (their columns)."""
FULL_NAME_MAX = 200
"""A user's full name (its column)."""


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive value is taken as UTC); ValueError when its UTC form is not
    representable."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"datetime out of range once converted to UTC: must be within {UTC_RANGE}"
        ) from None


def rfc3339_only(value: object) -> object:
    """Refuse numbers where an RFC 3339 datetime is documented: pydantic would read ``0.5``
    as seconds since the epoch, an input no client of the published schema sends."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an RFC 3339 datetime, such as 2030-01-01T00:00:00Z")
    return value


UTCDatetime = Annotated[AwareDatetime, BeforeValidator(rfc3339_only), AfterValidator(to_utc)]
"""An instant with an explicit UTC offset, converted to UTC."""

UTCTimestamp = Annotated[datetime, BeforeValidator(rfc3339_only), AfterValidator(to_utc)]
"""An instant, UTC when it carries no offset, converted to UTC."""

CleanText = Annotated[str, AfterValidator(check_text)]
"""Text without control characters or unpaired surrogates (add length bounds at use)."""

DisplayName = Annotated[
    str,
    StringConstraints(max_length=FULL_NAME_MAX),
    AfterValidator(partial(clean_display_name, max_length=FULL_NAME_MAX, min_length=0)),
]
"""A person's name: up to 200 characters, may be empty."""

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX),
    AfterValidator(partial(clean_display_name, max_length=NAME_MAX)),
]
"""An organization's or an API key's name: 1 to 100 characters, one visible at least."""

CHALLENGE_SOLUTION_MAX = 4096
"""ALTCHA payloads are ~300 characters; CAPTCHA tokens up to ~2,048."""

ChallengeSolution = Annotated[
    str,
    StringConstraints(min_length=1, max_length=CHALLENGE_SOLUTION_MAX, pattern=r"^[!-~]+$"),
]
"""A challenge's solution (``docs/challenge.md``): the ALTCHA widget's base64 payload or a
CAPTCHA token, printable ASCII without spaces."""
