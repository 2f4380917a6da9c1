"""Which characters a submitted string may hold, and how a display name is normalised.

Two rules, each a function that raises :class:`TextRejected` (a ``ValueError``, so a
pydantic validator turns it into a 422) with a message that names the kind of character and
its code point, never the rest of the value:

* :func:`check_text` — any string that reaches the database or a log: no control characters
  (C0, DEL, C1: NUL makes PostgreSQL refuse the statement, a 500; newlines and escapes forge
  log lines and terminal output) and no unpaired surrogates (no UTF-8 encoder accepts them).
* :func:`clean_display_name` — a name people read (a user's full name, an organization, an
  API key): the above, plus no line or paragraph separators, and no invisible format
  characters (Unicode category Cf): bidirectional overrides and isolates (U+202A–U+202E,
  U+2066–U+2069, U+200E/U+200F) make a name display as something else ("Trojan Source",
  ``abc\u202egpj.exe`` shown as ``abcexe.jpg``), zero-width spaces, BOMs, soft hyphens and
  tag characters hide text. The two joiners (ZWNJ U+200C, ZWJ U+200D) stay: Persian,
  the Indic scripts and emoji sequences need them to spell ordinary names, and they cannot
  reorder text. The name is trimmed and NFC-normalised, and its length is checked *after*
  normalisation (NFC lengthens some characters, e.g. U+0958 becomes two code points).
"""

from __future__ import annotations

import unicodedata

JOINERS = frozenset({"\u200c", "\u200d"})
"""Format characters that ordinary names need (ZWNJ, ZWJ)."""

_CONTROL = frozenset({"Cc"})
_SEPARATORS = frozenset({"Zl", "Zp"})


class TextRejected(ValueError):
    """A submitted string holds a character it may not; the message names which kind."""


def _point(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def check_text(value: str) -> str:
    """Return ``value`` unchanged, or raise :class:`TextRejected` if it holds a control
    character or an unpaired surrogate."""
    for ch in value:
        category = unicodedata.category(ch)
        if category in _CONTROL:
            raise TextRejected(
                f"must not contain control characters (such as NUL, tab or newline); "
                f"found {_point(ch)}"
            )
        if category == "Cs":
            raise TextRejected(f"must not contain unpaired surrogates; found {_point(ch)}")
    return value


def clean_display_name(value: str, *, max_length: int, min_length: int = 1) -> str:
    """The stored form of a display name: trimmed, NFC, ``min_length`` to ``max_length``
    characters, with at least one visible character; else :class:`TextRejected`."""
    check_text(value)
    for ch in value:
        category = unicodedata.category(ch)
        if category in _SEPARATORS:
            raise TextRejected(
                f"must not contain control characters (line or paragraph separators); "
                f"found {_point(ch)}"
            )
        if category == "Cf" and ch not in JOINERS:
            raise TextRejected(
                "must not contain bidirectional-override or invisible formatting characters "
                f"(such as U+202E or U+200B); found {_point(ch)}"
            )
    name = unicodedata.normalize("NFC", value).strip()
    if len(name) > max_length:
        raise TextRejected(f"must be at most {max_length} characters")
    if len(name) < min_length or (name and all(ch in JOINERS for ch in name)):
        raise TextRejected(
            "must have at least one visible character"
            if min_length <= 1
            else f"must be at least {min_length} characters"
        )
    return name


def clip(value: str | None, max_length: int) -> str | None:
    """``value`` made storable in a column of ``max_length`` characters: control characters
    and unpaired surrogates replaced by ``?``, then cut. For facts a client merely reports
    (a user agent, a peer address), which are recorded, never refused."""
    if value is None:
        return None
    if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in value):
        value = "".join("?" if unicodedata.category(ch) in {"Cc", "Cs"} else ch for ch in value)
    return value[:max_length]
