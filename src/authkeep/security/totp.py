"""Time-based one-time passwords (RFC 6238) on pyotp, and their enrolment QR code (segno).

Rules this module enforces:

* The parameters every authenticator app supports: HMAC-SHA1, 30-second steps, 6 digits
  (RFC 6238's defaults; Google Authenticator ignores anything else). A secret is 160 random
  bits (RFC 4226 §4 asks for at least 128, recommends 160), base32.
* A code is accepted for the current step and one step either side (±30 s of clock skew,
  RFC 6238 §5.2's "at most one time step"), never more: each extra step widens an online
  guesser's odds.
* Every candidate step is compared, in constant time (:func:`hmac.compare_digest`), whatever
  matched: how long a check takes says nothing about which step (or digit) was right.
* :func:`matching_step` returns the *step* a code belongs to, not a yes/no: the caller stores
  it and accepts only newer steps (replay rejection, ``authkeep.db.mfa.accept_step``). This
  module keeps no state.
* A submitted code that is not exactly six ASCII digits (spaces allowed between them, as
  apps show ``123 456``) matches nothing: other Unicode digits never reach the comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from datetime import datetime

import pyotp
import segno

__all__ = [
    "DIGITS",
    "SKEW_STEPS",
    "STEP_SECONDS",
    "code_at",
    "matching_step",
    "new_secret",
    "normalize_code",
    "otpauth_uri",
    "qr_svg",
    "step_of",
]

STEP_SECONDS = 30
DIGITS = 6
SKEW_STEPS = 1
_SECRET_CHARS = 32  # base32: 5 bits each, 160 bits
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A fresh TOTP secret: 160 random bits, base32 (what the user's app stores)."""
    return pyotp.random_base32(_SECRET_CHARS)


def _totp(secret: str, issuer: str | None = None) -> pyotp.TOTP:
    return pyotp.TOTP(
        secret, digits=DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS, issuer=issuer
    )


def step_of(moment: datetime) -> int:
    """The RFC 6238 time step (``T``) that ``moment`` (timezone-aware) falls in."""
    return int(moment.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    """The code of ``secret`` for time step ``step``."""
    return _totp(secret).generate_otp(step)


def normalize_code(code: str) -> str | None:
    """``code`` without its spaces if that leaves exactly six ASCII digits, else None."""
    compact = code.replace(" ", "")
    return compact if _CODE.fullmatch(compact) else None


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step within ±:data:`SKEW_STEPS` of ``now`` whose code is ``code`` (the
    newest, should two steps share a code), or None."""
    candidate = normalize_code(code)
    if candidate is None:
        return None
    current = step_of(now)
    found: int | None = None
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        # No early exit: every step costs the same whichever matched.
        if hmac.compare_digest(code_at(secret, step), candidate):
            found = step
    return found


def otpauth_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://totp/…`` URI an authenticator app enrols from (Key Uri Format):
    ``issuer`` names the service (``AUTHKEEP_PRODUCT_NAME``), ``account`` the user."""
    return _totp(secret, issuer).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """``uri`` as a QR code, a standalone SVG document (usable inline or as an image)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(
        buffer, kind="svg", scale=4, border=4, xmldecl=False
    )
    return buffer.getvalue().decode("utf-8")
